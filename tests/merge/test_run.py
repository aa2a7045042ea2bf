"""spsa-mix merge end to end on the examples' experts (built small, in a temporary folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("transformers")
pytest.importorskip("peft")

from spsa_mix.cli import main  # noqa: E402
from spsa_mix.merge.demo import build_demo  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "merge"


@pytest.fixture(scope="module")
def demos(tmp_path_factory) -> Path:
    """The three examples' experts under <tmp>/build/<kind>, and their configs beside it."""
    root = tmp_path_factory.mktemp("merge")
    for kind in ("lm", "lora", "vision"):
        build_demo(kind, root / "build" / kind)
        shutil.copy(EXAMPLES / f"{kind}.yaml", root / f"{kind}.yaml")
    return root


def _merge(*argv: str) -> int:
    return main(["merge", *argv, "--no-progress"])


def test_a_causal_lm_merge_writes_a_model_transformers_loads(demos: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    assert _merge(str(demos / "lm.yaml"), "--budget", "21", "--output", str(demos / "out_lm")) == 0
    out = demos / "out_lm"
    printed = capsys.readouterr().out
    assert "| learned (spsa)" in printed and "next-token accuracy" in printed
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["method"] == "spsa" and recipe["budget"] == 21 and len(recipe["alpha"]) == 3
    assert abs(sum(recipe["alpha"]) - 1) < 1e-9 and recipe["learned"]["cost"] <= 21
    assert {"uniform", "best_single", "learned", "history", "versions", "config", "config_sha256"} <= set(recipe)
    assert recipe["written"] in ("learned", "uniform", "best single")
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert kit["merge_method"] == "linear"
    assert [m["parameters"]["weight"] for m in kit["models"]] == pytest.approx(recipe["alpha"])
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    experts = [AutoModelForCausalLM.from_pretrained(p, local_files_only=True) for p in recipe["experts"]]
    name = "model.layers.0.mlp.up_proj.weight"
    blended = sum(a * e.state_dict()[name] for a, e in zip(recipe["alpha"], experts, strict=True))
    np.testing.assert_allclose(model.state_dict()[name].numpy(), blended.numpy(), atol=1e-6)


def test_the_lm_experts_merge_for_two_text_targets_at_once(demos: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    shutil.copy(EXAMPLES / "lm_tasks.yaml", demos / "lm_tasks.yaml")
    assert _merge(str(demos / "lm_tasks.yaml"), "--budget", "21", "--output", str(demos / "out_tasks")) == 0
    printed = capsys.readouterr().out
    assert "| blend | mix_1_2 loss | mix_1_2 next-token accuracy (%) | mix_3_4 loss |" in printed
    recipe = json.loads((demos / "out_tasks" / "recipe.json").read_text())
    assert [(t["name"], t["loss"]) for t in recipe["tasks"]] == [("mix_1_2", "entropy"), ("mix_3_4", "causal-lm")]
    per = recipe["learned"]["tasks"]
    assert recipe["learned"]["loss"] == pytest.approx((per["mix_1_2"]["loss"] + per["mix_3_4"]["loss"]) / 2)
    AutoModelForCausalLM.from_pretrained(demos / "out_tasks", local_files_only=True)  # no heads: one model
    assert (demos / "out_tasks" / "mergekit.yaml").is_file()


def test_lora_adapters_merge_into_one_peft_adapter(demos: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert _merge(str(demos / "lora.yaml"), "--budget", "11", "--output", str(demos / "out_lora")) == 0
    out = demos / "out_lora"
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 12 and not (out / "mergekit.yaml").exists()  # three rank-4 adapters side by side
    base = AutoModelForCausalLM.from_pretrained(demos / "build/lora/base", local_files_only=True)
    PeftModel.from_pretrained(base, out)


def test_task_vectors_with_a_learned_scale(demos: Path) -> None:
    assert _merge(str(demos / "vision.yaml"), "--budget", "31", "--output", str(demos / "out_vision"),
                  "--select", "learned") == 0
    recipe = json.loads((demos / "out_vision" / "recipe.json").read_text())
    assert recipe["written"] == "learned" and recipe["scale"] > 0 and recipe["scale"] == recipe["learned"]["scale"]
    from safetensors.torch import load_file

    assert "fc.weight" in load_file(str(demos / "out_vision" / "model.safetensors"))


def test_the_flags_alone_are_a_config(demos: Path, tmp_path: Path) -> None:
    b = demos / "build" / "lm"
    assert _merge("--model", str(b / "base"), "--experts", str(b / "experts" / "domains_0_1"),
                  str(b / "experts" / "domains_2_3"), "--data", str(b / "target" / "train.jsonl"),
                  "--max-length", "32", "--budget", "7", "--output", str(tmp_path / "m")) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()


def _one_line_error(argv: list[str], cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-m", "spsa_mix", "merge", *argv, "--no-progress"], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr


def test_bad_input_exits_2_with_one_line_before_any_work(demos: Path, tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    bad = tmp_path / "bad.yaml"
    bad.write_text((demos / "lm.yaml").read_text().replace("budget: 200", "budgte: 200"))
    assert "did you mean 'budget'" in _one_line_error([str(bad)], repo)
    moved = tmp_path / "moved.yaml"
    moved.write_text((demos / "lm.yaml").read_text())  # its relative paths now point nowhere
    assert "matches no file or folder" in _one_line_error([str(moved)], repo)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    assert "exists and is not empty" in _one_line_error([str(demos / "lm.yaml"), "--output", str(taken)], repo)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is a file" in _one_line_error([str(demos / "lm.yaml"), "--output", str(blocker / "out")], repo)
    assert "buys no step" in _one_line_error([str(demos / "lm.yaml"), "--budget", "2"], repo)
    other = tmp_path / "other"
    shutil.copytree(demos / "build" / "lm" / "experts" / "domains_0_1", other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["intermediate_size"] = cfg["intermediate_size"] * 2
    (other / "config.json").write_text(json.dumps(cfg))
    msg = _one_line_error([str(demos / "lm.yaml"), "--experts", str(demos / "build/lm/experts/domains_2_3"),
                           str(other), "--output", str(tmp_path / "o")], repo)
    assert "intermediate_size" in msg


def test_a_killed_merge_resumes_to_the_uninterrupted_weights_bit_for_bit(demos: Path, tmp_path: Path) -> None:
    import os
    import signal
    import time

    from safetensors.torch import load_file

    repo = Path(__file__).resolve().parents[2]
    common = [str(demos / "lm.yaml"), "--budget", "61", "--checkpoint-every", "2", "--select", "learned",
              "--no-progress"]
    assert _merge(*common[:-1], "--output", str(tmp_path / "whole")) == 0
    out = tmp_path / "killed"
    state = tmp_path / "killed.state"
    proc = subprocess.Popen([sys.executable, "-m", "spsa_mix", "merge", *common, "--output", str(out)], cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(state.read_text())["run"]["nit"] >= 4:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert state.exists() and not out.exists()  # killed mid-run: a state, no half-written model
    assert _merge(*common[:-1], "--output", str(out), "--resume") == 0
    whole, resumed = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert whole.keys() == resumed.keys() and all(whole[k].equal(resumed[k]) for k in whole)
    a, b = (json.loads((p / "recipe.json").read_text()) for p in (tmp_path / "whole", out))
    assert a["alpha"] == b["alpha"] and a["history"] == b["history"] and not state.exists()


def test_resume_without_a_state_starts_and_says_so(demos: Path, tmp_path: Path, capsys) -> None:
    assert _merge(str(demos / "lm.yaml"), "--budget", "5", "--output", str(tmp_path / "m"), "--resume") == 0
    assert "no saved state" in capsys.readouterr().err
