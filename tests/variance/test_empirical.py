"""Measured statistics against the closed forms: the point of the feature.

Every direction distribution (normalised Gaussian, Gaussian, Rademacher), with and
without the sum-zero restriction, several (K, m), both scales (c = 1 and the unbiased
c), a linear and a quadratic objective, in alpha space (central differences, exact
there) and in beta space (exact directional derivatives: the closed forms are the
mu -> 0 limit there; the O(mu^2) term is tested in ``test_bench.py``).

Confidence: each interval at ``1 - 1e-5``. The agreement tests make about 1,200
comparisons, so by Bonferroni the chance that a correct formula falls outside any of
them is at most about 1 % for a fresh seed; the seeds are fixed, so every run is the
same. The strictness tests feed deliberately wrong formulas (``d + 1`` for ``d + 2``, a
missing ``1/m``, ``c = 1`` for ``c = d``, the full-space Rademacher moment in the
subspace, the i.i.d. variance for orthogonal directions, GLUE's eq. (6)) to the same
comparison at the same confidence and assert that each is rejected.
"""

from __future__ import annotations

import numpy as np
import pytest

from spsa_mix.core.directions import estimator_scale, sample_directions, space_dim
from spsa_mix.core.updates import two_point_gradient
from spsa_mix.variance.empirical import (
    EstimateStats,
    Interval,
    average_estimates,
    directional_derivatives,
    sample_estimates,
    summarize,
)
from spsa_mix.variance.problems import FixedPoint, Linear, at_point, problem_at_uniform
from spsa_mix.variance.theory import Theory, estimator_theory, paper_proposition1, project

KINDS = ["normalized-gaussian", "gaussian", "rademacher"]
CONF = 1 - 1e-5
N = 20_000


def _agree(stats: EstimateStats, th: Theory, unit: float) -> dict[str, bool]:
    """Whether each closed form lies in its interval (slack: float64 rounding of exact zeros)."""
    out = {
        "bias_norm": stats.bias_norm.contains(th.bias_norm, atol=1e-9 * unit),
        "variance": stats.variance.contains(th.variance, atol=1e-9 * unit**2),
        "mse": stats.mse.contains(th.mse, atol=1e-9 * unit**2),
    }
    if th.cosine is not None:
        out["cosine"] = stats.cosine.contains(th.cosine, atol=1e-9)
    return out


