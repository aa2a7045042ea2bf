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
CIFAR = ROOT / "benchmarks" / "glue_cifar10.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _script(*args: str, script: Path = SCRIPT, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **env}  # no virtual environment active
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=clean, timeout=60)


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
        if mode != "digits":  # the recorded runs: GLUE's IID target and cross-entropy, not the built-in default's
            assert cfg.target_concentration is None and cfg.alpha_loss is None


@pytest.mark.parametrize(("mode", "arch", "seeds"), [("small-cnn", "small-cnn", (0, 1, 2)), ("resnet20", "resnet20", (0,))])
def test_the_cifar_script_runs_the_papers_protocol(mode, arch, seeds):
    done = _script(mode, script=CIFAR, DRY_RUN="1", PYTHON=sys.executable)
    assert done.returncode == 0, done.stderr
    (line,) = done.stdout.splitlines()
    argv = shlex.split(line)[3:]
    cfg = config_from_args(build_parser(argv).parse_args(argv))
    assert (cfg.dataset, cfg.arch, cfg.seeds, cfg.k, cfg.dirichlet_alpha) == ("cifar10-jpeg", arch, seeds, 10, 0.5)
    assert cfg.target_concentration is None and cfg.alpha_loss is None and cfg.device == "cpu"
    bad = _script("tpu", script=CIFAR, DRY_RUN="1")
    assert bad.returncode == 2 and "usage:" in bad.stderr
    missing = _script(mode, script=CIFAR, PYTHON="/nonexistent/python")
    assert missing.returncode == 2 and "cannot import spsa_mix" in missing.stderr


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
