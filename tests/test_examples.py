"""Every script in examples/ runs as written and computes what its docstring says.

Each example is run once as a script (``python examples/<name>.py``, what a reader
does) and prints its results as ``key=value`` lines, which are checked here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_example(name: str) -> dict[str, str]:
    """Run ``examples/<name>`` from the repository root; its ``key=value`` lines."""
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=_env_importing_this_checkout())
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(re.findall(r"^([a-z0-9_]+)=(\S+)$", done.stdout, re.M))


def _env_importing_this_checkout() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def test_every_example_is_tested_here_and_named_in_the_readme():
    names = {p.name for p in EXAMPLES.glob("*.py")}
    assert names == {"quadratic_minimize.py", "ask_tell.py", "blend_experts.py", "distributed_blend.py"}
    readme = (ROOT / "README.md").read_text()
    assert all(f"`examples/{name}`" in readme for name in names)


def test_the_child_process_imports_this_checkout():
    done = subprocess.run([sys.executable, "-c", "import spsa_mix; print(spsa_mix.__file__)"], capture_output=True,
                          text=True, timeout=60, cwd=EXAMPLES, env=_env_importing_this_checkout())
    assert Path(done.stdout.strip()).resolve() == ROOT / "spsa_mix" / "__init__.py"


def test_quadratic_example_lands_near_the_known_minimiser():
    out = run_example("quadratic_minimize.py")
    assert out["success"] == "True"
    assert int(out["nfev"]) <= 4000  # its max_evals
    assert float(out["max_abs_error"]) < 0.01  # the docstring's promise; measured 0.0051
    assert float(out["fun"]) < 1e-3  # f* = 0; measured 1.0e-4


def test_ask_tell_example_finds_the_target_and_resumes_bit_for_bit():
    out = run_example("ask_tell.py")
    assert float(out["max_abs_error"]) < 0.002  # the docstring's promise; measured 0.00034
    assert out["resumed_bit_for_bit"] == "True"


def test_blend_example_learns_a_better_alpha_than_uniform_with_forward_passes_only():
    out = run_example("blend_experts.py")
    acc = {name: float(out[f"{name}_accuracy"]) for name in ["uniform", "spsa", "backprop"]}
    assert acc["spsa"] > acc["uniform"] + 0.2
    assert abs(acc["spsa"] - acc["backprop"]) < 0.05
    assert int(out["spsa_backward_passes"]) == 0  # forward passes only: two per step, one final
    assert int(out["spsa_forward_passes"]) == 2 * 150 + 1
    assert int(out["backprop_backward_passes"]) == 150  # the same number of steps
    experts = [float(out[f"expert{i}_accuracy"]) for i in range(4)]
    assert max(experts) == experts[0]  # the target domain is expert 0's classes, as the docstring says


def test_the_distributed_example_runs_under_torchrun_and_matches_one_process(tmp_path):
    one = run_example("distributed_blend.py")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(EXAMPLES / "distributed_blend.py"), "--output", str(tmp_path / "result.json")]
    env = {**_env_importing_this_checkout(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    two = dict(re.findall(r"^([a-z0-9_]+)=(\S+)$", done.stdout, re.M))  # rank 0 alone prints
    assert (one["world_size"], two["world_size"], two["data_ranks"]) == ("1", "2", "2")
    assert done.stdout.count("world_size=") == 1 and [p.name for p in tmp_path.iterdir()] == ["result.json"]
    # data parallel: the same steps to float32 rounding of the two shards' mean losses
    alpha1, alpha2 = (np.array(out["alpha"].split(","), dtype=float) for out in (one, two))
    assert np.abs(alpha1 - alpha2).max() < 1e-6  # measured 4e-9
    assert two["bytes_per_step"] == str(8 * (2 * 2 + 3))  # 2m losses, one weight, two checksum floats
    assert float(two["accuracy"]) > float(two["uniform_accuracy"]) + 0.3  # measured 0.795 against 0.29
