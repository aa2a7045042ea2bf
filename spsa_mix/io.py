"""Files written whole or not at all, and the one JSON serialiser.

Every file the package writes (results, reports, cached experts) goes through
:func:`atomic_write_bytes` (or :func:`atomic_path` for writers that only take a path; a
folder, such as a merged model, through :func:`atomic_directory`): the
data is written to a temporary file in the destination folder, flushed and fsynced, then
renamed over the destination, so a reader, a crash or a Ctrl-C never leaves a half-written
file, and an existing file is replaced only by a complete one. The file gets the mode a
newly created file gets (``0o666`` less the umask: ``0644`` under the usual ``022``).

:func:`to_jsonable` is the one conversion to JSON values (NumPy arrays and scalars, tuples,
paths, enums, non-finite floats); :func:`dumps_json` and :func:`write_json` use it and write
strict JSON (no ``NaN`` literal); :func:`jsonl_rows` reads a JSONL file line by line. NumPy is
the only dependency: every layer may import this module.

:func:`parse_size` reads a size in bytes (``"5GB"``, ``"2MiB"``); :func:`default_cache_dir` is
where cached files go (data, experts) unless a caller names
another folder.

:func:`check_writable` (and :func:`check_outputs`, for several paths) is the one check of
an output path, made before any work so that a bad ``--output`` fails at once with a
one-line reason instead of a traceback at the end. It creates no folder and leaves no
file (the writers above create the parent folders when they write).

Example
-------
>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> p = write_json({"x": np.array([0.5, np.nan])}, Path(tempfile.mkdtemp()) / "out" / "r.json")
>>> p.read_text()
'{\\n "x": [\\n  0.5,\\n  null\\n ]\\n}\\n'
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_path", "atomic_directory", "to_jsonable", "dumps_json",
           "write_json", "jsonl_rows", "check_writable", "check_outputs", "default_cache_dir", "parse_size"]

_ATTEMPTS = 100  # names tried for a temporary file before giving up (each is 64 random bits)

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(size: int | str, name: str = "max_shard_size") -> int:
    """Bytes in ``size``: an int, or a string such as ``"20KB"``, ``"5GB"`` (powers of 1000,
    as transformers' ``max_shard_size``) or ``"2MiB"`` (powers of 1024); ``name`` labels the error.

    >>> parse_size("20KB"), parse_size("5GB"), parse_size("2MiB"), parse_size(100)
    (20000, 5000000000, 2097152, 100)
    """
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper()) if isinstance(size, str) else None
    if m is None or m.group(2) not in _UNITS or float(m.group(1)) <= 0:
        raise ValueError(f"{name} must be a positive number of bytes or a string such as '5GB', "
                         f"but got {size!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def default_cache_dir() -> Path:
    """``$SPSA_MIX_CACHE`` if set, else ``~/.cache/spsa_mix``.

    >>> default_cache_dir().name in ("spsa_mix", os.environ.get("SPSA_MIX_CACHE", "x").rstrip("/").split("/")[-1])
    True
    """
    env = os.environ.get("SPSA_MIX_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spsa_mix"


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably; return ``path`` as a :class:`Path`.

    Parent folders are created. On any failure the temporary file is removed and a file
    already at ``path`` is left as it was.

    >>> import tempfile
    >>> p = atomic_write_bytes(Path(tempfile.mkdtemp()) / "sub" / "b.bin", b"\\x00\\x01")
    >>> p.read_bytes()
    b'\\x00\\x01'
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, but got {type(data).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, _ = _create_temporary(path, suffix=".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the data reaches the disk before the name does
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_folder(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` as :func:`atomic_write_bytes` does.

    >>> import tempfile
    >>> p = atomic_write_text(Path(tempfile.mkdtemp()) / "sub" / "r.json", "{}")
    >>> p.read_text()
    '{}'
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, but got {type(text).__name__}")
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path next to ``path``, renamed onto ``path`` when the block ends normally.

    For writers that only take a path (``safetensors.torch.save_model``, ``savefig``): the
    temporary file exists (empty) when the block starts and its name ends with
    ``.tmp<suffix of path>``, for writers that choose a format from the suffix. When the
    block ends normally the file is fsynced, given the mode of a new file and renamed onto
    ``path``; when the block raises it is removed and ``path`` is untouched.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "w.txt"
    >>> with atomic_path(target) as tmp:
    ...     _ = tmp.write_text("weights")
    ...     target.exists()
    False
    >>> target.read_text()
    'weights'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, mode = _create_temporary(path, suffix=".tmp" + path.suffix)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows syncs writable handles only
        try:
            os.fsync(fd)  # the data reaches the disk before the name does
        finally:
            os.close(fd)
        os.chmod(tmp, mode)  # the writer may have replaced the file with one of its own mode
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path`` to write a whole folder into (a model directory).

    An existing ``path`` that is a file or a non-empty folder is refused (``ValueError``,
    before the block runs) unless ``overwrite``. When the block ends normally every file in
    the temporary folder is fsynced, the folder gets the mode a new folder gets (``0o777``
    less the umask) and it is renamed onto ``path`` (an existing ``path`` is moved aside
    first and removed after); when the block raises it is removed and ``path`` is untouched.

    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "out"
    >>> with atomic_directory(target) as tmp:
    ...     _ = (tmp / "a.txt").write_text("x")
    >>> sorted(p.name for p in target.iterdir())
    ['a.txt']
    """
    import shutil
    import tempfile

    target = Path(path)
    if target.exists() and not overwrite and (target.is_file() or any(target.iterdir())):
        raise ValueError(f"path {str(target)!r} exists and is not empty: pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        for file in tmp.rglob("*"):
            if file.is_file():
                fd = os.open(file, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.chmod(file, 0o666 & ~umask)  # writers that make 0600 files (mkstemp) get the usual mode
            elif file.is_dir():
                os.chmod(file, 0o777 & ~umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(target.parent)


def _create_temporary(path: Path, *, suffix: str) -> tuple[Path, int]:
    """Create an empty file ``.<stem>.<random><suffix>`` next to ``path`` as
    ``open(..., "x")`` would, so that the umask applies (``tempfile.mkstemp`` creates
    ``0600``); return it and its mode."""
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(8)}{suffix}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        try:
            mode = os.fstat(fd).st_mode & 0o777
        finally:
            os.close(fd)
        return tmp, mode
    raise FileExistsError(f"no free temporary name next to {path} after {_ATTEMPTS} attempts")


def _remove(tmp: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; best effort (some systems cannot open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def to_jsonable(value: Any) -> Any:
    """``value`` with every part turned into a JSON value, recursively.

    Mappings become dicts with ``str`` keys, tuples and lists lists, NumPy arrays lists,
    NumPy scalars Python numbers, paths strings, enums their name, and NaN and infinities
    ``None`` (JSON has neither). Anything else is returned as is.

    >>> import enum
    >>> class Color(enum.IntEnum):
    ...     RED = 1
    >>> to_jsonable({1: (np.float32(2), np.int64(3), np.bool_(True)), "c": Color.RED,
    ...              "a": np.array([1.0, np.inf]), "p": Path("r.json"), "n": float("nan")})
    {'1': [2.0, 3, True], 'c': 'RED', 'a': [1.0, None], 'p': 'r.json', 'n': None}
    """
    if isinstance(value, enum.Enum):  # before int and str: IntEnum and StrEnum are both
        return value.name
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def dumps_json(value: Any, *, indent: int | None = 1) -> str:
    """Strict JSON text of ``to_jsonable(value)`` with a final newline.

    >>> dumps_json({"loss": np.float64("nan"), "k": (2, 3)}, indent=None)
    '{"loss": null, "k": [2, 3]}\\n'
    """
    return json.dumps(to_jsonable(value), indent=indent, allow_nan=False) + "\n"


def write_json(value: Any, path: str | os.PathLike[str], *, indent: int | None = 1) -> Path:
    """Write :func:`dumps_json` of ``value`` to ``path`` atomically; return the path.

    >>> import tempfile
    >>> write_json([1, 2], Path(tempfile.mkdtemp()) / "l.json", indent=None).read_text()
    '[1, 2]\\n'
    """
    return atomic_write_text(path, dumps_json(value, indent=indent))


def jsonl_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed line)`` of each non-blank line of a JSONL file; ``ValueError``
    naming the file and the line that is not JSON."""
    p = Path(path)
    for n, line in enumerate(p.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: line {n} is not JSON ({e.msg})") from None


def check_writable(path: str | os.PathLike[str], name: str, *, folder: bool = False) -> Path:
    """``path`` as a :class:`Path` if a file (``folder=True``: a folder) can be written
    there; else ``ValueError`` with one line naming ``name`` (the option or argument), the
    path and why.

    Refused: a file path that is a folder, a folder path that is a file, a path under a
    file, and a path whose nearest existing folder this process cannot create files in
    (permissions, a read-only file system). The check creates no folder and leaves no file:
    it creates and removes one empty temporary file in that nearest existing folder, which
    is what the writers will need (they create the missing folders below it). An existing
    file is accepted: the writers replace it whole.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> check_writable(root / "new" / "r.json", "--output") == root / "new" / "r.json", (root / "new").exists()
    (True, False)
    >>> check_writable(root, "--output")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --output '...' cannot be written: it is a folder
    """
    path = Path(path).expanduser()
    verb = "used" if folder else "written"

    def refuse(why: str) -> ValueError:
        return ValueError(f"{name} {str(path)!r} cannot be {verb}: {why}")

    existing = path if folder else path.parent
    if os.path.lexists(path):
        if folder and not path.is_dir():
            raise refuse("it is a file, not a folder")
        if not folder and path.is_dir():
            raise refuse("it is a folder")
    while not os.path.lexists(existing):
        existing = existing.parent  # ends at "." or the root, which exist
    if not existing.is_dir():
        raise refuse(f"{str(existing)!r} is a file, not a folder")
    try:
        probe, _ = _create_temporary(existing / "spsa_mix_check", suffix=".tmp")
    except OSError as e:
        raise refuse(f"cannot create files in {str(existing)!r} ({e.strerror or e})") from None
    _remove(probe)
    return path


def check_outputs(paths: Mapping[str, str | os.PathLike[str] | None], *, folders: tuple[str, ...] = ()) -> None:
    """:func:`check_writable` of every path of ``{name: path}`` that is not ``None`` (the
    names in ``folders`` as folders), and no two names for one file.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> check_outputs({"--output": root / "r.json", "--plot": None, "--csv": root / "r.json"})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: --csv and --output name the same file '.../r.json'
    """
    seen: dict[Path, str] = {}
    for name, path in paths.items():
        if path is None:
            continue
        checked = check_writable(path, name, folder=name in folders)
        where = Path(os.path.abspath(checked))
        if where in seen:
            raise ValueError(f"{name} and {seen[where]} name the same file {str(checked)!r}")
        seen[where] = name