# ----------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("problem", ["linear", "quadratic"])
@pytest.mark.parametrize("space", ["alpha", "beta"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sum_zero", [True, False])
def test_measured_statistics_agree_with_closed_forms(problem, space, kind, sum_zero):
    derivative = "finite-difference" if space == "alpha" else "exact"
    for k, ms in [(2, [1, 3]), (5, [1, 4]), (12, [2, 8])]:
        fp = problem_at_uniform(problem, k, space=space, rng=np.random.default_rng([k, 7]))
        seed = [k, KINDS.index(kind), int(sum_zero), int(space == "beta"), int(problem == "linear")]
        est = sample_estimates(fp, ms=ms, n_samples=N, kind=kind, sum_zero=sum_zero, mu=0.05, scale=1.0,
                               derivative=derivative, rng=np.random.default_rng(seed))
        h = project(fp.gradient, sum_zero=sum_zero)
        h_norm = float(np.linalg.norm(h))
        for c in (1.0, estimator_scale(kind, (k,), sum_zero)):
            for m in ms:
                stats = summarize(c * est[m], h, confidence=CONF)
                th = estimator_theory(kind, k, sum_zero=sum_zero, m=m, scale=c, target_norm=h_norm)
                agree = _agree(stats, th, c * h_norm)
                assert all(agree.values()), (k, m, c, agree, stats, th)


@pytest.mark.parametrize("kind", ["normalized-gaussian", "gaussian"])
@pytest.mark.parametrize("sum_zero", [True, False])
def test_orthogonal_directions_agree_with_closed_forms(kind, sum_zero):
    for k, m in [(5, 2), (8, 3)]:
        fp = problem_at_uniform("quadratic", k, rng=k)
        c = estimator_scale(kind, (k,), sum_zero)
        est = sample_estimates(fp, ms=[m], n_samples=4000, kind=kind, sum_zero=sum_zero, mu=0.05, scale=c,
                               orthogonal=True, rng=np.random.default_rng([k, m, int(sum_zero)]))[m]
        h = project(fp.gradient, sum_zero=sum_zero)
        stats = summarize(est, h, confidence=CONF)
        th = estimator_theory(kind, k, sum_zero=sum_zero, m=m, scale=c, target_norm=float(np.linalg.norm(h)),
                              orthogonal=True)
        agree = _agree(stats, th, c * float(np.linalg.norm(h)))
        assert all(agree.values()), (k, m, agree, stats, th)


@pytest.mark.parametrize("sum_zero", [True, False])
def test_orthogonal_unit_directions_with_m_equal_d_give_the_exact_gradient(sum_zero):
    k = 5
    d = space_dim((k,), sum_zero)
    fp = problem_at_uniform("linear", k, rng=0)
    est = sample_estimates(fp, ms=[d], n_samples=50, kind="normalized-gaussian", sum_zero=sum_zero, mu=0.05,
                           scale=float(d), orthogonal=True, rng=np.random.default_rng(0))[d]
    np.testing.assert_allclose(est, np.broadcast_to(project(fp.gradient, sum_zero=sum_zero), est.shape), atol=1e-12)


# ----------------------------------------------------------------------------- strictness
def _stats(kind, k, sum_zero, m, *, c, n=N, orthogonal=False, seed=0):
    fp = problem_at_uniform("quadratic", k, rng=100 + k)
    est = sample_estimates(fp, ms=[m], n_samples=n, kind=kind, sum_zero=sum_zero, mu=0.05, scale=c,
                           orthogonal=orthogonal, rng=np.random.default_rng(seed))[m]
    h = project(fp.gradient, sum_zero=sum_zero)
    return summarize(est, h, confidence=CONF), float(np.linalg.norm(h))


def test_gaussian_fourth_moment_d_plus_one_is_rejected():
    k, m = 5, 1
    stats, h = _stats("gaussian", k, False, m, c=1.0, n=60_000)  # the two differ by 1/(d + 1) = 17 %
    right = (k + 2 - 1) * h * h / m  # c^2 (M - kappa^2) |h|^2 / m with M = d + 2
    wrong = (k + 1 - 1) * h * h / m  # M = d + 1
    assert stats.variance.contains(right)
    assert not stats.variance.contains(wrong)
    assert stats.mse.contains(right) and not stats.mse.contains(wrong)


def test_missing_one_over_m_is_rejected():
    k, m = 6, 4
    stats, h = _stats("rademacher", k, True, m, c=1.0)
    th = estimator_theory("rademacher", k, sum_zero=True, m=m, scale=1.0, target_norm=h)
    assert stats.variance.contains(th.variance)
    assert not stats.variance.contains(th.variance * m)


def test_paper_scale_instead_of_unbiased_scale_is_rejected():
    k, m = 10, 2
    c = estimator_scale("normalized-gaussian", (k,), True)
    stats, h = _stats("normalized-gaussian", k, True, m, c=c)
    right = estimator_theory("normalized-gaussian", k, sum_zero=True, m=m, scale=c, target_norm=h)
    wrong = estimator_theory("normalized-gaussian", k, sum_zero=True, m=m, scale=1.0, target_norm=h)
    assert all(_agree(stats, right, c * h).values())
    assert not stats.bias_norm.contains(wrong.bias_norm)
    assert not stats.variance.contains(wrong.variance)
    assert not stats.mse.contains(wrong.mse)


def test_the_moment_of_centred_signs_with_zero_rows_is_rejected():
    k, m = 4, 1
    stats, h = _stats("rademacher", k, True, m, c=1.0)
    d = k - 1
    right = ((1 - 2 ** (1 - k)) * (d + 2 / k) - 1) * h * h  # M = (1 - q)(d + 2/k): rows of equal signs drawn again
    kept = (d + 2 / k - 1) * h * h  # M = d + 2/k: centred signs, zero directions kept
    assert stats.variance.contains(right)
    assert not stats.variance.contains(kept)


def test_iid_formula_for_orthogonal_directions_is_rejected():
    k, m = 6, 4
    c = estimator_scale("normalized-gaussian", (k,), True)
    stats, h = _stats("normalized-gaussian", k, True, m, c=c, n=4000, orthogonal=True)
    orth = estimator_theory("normalized-gaussian", k, sum_zero=True, m=m, scale=c, target_norm=h, orthogonal=True)
    iid = estimator_theory("normalized-gaussian", k, sum_zero=True, m=m, scale=c, target_norm=h)
    assert stats.variance.contains(orth.variance)
    assert not stats.variance.contains(iid.variance)


def test_wrong_dimension_in_the_cosine_is_rejected():
    from spsa_mix.variance.theory import cosine_theory

    stats, _ = _stats("normalized-gaussian", 3, True, 1, c=1.0)  # d = 2
    assert stats.cosine.contains(cosine_theory("normalized-gaussian", 2, 1))
    assert not stats.cosine.contains(cosine_theory("normalized-gaussian", 3, 1))


def test_glue_proposition1_is_rejected_except_the_mse_at_m_equal_1():
    """Eq. (6) claims Var = E|g_bar - g|^2 = (K - 1)/(m K) |g|^2 for unit directions, c = 1."""
    k = 10
    for m, mse_ok in [(1, True), (4, False)]:
        stats, g = _stats("normalized-gaussian", k, False, m, c=1.0, seed=m)
        claim = paper_proposition1(k, m, grad_norm=g)
        assert stats.mse.contains(claim) == mse_ok
        assert not stats.variance.contains(claim)  # the variance is K times smaller
        assert not stats.bias_norm.contains(0.0)  # "unbiased": no, the mean is g / K


# ----------------------------------------------------------------------------- intervals
def _coverage(kind, k, sum_zero, m, *, reps=300, n=400, confidence=0.9):
    fp = problem_at_uniform("quadratic", k, rng=3)
    h = project(fp.gradient, sum_zero=sum_zero)
    c = estimator_scale(kind, (k,), sum_zero)
    th = estimator_theory(kind, k, sum_zero=sum_zero, m=m, scale=c, target_norm=float(np.linalg.norm(h)))
    rng = np.random.default_rng([k, m])
    est = sample_estimates(fp, ms=[m], n_samples=reps * n, kind=kind, sum_zero=sum_zero, mu=0.05, scale=c, rng=rng)[m]
    hits = {"bias_norm": 0, "variance": 0, "mse": 0, "cosine": 0}
    for r in range(reps):
        s = summarize(est[r * n : (r + 1) * n], h, confidence=confidence)
        hits["bias_norm"] += s.bias_norm.contains(th.bias_norm)
        hits["variance"] += s.variance.contains(th.variance)
        hits["mse"] += s.mse.contains(th.mse)
        hits["cosine"] += th.cosine is not None and s.cosine.contains(th.cosine)
    return {key: v / reps for key, v in hits.items()}, th


@pytest.mark.parametrize(("kind", "k", "sum_zero", "m"), [("gaussian", 4, False, 1), ("rademacher", 5, True, 2),
                                                          ("normalized-gaussian", 8, True, 1)])
def test_intervals_cover_at_their_nominal_level(kind, k, sum_zero, m):
    """300 independent repetitions at 90 %: the binomial standard deviation is 1.7 %."""
    cov, th = _coverage(kind, k, sum_zero, m)
    assert 0.84 <= cov["variance"] <= 0.98, cov  # slightly conservative: Bonferroni over two parts
    assert 0.84 <= cov["mse"] <= 0.96, cov
    assert cov["bias_norm"] >= 0.85, cov  # the ball is conservative by construction
    if th.cosine is not None:
        assert 0.84 <= cov["cosine"] <= 0.96, cov


def test_summarize_on_known_gaussian_samples():
    rng = np.random.default_rng(0)
    cov_sqrt = np.diag([1.0, 2.0, 0.5])
    x = rng.standard_normal((20_000, 3)) @ cov_sqrt + np.array([1.0, 0.0, 0.0])
    s = summarize(x, np.zeros(3))
    assert s.variance.contains(1 + 4 + 0.25)
    assert s.bias_norm.contains(1.0)
    assert s.mse.contains(1 + 4 + 0.25 + 1.0)
    assert s.n_samples == 20_000 and s.confidence == 0.999
    assert s.mean.shape == (3,)
    assert not s.variance.contains(4.0)


def test_summarize_zero_target_and_zero_estimates():
    s = summarize(np.zeros((10, 2)), np.zeros(2))
    assert s.cosine is None
    assert (s.bias_norm.value, s.variance.value, s.mse.value) == (0.0, 0.0, 0.0)
    s2 = summarize(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), np.array([1.0, 0.0]))
    assert s2.cosine.value == pytest.approx(0.5)  # a zero estimate counts as cosine 0
    d = s2.to_dict()
    assert set(d) == {"n_samples", "confidence", "bias_norm", "variance", "mse", "cosine"}
    assert d["variance"]["low"] <= d["variance"]["value"] <= d["variance"]["high"]


def test_interval():
    iv = Interval(1.0, 0.9, 1.1)
    assert iv.contains(0.9) and iv.contains(1.1) and not iv.contains(1.2)
    assert iv.contains(1.2, atol=0.1)
    assert iv.to_dict() == {"value": 1.0, "low": 0.9, "high": 1.1}


# ----------------------------------------------------------------------------- building blocks
def test_average_estimates_matches_the_optimiser_kernel():
    rng = np.random.default_rng(0)
    u = sample_directions(rng, 12, (2, 3), kind="gaussian")
    lp, lm = rng.standard_normal(12), rng.standard_normal(12)
    mu, c = 0.1, 2.5
    got = average_estimates((lp - lm) / (2 * mu), u, m=4, scale=c)
    for i in range(3):
        sl = slice(4 * i, 4 * i + 4)
        np.testing.assert_allclose(got[i], two_point_gradient(lp[sl], lm[sl], u[sl], mu=mu, scale=c))


def test_finite_differences_are_exact_for_a_quadratic_in_alpha_space_and_chunked_alike():
    fp = problem_at_uniform("quadratic", 6, rng=0)
    u = sample_directions(np.random.default_rng(1), 50, (6,), kind="gaussian", sum_zero=False)
    fd = directional_derivatives(fp, u, mu=0.3)
    np.testing.assert_allclose(fd, directional_derivatives(fp, u, mu=0.3, derivative="exact"), rtol=1e-9, atol=1e-12)
    small = FixedPoint(losses=fp.losses, x=fp.x, gradient=fp.gradient, grad_at=fp.grad_at, chunk_size=7)
    np.testing.assert_allclose(directional_derivatives(small, u, mu=0.3), fd, rtol=0, atol=1e-13)


def test_same_generator_same_estimates():
    fp = problem_at_uniform("quadratic", 4, rng=0)
    kw = dict(ms=[1, 3], n_samples=100, kind="rademacher", sum_zero=True, mu=0.05, scale=1.0)
    a = sample_estimates(fp, rng=np.random.default_rng(9), **kw)
    b = sample_estimates(fp, rng=np.random.default_rng(9), **kw)
    for m in (1, 3):
        np.testing.assert_array_equal(a[m], b[m])


def test_pooled_estimates_reuse_the_first_directions_of_each_group():
    """m = 1 uses direction 0 of each group of max(ms): its estimate is c d_0 u_0, so for a
    linear objective in alpha space (d = g.u) the m = 2 estimate minus half the m = 1
    estimate is half the contribution of direction 1 alone, again of the form (g.v) v."""
    fp = at_point(Linear(np.array([1.0, -1.0, 0.5])), np.full(3, 1 / 3))
    est = sample_estimates(fp, ms=[1, 2], n_samples=200, kind="gaussian", sum_zero=False, mu=0.1, scale=1.0,
                           rng=np.random.default_rng(0))
    rest = 2 * est[2] - est[1]  # (g.u_1) u_1 for each group
    # (g.v) v is parallel to v and has inner product with g equal to (g.v)^2 >= 0
    assert np.all(rest @ fp.gradient >= -1e-12)
    assert not np.allclose(rest, est[1])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda fp: directional_derivatives(fp, np.zeros((3, 5)), mu=0.1), r"directions must have shape \(n, \*\(4,\)\)"),
        (lambda fp: directional_derivatives(fp, np.zeros((3, 4)), mu=0.1, derivative="forward"),
         "derivative must be one of"),
        (lambda fp: directional_derivatives(fp, np.zeros((3, 4)), mu=-1.0), "mu must be positive, but got -1.0"),
        (lambda fp: average_estimates(np.zeros(5), np.zeros((5, 4)), m=2, scale=1.0), "m=2 dividing it"),
        (lambda fp: average_estimates(np.zeros(4), np.zeros((4, 4)), m=2, scale=0.0), "scale must be positive"),
        (lambda fp: sample_estimates(fp, ms=[0], n_samples=4, kind="gaussian", sum_zero=True, mu=0.1, scale=1.0,
                                     rng=np.random.default_rng(0)), "m must be an integer >= 1, but got 0"),
        (lambda fp: sample_estimates(fp, ms=[1], n_samples=4, kind="gaussian", sum_zero=True, mu=0.1, scale=1.0,
                                     rng=0), "rng must be a numpy.random.Generator, but got int"),
        (lambda fp: sample_estimates(fp, ms=[5], n_samples=4, kind="gaussian", sum_zero=True, mu=0.1, scale=1.0,
                                     orthogonal=True, rng=np.random.default_rng(0)), "orthogonal=True needs m <= 3"),
        (lambda fp: summarize(np.zeros((5, 3)), np.zeros(4)), r"estimates must have shape \(N, 4\)"),
        (lambda fp: summarize(np.zeros((5, 4)), np.zeros(4), confidence=1.0), "confidence must be a number in"),
    ],
)
def test_errors(call, message):
    fp = problem_at_uniform("quadratic", 4, rng=0)
    with pytest.raises(ValueError, match=message):
        call(fp)


def test_objective_returning_the_wrong_number_of_losses():
    fp = FixedPoint(losses=lambda pts: np.zeros(3), x=np.full(2, 0.5), gradient=np.zeros(2), grad_at=lambda x: x)
    with pytest.raises(ValueError, match=r"the objective must return 4 losses for 4 points, but got shape \(3,\)"):
        directional_derivatives(fp, np.ones((2, 2)), mu=0.1)
