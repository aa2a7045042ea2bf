"""The blend as tensor functions: matrix product, group segments, views, probes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from spsa_mix.blend.held.experts import stack_experts
from spsa_mix.blend.held.functional import Layout, blend, call_blended, map_probes, unflatten

from ..blend_helpers import TinyNet, make_tiny_experts, tiny_batch


@given(st.integers(2, 5), st.integers(1, 4), st.integers(1, 9), st.integers(0, 2**31 - 1))
def test_blend_is_the_weighted_sum_of_rows(k, n, p, seed):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(k, p, generator=gen, dtype=torch.float64)
    alpha = torch.rand(n, k, generator=gen, dtype=torch.float64)
    expected = torch.stack([sum(alpha[j, i] * weights[i] for i in range(k)) for j in range(n)])
    torch.testing.assert_close(blend(weights, alpha), expected)


def test_grouped_blend_uses_each_groups_row():
    weights = torch.arange(10.0).reshape(2, 5)  # K=2, P=5
    alpha = torch.tensor([[[1.0, 0.0], [0.25, 0.75]]])  # n=1, G=2
    out = blend(weights, alpha, segments=[(0, 2), (2, 5)])
    expected = torch.cat([weights[0, :2], 0.25 * weights[0, 2:] + 0.75 * weights[1, 2:]])
    torch.testing.assert_close(out[0], expected)


def test_unflatten_gives_views_without_copy():
    flat = torch.arange(7.0)
    parts = unflatten(flat, Layout(("a", "b"), ((2, 2), (3,))))
    assert parts["a"].tolist() == [[0.0, 1.0], [2.0, 3.0]] and parts["b"].tolist() == [4.0, 5.0, 6.0]
    assert parts["a"].untyped_storage().data_ptr() == flat.untyped_storage().data_ptr()


def test_call_blended_equals_the_module_with_those_weights():
    experts, (x, _) = make_tiny_experts(2), tiny_batch()
    ref = TinyNet().state_dict()
    stack = stack_experts(ref, experts, device=torch.device("cpu"), dtype=torch.float32)
    model = TinyNet().eval()
    for i, e in enumerate(experts):
        out = call_blended(model, stack.weights[i], stack.layout, stack.constants, (x,), {})
        torch.testing.assert_close(out, e.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("n", [1, 3])
def test_map_probes_batched_equals_loop(n):
    experts, (x, y) = make_tiny_experts(2), tiny_batch()
    stack = stack_experts(TinyNet().state_dict(), experts, device=torch.device("cpu"), dtype=torch.float32)
    model = TinyNet().eval()
    thetas = blend(stack.weights, torch.rand(n, 2, generator=torch.Generator().manual_seed(0)))

    def fn(theta):
        out = call_blended(model, theta, stack.layout, stack.constants, (x,), {})
        return F.cross_entropy(out, y), out.argmax(-1).sum()

    looped, batched = map_probes(fn, thetas, batched=False), map_probes(fn, thetas, batched=True)
    assert looped[0].shape == (n,) and looped[1].shape == (n,)
    torch.testing.assert_close(batched[0], looped[0], rtol=1e-5, atol=1e-6)
    assert torch.equal(batched[1], looped[1])


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_module_bound_to_a_buffer_equals_the_functional_call(granularity):
    import copy

    from spsa_mix.blend.held.functional import bind_to_buffer, blend_into

    experts, (x, _) = make_tiny_experts(3), tiny_batch()
    stack = stack_experts(TinyNet().state_dict(), experts, device=torch.device("cpu"), dtype=torch.float32,
                          granularity=granularity)
    model = TinyNet().eval()
    buffer = torch.zeros(stack.layout.size)
    bound = bind_to_buffer(copy.deepcopy(model), stack.layout, buffer, stack.constants)
    segments = stack.segments if granularity == "layer" else None
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        alpha = torch.rand((3,) if granularity == "model" else (len(stack.groups), 3), generator=gen)
        blend_into(buffer, stack.weights, alpha, segments)
        theta = blend(stack.weights, alpha[None], segments)[0]
        torch.testing.assert_close(buffer, theta)
        with torch.no_grad():
            expected = call_blended(model, theta, stack.layout, stack.constants, (x,), {})
            torch.testing.assert_close(bound(x), expected, rtol=1e-6, atol=1e-6)


def test_a_narrow_stack_is_blended_in_float32_by_blocks(monkeypatch):
    import spsa_mix.blend.held.functional as functional

    monkeypatch.setattr(functional, "CHUNK", 5)  # several blocks per segment
    gen = torch.Generator().manual_seed(0)
    W = torch.randn(3, 23, generator=gen).to(torch.bfloat16)
    alpha = torch.tensor([[0.3, 0.3, 0.4], [0.1, 0.2, 0.7]])
    exact = alpha.double() @ W.double()  # (n, P)
    out = functional.blend(W, alpha)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-7)
    layered = functional.blend(W, torch.stack([alpha, alpha.flip(0)], dim=1), segments=[(0, 11), (11, 23)],
                               dtype=torch.bfloat16)
    assert layered.dtype == torch.bfloat16
    torch.testing.assert_close(layered[:, :11].double(), exact[:, :11], rtol=1e-2, atol=1e-2)
    buf = torch.empty(23)
    functional.blend_into(buf, W, alpha[1])
    torch.testing.assert_close(buf.double(), exact[1], rtol=1e-6, atol=1e-7)
