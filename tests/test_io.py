"""spsa_mix.io: atomic, durable writes with the usual file mode, and the one JSON serialiser."""

from __future__ import annotations

import enum
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from spsa_mix import io
from spsa_mix.core.result import OptimizeResult, Status
from spsa_mix.io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    dumps_json,
    to_jsonable,
    write_json,
)

from . import fs_helpers


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("write", [
    lambda p: atomic_write_text(p, "x"),
    lambda p: atomic_write_bytes(p, b"x"),
    lambda p: write_json({"x": 1}, p),
])
def test_files_get_the_mode_of_a_new_file(tmp_path, umask_022, write):
    path = tmp_path / "sub" / "out.json"
    assert write(path) == path
    assert _mode(path) == 0o644  # 0o666 & ~0o022, not mkstemp's 0o600


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_mode_follows_the_umask_and_replaces_an_existing_file(tmp_path):
    path = tmp_path / "r.txt"
    path.write_text("old")
    os.chmod(path, 0o600)
    old = os.umask(0o027)
    try:
        atomic_write_text(path, "new")
    finally:
        os.umask(old)
    assert path.read_text() == "new" and _mode(path) == 0o640


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_atomic_path_fixes_the_mode_of_a_writer_that_replaced_the_file(tmp_path, umask_022):
    path = tmp_path / "w.bin"
    with atomic_path(path) as tmp:
        os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)  # a writer with its own mode
        os.write(fd, b"weights")
        os.close(fd)
    assert path.read_bytes() == b"weights" and _mode(path) == 0o644


@pytest.mark.parametrize("write", [
    lambda p: atomic_write_text(p, "new"),
    lambda p: atomic_write_bytes(p, b"new"),
])
def test_file_is_fsynced_before_the_rename(tmp_path, monkeypatch, write):
    events: list[tuple[str, object]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "r.json"
    write(path)
    kinds = [e[0] for e in events]
    assert "replace" in kinds
    i = kinds.index("replace")
    assert ("fsync", events[i][1]) in events[:i]  # the file itself, before the rename
    assert path.read_text() == "new"


def test_atomic_path_fsyncs_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        tmp.write_bytes(b"w")
    assert events[:2] == ["fsync", "replace"]


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "r.json"
    path.write_text("old")

    def boom(*args):
        raise OSError(f"{fail_at} failed")

    monkeypatch.setattr(os, fail_at, boom)
    with pytest.raises(OSError, match=f"{fail_at} failed"):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_atomic_path_removes_the_temporary_when_the_writer_raises(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="writer failed"), atomic_path(path) as tmp:
        assert tmp.exists() and tmp.parent == tmp_path and tmp.name.endswith(".tmp.safetensors")
        tmp.write_bytes(b"half")
        raise RuntimeError("writer failed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]


def test_temporary_files_do_not_look_like_results(tmp_path, monkeypatch):
    seen = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(Path(a).name), real(a, b))[1])
    atomic_write_text(tmp_path / "r.json", "{}")
    (name,) = seen
    assert name.startswith(".r.") and name.endswith(".tmp")  # hidden, and not matched by *.json


def test_wrong_types_are_errors_that_name_them(tmp_path):
    with pytest.raises(TypeError, match="text must be a str, but got bytes"):
        atomic_write_text(tmp_path / "a", b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="data must be bytes, but got str"):
        atomic_write_bytes(tmp_path / "a", "x")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_text_is_utf8(tmp_path):
    p = atomic_write_text(tmp_path / "t.md", "± µs\n")
    assert p.read_bytes() == "± µs\n".encode()


# ---------------------------------------------------------------- serialiser
class _Color(enum.Enum):
    RED = "red"


def test_to_jsonable_covers_every_case():
    value = {
        1: (np.float64(1.5), np.int64(2), np.bool_(True), np.float32(0.25)),
        "arr": np.array([[1.0, np.nan], [np.inf, -np.inf]]),
        "ints": np.arange(3),
        "path": Path("a") / "b.json",
        "status": Status.BUDGET,
        "color": _Color.RED,
        "nan": math.nan,
        "nested": [{"x": np.float64("-inf")}, None, "s", 3, True],
    }
    assert to_jsonable(value) == {
        "1": [1.5, 2, True, 0.25],
        "arr": [[1.0, None], [None, None]],
        "ints": [0, 1, 2],
        "path": str(Path("a") / "b.json"),
        "status": "BUDGET",
        "color": "RED",
        "nan": None,
        "nested": [{"x": None}, None, "s", 3, True],
    }
    out = to_jsonable(value)
    assert type(out["1"][1]) is int and type(out["1"][2]) is bool and type(out["1"][0]) is float
    json.dumps(out, allow_nan=False)


def test_finite_or_none():  # the cases of the former spsa_mix.variance.bench.finite_or_none
    assert to_jsonable({"a": (np.float64(1.5), np.int64(2), np.bool_(True)), "b": [np.inf, -np.nan]}) == {
        "a": [1.5, 2, True], "b": [None, None]}


