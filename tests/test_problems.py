"""spsa_mix.problems: the constrained minimiser of a quadratic, certified by the Frank-Wolfe gap."""

import numpy as np
import pytest

from spsa_mix.problems import Quadratic


@pytest.mark.parametrize(("k", "seed"), [(20, 2000), (20, 2002), (50, 2000), (100, 2001)])
def test_the_minimiser_on_a_face_is_certified(k, seed):
    q = Quadratic.scattered(k, rng=seed)  # on one thread SLSQP stops on all but the first with a line-search
    x = q.minimizer()                     # complaint, and the projected-gradient polish finishes
    x = q.minimizer()
    g = q.grad(x)
    assert abs(x.sum() - 1.0) < 1e-12 and x.min() >= 0.0 and (x < 1e-12).any()
    assert float(g @ x - g.min()) < 1e-8  # f(x) - f* <= the Frank-Wolfe gap
    others = np.random.default_rng(0).dirichlet(np.ones(k), size=200)
    assert q.value(x) <= min(q.value(p) for p in others)


def test_scattered_draws_in_the_documented_order():
    rng = np.random.default_rng(7)
    q = Quadratic.scattered(4, rng=np.random.default_rng(7))
    b = rng.standard_normal((4, 4))
    c = rng.dirichlet(np.ones(4)) + rng.normal(0.0, 0.6, 4)
    assert np.allclose(q.A, b @ b.T / 4 + 0.1 * np.eye(4)) and np.array_equal(q.c, c)
