"""Closed forms: exact checks by enumeration, identities, GLUE's Proposition 1, errors.

The Monte Carlo checks against sampled estimates are in ``test_empirical.py``; here the
Rademacher moments are checked exactly by enumerating every sign vector, and the
``O(mu^2)`` term exactly on a cubic objective.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from spsa_mix.core.directions import estimator_scale, space_dim
from spsa_mix.variance.theory import (
    cosine_theory,
    direction_moments,
    estimator_theory,
    mu_bias_leading,
    paper_proposition1,
    project,
)

KINDS = ["normalized-gaussian", "gaussian", "rademacher"]


def _all_signs(shape: tuple[int, ...], sum_zero: bool) -> np.ndarray:
    """Every Rademacher direction of ``shape`` as ``sample_directions`` draws them, all
    equally likely: the ``2^n`` sign vectors; in the sum-zero subspace those without a row
    of equal signs (such a row is drawn again), centred and scaled by ``sqrt(1 - 2^(1-k))``."""
    n = int(np.prod(shape))
    z = np.array(list(itertools.product([-1.0, 1.0], repeat=n))).reshape(-1, *shape)
    if not sum_zero:
        return z
    k = shape[-1]
    constant_row = np.all(z == z[..., :1], axis=-1).reshape(len(z), -1).any(axis=1)
    return project(z[~constant_row], sum_zero=True) * math.sqrt(1.0 - 2.0 ** (1 - k))


@pytest.mark.parametrize("shape", [(2,), (3,), (5,), (2, 3), (3, 4)])
@pytest.mark.parametrize("sum_zero", [True, False])
def test_rademacher_moments_by_enumeration(shape, sum_zero):
    """E[u u^T] = P and E[(h.u)^2 |u|^2] = M |h|^2, M = d - (k-1) + (1 - q)(k - 1 + 2/k) (sum-zero,
    q = 2^(1-k)) or d, exactly."""
    u = _all_signs(shape, sum_zero)
    u = u.reshape(len(u), -1)
    n = u.shape[1]
    mom = direction_moments("rademacher", shape, sum_zero=sum_zero)
    proj = np.kron(np.eye(n // shape[-1]), np.eye(shape[-1]) - (1.0 / shape[-1] if sum_zero else 0.0))
    np.testing.assert_allclose(u.T @ u / len(u), mom.second * proj, atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(3):
        h = project(rng.standard_normal(shape), sum_zero=sum_zero).ravel()
        fourth = np.mean((u @ h) ** 2 * np.sum(u * u, axis=1))
        assert fourth == pytest.approx(mom.fourth * (h @ h), rel=1e-12)


def test_rademacher_sum_zero_is_neither_the_naive_d_nor_that_of_centred_signs():
    """Neither the value d of the full space nor d + 2/k, that of centred signs whose rows of
    equal signs are kept (zero directions), is the moment of the directions drawn."""
    u = _all_signs((4,), True)
    h = project(np.array([1.0, -2.0, 0.5, 0.3]), sum_zero=True)
    fourth = np.mean((u @ h) ** 2 * np.sum(u * u, axis=1)) / (h @ h)
    assert fourth == pytest.approx((1 - 1 / 8) * (3 + 2 / 4))
    assert abs(fourth - 3) > 0.06 and abs(fourth - (3 + 2 / 4)) > 0.4


@pytest.mark.parametrize(
    ("kind", "shape", "sum_zero", "expected"),
    [
        ("normalized-gaussian", (5,), True, (4, 0.25, 0.25)),
        ("normalized-gaussian", (2, 5), False, (10, 0.1, 0.1)),
        ("gaussian", (5,), False, (5, 1.0, 7.0)),
        ("gaussian", (3, 4), True, (9, 1.0, 11.0)),
        ("rademacher", (6,), False, (6, 1.0, 6.0)),
        ("rademacher", (6,), True, (5, 1.0, (1 - 1 / 32) * (5 + 1 / 3))),
    ],
)
def test_direction_moments_table(kind, shape, sum_zero, expected):
    mom = direction_moments(kind, shape, sum_zero=sum_zero)
    assert (mom.dim, mom.second) == pytest.approx(expected[:2])
    assert mom.fourth == pytest.approx(expected[2])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sum_zero", [True, False])
def test_unbiased_scale_removes_the_bias(kind, sum_zero):
    c = estimator_scale(kind, (7,), sum_zero)
    th = estimator_theory(kind, 7, sum_zero=sum_zero, m=3, scale=c, target_norm=2.0)
    assert th.bias_norm == pytest.approx(0.0, abs=1e-12)
    assert th.mse == pytest.approx(th.variance)


def test_variance_falls_as_one_over_m_and_mse_does_not_for_the_paper_scale():
    one = estimator_theory("normalized-gaussian", 10, sum_zero=False, m=1, scale=1.0, target_norm=1.0)
    many = estimator_theory("normalized-gaussian", 10, sum_zero=False, m=16, scale=1.0, target_norm=1.0)
    assert many.variance == pytest.approx(one.variance / 16)
    assert many.bias_norm == pytest.approx(0.9)  # (1 - 1/K) |g| stays
    assert many.mse > 0.8 * one.mse


@pytest.mark.parametrize("k", [2, 3, 10, 50])
def test_proposition1_against_the_closed_forms(k):
    """GLUE eq. (6) equals the MSE at m = 1 only; it is K times the variance; for m > 1 the
    MSE exceeds it (the bias does not average out)."""
    g = 1.7
    for m in (1, 2, 4, 16):
        th = estimator_theory("normalized-gaussian", k, sum_zero=False, m=m, scale=1.0, target_norm=g)
        claim = paper_proposition1(k, m, grad_norm=g)
        assert th.variance == pytest.approx(claim / k)
        assert th.mse == pytest.approx((1 - 1 / k) ** 2 * g * g + (k - 1) * g * g / (m * k * k))
        if m == 1:
            assert th.mse == pytest.approx(claim)
        else:
            assert th.mse > claim


@pytest.mark.parametrize("kind", ["normalized-gaussian", "gaussian"])
@pytest.mark.parametrize("sum_zero", [True, False])
def test_orthogonal_variance_is_lower_than_iid(kind, sum_zero):
    k = 6
    d = space_dim((k,), sum_zero)
    c = estimator_scale(kind, (k,), sum_zero)
    for m in range(2, d + 1):
        iid = estimator_theory(kind, k, sum_zero=sum_zero, m=m, scale=c, target_norm=1.0)
        orth = estimator_theory(kind, k, sum_zero=sum_zero, m=m, scale=c, target_norm=1.0, orthogonal=True)
        assert orth.variance < iid.variance
        assert orth.bias_norm == iid.bias_norm
    one = estimator_theory(kind, k, sum_zero=sum_zero, m=1, scale=c, target_norm=1.0)
    one_orth = estimator_theory(kind, k, sum_zero=sum_zero, m=1, scale=c, target_norm=1.0, orthogonal=True)
    assert one_orth.variance == pytest.approx(one.variance)  # one direction: nothing to orthogonalise


def test_orthogonal_sphere_with_m_equal_d_is_exact():
    th = estimator_theory("normalized-gaussian", 8, sum_zero=True, m=7, scale=7.0, target_norm=3.0, orthogonal=True)
    assert th.variance == pytest.approx(0.0, abs=1e-12)
    assert th.mse == pytest.approx(0.0, abs=1e-12)
    assert th.cosine == 1.0


def test_cosine_closed_forms():
    assert cosine_theory("normalized-gaussian", 1, 1) == 1.0
    assert cosine_theory("gaussian", 2, 1) == pytest.approx(2 / math.pi)
    assert cosine_theory("normalized-gaussian", 3, 1) == pytest.approx(0.5)  # E|u_1| on the 2-sphere
    assert cosine_theory("normalized-gaussian", 5, 5, orthogonal=True) == 1.0
    # cos^2 ~ Beta(1, 1) = uniform for m = 2, d = 4: E sqrt(U) = 2/3
    assert cosine_theory("normalized-gaussian", 4, 2, orthogonal=True) == pytest.approx(2 / 3)
    assert cosine_theory("gaussian", 4, 2, orthogonal=True) is None
    assert cosine_theory("normalized-gaussian", 4, 2) is None
    assert cosine_theory("rademacher", 4, 1) is None


def test_project():
    np.testing.assert_allclose(project([[1.0, 3.0], [2.0, 2.0]], sum_zero=True), [[-1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(project([1.0, 3.0], sum_zero=False), [1.0, 3.0])


# ----------------------------------------------------------------------------- the mu^2 term
def _random_cubic(n: int, rng: np.random.Generator):
    """F(x) = g.x + T[x, x, x] / 6 with T symmetric: the central difference is
    g.u + mu^2/6 T[u, u, u] exactly (no higher term)."""
    a = rng.standard_normal((n, n, n))
    t = sum(np.transpose(a, p) for p in itertools.permutations(range(3))) / 6
    g = rng.standard_normal(n)
    return g, t


def _exact_mean_shift(t: np.ndarray, u: np.ndarray, weights: np.ndarray) -> np.ndarray:
    cube = np.einsum("abc,na,nb,nc->n", t, u, u, u)
    return np.einsum("n,n,ni->i", weights, cube, u)


@pytest.mark.parametrize("sum_zero", [True, False])
def test_mu_bias_rademacher_exact_by_enumeration(sum_zero):
    n = 5
    g, t = _random_cubic(n, np.random.default_rng(1))
    u = _all_signs((n,), sum_zero)
    w = np.full(len(u), 1.0 / len(u))
    mu, c = 0.3, 2.0
    expected = c * mu * mu / 6 * _exact_mean_shift(t, u, w)
    basis_t = _trace_term(t, sum_zero)
    proj = np.eye(n) - (1.0 / n if sum_zero else 0.0)
    cubes = np.einsum("abc,af,bf,cf->f", t, proj, proj, proj)
    got = mu_bias_leading("rademacher", n, sum_zero=sum_zero, scale=c, mu=mu, trace_term=basis_t, cube_terms=cubes)
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # Without the fourth-moment correction (the Gaussian formula) the result is wrong.
    wrong = mu_bias_leading("gaussian", n, sum_zero=sum_zero, scale=c, mu=mu, trace_term=basis_t)
    assert np.abs(wrong - expected).max() > 1e-3


def test_mu_bias_rademacher_on_several_rows_exact_by_enumeration():
    """Two rows of three: the fourth moments within a row are (1 - q) those of centred
    signs, those across the rows unchanged (row_trace_term)."""
    shape, n = (2, 3), 6
    _, t = _random_cubic(n, np.random.default_rng(4))
    u = _all_signs(shape, True).reshape(-1, n)
    mu, c = 0.3, 1.5
    expected = c * mu * mu / 6 * _exact_mean_shift(t, u, np.full(len(u), 1.0 / len(u)))
    proj = np.kron(np.eye(2), np.eye(3) - 1 / 3)
    row = np.kron(np.eye(2), np.ones((3, 3)))  # 1 where a and b are in the same row
    trace = np.einsum("abe,ab->e", t, proj)
    row_trace = np.einsum("abe,ab,ae->e", t, proj, row)
    cubes = np.einsum("abc,af,bf,cf->f", t, proj, proj, proj)
    got = mu_bias_leading("rademacher", shape, sum_zero=True, scale=c, mu=mu, trace_term=trace.reshape(shape),
                          cube_terms=cubes, row_trace_term=row_trace.reshape(shape))
    np.testing.assert_allclose(got.ravel(), expected, atol=1e-12)
    with pytest.raises(ValueError, match=r"on 2 rows needs row_trace_term"):
        mu_bias_leading("rademacher", shape, sum_zero=True, scale=c, mu=mu, trace_term=trace.reshape(shape),
                        cube_terms=cubes)


def _trace_term(t: np.ndarray, sum_zero: bool) -> np.ndarray:
    n = t.shape[0]
    proj = np.eye(n) - (1.0 / n if sum_zero else 0.0)
    return np.einsum("abe,ab->e", t, proj)


@pytest.mark.parametrize("kind", ["normalized-gaussian", "gaussian"])
def test_mu_bias_isotropic_by_quadrature(kind):
    """Against a Monte Carlo average with 400k directions (the difference is linear in the
    fourth moments, so a loose relative tolerance still separates 3 from 1 or d(d+2))."""
    from spsa_mix.core.directions import sample_directions

    n = 4
    _, t = _random_cubic(n, np.random.default_rng(2))
    u = sample_directions(np.random.default_rng(3), 400_000, (n,), kind=kind, sum_zero=True)
    mc = _exact_mean_shift(t, u, np.full(len(u), 1.0 / len(u)))
    got = mu_bias_leading(kind, n, sum_zero=True, scale=1.0, mu=1.0, trace_term=_trace_term(t, True)) * 6
    np.testing.assert_allclose(got, mc, rtol=0.05, atol=0.02 * np.abs(mc).max())


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: direction_moments("uniform", 3, sum_zero=True), "kind must be one of"),
        (lambda: direction_moments("gaussian", 1, sum_zero=True), "direction space is empty"),
        (lambda: estimator_theory("gaussian", 3, sum_zero=True, m=0, scale=1.0, target_norm=1.0),
         "m must be an integer >= 1, but got 0"),
        (lambda: estimator_theory("gaussian", 3, sum_zero=True, m=1, scale=0.0, target_norm=1.0),
         "scale must be a positive number, but got 0.0"),
        (lambda: estimator_theory("gaussian", 3, sum_zero=True, m=1, scale=1.0, target_norm=-1.0),
         "target_norm must be a finite number >= 0, but got -1.0"),
        (lambda: estimator_theory("rademacher", 3, sum_zero=True, m=1, scale=1.0, target_norm=1.0, orthogonal=True),
         "orthogonal=True is defined for kind='normalized-gaussian' or 'gaussian'"),
        (lambda: estimator_theory("gaussian", 3, sum_zero=True, m=3, scale=1.0, target_norm=1.0, orthogonal=True),
         r"orthogonal=True needs m <= d = 2 .* but got m=3"),
        (lambda: cosine_theory("gaussian", 0, 1), "dim must be an integer >= 1, but got 0"),
        (lambda: cosine_theory("normalized-gaussian", 2, 3, orthogonal=True), "m must be at most dim = 2"),
        (lambda: paper_proposition1(0, 1, grad_norm=1.0), "k must be an integer >= 1, but got 0"),
        (lambda: mu_bias_leading("gaussian", 3, sum_zero=True, scale=1.0, mu=0.1, trace_term=np.zeros(2)),
         r"trace_term must have shape \(3,\), but got shape \(2,\)"),
        (lambda: mu_bias_leading("rademacher", 3, sum_zero=True, scale=1.0, mu=0.1, trace_term=np.zeros(3)),
         "kind='rademacher' needs cube_terms"),
        (lambda: mu_bias_leading("rademacher", 3, sum_zero=True, scale=1.0, mu=0.1, trace_term=np.zeros(3),
                                 cube_terms=np.zeros(2)), r"cube_terms must have shape \(3,\)"),
        (lambda: mu_bias_leading("gaussian", 3, sum_zero=True, scale=1.0, mu=0.0, trace_term=np.zeros(3)),
         "mu must be positive, but got 0.0"),
    ],
)
def test_errors_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
