"""One merge at a time into one output; what a killed one left, cleaned; a failed write, said in one line.

:func:`guarded` wraps :func:`~spsa_mix.merge.run.run_merge`:

* **the lock**: ``<output>.lock`` (:func:`lock_path`), created exclusively, holds the
  holder's process id, host and start time. A second merge into the same output is refused
  at its start (:func:`check_unlocked`, from :func:`~spsa_mix.merge.run.plan_merge`, and
  again when it takes the lock), naming the holder; a lock whose process is gone (killed)
  is taken over. Under ``torchrun`` rank 0 alone takes it (it alone writes).
* **leftovers**: a run killed while writing leaves hidden temporaries beside the output
  (``.<output>.XXXXXXXX.tmp`` folders of the model being written, ``.<output>.old.XXXXXXXX``
  folders of a replaced one, ``.<stem>.<16 hex>.tmp`` files of the state and the
  fingerprint) and inside it (``.recipe.<16 hex>.tmp``, ...): once it holds the lock, the
  next run into that output removes them (:func:`clean_stale`), and nothing else.
* **a failed write** (a full disk, a read-only folder) is a :class:`WriteFailed`: one line
  naming the file and the reason, and, when the run's state was kept, how to resume
  (``spsa-mix merge`` exits with status 1).

Example
-------
>>> import tempfile
>>> out = Path(tempfile.mkdtemp()) / "merged"
>>> with OutputLock.acquire(out) as lock:
...     lock.path.read_text().startswith(f"pid={os.getpid()}")
True
>>> lock_path(out).exists()
False
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["OutputLock", "WriteFailed", "lock_path", "holder", "check_unlocked", "clean_stale", "guarded",
           "is_writer_rank"]


class WriteFailed(RuntimeError):
    """A file of the merge could not be written (the message is one line, with the way to resume)."""


def lock_path(output: Path) -> Path:
    """``<output>.lock``, beside the output, where symbolic links lead (so that an output
    reached through a link and by its own path take one lock).

    >>> lock_path(Path("runs/merged")) == Path("runs/merged.lock").absolute()
    True
    """
    real = Path(os.path.realpath(output))
    return real.with_name(real.name + ".lock")


def is_writer_rank() -> bool:
    """Whether this process writes: not under ``torchrun``, or its rank 0."""
    return os.environ.get("RANK", "0") == "0" or "WORLD_SIZE" not in os.environ


def _started(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux: ``/proc/<pid>/stat``), to tell a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]  # field 22, counted after the command's name


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return True
    return started is None or _started(pid) in (None, started)


def holder(path: Path) -> str | None:
    """Who holds the lock at ``path`` (``"process 123 on host h"``), or ``None``: no lock,
    one left by a process that is gone (on this host), or this process's own."""
    try:
        fields = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    except OSError:
        return None
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return None  # an unreadable lock: a write cut short
    host = fields.get("host", "")
    if host and host != socket.gethostname():
        return f"process {pid} on host {host}"  # cannot be checked from here
    if pid == os.getpid() and (fields.get("started") or None) == _started(pid):
        return None
    return f"process {pid} on host {host or 'this one'}" if _alive(pid, fields.get("started") or None) else None


def check_unlocked(output: Path) -> None:
    """Refuse (``ValueError``) when another live merge holds the lock of ``output``."""
    path = lock_path(output)
    if not is_writer_rank() or not path.exists():
        return
    who = holder(path)
    if who is not None:
        raise ValueError(f"another merge into {str(output)!r} is running ({who}, lock {str(path)!r}): wait for it "
                         "to end, or choose another output; if no such merge runs, delete the lock")


