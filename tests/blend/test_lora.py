"""LoRA adapters over one base: the low-rank blended forward equals the dense merge by hand and
PEFT after saving; what PEFT's own weighted combinations compute; every bad adapter."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import spsa_mix
from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.lora import LoRALinear
from spsa_mix.blend.losses import CausalLM

from .hf_helpers import llama_config, lm_batch, logits, make_adapter, transformers

peft = pytest.importorskip("peft")

ALPHA = np.array([0.2, 0.5, 0.3])
MODULES = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]


def factors(path):
    """{module: (A, B, scaling)} read with safetensors itself, PEFT's scaling computed by hand."""
    cfg = json.loads((path / "adapter_config.json").read_text())
    tensors = load_file(path / "adapter_model.safetensors")
    out = {}
    for m in MODULES:
        a, b = tensors[f"base_model.model.{m}.lora_A.weight"], tensors[f"base_model.model.{m}.lora_B.weight"]
        r = a.shape[0]
        out[m] = (a.double(), b.double(), cfg["lora_alpha"] / (math.sqrt(r) if cfg["use_rslora"] else r))
    return out


def dense_merge(family, weights, per_layer=None):
    """The base with W + sum_i w_i scaling_i B_i A_i in every adapted layer (float64, then float32)."""
    model = transformers.AutoModelForCausalLM.from_pretrained(family.base).eval()
    adapters = [factors(p) for p in family.experts]
    with torch.no_grad():
        for j, m in enumerate(MODULES):
            w = weights if per_layer is None else per_layer[j]
            layer = model.get_submodule(m)
            delta = sum(float(wi) * s * (b @ a) for wi, (a, b, s) in zip(w, (ad[m] for ad in adapters), strict=True))
            layer.weight.copy_((layer.weight.double() + delta).float())
    return model


def lm_loss(model, batch):
    target = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    return float(CausalLM()(logits(model, batch), target))


def test_the_low_rank_forward_equals_the_dense_merge_by_hand(lora_family):
    batch = lm_batch()
    obj = BlendedObjective.from_pretrained(lora_family.experts, base=lora_family.base, space="lora", data=batch,
                                           device="cpu")
    assert obj.space == "lora" and obj.shape == (3,) and obj.loss_fn.name == "causal-lm"
    layer = obj._model.get_submodule(MODULES[0])
    assert isinstance(layer, LoRALinear) and layer.lora_A.shape == (8, 32) and layer.lora_B.shape == (32, 8)
    assert obj._stack.weights.shape[0] == 3 and obj.num_blended == 4 * 8  # the per-rank-row weights only
    s = obj._stack.weights[:, obj._stack.layout.offsets()[f"{MODULES[0]}.lora_mix"][0]:][:, :8]
    torch.testing.assert_close(s[2, 6:], torch.full((2,), 3 / math.sqrt(2)))  # rsLoRA: alpha / sqrt(r)
    for weights in (ALPHA, np.array([1.0, 0.0, 0.0])):
        dense = dense_merge(lora_family, weights)
        assert obj(weights) == pytest.approx(lm_loss(dense, batch), rel=1e-6)
        torch.testing.assert_close(logits(obj.blended_model(weights), batch), logits(dense, batch),
                                   rtol=1e-5, atol=1e-5)
    box = np.array([1.4, -1.2, 0.5])  # LoraHub's parametrisation: any weights in [-1.5, 1.5]
    free = BlendedObjective.from_pretrained(lora_family.experts, base=lora_family.base, space="lora", data=batch,
                                            device="cpu", simplex_atol=None)
    assert free(box) == pytest.approx(lm_loss(dense_merge(lora_family, box), batch), rel=1e-6)


