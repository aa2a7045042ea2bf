"""The blended small CNN on digits: autograd gradient against finite differences, the
estimates against the closed forms, reproducibility, errors."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from spsa_mix.core.directions import estimator_scale  # noqa: E402
from spsa_mix.variance.empirical import sample_estimates, summarize  # noqa: E402
from spsa_mix.variance.network import DigitsBlend  # noqa: E402
from spsa_mix.variance.theory import estimator_theory, project  # noqa: E402


@pytest.fixture(scope="module")
def pool():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield DigitsBlend(n_experts=3, steps=8, per_expert=60, target_size=32, seed=0, dtype=torch.float64)
    torch.set_num_threads(before)


@pytest.mark.parametrize("space", ["alpha", "beta"])
def test_autograd_gradient_matches_central_differences(pool, space, one_thread):
    fp = pool.problem(3, space=space)
    step = 1e-5
    eye = np.eye(3)
    fd = (fp.losses(fp.x + step * eye) - fp.losses(fp.x - step * eye)) / (2 * step)
    np.testing.assert_allclose(fp.gradient, fd, rtol=1e-5, atol=1e-7)
    assert not fp.smooth and not fp.exact_differences


def test_estimates_agree_with_the_closed_forms(pool, one_thread):
    """Exact directional derivatives: the closed forms hold exactly; central differences at
    mu = 0.05 (what the optimiser uses) stay within the same intervals here."""
    k, m = 3, 2
    fp = pool.problem(k, space="beta")
    h = project(fp.gradient, sum_zero=True)
    c = estimator_scale("normalized-gaussian", (k,), True)
    th = estimator_theory("normalized-gaussian", k, sum_zero=True, m=m, scale=c, target_norm=float(np.linalg.norm(h)))
    for derivative, n in [("exact", 4000), ("finite-difference", 300)]:
        est = sample_estimates(fp, ms=[m], n_samples=n, kind="normalized-gaussian", sum_zero=True, mu=0.05, scale=c,
                               derivative=derivative, rng=np.random.default_rng(0))[m]
        stats = summarize(est, h, confidence=0.9999)
        assert stats.variance.contains(th.variance), (derivative, stats.variance, th.variance)
        assert stats.mse.contains(th.mse), (derivative, stats.mse, th.mse)
        assert stats.bias_norm.contains(th.bias_norm, atol=1e-6), (derivative, stats.bias_norm)


def test_experts_differ_and_the_same_seed_gives_the_same_pool(pool, one_thread):
    again = DigitsBlend(n_experts=2, steps=8, per_expert=60, target_size=32, seed=0, dtype=torch.float64)
    for name, tensor in pool.experts[0].items():
        torch.testing.assert_close(again.experts[0][name], tensor)
    assert not torch.equal(pool.experts[0]["fc.weight"], pool.experts[1]["fc.weight"])
    assert pool.objective(2).k == 2
    assert "n_experts=3" in repr(pool)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.problem(4), "k must be between 2 and n_experts=3, but got 4"),
        (lambda p: p.problem(2, space="gamma"), "space must be 'alpha' or 'beta'"),
        (lambda p: DigitsBlend(n_experts=2, target_size=5000), "target_size must be below 898"),
        (lambda p: DigitsBlend(n_experts=0), "n_experts must be an integer >= 1, but got 0"),
        (lambda p: DigitsBlend(n_experts=2, lr=-1.0), "lr must be positive, but got -1.0"),
    ],
)
def test_errors(pool, call, message):
    with pytest.raises(ValueError, match=message):
        call(pool)