class OutputLock:
    """The lock of one output, held by this process (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def acquire(cls, output: Path) -> OutputLock:
        """Take the lock of ``output``, taking over one whose process is gone.

        Raises ``ValueError`` when a live process holds it.
        """
        path = lock_path(output)
        text = f"pid={os.getpid()}\nhost={socket.gethostname()}\nstarted={_started(os.getpid()) or ''}\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                check_unlocked(output)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return cls(path)
        raise ValueError(f"cannot take the lock {str(path)!r}: other processes keep taking it")

    def release(self) -> None:
        """Remove the lock if it is still this process's."""
        try:
            mine = f"pid={os.getpid()}\n" in self.path.read_text()
        except OSError:
            return
        if mine:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _stale_patterns(output: Path, beside: list[Path]) -> list[re.Pattern[str]]:
    name = re.escape(output.name)
    pats = [rf"\.{name}\.[a-z0-9_]{{8}}\.tmp", rf"\.{name}\.old\.[a-z0-9_]{{8}}",
            rf"\.{re.escape(output.stem)}\.[0-9a-f]{{16}}\.tmp{re.escape(output.suffix)}"]
    pats += [rf"\.{re.escape(p.stem)}\.[0-9a-f]{{16}}\.tmp" for p in beside]  # spsa_mix.io.atomic_write_bytes
    return [re.compile(p) for p in pats]


_INSIDE = re.compile(r"\.(recipe|mergekit|loss)\.[0-9a-f]{16}\.tmp(\.png)?")


def clean_stale(output: Path, beside: list[Path]) -> list[Path]:
    """Remove the hidden temporaries a killed run into ``output`` left beside it and inside
    it (see the module docstring); ``beside``: the files written beside the output (the
    state, the fingerprint), whose temporaries are removed too. Returns what was removed.

    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in (".merged.ab12cd_9.tmp", ".merged.0123456789abcdef.tmp", ".merged-2.ab12cd_9.tmp"):
    ...     (root / name).mkdir()
    >>> sorted(p.name for p in clean_stale(root / "merged", [root / "merged.state"]))
    ['.merged.0123456789abcdef.tmp', '.merged.ab12cd_9.tmp']
    """
    parent = output.parent if str(output.parent) else Path(".")
    patterns = _stale_patterns(output, beside)
    found: list[Path] = []
    if parent.is_dir():
        found += [p for p in parent.iterdir() if any(pat.fullmatch(p.name) for pat in patterns)]
    if output.is_dir() and not output.is_symlink():
        found += [p for p in output.iterdir() if _INSIDE.fullmatch(p.name)]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return found


def _write_error(e: BaseException) -> bool:
    if isinstance(e, OSError):
        return True
    return type(e).__name__ == "SafetensorError"  # safetensors' own error (a full disk while saving, ...)


def _describe(e: BaseException) -> str:
    """``"I/O error on '<file>': <reason>"`` in one line.

    >>> _describe(OSError(errno.ENOSPC, "No space left on device", "m/model.safetensors"))
    "I/O error on 'm/model.safetensors': No space left on device (the disk is full)"
    """
    file = getattr(e, "filename", None)
    if isinstance(e, OSError) and e.errno:
        why = os.strerror(e.errno)
    else:
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left" in why:
        why += " (the disk is full)"
    return f"I/O error{f' on {str(file)!r}' if file else ''}: {why}"


@contextlib.contextmanager
def guarded(output: Path, beside: list[Path], state: Path) -> Iterator[None]:
    """Hold ``output``'s lock (this process writes), clean what a killed run left, and turn
    a failed write into :class:`WriteFailed` (see the module docstring)."""
    lock = OutputLock.acquire(output) if is_writer_rank() else None
    try:
        if lock is not None:
            for out in {output, Path(os.path.realpath(output))}:  # an output that is a link: where it leads too
                clean_stale(out, beside)
        try:
            yield
        except Exception as e:
            if not _write_error(e):
                raise
            raise WriteFailed(f"{_describe(e)}; " + (
                f"the run's state is kept in {str(state)!r}: once the output can be written, run again with --resume"
                if state.exists() else "no state was saved")) from e
    finally:
        if lock is not None:
            lock.release()
