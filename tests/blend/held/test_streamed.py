"""Streamed experts: the probes' losses and the blended tensors equal the resident stack's,
for dense blends, task vectors and LoRA, in float32, bf16 and fp16; the rows are mapped,
not held; the memory of a step is bounded by the formula, not by K or P."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from spsa_mix.blend import BlendedObjective, evaluate_blend
from spsa_mix.blend.held.memory import memory_estimate
from spsa_mix.blend.held.streamed import STREAM_CHUNK, blend_rows, stream_experts

from ..blend_helpers import TinyNet, make_tiny_experts, memory_tools, tiny_batch
from ..hf_helpers import llama_config, lm_batch, make_adapter, save_family

TOL = {torch.float32: 1e-6, torch.bfloat16: 2e-3, torch.float16: 2e-3}  # relative, on a loss near 4


@pytest.fixture(scope="module", params=[torch.float32, torch.bfloat16, torch.float16], ids=["fp32", "bf16", "fp16"])
def sharded(request, tmp_path_factory):
    """A base and three experts in ``dtype``, each in several safetensors shards."""
    dtype = request.param
    family = save_family(tmp_path_factory.mktemp(f"sharded-{dtype}"), k=3, dtype=dtype, max_shard_size="20KB")
    assert (family.experts[0] / "model.safetensors.index.json").is_file()
    return dtype, family


def _pair(**kw):
    return (BlendedObjective.from_pretrained(memory="resident", device="cpu", **kw),
            BlendedObjective.from_pretrained(memory="streamed", device="cpu", **kw))


def _close(a: np.ndarray, b: np.ndarray, dtype: torch.dtype) -> None:
    np.testing.assert_allclose(b, a, rtol=TOL[dtype], atol=0)


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_dense_probes_equal_the_resident_ones(sharded, granularity):
    dtype, family = sharded
    resident, streamed = _pair(experts=family.experts, data=lm_batch(), granularity=granularity)
    assert streamed.memory_mode == "streamed" and resident.memory_mode == "resident"
    assert streamed.dtype == resident.dtype == dtype
    rng = np.random.default_rng(0)
    points = rng.dirichlet(np.ones(3), size=(5, *streamed.shape[:-1]))  # five probes: turns of two
    _close(resident(points), streamed(points), dtype)
    if dtype == torch.float32:  # the same sums in the same precision: the same numbers
        np.testing.assert_array_equal(resident(points), streamed(points))


def test_task_vectors_with_a_learned_scale_equal_the_resident_ones(sharded):
    dtype, family = sharded
    resident, streamed = _pair(experts=family.experts, base=family.base, space="task-vectors", scale="learned",
                               data=lm_batch())
    rng = np.random.default_rng(1)
    points = np.concatenate([rng.dirichlet(np.ones(3), size=4), [[0.5], [1.0], [1.5], [2.0]]], axis=1)
    _close(resident(points), streamed(points), dtype)


def test_blended_tensors_and_the_save_equal_the_resident_ones(sharded, tmp_path):
    dtype, family = sharded
    resident, streamed = _pair(experts=family.experts, base=family.base, space="task-vectors", scale=1.5,
                               data=lm_batch())
    alpha = np.array([0.2, 0.5, 0.3])
    a, b = resident.blended_state_dict(alpha), streamed.blended_state_dict(alpha)
    assert list(a) == list(b)
    eps, eps32 = torch.finfo(dtype).eps, torch.finfo(torch.float32).eps
    coeffs = np.concatenate([1.5 * alpha, [1 - 1.5 * alpha.sum()]])
    states = [m.state_dict() for m in [*family.expert_models, family.base_model]]
    for name in a:  # float32 sums of the same rows in another order, rounded: one unit in the last place
        terms = float(np.abs(coeffs).sum()) * max(float(state[name].abs().max()) for state in states)
        diff = (a[name].double() - b[name].double()).abs()
        bound = eps * torch.maximum(a[name].double().abs(), b[name].double().abs()) + 8 * eps32 * terms
        assert bool((diff <= bound).all()), name
    from safetensors.torch import load_file

    streamed.save_pretrained(alpha, tmp_path / "s", max_shard_size="30KB")
    saved = {}
    for f in sorted((tmp_path / "s").glob("*.safetensors")):
        saved.update(load_file(f))
    assert set(saved) == set(b) - {"lm_head.weight"}  # tied: written once
    assert all(torch.equal(saved[n], b[n]) for n in saved)


def test_evaluation_of_the_experts_equals_the_resident_one(sharded):
    dtype, family = sharded
    resident, streamed = _pair(experts=family.experts)
    data = [lm_batch(seed) for seed in range(2)]
    for r, s in zip(evaluate_blend(resident, np.eye(3), data), evaluate_blend(streamed, np.eye(3), data), strict=True):
        _close(np.array([r["loss"]]), np.array([s["loss"]]), dtype)
        assert r["n"] == s["n"]


def test_lora_with_the_base_mapped_equals_the_resident_one(tmp_path):
    pytest.importorskip("peft")
    family = save_family(tmp_path, k=0)
    adapters = [make_adapter(family.base, tmp_path / f"a{i}", seed=i + 1, r=2, lora_alpha=4) for i in range(3)]
    resident, streamed = _pair(experts=adapters, base=family.base, space="lora", data=lm_batch())
    mem = streamed.memory()
    assert mem["mapped"] > 0 and mem["constants"] < resident.memory()["constants"]  # the base is not held
    points = np.random.default_rng(2).dirichlet(np.ones(3), size=3)
    np.testing.assert_array_equal(resident(points), streamed(points))


def test_modules_and_state_dicts_are_streamed_without_a_copy():
    experts = make_tiny_experts(3)
    x, y = tiny_batch()
    resident = BlendedObjective(TinyNet(), experts, data=(x, y), device="cpu", memory="resident")
    streamed = BlendedObjective(TinyNet(), experts, data=(x, y), device="cpu", memory="streamed")
    rows = streamed._stack.rows["body.weight"]
    assert [r.data_ptr() for r in rows] == [e.body.weight.data_ptr() for e in experts]
    points = np.random.default_rng(3).dirichlet(np.ones(3), size=4)
    np.testing.assert_allclose(streamed(points), resident(points), rtol=1e-6)
    assert streamed.memory() == {"stack": 0, "blended": 0, "constants": 8,  # num_batches_tracked
                                 "mapped": 3 * sum(t.numel() * 4 for n, t in experts[0].state_dict().items()
                                                   if t.is_floating_point())}


def test_blend_rows_is_the_float64_blend_rounded_once():
    gen = torch.Generator().manual_seed(0)
    rows64 = [torch.randn(3, 1000, generator=gen, dtype=torch.float64) for _ in range(4)]
    coeffs = torch.rand(3, 4, generator=gen)
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        rows = [r.to(dtype) for r in rows64]
        out = blend_rows(rows, coeffs, torch.empty(3, 3, 1000, dtype=dtype), chunk=333)  # blocks of 333 columns
        stacked = torch.stack([r.double() for r in rows])
        exact = torch.einsum("pr,rij->pij", coeffs.double(), stacked)
        terms = torch.einsum("pr,rij->pij", coeffs.double().abs(), stacked.abs())
        # the exact sum rounded once to the output (half a unit), after a float32 sum of 4 terms
        bound = torch.finfo(dtype).eps / 2 * exact.abs() + 4 * torch.finfo(torch.float32).eps * terms
        assert bool(((out.double() - exact).abs() <= bound).all()), dtype
    assert STREAM_CHUNK >= 1 << 16


def test_value_and_grad_and_batched_probes_need_the_resident_stack():
    experts = make_tiny_experts(2)
    obj = BlendedObjective(TinyNet(), experts, data=tiny_batch(), device="cpu", memory="streamed")
    with pytest.raises(ValueError, match="memory='resident'"):
        obj.value_and_grad(np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="memory='resident'"):
        obj.jvp(np.array([0.5, 0.5]), np.array([[1.0, -1.0]]))
    assert obj.batches_drawn == 0  # refused before a minibatch was drawn
    with pytest.raises(ValueError, match="batched=True"):
        BlendedObjective(TinyNet(), experts, data=tiny_batch(), device="cpu", memory="streamed", batched=True)
    assert BlendedObjective(TinyNet(), experts, device="cpu", batched=True).memory_mode == "resident"  # auto


def test_stack_dtype_applies_to_the_resident_stack_only():
    with pytest.raises(ValueError, match="stack_dtype applies to the resident stack"):
        stream_experts(TinyNet().state_dict(), make_tiny_experts(2), device=torch.device("cpu"),
                       dtype=torch.float32, stack_dtype=torch.float64)
    with pytest.raises(ValueError, match="stack_dtype applies to the resident stack"):
        BlendedObjective(TinyNet(), make_tiny_experts(2), device="cpu", memory="streamed", stack_dtype=torch.float64)


def test_the_memory_of_a_streamed_step_grows_with_one_block_not_with_k(tmp_path):
    """K = 4 experts of 17 MB: the resident stack would hold 67 MB; the streamed objective
    holds none of it and a step's peak stays under the formula's bound (two copies of the
    largest tensor, the blend's buffers, the activations), well under one expert."""
    tools = memory_tools()
    config = llama_config(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          max_position_embeddings=64, tie_word_embeddings=False)
    family = save_family(tmp_path, k=4, config=config, max_shard_size="8MB")
    model_bytes = sum(p.numel() * 4 for p in family.base_model.parameters())
    largest = max(p.numel() * 4 for p in family.base_model.parameters())
    del family.base_model, family.expert_models
    batch = {"input_ids": torch.randint(1, 2048, (2, 16)), "attention_mask": torch.ones(2, 16, dtype=torch.long)}
    gc.collect()
    before = tools.rss_anon()
    with tools.Peak() as load:
        obj = BlendedObjective.from_pretrained(family.experts, data=batch, device="cpu", memory="streamed")
    held = tools.rss_anon() - before
    obj(np.full((2, 4), 0.25))  # warm-up: the allocator's first blocks, the files' pages
    steps = []  # a step's peak above what was held before it, over three steps: each holds the step's own
    for _ in range(3):  # blocks, while a page the allocator happens to take anew (a thread's arena) is in one only
        gc.collect()
        base = tools.rss_anon()
        with tools.Peak() as step:
            obj(np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1]]))
        steps.append(step.peak - base)
    activations = 2 * 2 * 16 * 2048 * 4 * 3  # two probes' logits and the loss's float32 copies of them
    formula = memory_estimate(model_bytes // 4, largest // 4, 4, mode="streamed", stored_bytes=4, forward_bytes=4)
    assert formula["device"] == 2 * largest + (4 + 2) * STREAM_CHUNK * 4 and formula["page cache"] == 4 * model_bytes
    bound = formula["device"] + activations
    assert model_bytes > 1.5 * bound  # under one model, where two blended models or the stack are far above
    assert load.peak - before < model_bytes / 4, (load.peak - before, model_bytes)
    assert held < model_bytes / 8, held
    assert min(steps) < 1.5 * bound, (steps, bound)
