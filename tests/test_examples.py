"""Every script in examples/ runs to completion and prints what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"quadratic_minimize.py", "ask_tell.py", "blend_experts.py"}


@pytest.mark.parametrize("path", [p for p in EXAMPLES if p.name != "blend_experts.py"], ids=lambda p: p.name)
def test_example_runs(path):
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()


def test_blend_example_learns_a_better_alpha_than_uniform():
    path = next(p for p in EXAMPLES if p.name == "blend_experts.py")
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    acc = {line.split()[0]: float(line.split()[1]) for line in out.splitlines()[1:4]}
    assert acc["spsa"] > acc["uniform"] + 0.2
    assert abs(acc["spsa"] - acc["backprop"]) < 0.05