def test_the_saved_adapter_loads_in_peft_and_equals_peft_cat_combination(lora_family, tmp_path):
    batch = lm_batch()
    obj = BlendedObjective.from_pretrained(lora_family.experts, base=lora_family.base, space="lora", data=batch,
                                           device="cpu")
    path = obj.save_pretrained(ALPHA, tmp_path / "blend")
    cfg = json.loads((tmp_path / "blend" / "adapter_config.json").read_text())
    assert cfg["r"] == 8 and cfg["lora_alpha"] == 8 and not cfg["use_rslora"]  # rank sum(r_i), scaling 1
    base = transformers.AutoModelForCausalLM.from_pretrained(lora_family.base)
    loaded = peft.PeftModel.from_pretrained(base, path)
    torch.testing.assert_close(logits(loaded, batch), logits(obj.blended_model(ALPHA), batch), rtol=1e-5, atol=1e-5)
    assert lm_loss(loaded, batch) == pytest.approx(obj(ALPHA), rel=1e-6)
    # PEFT's own "cat" combination of the three adapters with the same weights: the same update
    model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(lora_family.base),
                                           lora_family.experts[0], adapter_name="a0")
    for i, p in enumerate(lora_family.experts[1:], start=1):
        model.load_adapter(p, adapter_name=f"a{i}")
    model.add_weighted_adapter(["a0", "a1", "a2"], ALPHA.tolist(), "cat", combination_type="cat")
    ours = load_file(tmp_path / "blend" / "adapter_model.safetensors")
    for m in MODULES:
        layer = model.base_model.model.get_submodule(m)
        torch.testing.assert_close(layer.lora_A["cat"].weight, ours[f"base_model.model.{m}.lora_A.weight"])
        torch.testing.assert_close(layer.lora_B["cat"].weight, ours[f"base_model.model.{m}.lora_B.weight"])


def test_layer_wise_lora_weights_save_and_reload_in_peft(lora_family, tmp_path):
    batch = lm_batch()
    obj = BlendedObjective.from_pretrained(lora_family.experts, base=lora_family.base, space="lora", data=batch,
                                           device="cpu", granularity="layer")
    assert obj.groups == MODULES and obj.shape == (4, 3)
    per_layer = np.random.default_rng(0).dirichlet(np.ones(3), size=4)
    assert obj(per_layer) == pytest.approx(lm_loss(dense_merge(lora_family, None, per_layer), batch), rel=1e-6)
    loaded = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(lora_family.base),
                                            obj.save_pretrained(per_layer, tmp_path / "blend"))
    assert lm_loss(loaded, batch) == pytest.approx(obj(per_layer), rel=1e-6)


def test_peft_linear_combination_is_not_linear_in_the_weights(lora_family):
    """PEFT's add_weighted_adapter(combination_type="linear") scales A_i and B_i by sqrt(w_i s_i)
    each and sums them: the update is (sum_i sqrt(w_i s_i) B_i)(sum_j sqrt(w_j s_j) A_j), cross
    terms included, not sum_i w_i s_i B_i A_i (it needs equal ranks: adapters 0 and 2 have r=2)."""
    model = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(lora_family.base),
                                           lora_family.experts[0], adapter_name="a0")
    model.load_adapter(lora_family.experts[2], adapter_name="a2")
    w = [0.3, 0.7]
    model.add_weighted_adapter(["a0", "a2"], w, "linear", combination_type="linear")
    ad = [factors(lora_family.experts[0]), factors(lora_family.experts[2])]
    layer = model.base_model.model.get_submodule(MODULES[0])
    got = layer.get_delta_weight("linear").double()
    (a0, b0, s0), (a2, b2, s2) = ad[0][MODULES[0]], ad[1][MODULES[0]]
    sqrt = [math.sqrt(w[0] * s0), math.sqrt(w[1] * s2)]
    with_cross_terms = (sqrt[0] * b0 + sqrt[1] * b2) @ (sqrt[0] * a0 + sqrt[1] * a2)
    linear = w[0] * s0 * b0 @ a0 + w[1] * s2 * b2 @ a2
    torch.testing.assert_close(got, with_cross_terms, rtol=1e-5, atol=1e-6)
    assert float((got - linear).norm() / linear.norm()) > 0.3  # far from the linear combination


