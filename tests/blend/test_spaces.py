"""The coefficient maps of the three spaces, and the task-vector identity, numerically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spsa_mix.blend.held.functional import blend
from spsa_mix.blend.spaces import BlendSpace, check_space
from spsa_mix.core.domain import Domain


@given(st.integers(0, 10_000), st.floats(0.1, 4.0), st.booleans())
def test_task_vectors_are_one_product_with_a_base_row(seed, s, on_simplex):
    rng = np.random.default_rng(seed)
    k, p = 3, 7
    thetas, base = rng.normal(size=(k, p)), rng.normal(size=p)
    alpha = rng.dirichlet(np.ones(k)) if on_simplex else rng.normal(size=k)
    direct = base + s * sum(a * (t - base) for a, t in zip(alpha, thetas, strict=True))
    space = BlendSpace("task-vectors", k=k, scale=s)
    c = space.coefficients(torch.tensor(alpha[None]))[0, 0]  # (K + 1,)
    stack = torch.tensor(np.vstack([thetas, base]))  # the base is the last row
    np.testing.assert_allclose((c @ stack).numpy(), direct, rtol=1e-12, atol=1e-12)
    if on_simplex:
        assert float(c[-1]) == pytest.approx(1 - s)


def test_scale_one_is_the_convex_blend_and_a_learned_scale_is_the_last_coordinate():
    alpha = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    one = BlendSpace("task-vectors", k=3).coefficients(alpha)
    torch.testing.assert_close(one[..., :3], BlendSpace("convex", k=3).coefficients(alpha))
    assert abs(float(one[0, 0, 3])) < 1e-15
    learned = BlendSpace("task-vectors", k=3, groups=2, scale="learned", layer_wise=True)
    assert learned.shape == Domain((2, 3), positive=1, names=("scale",)) and learned.rows == 4
    point = torch.tensor([[0.2, 0.3, 0.5, 1.0, 0.0, 0.0, 2.0]], dtype=torch.float64)
    c = learned.coefficients(point)
    torch.testing.assert_close(c, torch.tensor([[[0.4, 0.6, 1.0, -1.0], [2.0, 0.0, 0.0, -1.0]]], dtype=torch.float64))
    W = torch.arange(8.0, dtype=torch.float64).reshape(4, 2)  # rows: 3 experts and the base; P = 2
    assert blend(W, c, segments=[(0, 1), (1, 2)]).tolist() == [[float(c[0, 0] @ W[:, 0]), float(c[0, 1] @ W[:, 1])]]
    assert BlendSpace("convex", k=3).shape == (3,) and BlendSpace("lora", k=2, groups=4, layer_wise=True).shape == (4, 2)


def test_space_errors():
    with pytest.raises(ValueError, match=r"space must be one of \['convex', 'task-vectors', 'lora', 'ties', .*\], but got 'tiez'"):
        check_space("tiez", 1.0, has_base=True)
    for bad in (0.0, -1.0, float("inf"), "big", True):
        with pytest.raises(ValueError, match="scale must be a positive number or 'learned', but got"):
            check_space("task-vectors", bad, has_base=True)
    with pytest.raises(ValueError, match=r"scale='learned' applies to space='task-vectors' and the task-vector methods \(ties, .*\) only \(space='convex' has no scale\)"):
        check_space("convex", "learned", has_base=False)
