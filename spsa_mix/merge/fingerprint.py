"""What a merge's result depends on, recorded beside its state, so that ``--resume`` refuses a change.

``spsa-mix merge`` keeps the search's state in ``<output>.state``
(:mod:`spsa_mix.core.checkpoint`, whose own fingerprint holds the method, its options and
the seed). Beside it, ``<output>.fingerprint.json`` (:func:`record_path`) holds the rest
of what determines the result, written when the run starts:

* ``config``: every value of the config but those that change nothing the search
  computes: ``output``, ``overwrite``, ``checkpoint_every``, ``select`` (applied when the
  result is written), ``device``, ``strict_base`` (a check) and ``budget`` (which may
  grow: the search then goes on further, as :func:`spsa_mix.minimize` allows; it may not
  shrink);
* ``inputs``: the identity of every file read, under the config key that names it
  (``experts[0]``, ``base``, ``model``, ``data.train``, ...): for each file of a folder,
  or the file itself, its size, its modification time (nanoseconds) and the SHA-256 of its
  first and last 64 KiB (a safetensors header, a zip's directory; the whole of a small
  file). Folders of more than :data:`MAX_LISTED` files (image folders) are recorded by
  their file count and one digest of every file's name, size and modification time.
  Paths are not compared, only what is there: a folder moved whole resumes, an expert put
  in another's place (the experts reordered, one replaced) does not;
* ``phase``: ``"search"``, then ``"write"`` once the search is done and the output is
  being written: a run stopped then resumes by writing again, into the output it began.

:func:`compare` names every difference (up to three) in one line.

Example
-------
>>> import tempfile
>>> from spsa_mix.merge.config import MergeConfig
>>> root = Path(tempfile.mkdtemp())
>>> for name in ("a", "b"):
...     _ = (root / f"{name}.safetensors").write_bytes(name.encode())
>>> experts = [root / "a.safetensors", root / "b.safetensors"]
>>> cfg = MergeConfig.from_dict({"experts": [str(p) for p in experts], "data": "t.jsonl", "model": "small-cnn"})
>>> old = fingerprint(cfg, experts)
>>> compare(old, fingerprint(cfg, experts[::-1]))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: experts[0] differs from the run's: ...content changed (now ...b.safetensors); experts[1] differs ...
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spsa_mix.io import write_json

if TYPE_CHECKING:
    from spsa_mix.merge.config import MergeConfig

__all__ = ["fingerprint", "compare", "differences", "identity", "record_path", "read_record", "write_record",
           "check_resume", "IGNORED", "MAX_LISTED", "FORMAT"]

FORMAT = "spsa_mix.merge.fingerprint"
IGNORED = ("output", "overwrite", "checkpoint_every", "select", "device", "budget", "strict_base")
MAX_LISTED = 256  # files of a folder recorded one by one; beyond, one digest of them all
_EDGE = 64 * 1024  # bytes hashed at each end of a file
_SHOWN = 3  # differences named in one message


def record_path(cfg: MergeConfig) -> Path:
    """``<output>.fingerprint.json``, beside the run's state.

    >>> from spsa_mix.merge.config import MergeConfig
    >>> record_path(MergeConfig.from_dict({"experts": ["a", "b"], "data": "t.jsonl", "output": "out/m"})).as_posix()
    'out/m.fingerprint.json'
    """
    out = Path(cfg.output)
    return out.with_name(out.name + ".fingerprint.json")


def _edges(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(_EDGE))
        if size > 2 * _EDGE:
            f.seek(size - _EDGE)
        h.update(f.read(_EDGE))
    return h.hexdigest()[:32]


def _file(path: Path, hashed: bool = True) -> list[Any]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns] + ([_edges(path, st.st_size)] if hashed else [])


def identity(path: Path) -> dict[str, Any]:
    """What :func:`fingerprint` records of one input: ``{"files": {name: [size, mtime_ns,
    sha256 of the ends]}}`` (a file: under the name ``"."``), or for a folder of more than
    :data:`MAX_LISTED` files ``{"count": n, "digest": ...}``."""
    if not path.is_dir():
        return {"files": {".": _file(path)}}
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    if len(files) <= MAX_LISTED:
        return {"files": {p.relative_to(path).as_posix(): _file(p) for p in files}}
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.relative_to(path).as_posix()}\0{_file(p, hashed=False)}\n".encode())
    return {"count": len(files), "digest": h.hexdigest()[:32]}


def fingerprint(cfg: MergeConfig, experts: Iterable[Path]) -> dict[str, Any]:
    """The config's values and its inputs' identities (see the module docstring)."""
    from spsa_mix.merge.checks import merge_inputs

    values = cfg.to_dict()
    inputs = merge_inputs(cfg, experts)
    named = {label for label, _ in inputs}
    config: dict[str, Any] = {k: v for k, v in values.items() if k not in IGNORED and k != "experts"
                              and k not in named}
    config["data"] = {k: v for k, v in values["data"].items() if f"data.{k}" not in named}
    config["experts"] = len(list(values["experts"]))  # their paths may change; what they hold may not
    return {"format": FORMAT, "config": config, "budget": cfg.budget,
            "inputs": {label: {"path": os.path.abspath(p), **identity(p)} for label, p in inputs}}


def _describe_files(old: dict[str, Any], new: dict[str, Any]) -> str:
    if "files" not in old or "files" not in new:
        return f"{old.get('count', len(old.get('files', {})))} files, now {new.get('count', len(new.get('files', {})))}"
    parts = []
    for name in sorted(set(old["files"]) | set(new["files"])):
        a, b = old["files"].get(name), new["files"].get(name)
        if a == b:
            continue
        shown = "" if name == "." else f"{name}: "
        if a is None or b is None:
            parts.append(f"{shown}{'added' if a is None else 'removed'}")
            continue
        what = [f"size {a[0]} -> {b[0]}"] if a[0] != b[0] else []
        what += ["modified"] if a[1] != b[1] else []
        what += ["content changed"] if a[2:] != b[2:] else []
        parts.append(f"{shown}{', '.join(what)}")
    return "; ".join(parts[:_SHOWN])


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Each way ``new`` differs from ``old`` (two :func:`fingerprint` results), in words."""
    out: list[str] = []

    def values(a: dict[str, Any], b: dict[str, Any], prefix: str) -> None:
        for key in sorted(set(a) | set(b)):
            x, y = a.get(key, "<not set>"), b.get(key, "<not set>")
            if isinstance(x, dict) and isinstance(y, dict) and key == "data":
                values(x, y, "data.")
            elif x != y:
                name = "the number of experts" if key == "experts" else f"{prefix}{key}"
                out.append(f"{name} was {x!r}, now {y!r}")

    values(old.get("config", {}), new.get("config", {}), "")
    if new.get("budget", 0) < old.get("budget", 0):
        out.append(f"budget was {old['budget']}, now {new['budget']} (a resumed run may be given more, not less)")
    a_in, b_in = old.get("inputs", {}), new.get("inputs", {})
    for label in list(a_in) + [k for k in b_in if k not in a_in]:
        a, b = a_in.get(label), b_in.get(label)
        if a is None or b is None:
            out.append(f"{label} was {a['path'] if a else 'not given'!r}, now {b['path'] if b else 'not given'!r}")
            continue
        if {k: v for k, v in a.items() if k != "path"} != {k: v for k, v in b.items() if k != "path"}:
            where = f" (now {b['path']})" if a["path"] != b["path"] else ""
            out.append(f"{label} differs from the run's: {_describe_files(a, b)}{where}")
    return out


