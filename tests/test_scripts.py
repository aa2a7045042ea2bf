"""The benchmark scripts run without an activated virtual environment."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from spsa_mix.cli import build_parser
from spsa_mix.cli.experiment import config_from_args

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "glue_fashion_mnist.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _script(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}  # no virtual environment active
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=clean, timeout=60)


@pytest.mark.parametrize(("mode", "commands"), [("cpu", 1), ("gpu", 2), ("digits", 1)])
def test_the_script_runs_python_m_spsa_mix_with_valid_options(mode, commands):
    done = _script(mode, DRY_RUN="1", PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == commands
    for line in lines:
        words = shlex.split(line)
        start = words.index(sys.executable)
        assert words[start + 1: start + 4] == ["-m", "spsa_mix", "experiment"], line
        argv = words[start + 3:]
        cfg = config_from_args(build_parser(argv).parse_args(argv))  # every option parses into a valid config
        assert cfg.dataset == ("digits" if mode == "digits" else "fashion-mnist")


def test_without_python_set_it_finds_the_repositorys_venv_or_python3():
    done = _script("cpu", DRY_RUN="1")
    assert done.returncode == 0, done.stderr
    expected = ".venv/bin/python" if (ROOT / ".venv" / "bin" / "python").is_file() else "python3"
    assert shlex.split(done.stdout)[0] == expected


def test_an_interpreter_without_the_package_is_a_clear_error():
    done = _script("cpu", PYTHON="/nonexistent/python")
    assert done.returncode == 2 and "cannot import spsa_mix" in done.stderr and "set PYTHON" in done.stderr
    bad = _script("tpu", DRY_RUN="1")
    assert bad.returncode == 2 and "usage:" in bad.stderr
