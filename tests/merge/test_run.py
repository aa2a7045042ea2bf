"""spsa-mix merge end to end on the examples' experts (built small, in a temporary folder)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("transformers")
pytest.importorskip("peft")

from spsa_mix.cli import main  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "merge"


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
    # spsa-mix eval --tasks: the written blend's per-task scores of recipe.json again
    capsys.readouterr()
    assert main(["eval", str(demos / "out_tasks"), "--tasks", str(demos / "lm_tasks.yaml"), "--output",
                 str(demos / "out_tasks_eval.json")]) == 0
    assert "| checkpoint | mix_1_2 loss | mix_1_2 next-token accuracy (%) |" in capsys.readouterr().out
    row = json.loads((demos / "out_tasks_eval.json").read_text())["rows"][0]
    written = recipe[{"best single": "best_single"}.get(recipe["written"], recipe["written"])]
    for name in ("mix_1_2", "mix_3_4"):
        assert row["tasks"][name]["loss"] == pytest.approx(written["tasks"][name]["loss"], rel=1e-4)
        assert row["tasks"][name]["accuracy"] == pytest.approx(written["tasks"][name]["accuracy"], rel=1e-4)
    assert row["loss"] == pytest.approx(written["loss"], rel=1e-4)


def test_lora_adapters_merge_into_one_peft_adapter(demos: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert _merge(str(demos / "lora.yaml"), "--budget", "11", "--output", str(demos / "out_lora")) == 0
    out = demos / "out_lora"
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 12  # three rank-4 adapters side by side
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())  # mergekit: base+adapter models (a full model)
    assert kit["merge_method"] == "linear" and all("+" in m["model"] for m in kit["models"])
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


def test_streamed_experts_merge_to_the_resident_weights_in_shards(demos: Path, tmp_path: Path, capsys) -> None:
    from safetensors.torch import load_file

    args = [str(demos / "lm.yaml"), "--budget", "9", "--select", "learned", "--validate-every", "100"]
    assert _merge(*args, "--output", str(tmp_path / "r"), "--memory", "resident") == 0
    assert _merge(*args, "--output", str(tmp_path / "s"), "--memory", "streamed", "--out-shard-size", "30KB") == 0
    err = capsys.readouterr().err
    assert "experts resident on cpu: memory='resident'" in err
    assert "experts streamed from their files (" in err and "blended module by module: memory='streamed'" in err
    resident, streamed = (json.loads((tmp_path / o / "recipe.json").read_text()) for o in ("r", "s"))
    assert resident["memory"]["mode"] == "resident" and streamed["memory"]["mode"] == "streamed"
    assert list(streamed["phases"]) == ["checks", "imports", "data", "experts", "references", "search", "final",
                                        "write", "total"]
    assert streamed["alpha"] == resident["alpha"]  # float32 experts: the same losses, bit for bit
    index = json.loads((tmp_path / "s" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3  # a 93 KB model in shards of at most 30 KB (but a larger tensor alone)
    streamed_state = {k: v for f in shards for k, v in load_file(tmp_path / "s" / f).items()}
    resident_state = load_file(tmp_path / "r" / "model.safetensors")
    assert streamed_state.keys() == resident_state.keys()
    assert all(torch.equal(streamed_state[k], resident_state[k]) for k in resident_state)


def test_streamed_experts_with_a_gradient_method_are_refused_before_any_work(demos: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    msg = _one_line_error([str(demos / "lm.yaml"), "--memory", "streamed", "--method", "backprop"], repo)
    assert "method 'backprop' differentiates through the blend, which needs the resident stack" in msg
    assert "max_memory must be a positive number of bytes" in _one_line_error(
        [str(demos / "lm.yaml"), "--max-memory", "lots"], repo)


def test_a_killed_merge_resumes_to_the_uninterrupted_weights_bit_for_bit(demos: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from tests.cli.signal_helpers import kill_once_saved

    common = [str(demos / "lm.yaml"), "--budget", "61", "--checkpoint-every", "2", "--select", "learned",
              "--no-progress"]
    assert _merge(*common[:-1], "--output", str(tmp_path / "whole")) == 0
    out = tmp_path / "killed"
    state = tmp_path / "killed.state"
    kill_once_saved(["merge", *common, "--output", str(out)], state, 4)
    assert state.exists() and not out.exists()  # killed mid-run: a state, no half-written model
    assert _merge(*common[:-1], "--output", str(out), "--resume") == 0
    whole, resumed = load_file(str(tmp_path / "whole" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert whole.keys() == resumed.keys() and all(whole[k].equal(resumed[k]) for k in whole)
    a, b = (json.loads((p / "recipe.json").read_text()) for p in (tmp_path / "whole", out))
    assert a["alpha"] == b["alpha"] and a["history"] == b["history"] and not state.exists()


def test_resume_without_a_state_starts_and_says_so(demos: Path, tmp_path: Path, capsys) -> None:
    assert _merge(str(demos / "lm.yaml"), "--budget", "5", "--output", str(tmp_path / "m"), "--resume") == 0
    assert "no saved state" in capsys.readouterr().err


def test_a_tiny_merge_runs_on_one_thread_and_logs_each_phase(demos: Path, tmp_path: Path, capsys) -> None:
    import torch

    before = torch.get_num_threads()
    assert _merge(str(demos / "vision.yaml"), "--budget", "11", "--output", str(tmp_path / "m")) == 0
    err = capsys.readouterr().err
    assert re.search(r"threads: 1 \(a forward is [\d.e+-]+ GFLOP, one thread per 1 GFLOP", err), err
    phases = ("checks", "imports", "data", "experts", "references", "search", "final", "write")
    for phase in phases:
        assert re.search(rf"^{phase}: \d+\.\d+ s", err, re.M), (phase, err)
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert recipe["threads"] == 1 and list(recipe["phases"]) == [*phases, "total"]
    assert all(v >= 0 for v in recipe["phases"].values())
    assert torch.get_num_threads() == before  # restored after the merge
    assert _merge(str(demos / "vision.yaml"), "--budget", "11", "--output", str(tmp_path / "two"), "--threads", "2") == 0
    assert "threads: 2 (set to 2)" in capsys.readouterr().err
    assert json.loads((tmp_path / "two" / "recipe.json").read_text())["threads"] == 2


def test_a_taken_output_is_refused_before_anything_heavy_is_imported(demos: Path, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "x").write_text("x")
    code = ("import sys\nfrom spsa_mix.cli import main\n"
            f"rc = main(['merge', {str(demos / 'lm.yaml')!r}, '--output', {str(taken)!r}, '--no-progress'])\n"
            "print(rc, sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert "exists and is not empty" in done.stderr
    assert done.stdout.split("\n")[0] == "2 []", done.stdout  # refused, and nothing heavy was imported for it
    code = ("import sys\nfrom spsa_mix.merge.config import load_config\nfrom spsa_mix.merge.run import plan_merge\n"
            f"plan_merge(load_config({str(demos / 'lm.yaml')!r}, {{'output': {str(tmp_path / 'new')!r}}}))\n"
            "print(sorted(m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]", (done.stdout, done.stderr)  # every check passes without them


def test_a_small_budget_keeps_the_search_and_says_which_point_and_why(demos: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "m"
    assert _merge(str(demos / "lm.yaml"), "--budget", "12", "--output", str(out)) == 0  # 5 steps, validate_every 10
    err = capsys.readouterr().err
    recipe = json.loads((out / "recipe.json").read_text())
    last = recipe["history"]["val_loss"][-1]
    assert last is not None  # the last iterate was validated, though step 5 is no multiple of 10
    kept = re.search(r"kept from the search: (the point after step 5 of 5|the start point) \(validation loss "
                     r"(\d\.\d{4})", err)
    assert kept, err
    assert (kept.group(1) == "the start point") == (last > recipe["learned"]["loss"])  # the better of the two
    assert float(kept.group(2)) == pytest.approx(min(last, recipe["learned"]["loss"]), abs=1e-4)
    assert re.search(r"^written: (learned|uniform|best single) \(", err, re.M), err
    assert recipe["selection"].split(":")[0] == recipe["written"]


def test_without_validation_the_choice_is_flagged_as_not_held_out(demos: Path, tmp_path: Path, capsys) -> None:
    b = demos / "build" / "lm"
    assert _merge("--model", str(b / "base"), "--experts", str(b / "experts" / "domains_0_1"),
                  str(b / "experts" / "domains_2_3"), "--data", str(b / "target" / "train.jsonl"),
                  "--max-length", "32", "--budget", "7", "--output", str(tmp_path / "m")) == 0
    captured = capsys.readouterr()
    assert "not held out" in captured.err
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert any("not held out" in w for w in recipe["warnings"])
    assert "not held out" in (tmp_path / "m" / "README.md").read_text()
    assert f"Wrote {tmp_path / 'm'}/: " in captured.out and "beside it" not in captured.out
    for name in ("model.safetensors", "config.json", "recipe.json", "README.md", "loss.png", "mergekit.yaml"):
        assert name in captured.out.splitlines()[-1], name


def test_the_recipe_states_the_budget_as_the_user_gave_it(demos: Path, tmp_path: Path) -> None:
    assert _merge(str(demos / "lm.yaml"), "--budget", "60", "--output", str(tmp_path / "m")) == 0
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert recipe["learned"]["message"].startswith("max_evals=60 reached (4 on the start candidates"), recipe["learned"]
    assert recipe["budget"] == 60 and recipe["learned"]["nfev"] <= 60


def test_a_merge_of_plain_state_dicts_can_be_rebuilt_and_has_a_model_card(demos: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from spsa_mix.merge import load_merged

    out = tmp_path / "v"
    assert _merge(str(demos / "vision.yaml"), "--budget", "31", "--output", str(out)) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["architecture"] == {"model": "small-cnn", "kwargs": {"num_classes": 10, "in_channels": 1,
                                                                       "image_size": 8}}
    model = load_merged(out)
    stored = load_file(str(out / "model.safetensors"))
    assert all(model.state_dict()[k].equal(v) for k, v in stored.items())
    card = (out / "README.md").read_text()
    for text in ("small-cnn", "task-vectors", "spsa", "load_merged", "spsa-mix merge", "noise.safetensors",
                 "base.safetensors", f"{recipe['alpha'][0]:.4f}", "| uniform |"):
        assert text in card, text


def test_a_hugging_face_model_directory_is_loaded_by_load_merged_too(demos: Path, tmp_path: Path) -> None:
    from spsa_mix.merge import load_merged

    assert _merge(str(demos / "lm.yaml"), "--budget", "7", "--output", str(tmp_path / "m")) == 0
    model = load_merged(tmp_path / "m")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert "AutoModelForCausalLM.from_pretrained" in (tmp_path / "m" / "README.md").read_text()


@pytest.mark.parametrize("method", ["backprop", "forward-grad"])
def test_the_gradient_methods_merge(demos: Path, tmp_path: Path, method: str) -> None:
    assert _merge(str(demos / "lm.yaml"), "--budget", "6", "--method", method, "--validate-every", "100",
                  "--output", str(tmp_path / "m")) == 0
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert recipe["config"]["method"] == method and recipe["memory"]["mode"] == "resident"


def test_a_search_stopped_by_a_nonfinite_loss_still_writes_the_best_blend(demos: Path, tmp_path: Path, capsys,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-finite loss mid-search (a blend far from the experts) keeps the reference scores
    and the search's last finite point: the merge warns, chooses among the finite blends and
    writes, instead of losing the run."""
    import spsa_mix
    from spsa_mix.core.result import Status

    real = spsa_mix.minimize

    def stopped(*args, **kwargs):
        res = real(*args, **kwargs)
        res.status, res.success = Status.NONFINITE, False
        res.message = "the loss was not finite at evaluation 7"
        return res

    monkeypatch.setattr(spsa_mix, "minimize", stopped)
    assert _merge(str(demos / "lm.yaml"), "--budget", "9", "--output", str(tmp_path / "m")) == 0
    err = capsys.readouterr().err
    assert "warning: the search stopped early on a loss that is not finite (the loss was not finite at evaluation 7)" \
        in err
    recipe = json.loads((tmp_path / "m" / "recipe.json").read_text())
    assert any("stopped early on a loss that is not finite" in w for w in recipe["warnings"])
    assert (tmp_path / "m" / "model.safetensors").is_file() and "stopped early" in (tmp_path / "m" / "README.md").read_text()
