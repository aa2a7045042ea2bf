"""Hugging Face directories as experts and base: equal to hand-made blends, tied weights, task
vectors, bf16 stacks, saving and reloading with transformers, and every bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import spsa_mix
from spsa_mix.blend import BlendedObjective, evaluate, evaluate_blend
from spsa_mix.blend.losses import CausalLM
from spsa_mix.core.domain import Domain

from .hf_helpers import llama_config, lm_batch, logits, save_family, transformers

POINTS = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.1, 0.8, 0.1]])


def hand_blend(models, coeffs) -> dict[str, torch.Tensor]:
    """sum_r c_r theta_r in float64, every tensor of the state dict."""
    states = [m.state_dict() for m in models]
    return {n: sum(float(c) * s[n].double() for c, s in zip(coeffs, states, strict=True)) for n in states[0]}


def loss_of(model_cls, config, state, batch) -> float:
    net = model_cls(config).eval()
    net.load_state_dict({n: t.float() for n, t in state.items()})
    return float(CausalLM()(logits(net, batch), batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)))


# ---------------------------------------------------------------------- convex blends
def test_from_pretrained_equals_a_hand_made_blend_and_the_module_objective(llama_family):
    fam, batch = llama_family, lm_batch()
    obj = BlendedObjective.from_pretrained(fam.experts, data=batch, device="cpu")
    assert obj.k == 3 and obj.shape == (3,) and obj.loss_fn.name == "causal-lm" and obj.dtype == torch.float32
    losses = obj(POINTS)
    expected = [loss_of(transformers.LlamaForCausalLM, fam.base_model.config, hand_blend(fam.expert_models, a), batch)
                for a in POINTS]
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    from_modules = BlendedObjective(fam.base_model, fam.expert_models, loss_fn="causal-lm", data=batch, device="cpu")
    np.testing.assert_allclose(from_modules(POINTS), losses, rtol=1e-6)


def test_dict_batches_with_labels_score_the_labels_and_never_pass_them_to_the_model(llama_family):
    seen = []

    def loss(outputs, targets):
        seen.append(outputs.loss)  # a model given labels computes its own loss
        return CausalLM()(outputs, targets)

    plain, labelled = lm_batch(), lm_batch(labels=True)
    a = BlendedObjective.from_pretrained(llama_family.experts, data=plain, device="cpu")(POINTS)
    b = BlendedObjective.from_pretrained(llama_family.experts, data=[labelled], loss=loss, device="cpu")(POINTS)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert seen and all(s is None for s in seen)


def test_the_entropy_objective_and_evaluation_on_dict_batches(llama_family):
    batch = lm_batch()  # no labels: entropy over the real tokens only
    obj = BlendedObjective.from_pretrained(llama_family.experts, data=batch, loss="entropy", device="cpu")
    alpha = POINTS[0]
    logp = torch.log_softmax(logits(obj.blended_model(alpha), batch).double(), dim=-1)
    h = -(logp.exp() * logp).sum(-1)  # (B, T)
    mask = batch["attention_mask"].bool()
    assert obj(alpha) == pytest.approx(float(h[mask].mean()), rel=1e-5)
    lm = BlendedObjective.from_pretrained(llama_family.experts, device="cpu")
    data = [lm_batch(1), lm_batch(2, labels=True)]
    got = evaluate_blend(lm, alpha, data)
    want = evaluate(lm.blended_model(alpha), data, loss_fn=CausalLM())
    assert got["n"] == want["n"] == 6 and 0 <= got["accuracy"] <= 1
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-6) and got["accuracy"] == pytest.approx(want["accuracy"])


def test_tied_embeddings_stay_tied_in_the_blend_and_in_what_is_written(llama_family, tmp_path):
    obj = BlendedObjective.from_pretrained(llama_family.experts, data=lm_batch(), device="cpu")
    names = obj._stack.layout.names
    assert "model.embed_tokens.weight" in names and "lm_head.weight" not in names  # stacked once
    assert obj._model.lm_head.weight is obj._model.model.embed_tokens.weight
    alpha = POINTS[0]
    out = obj.save_pretrained(alpha, tmp_path / "merged")
    with safe_open(f"{out}/model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys
    loaded = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    blended = obj.blended_model(alpha)
    assert blended.lm_head.weight is blended.model.embed_tokens.weight
    batch = lm_batch()
    torch.testing.assert_close(logits(loaded, batch), logits(blended, batch), rtol=0, atol=0)
    target = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert float(CausalLM()(logits(loaded, batch), target)) == pytest.approx(obj(alpha), rel=1e-6)


def test_sharded_bin_and_data_parallel_checkpoints_read_the_same_weights(llama_family, tmp_path):
    fam = llama_family
    sharded, binary = tmp_path / "sharded", tmp_path / "bin"
    fam.expert_models[0].save_pretrained(sharded, max_shard_size="20KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 2
    binary.mkdir()
    shutil.copy(fam.experts[1] / "config.json", binary / "config.json")
    torch.save(fam.expert_models[1].state_dict(), binary / "pytorch_model.bin")  # both tied names stored
    batch = lm_batch()
    reference = BlendedObjective.from_pretrained(fam.experts, data=batch, device="cpu")(POINTS)
    mixed = BlendedObjective.from_pretrained([sharded, binary, fam.experts[2]], data=batch, device="cpu")(POINTS)
    np.testing.assert_array_equal(mixed, reference)
    pts = []
    for i, m in enumerate(fam.expert_models):  # saved from DataParallel: every name under "module."
        pts.append(tmp_path / f"dp{i}.pt")
        torch.save({f"module.{n}": t for n, t in m.state_dict().items()}, pts[-1])
    dp = BlendedObjective(fam.base_model, pts, loss_fn="causal-lm", data=batch, device="cpu")(POINTS)
    np.testing.assert_allclose(dp, reference, rtol=1e-6)


def test_layer_wise_blends_of_a_language_model_save_and_reload(llama_family, tmp_path):
    obj = BlendedObjective.from_pretrained(llama_family.experts, data=lm_batch(), device="cpu", granularity="layer")
    g = len(obj.groups)
    assert obj.shape == (g, 3) and "model.embed_tokens" in obj.groups and "lm_head" not in obj.groups
    alpha = np.random.default_rng(0).dirichlet(np.ones(3), size=g)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(obj.save_pretrained(alpha, tmp_path / "m"))
    batch = lm_batch()
    target = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    assert float(CausalLM()(logits(loaded, batch), target)) == pytest.approx(obj(alpha), rel=1e-6)


# ---------------------------------------------------------------------- task vectors
def test_task_vectors_scale_one_is_the_convex_blend_and_scale_two_extrapolates_by_the_formula(llama_family):
    fam, batch = llama_family, lm_batch()
    convex = BlendedObjective.from_pretrained(fam.experts, data=batch, device="cpu")
    one = BlendedObjective.from_pretrained(fam.experts, base=fam.base, space="task-vectors", data=batch, device="cpu")
    two = BlendedObjective.from_pretrained(fam.experts, base=fam.base, space="task-vectors", scale=2.0, data=batch,
                                           device="cpu", simplex_atol=None)
    alpha = POINTS[0]
    for name, t in convex.blended_state_dict(alpha).items():
        torch.testing.assert_close(one.blended_state_dict(alpha)[name], t, rtol=0, atol=1e-6)
    base = fam.base_model.state_dict()
    states = [m.state_dict() for m in fam.expert_models]
    for a in (alpha, np.array([0.7, -0.2, 0.9])):  # the identity holds off the simplex too
        got = two.blended_state_dict(a)
        for name, b in base.items():  # theta_b + s * sum_i alpha_i (theta_i - theta_b), in float64
            want = b.double() + 2.0 * sum(float(ai) * (s[name].double() - b.double()) for ai, s in zip(a, states, strict=True))
            torch.testing.assert_close(got[name].double(), want, rtol=0, atol=2e-6)
        coeffs = [2.0 * ai for ai in a] + [1.0 - 2.0 * float(np.sum(a))]
        expected = loss_of(transformers.LlamaForCausalLM, fam.base_model.config,
                           hand_blend([*fam.expert_models, fam.base_model], coeffs), batch)
        assert two(a) == pytest.approx(expected, rel=1e-5)


def test_a_learned_scale_is_a_coordinate_of_the_point_with_its_derivative(llama_family):
    fam, batch = llama_family, lm_batch()
    kw = dict(base=fam.base, space="task-vectors", data=batch, device="cpu", dtype=torch.float64)
    learned = BlendedObjective.from_pretrained(fam.experts, scale="learned", **kw)
    assert learned.shape == Domain((3,), positive=1, names=("scale",)) and learned.scale == "learned"
    alpha = POINTS[0]
    points = np.array([[*alpha, 1.0], [*alpha, 2.5]])
    fixed = [BlendedObjective.from_pretrained(fam.experts, scale=s, **kw)(alpha) for s in (1.0, 2.5)]
    np.testing.assert_allclose(learned(points), fixed, rtol=1e-12)
    x = points[1]
    value, grad = learned.value_and_grad(x)
    assert grad.shape == (4,) and value == pytest.approx(fixed[1], rel=1e-12)
    h = 1e-2  # transformers computes the rotary embedding in float32: a smaller step drowns in its rounding
    fd = (learned(x + [0, 0, 0, h]) - learned(x - [0, 0, 0, h])) / (2 * h)
    assert grad[3] == pytest.approx(fd, rel=2e-4)
    _, derivs = learned.jvp(x, np.eye(4))
    np.testing.assert_allclose(derivs, grad, rtol=1e-6)  # forward and reverse mode (float32 rotary)
    with pytest.raises(ValueError, match=r"the scale \(the last coordinate of points\) must be positive, but got -1.0"):
        learned(np.array([*alpha, -1.0]))
    with pytest.raises(ValueError, match=r"points must have shape \(4,\) .* \(scale='learned': the 3 weights, then the scale\)"):
        learned(alpha)
    layer = BlendedObjective.from_pretrained(fam.experts, scale="learned", granularity="layer", **kw)
    g = len(layer.groups)
    assert layer.shape == Domain((g, 3), positive=1, names=("scale",))  # one global scale
    assert np.isfinite(layer(layer.domain.center()))


# ---------------------------------------------------------------------- precision and memory
def test_bf16_experts_stay_bf16_and_are_blended_in_float32(tmp_path):
    fam = save_family(tmp_path, k=3, seed=1, dtype=torch.bfloat16)
    batch = lm_batch()
    obj = BlendedObjective.from_pretrained(fam.experts, data=batch, device="cpu", dtype=torch.float32)
    assert obj.stack_dtype == torch.bfloat16 and obj.memory()["stack"] == 3 * obj._stack.layout.size * 2
    alpha = np.array([0.3, 0.3, 0.4])
    reference = hand_blend(fam.expert_models, alpha)  # float64 from the bf16 values
    states = [m.state_dict() for m in fam.expert_models]
    worst_ours = worst_bf16 = 0.0
    for name, t in obj.blended_state_dict(alpha).items():
        assert t.dtype == torch.float32
        scale = float(reference[name].abs().max())
        worst_ours = max(worst_ours, float((t.double() - reference[name]).abs().max()) / scale)
        naive = sum(torch.tensor(a, dtype=torch.bfloat16) * s[name] for a, s in zip(alpha, states, strict=True))  # bf16 sums
        worst_bf16 = max(worst_bf16, float((naive.double() - reference[name]).abs().max()) / scale)
    assert worst_ours < 1e-6 and worst_bf16 > 1e-3  # float32 accumulation: 3 orders of magnitude better
    native = BlendedObjective.from_pretrained(fam.experts, data=batch, device="cpu")  # the stored dtype
    assert native.dtype == torch.bfloat16
    assert native(alpha) == pytest.approx(obj(alpha), abs=0.05)
    with safe_open(native.save_pretrained(alpha, tmp_path / "m") + "/model.safetensors", "pt") as f:
        assert f.get_slice("model.norm.weight").get_dtype() == "BF16"


# ---------------------------------------------------------------------- other heads
def test_sequence_classification_experts_with_a_kept_head(tmp_path):
    cls = transformers.LlamaForSequenceClassification
    fam = save_family(tmp_path, k=2, cls=cls, config=llama_config(num_labels=3, tie_word_embeddings=False))
    batch = lm_batch(n=4)
    batch["labels"] = torch.tensor([0, 2, 1, 2])
    obj = BlendedObjective.from_pretrained(fam.experts, data=batch, device="cpu", head="score", head_from=1)
    assert obj.loss_fn.name == "cross-entropy" and "score.weight" not in obj._stack.layout.names
    alpha = np.array([0.6, 0.4])
    loaded = transformers.AutoModelForSequenceClassification.from_pretrained(obj.save_pretrained(alpha, tmp_path / "m"))
    torch.testing.assert_close(loaded.score.weight, fam.expert_models[1].score.weight)
    torch.testing.assert_close(logits(loaded, batch), logits(obj.blended_model(alpha), batch))
    expected = torch.nn.functional.cross_entropy(logits(loaded, batch), batch["labels"])
    assert obj(alpha) == pytest.approx(float(expected), rel=1e-5)


# ---------------------------------------------------------------------- minimize end to end
@pytest.mark.parametrize("space", ["convex", "task-vectors"])
def test_minimize_runs_on_pretrained_experts(llama_family, space):
    extra = dict(base=llama_family.base, space=space, scale=1.5) if space == "task-vectors" else {}
    obj = BlendedObjective.from_pretrained(llama_family.experts, data=[lm_batch(0), lm_batch(1)], device="cpu",
                                           **extra)
    res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, maxiter=3, seed=0)
    assert res.x.shape == (3,) and abs(res.x.sum() - 1) < 1e-9 and np.isfinite(res.fun)


# ---------------------------------------------------------------------- bad input, before any weight is read
def test_experts_with_different_configs_name_the_expert_the_key_and_both_values(llama_family, tmp_path, no_weight_read):
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(llama_config(intermediate_size=48)).save_pretrained(tmp_path / "other")
    experts = [llama_family.experts[0], tmp_path / "other"]
    with pytest.raises(ValueError, match=r"experts\[1\] has a config that differs from experts\[0\]'s: "
                                         r"intermediate_size=48, but experts\[0\] has intermediate_size=64"):
        BlendedObjective.from_pretrained(experts, device="cpu")
    with pytest.raises(ValueError, match=r"base has a config that differs from experts\[0\]'s: intermediate_size=48"):
        BlendedObjective.from_pretrained(llama_family.experts, base=tmp_path / "other", space="task-vectors",
                                         device="cpu")


def test_a_tensor_of_another_shape_names_the_expert_the_tensor_and_both_shapes(llama_family, tmp_path, no_weight_read):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(llama_family.experts[1] / "config.json", bad / "config.json")
    state = {n: t.clone() for n, t in llama_family.expert_models[1].state_dict().items() if n != "lm_head.weight"}
    state["model.layers.1.mlp.up_proj.weight"] = torch.zeros(65, 32)
    save_file(state, bad / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"experts\[1\] does not match the architecture: tensor "
                                         r"'model.layers.1.mlp.up_proj.weight' has shape \(65, 32\), but the "
                                         r"architecture has \(64, 32\)"):
        BlendedObjective.from_pretrained([llama_family.experts[0], bad], device="cpu")


def test_task_vectors_and_lora_without_a_base_are_errors(llama_family):
    with pytest.raises(ValueError, match=r"space='task-vectors' needs base= \(the model the experts were fine-tuned from"):
        BlendedObjective.from_pretrained(llama_family.experts, space="task-vectors")
    with pytest.raises(ValueError, match=r"space='lora' needs base="):
        BlendedObjective.from_pretrained(llama_family.experts, space="lora")
    with pytest.raises(ValueError, match=r"scale=2.0 applies to space='task-vectors' and the task-vector methods"):
        BlendedObjective.from_pretrained(llama_family.experts, scale=2.0)
    with pytest.raises(ValueError, match=r"base= is used by space='task-vectors' and 'lora'; the convex blend has no base"):
        BlendedObjective.from_pretrained(llama_family.experts, base=llama_family.base)


def test_a_sharded_index_naming_a_missing_file_is_an_error(llama_family, tmp_path, no_weight_read):
    sharded = tmp_path / "sharded"
    llama_family.expert_models[0].save_pretrained(sharded, max_shard_size="20KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    missing = sorted(set(index["weight_map"].values()))[1]
    (sharded / missing).unlink()
    with pytest.raises(ValueError, match=rf"experts\[0\]: model.safetensors.index.json names the shard '{missing}', "
                                         r"which is not in '.*sharded'"):
        BlendedObjective.from_pretrained([sharded, llama_family.experts[1]], device="cpu")


def test_a_dtype_the_device_cannot_run_is_an_error(llama_family, monkeypatch, no_weight_read):
    softmax = torch.softmax

    def no_half(x, *args, **kwargs):
        if x.dtype == torch.float16:
            raise RuntimeError("\"softmax_lastdim_kernel_impl\" not implemented for 'Half'")
        return softmax(x, *args, **kwargs)

    monkeypatch.setattr(torch, "softmax", no_half)
    with pytest.raises(ValueError, match=r"dtype=torch.float16 cannot run on device='cpu' \(RuntimeError: "
                                         r"\"softmax_lastdim_kernel_impl\" not implemented for 'Half'\); pass "
                                         r"dtype=torch.float32"):
        BlendedObjective.from_pretrained(llama_family.experts, device="cpu", dtype=torch.float16)


def test_paths_that_are_not_model_directories_are_errors(llama_family, lora_family, tmp_path):
    with pytest.raises(ValueError, match=r"experts\[1\]: no such directory '.*nothere'"):
        BlendedObjective.from_pretrained([llama_family.experts[0], tmp_path / "nothere"])
    with pytest.raises(ValueError, match=r"experts\[0\]: '.*adapter0' is not a Hugging Face model directory "
                                         r"\(no config.json\) \(it holds a PEFT adapter: pass space='lora' and base=\)"):
        BlendedObjective.from_pretrained(lora_family.experts)
    with pytest.raises(ValueError, match=r"experts\[0\] must be a directory path, but got Linear"):
        BlendedObjective.from_pretrained([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])
    with pytest.raises(ValueError, match=r"head_from=None takes the head from the architecture's own weights, but "
                                         r"it has none for 'model.norm.weight'"):
        BlendedObjective.from_pretrained(llama_family.experts, head="model.norm", device="cpu")
    with pytest.raises(ValueError, match=r"head=\['lm_head'\] covers only one of the tied tensors 'lm_head.weight' "
                                         r"and 'model.embed_tokens.weight'"):
        BlendedObjective.from_pretrained(llama_family.experts, head="lm_head", head_from=0, device="cpu")