def test_minimize_and_derivatives_on_lora(lora_family):
    kw = dict(base=lora_family.base, space="lora", device="cpu", dtype=torch.float64)
    fixed = BlendedObjective.from_pretrained(lora_family.experts, data=lm_batch(), **kw)
    value, grad = fixed.value_and_grad(ALPHA)
    _, derivs = fixed.jvp(ALPHA, np.eye(3))
    np.testing.assert_allclose(derivs, grad, rtol=1e-6)
    h = 1e-2
    fixed.simplex_atol = None  # the off-simplex probes of a finite difference
    fd = [(fixed(ALPHA + h * e) - fixed(ALPHA - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grad, fd, atol=3e-4)  # truncation O(h^2) and float32 rotary rounding
    obj = BlendedObjective.from_pretrained(lora_family.experts, data=[lm_batch(0), lm_batch(1)], **kw)
    res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, maxiter=3, seed=0)
    assert res.x.shape == (3,) and abs(res.x.sum() - 1) < 1e-9 and np.isfinite(res.fun)


# ---------------------------------------------------------------------- bad adapters, before any weight is read
def _edited(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_adapters_of_other_modules_are_an_error(lora_family, tmp_path, no_weight_read):
    with torch.no_grad():
        other = make_adapter(lora_family.base, tmp_path / "qk", seed=9, r=2, lora_alpha=4, targets=("q_proj", "k_proj"))
    with pytest.raises(ValueError, match=r"experts\[1\] \('.*qk'\) adapts other modules than experts\[0\]: it also "
                                         r"adapts \['model.layers.0.self_attn.k_proj', .*\] and lacks "
                                         r"\['model.layers.0.self_attn.v_proj', .*\]; all adapters must adapt the same"):
        BlendedObjective.from_pretrained([lora_family.experts[0], other], base=lora_family.base, space="lora",
                                         device="cpu")


def test_an_adapter_of_another_base_is_an_error(lora_family, tmp_path, no_weight_read):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(llama_config(hidden_size=48)).save_pretrained(tmp_path / "wide")
    wide = make_adapter(tmp_path / "wide", tmp_path / "wide_adapter", seed=3, r=2, lora_alpha=4)
    wide = _edited(wide, tmp_path / "renamed", base_model_name_or_path=str(lora_family.base))
    with pytest.raises(ValueError, match=r"experts\[1\] \('.*renamed'\): tensor 'base_model.model.model.layers.0.self_attn"
                                         r".q_proj.lora_A.weight' has shape \(2, 48\) and .* has shape \(48, 2\), but the "
                                         r"base's 'model.layers.0.self_attn.q_proj' has weight shape \(32, 32\): an "
                                         r"adapter trained on another base\?"):
        BlendedObjective.from_pretrained([lora_family.experts[0], wide], base=lora_family.base, space="lora",
                                         device="cpu")
    named = _edited(lora_family.experts[1], tmp_path / "named", base_model_name_or_path="org/another-model")
    with pytest.raises(ValueError, match=r"experts\[1\] \('.*named'\) was trained on "
                                         r"base_model_name_or_path='org/another-model', but base is '.*base': an adapter "
                                         r"of another base\? \(pass strict_base=False"):
        BlendedObjective.from_pretrained([lora_family.experts[0], named], base=lora_family.base, space="lora",
                                         device="cpu")


def test_a_copy_of_the_base_under_another_name_is_its_base(lora_family, tmp_path):
    copy = tmp_path / "my-local-copy"
    shutil.copytree(lora_family.base, copy)  # the adapters name the original's path
    obj = BlendedObjective.from_pretrained(lora_family.experts[:2], base=copy, space="lora", device="cpu")
    assert obj.k == 2
    moved = _edited(lora_family.experts[1], tmp_path / "moved", base_model_name_or_path="/nowhere/base-v2")
    with pytest.raises(ValueError, match=r"an adapter of another base\? \(pass strict_base=False, in spsa-mix merge "
                                         r"strict_base: false or --no-strict-base"):
        BlendedObjective.from_pretrained([lora_family.experts[0], moved], base=copy, space="lora", device="cpu")
    BlendedObjective.from_pretrained([lora_family.experts[0], moved], base=copy, space="lora", device="cpu",
                                     strict_base=False)


def test_unsupported_adapters_and_options_are_errors(lora_family, tmp_path, no_weight_read):
    kw = dict(base=lora_family.base, space="lora", device="cpu")
    dora = _edited(lora_family.experts[1], tmp_path / "dora", use_dora=True)
    with pytest.raises(ValueError, match=r"experts\[1\] \('.*dora'\) uses DoRA \(use_dora=True\), which the LoRA "
                                         r"blend does not support"):
        BlendedObjective.from_pretrained([lora_family.experts[0], dora], **kw)
    saved = _edited(lora_family.experts[1], tmp_path / "saved", modules_to_save=["lm_head"])
    with pytest.raises(ValueError, match=r"has modules_to_save=\['lm_head'\], which the LoRA blend does not support"):
        BlendedObjective.from_pretrained([lora_family.experts[0], saved], **kw)
    with pytest.raises(ValueError, match=r"experts\[0\]: '.*base' is not a PEFT adapter directory \(no "
                                         r"adapter_config.json\) \(it holds a full model"):
        BlendedObjective.from_pretrained([lora_family.base, lora_family.experts[0]], **kw)
    with pytest.raises(ValueError, match=r"head= does not apply to space='lora'"):
        BlendedObjective.from_pretrained(lora_family.experts, head="lm_head", **kw)
    with pytest.raises(ValueError, match=r"stack_dtype does not apply to space='lora'"):
        BlendedObjective.from_pretrained(lora_family.experts, stack_dtype=torch.bfloat16, **kw)