def test_optimize_result_to_json_uses_it():
    r = OptimizeResult(x=np.array([0.5, 0.5]), status=Status.BUDGET, fun=np.float64("nan"), state={"beta": 1},
                       history={"loss": np.array([1.0, np.inf])})
    assert r.to_json() == {"x": [0.5, 0.5], "status": "BUDGET", "fun": None, "history": {"loss": [1.0, None]}}


def test_dumps_json_is_strict_with_a_final_newline():
    assert dumps_json({"a": [1, 2]}) == '{\n "a": [\n  1,\n  2\n ]\n}\n'
    assert dumps_json({"a": np.nan}, indent=2) == '{\n  "a": null\n}\n'
    with pytest.raises(TypeError, match="not JSON serializable"):
        dumps_json({"a": object()})


def test_write_json_round_trips(tmp_path):
    p = write_json({"k": (2, 3), "v": np.float32(0.5)}, tmp_path / "d" / "r.json", indent=None)
    assert json.loads(p.read_text()) == {"k": [2, 3], "v": 0.5}
    assert p.read_text() == '{"k": [2, 3], "v": 0.5}\n'


def test_io_imports_only_the_standard_library_and_numpy():
    import ast
    import sys

    tree = ast.parse(Path(io.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module and node.level == 0}
    assert imported - set(sys.stdlib_module_names) == {"numpy"}  # a leaf: every layer may import it


# ---------------------------------------------------------------------- check_writable


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder this process cannot create files in: a chmod 555 folder, or (for root, who
    writes there anyway) /sys; skipped where neither refuses."""
    try:
        yield fs_helpers.read_only_folder(tmp_path)
    finally:
        (tmp_path / "ro").chmod(0o755)


def test_check_writable_accepts_new_files_and_creates_nothing(tmp_path):
    from spsa_mix.io import check_writable

    assert check_writable(tmp_path / "a" / "b" / "r.json", "--output") == tmp_path / "a" / "b" / "r.json"
    assert not (tmp_path / "a").exists()  # the folders are created by the writer, not the check
    (tmp_path / "old.json").write_text("{}")
    check_writable(tmp_path / "old.json", "--output")  # an existing file is replaced whole
    assert check_writable(tmp_path / "cache", "--cache-dir", folder=True) == tmp_path / "cache"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"]


def test_check_writable_says_which_option_which_path_and_why(tmp_path, read_only_folder):
    from spsa_mix.io import check_writable

    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    cases = [
        (tmp_path / "folder", False, f"--output {str(tmp_path / 'folder')!r} cannot be written: it is a folder"),
        (tmp_path / "file" / "sub" / "r.json", False,
         f"--output {str(tmp_path / 'file' / 'sub' / 'r.json')!r} cannot be written: "
         f"{str(tmp_path / 'file')!r} is a file, not a folder"),
        (tmp_path / "file", True, f"--output {str(tmp_path / 'file')!r} cannot be used: it is a file, not a folder"),
        (read_only_folder / "new" / "r.json", False,
         f"--output {str(read_only_folder / 'new' / 'r.json')!r} cannot be written: cannot create files in "
         f"{str(read_only_folder)!r} ("),
    ]
    for path, folder, message in cases:
        with pytest.raises(ValueError) as info:
            check_writable(path, "--output", folder=folder)
        assert str(info.value).startswith(message) and "\n" not in str(info.value), str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder", "ro"]


def test_check_outputs_refuses_two_names_for_one_file(tmp_path):
    from spsa_mix.io import check_outputs

    check_outputs({"--output": tmp_path / "r.json", "--csv": tmp_path / "r.csv", "--plot": None})
    with pytest.raises(ValueError, match=r"--csv and --output name the same file '.*r\.json'"):
        check_outputs({"--output": tmp_path / "r.json", "--csv": tmp_path / "." / "r.json"})


def test_a_directory_is_written_whole_with_the_usual_modes(tmp_path):
    import os
    import tempfile as tf

    from spsa_mix.io import atomic_directory

    old = os.umask(0o022)
    try:
        with atomic_directory(tmp_path / "model") as tmp:
            fd, name = tf.mkstemp(dir=tmp)  # a writer that makes a 0600 file
            os.close(fd)
            (tmp / "sub").mkdir()
            (tmp / "sub" / "b.txt").write_text("b")
    finally:
        os.umask(old)
    files = sorted(p for p in (tmp_path / "model").rglob("*") if p.is_file())
    assert len(files) == 2 and all(p.stat().st_mode & 0o777 == 0o644 for p in files)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    with pytest.raises(ValueError, match="exists and is not empty: pass overwrite=True"):
        with atomic_directory(tmp_path / "model"):
            pass
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "model", overwrite=True) as tmp:
        (tmp / "c.txt").write_text("c")
        raise RuntimeError("stop")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == sorted(["sub", Path(name).name])
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temporary folder left behind
