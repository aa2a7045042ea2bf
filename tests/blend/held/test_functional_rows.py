"""A stack narrower than the accumulation dtype on the CPU: blended row by row, with the same
values and gradients as the upcast-and-multiply product."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.blend.held import functional
from spsa_mix.blend.held.functional import blend, blend_into


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(functional, "CHUNK", 7)  # several blocks, strided column slices


def _stack(k: int = 5, p: int = 30, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    return torch.randn(k, p, generator=torch.Generator().manual_seed(0)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_blend_into_and_blend_equal_the_float64_product(small_chunks, dtype):
    w = _stack(dtype=dtype)
    alpha = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25], dtype=torch.float64 if dtype == torch.float32 else torch.float32)
    exact = alpha.double() @ w.double()  # (P,)
    out = torch.empty(w.shape[1], dtype=alpha.dtype)
    torch.testing.assert_close(blend_into(out, w, alpha).double(), exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(blend(w, alpha[None])[0].double(), exact, rtol=0, atol=1e-6)
    segs = [(0, 12), (12, 30)]
    a2 = torch.stack([alpha, alpha.flip(0)])
    exact2 = torch.cat([a2[0].double() @ w[:, :12].double(), a2[1].double() @ w[:, 12:].double()])
    torch.testing.assert_close(blend_into(out, w, a2, segs).double(), exact2, rtol=0, atol=1e-6)
    torch.testing.assert_close(blend(w, a2[None], segs)[0].double(), exact2, rtol=0, atol=1e-6)


def test_the_bf16_result_cast_matches_the_old_upcast_product_bit_for_bit(small_chunks):
    w = _stack()
    alpha = torch.tensor([0.5, 0.125, 0.125, 0.25, 0.0])  # sums exact in float32
    out = torch.empty(w.shape[1], dtype=torch.bfloat16)
    old = (alpha @ w.float()).to(torch.bfloat16)
    assert torch.equal(blend_into(out, w, alpha), old)
    assert torch.equal(blend(w, alpha[None], dtype=torch.bfloat16)[0], old)


def test_gradients_and_directional_derivatives_through_the_rows(small_chunks):
    w = _stack()
    target = torch.randn(w.shape[1], generator=torch.Generator().manual_seed(1))
    alpha = torch.tensor([0.3, 0.1, 0.2, 0.25, 0.15], requires_grad=True)

    def loss(a: torch.Tensor) -> torch.Tensor:
        return ((blend(w, a[None])[0] - target) ** 2).sum()

    (g,) = torch.autograd.grad(loss(alpha), alpha)
    a = alpha.detach()
    expected = 2 * (w.float() @ (a @ w.float() - target))  # d/da ||a W - t||^2 = 2 W (a W - t)
    torch.testing.assert_close(g, expected, rtol=1e-5, atol=1e-4)
    tangent = torch.tensor([1.0, -1.0, 0.0, 0.5, -0.5])
    _, d = torch.func.jvp(loss, (a,), (tangent,))
    torch.testing.assert_close(d, expected @ tangent, rtol=1e-5, atol=1e-4)