def compare(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming what differs (up to three things), if anything does."""
    found = differences(old, new)
    if found:
        more = f"; and {len(found) - _SHOWN} more" if len(found) > _SHOWN else ""
        raise ValueError("; ".join(found[:_SHOWN]) + more)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record at ``path``; ``None`` if there is none, or if it is not one (a file cut
    short by a kill while it was written cannot be: it is written atomically)."""
    import json

    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def write_record(path: Path, record: dict[str, Any], phase: str) -> None:
    """Write ``record`` with its ``phase`` (``"search"`` or ``"write"``), atomically."""
    write_json({**record, "phase": phase}, path)


def check_resume(cfg: MergeConfig, experts: Iterable[Path]) -> bool:
    """Before ``--resume`` reads anything: refuse (``ValueError``) a saved run whose
    record is missing or differs from ``cfg`` and its inputs; return whether that run had
    reached its write phase (its output, begun by it, may then be replaced). With no saved
    state there is nothing to check (the run starts over)."""
    state = cfg.state_path()
    if not state.exists():
        return False
    path = record_path(cfg)
    record = read_record(path)
    if record is None:
        raise ValueError(f"cannot resume the run saved in {str(state)!r}: there is no record of its config and "
                         f"inputs beside it ({str(path)!r}), so a change cannot be ruled out; start over without "
                         "--resume")
    try:
        compare(record, fingerprint(cfg, experts))
    except ValueError as e:
        raise ValueError(f"cannot resume the run saved in {str(state)!r}, which was started with other settings: "
                         f"{e}; resume with that run's config and inputs, or start over without --resume") from None
    return record.get("phase") == "write"
