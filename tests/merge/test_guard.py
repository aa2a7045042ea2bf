"""One merge at a time into one output, leftovers cleaned, failed writes in one line (spsa_mix/merge/guard.py)."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from spsa_mix.merge import guard


def test_the_lock_holds_the_pid_and_is_released(tmp_path: Path) -> None:
    out = tmp_path / "m"
    with guard.OutputLock.acquire(out) as lock:
        assert lock.path == tmp_path / "m.lock" and f"pid={os.getpid()}" in lock.path.read_text()
        guard.check_unlocked(out)  # this process's own lock
    assert not (tmp_path / "m.lock").exists()


def test_a_live_holder_is_refused_and_a_dead_one_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / "m.lock").write_text(f"pid={proc.pid}\nhost={socket.gethostname()}\nstarted=\n")
        with pytest.raises(ValueError, match=f"another merge into .* is running \\(process {proc.pid} on host"):
            guard.OutputLock.acquire(out)
    finally:
        proc.kill()
        proc.wait()
    with guard.OutputLock.acquire(out):  # its process is gone: a stale lock
        pass
    (tmp_path / "m.lock").write_text(f"pid={proc.pid}\nhost=another-host\n")
    with pytest.raises(ValueError, match="on host another-host"):  # cannot be checked from here: refused
        guard.check_unlocked(out)


def test_only_this_outputs_leftovers_are_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    mine = [".m.safetensors.ab12cd_9.tmp", ".m.safetensors.old.ab12cd_9", ".m.0123456789abcdef.tmp.safetensors",
            ".m.safetensors.0123456789abcdef.tmp"]
    theirs = [".m.safetensors.x.tmp", ".n.safetensors.ab12cd_9.tmp", "m.safetensors.state", ".m.0123456789abcdef.tmp",
              "m.safetensors.lock"]
    for name in mine + theirs:
        (tmp_path / name).write_text("x")
    removed = guard.clean_stale(out, [tmp_path / "m.safetensors.state"])
    assert sorted(p.name for p in removed) == sorted(mine)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_a_failed_write_is_one_line_with_the_way_to_resume(tmp_path: Path) -> None:
    state = tmp_path / "m.state"
    state.write_text("{}")
    with pytest.raises(guard.WriteFailed, match=r"I/O error on '.*model.safetensors': No space left on device \(the "
                                                r"disk is full\); the run's state is kept in .*--resume"):
        with guard.guarded(tmp_path / "m", [state], state):
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m" / "model.safetensors"))
    assert not (tmp_path / "m.lock").exists()
    with pytest.raises(KeyError):  # not a write: as it is
        with guard.guarded(tmp_path / "m", [state], state):
            raise KeyError("x")


@pytest.mark.parametrize(("env", "writes"), [({}, True), ({"WORLD_SIZE": "2", "RANK": "0"}, True),
                                             ({"WORLD_SIZE": "2", "RANK": "1"}, False)])
def test_under_torchrun_rank_zero_alone_takes_the_lock(monkeypatch: pytest.MonkeyPatch, env: dict, writes: bool) -> None:
    for key in ("WORLD_SIZE", "RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert guard.is_writer_rank() is writes


def test_an_output_reached_through_a_link_takes_the_same_lock(tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "disk")
    assert guard.lock_path(tmp_path / "link") == guard.lock_path(tmp_path / "disk") == tmp_path / "disk.lock"
