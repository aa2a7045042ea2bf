"""LoraHub's search: the box, the budget, the penalty, the seed, and a blend off the simplex."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.baselines.lorahub import LORAHUB_BOUND, lorahub_search
from spsa_mix.blend import BlendedObjective


class Counted:
    def __init__(self, c: np.ndarray) -> None:
        self.c, self.calls, self.points = c, 0, []

    def __call__(self, w: np.ndarray) -> np.ndarray:
        assert w.shape == (1, len(self.c))
        self.calls += 1
        self.points.append(w[0].copy())
        return ((w - self.c) ** 2).sum(axis=1)


def test_budget_box_start_and_penalised_losses():
    f = Counted(np.array([1.0, -0.5, 0.25]))
    res = lorahub_search(f, 3, max_evals=30, seed=0)
    assert f.calls == res.nfev == 30 and len(res.history["loss"]) == 30
    pts = np.array(f.points)
    assert np.all(np.abs(pts) <= LORAHUB_BOUND) and np.all(np.abs(res.x) <= LORAHUB_BOUND)
    np.testing.assert_allclose(pts[0], 0.0)  # LoraHub starts with every adapter off
    expected = ((pts - f.c) ** 2).sum(axis=1) + 0.05 * np.abs(pts).mean(axis=1)
    np.testing.assert_allclose(res.history["loss"], expected)
    assert res.fun == pytest.approx(expected.min())
    assert ((res.x - f.c) ** 2).sum() < (f.c**2).sum()  # better than the start
    assert res.method == "lorahub:NGOpt" and res.success


def test_same_seed_same_run_and_optimum_outside_the_box_is_clipped():
    c = np.array([3.0, -3.0])
    a = lorahub_search(lambda w: ((w - c) ** 2).sum(axis=1), 2, max_evals=40, seed=1, l1=0.0)
    b = lorahub_search(lambda w: ((w - c) ** 2).sum(axis=1), 2, max_evals=40, seed=1, l1=0.0)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
    assert np.all(np.abs(a.x) <= LORAHUB_BOUND)
    assert a.x[0] > 1.0 and a.x[1] < -1.0  # pushed toward the corner of the box


def test_weights_off_the_simplex_blend_task_vectors():
    gen = torch.Generator().manual_seed(0)
    base = torch.nn.Linear(3, 2)
    experts = []
    for _ in range(2):
        e = torch.nn.Linear(3, 2)
        with torch.no_grad():
            e.weight.copy_(base.weight + torch.randn(2, 3, generator=gen))
            e.bias.copy_(base.bias)
        experts.append(e)
    x = torch.randn(64, 3, generator=gen)
    target = base.weight + 1.2 * (experts[0].weight - base.weight) - 0.4 * (experts[1].weight - base.weight)
    y = (x @ target.T + base.bias).argmax(dim=1)
    obj = BlendedObjective(torch.nn.Linear(3, 2), experts, base=base, space="task-vectors", data=(x, y),
                           device="cpu", simplex_atol=None)
    res = lorahub_search(obj, 2, max_evals=60, seed=0)
    assert obj(res.x) < obj(np.zeros(2))  # away from the base, off the simplex
    assert res.x.sum() != pytest.approx(1.0)


def test_errors():
    f = Counted(np.zeros(2))
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        lorahub_search(f, 0)
    with pytest.raises(ValueError, match="bound must be a positive number, but got -1"):
        lorahub_search(f, 2, bound=-1)
    with pytest.raises(ValueError, match="l1 must be a non-negative number"):
        lorahub_search(f, 2, l1=-0.1)
    with pytest.raises(ValueError, match="unknown Nevergrad optimizer 'NGOptt'"):
        lorahub_search(f, 2, optimizer="NGOptt")
    with pytest.raises(ValueError, match=r"x0 must have shape \(2,\) and lie in \[-1.5, 1.5\]"):
        lorahub_search(f, 2, x0=[2.0, 0.0])
    with pytest.raises(ValueError, match="give seed or rng, not both"):
        lorahub_search(f, 2, seed=0, rng=np.random.default_rng(0))


def test_a_nonfinite_loss_is_told_as_the_worst_and_counted():
    from spsa_mix.baselines.lorahub import NONFINITE_LOSS
    from spsa_mix.core.errors import NonFiniteLossError

    def f(w):
        if w[0, 0] > 0.2:
            raise NonFiniteLossError("nan", index=0, value=float("nan"))
        if w[0, 1] > 0.2:
            return np.array([np.nan])
        return ((w - 0.1) ** 2).sum(axis=1)

    res = lorahub_search(f, 2, max_evals=30, seed=0)
    bad = (res.history["x"][:, 0] > 0.2) | (res.history["x"][:, 1] > 0.2)
    assert res.nonfinite == int(bad.sum()) > 0
    np.testing.assert_array_equal(res.history["loss"][bad], NONFINITE_LOSS)
    assert np.isfinite(res.fun) and res.fun < NONFINITE_LOSS
