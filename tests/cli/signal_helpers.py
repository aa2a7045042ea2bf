"""A command interrupted by a real SIGINT, as a user's Ctrl-C, once it has saved something."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def default_sigint() -> None:
    """``preexec_fn`` for a child that must receive SIGINT as a user's Ctrl-C.

    A test run started in the background by a non-interactive shell (``cmd &`` in a CI
    script) ignores SIGINT, children inherit that, and a Python started with SIGINT ignored
    installs no ``KeyboardInterrupt`` handler: the signal would do nothing.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_once_saved(argv: list[str], output: Path, key: str, *, what: str, deadline_s: float = 120,
                         settle: Callable[[list[Any]], float] | None = None) -> tuple[int, str, int]:
    """Run ``python -m spsa_mix *argv``; as soon as ``output`` (JSON, replaced atomically)
    holds one item under ``key``, wait ``settle(items)`` seconds if given, send SIGINT and
    wait for the command to exit. Returns its exit status, its stderr and the number of items
    seen before the signal. ``deadline_s`` guards against a hang; it is no timing assertion.
    """
    if os.name != "posix":
        pytest.skip("SIGINT to a subprocess needs POSIX")
    proc = subprocess.Popen([sys.executable, "-m", "spsa_mix", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + deadline_s
        seen = 0
        while time.monotonic() < deadline and proc.poll() is None and seen == 0:
            if output.is_file():
                items = json.loads(output.read_text())[key]
                seen = len(items)
                if seen and settle is not None:
                    time.sleep(settle(items))
            time.sleep(0.05)
        assert proc.poll() is None and seen >= 1, f"{what} ended or wrote nothing before the signal"
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{what} went on after SIGINT")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err, seen


def kill_once_saved(argv: list[str], state: Path, steps: int, *, deadline_s: float = 240) -> None:
    """Run ``python -m spsa_mix *argv`` and SIGKILL it as soon as the run's ``state`` file
    (:mod:`spsa_mix.core.checkpoint`) holds ``steps`` steps, as a crash or a power cut
    would; wait for it. ``deadline_s`` guards against a hang; it is no timing assertion."""
    if os.name != "posix":
        pytest.skip("SIGKILL to a subprocess needs POSIX")
    proc = subprocess.Popen([sys.executable, "-m", "spsa_mix", *argv], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads(state.read_text())["run"]["nit"] >= steps:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
