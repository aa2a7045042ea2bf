"""Proof against mergekit itself: mergekit 0.1.5 run on the mergekit.yaml that spsa-mix merge exports
writes the tensors spsa-mix merge wrote (linear, task arithmetic, TIES, breadcrumbs, layer-wise
weights, LoRA, bf16 output); DARE through mergekit's own functions with each tensor's mask seed.
Skips when mergekit is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("transformers")
mergekit_merge = pytest.importorskip("mergekit.merge")

from spsa_mix.cli import main  # noqa: E402

BF16_EPS = 2.0**-8  # bf16's relative rounding: the tolerance on any tensor of magnitude <= 1


def _merge(demos: Path, name: str, *argv: str, kind: str = "lm") -> Path:
    out = demos / f"kit_{name}"
    assert main(["merge", str(demos / f"{kind}.yaml"), "--budget", "13", "--output", str(out), "--select", "learned",
                 "--baselines", "none", "--no-progress", *argv]) == 0
    return out


def _run_mergekit(out: Path, tmp: Path) -> Path:
    """mergekit's Python API on out/mergekit.yaml, run from the file's own folder (as a user
    runs ``cd out && mergekit-yaml mergekit.yaml mk``)."""
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    cfg = MergeConfiguration.model_validate(yaml.safe_load((out / "mergekit.yaml").read_text()))
    here = os.getcwd()
    os.chdir(out)
    try:
        mergekit_merge.run_merge(cfg, str(tmp / "mk"), options=MergeOptions(lora_merge_cache=str(tmp / "cache"),
                                                                            quiet=True, write_model_card=False))
    finally:
        os.chdir(here)
    return tmp / "mk"


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _assert_same(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> float:
    assert set(ours) == set(theirs)
    worst = 0.0
    for name, t in ours.items():
        assert t.dtype == theirs[name].dtype, name
        diff = float((t.float() - theirs[name].float()).abs().max())
        scale = max(1.0, float(theirs[name].float().abs().max()))
        assert diff <= BF16_EPS * scale, (name, diff)
        worst = max(worst, diff)
    return worst


@pytest.mark.parametrize("space", ["convex", "task-vectors", "ties", "breadcrumbs"])
def test_mergekit_on_the_exported_file_writes_the_same_tensors(demos: Path, tmp_path: Path, space: str) -> None:
    base = demos / "build" / "lm" / "base"
    extra = [] if space == "convex" else ["--space", space, "--base", str(base)]
    if space in ("ties", "breadcrumbs"):
        extra += ["--density", "0.6", "0.5", "0.7"]
    if space == "task-vectors":
        extra += ["--scale", "learned"]
    out = _merge(demos, space, *extra)
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert kit["merge_method"] == {"convex": "linear", "task-vectors": "task_arithmetic"}.get(space, space)
    assert all(not Path(m["model"]).is_absolute() for m in kit["models"])
    worst = _assert_same(_tensors(out), _tensors(_run_mergekit(out, tmp_path)))
    assert worst < 1e-5  # float32 experts: the same sums up to float32 rounding (0 for the methods)
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["mergekit"]["written"] and recipe["written"] == "learned"


def test_the_dtype_is_applied_to_the_written_model_and_stated(demos: Path, tmp_path: Path) -> None:
    out = _merge(demos, "bf16", "--space", "ties", "--base", str(demos / "build" / "lm" / "base"),
                 "--density", "0.5", "--dtype", "bfloat16")
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert kit["out_dtype"] == "bfloat16"
    ours = _tensors(out)
    assert {t.dtype for t in ours.values()} == {torch.bfloat16}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert _assert_same(ours, _tensors(_run_mergekit(out, tmp_path))) == 0.0


@pytest.mark.slow  # the mergekit-yaml command starts its own interpreter: 20 to 45 s
def test_the_mergekit_command_runs_from_the_output_folder(demos: Path, tmp_path: Path) -> None:
    out = _merge(demos, "cli", "--space", "ties", "--base", str(demos / "build" / "lm" / "base"), "--density", "0.5")
    cli = Path(sys.executable).with_name("mergekit-yaml")
    if not cli.exists():
        pytest.skip("the mergekit-yaml command is not beside this interpreter")
    done = subprocess.run([str(cli), "mergekit.yaml", str(tmp_path / "mk")], cwd=out, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert _assert_same(_tensors(out), _tensors(tmp_path / "mk")) < 1e-5


def test_layer_weights_are_exported_as_per_tensor_filters(demos: Path, tmp_path: Path) -> None:
    out = _merge(demos, "layer", "--granularity", "layer", "--budget", "30")
    recipe = json.loads((out / "recipe.json").read_text())
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    weight = kit["models"][0]["parameters"]["weight"]
    assert isinstance(weight, list) and {"filter", "value"} <= set(weight[0])
    assert len(recipe["space"]["groups"]) == len(recipe["alpha"]) > 1
    _assert_same(_tensors(out), _tensors(_run_mergekit(out, tmp_path)))


def test_lora_is_exported_as_base_plus_adapter_models(demos: Path, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = _merge(demos, "lora", kind="lora")
    theirs = AutoModelForCausalLM.from_pretrained(_run_mergekit(out, tmp_path), local_files_only=True).state_dict()
    base = AutoModelForCausalLM.from_pretrained(demos / "build" / "lora" / "base", local_files_only=True)
    ours = PeftModel.from_pretrained(base, out).merge_and_unload().state_dict()
    _assert_same({k: v.contiguous() for k, v in ours.items()}, theirs)


def test_dare_masks_are_mergekits_with_each_tensors_seed(demos: Path) -> None:
    from mergekit.merge_methods.api import merge_tensors
    from safetensors.torch import load_file

    from spsa_mix.blend.methods import tensor_generator

    out = _merge(demos, "dare", "--space", "dare_ties", "--base", str(demos / "build" / "lm" / "base"),
                 "--density", "0.5", "--seed", "3")
    recipe = json.loads((out / "recipe.json").read_text())
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    assert recipe["space"]["mask_seed"] == 3 and kit["merge_method"] == "dare_ties"
    assert "another draw" in recipe["mergekit"]["note"]
    base = load_file(str(demos / "build" / "lm" / "base" / "model.safetensors"))
    experts = [load_file(str(Path(p) / "model.safetensors")) for p in recipe["experts"]]
    params = {"weight": [m["parameters"]["weight"] for m in kit["models"]],
              "density": [m["parameters"]["density"] for m in kit["models"]], **kit["parameters"]}
    for name, tensor in _tensors(out).items():
        torch.manual_seed(tensor_generator(3, name).initial_seed())  # mergekit draws from torch's global generator
        ref = merge_tensors([base[name]] + [e[name] for e in experts], "dare_ties", parameters=params, base_index=0)
        assert torch.equal(tensor, ref), name


def test_what_mergekit_cannot_express_is_said_in_the_recipe(demos: Path) -> None:
    out = _merge(demos, "vision", kind="vision")
    recipe = json.loads((out / "recipe.json").read_text())
    assert not recipe["mergekit"]["written"] and "state dicts" in recipe["mergekit"]["reason"]
    assert not (out / "mergekit.yaml").exists()
