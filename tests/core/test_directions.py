import numpy as np
import pytest

from spsa_mix.core.directions import estimator_scale, sample_directions, space_dim
from spsa_mix.core.domain import Domain

KINDS = ["normalized-gaussian", "gaussian", "rademacher"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sum_zero", [True, False])
@pytest.mark.parametrize("shape", [(5,), (3, 4)])
def test_shapes_norms_and_subspace(kind, sum_zero, shape):
    u = sample_directions(np.random.default_rng(0), 7, shape, kind=kind, sum_zero=sum_zero)
    assert u.shape == (7, *shape)
    if kind == "normalized-gaussian":
        np.testing.assert_allclose(np.linalg.norm(u.reshape(7, -1), axis=1), 1.0)
    if sum_zero:
        np.testing.assert_allclose(u.sum(axis=-1), 0.0, atol=1e-12)
    if kind == "rademacher" and not sum_zero:
        assert set(np.unique(u)) == {-1.0, 1.0}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sum_zero", [True, False])
def test_scale_makes_second_moment_the_projector(kind, sum_zero):
    """c E[u u^T] = P: the estimator c (g.u) u is unbiased for P g."""
    shape = (4,)
    n = 40_000
    u = sample_directions(np.random.default_rng(1), n, shape, kind=kind, sum_zero=sum_zero)
    second = np.einsum("ni,nj->ij", u, u) / n * estimator_scale(kind, shape, sum_zero)
    P = np.eye(4) - (1 / 4 if sum_zero else 0.0)
    np.testing.assert_allclose(second, P, atol=0.03)


@pytest.mark.parametrize("kind", ["normalized-gaussian", "gaussian"])
@pytest.mark.parametrize("sum_zero", [True, False])
def test_orthogonal_directions(kind, sum_zero):
    shape = (2, 4)
    d = space_dim(shape, sum_zero)
    u = sample_directions(np.random.default_rng(2), d, shape, kind=kind, sum_zero=sum_zero, orthogonal=True)
    flat = u.reshape(d, -1)
    gram = flat @ flat.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-10)
    if kind == "normalized-gaussian":
        np.testing.assert_allclose(np.diag(gram), 1.0)
    if sum_zero:
        np.testing.assert_allclose(u.sum(axis=-1), 0.0, atol=1e-12)


def test_orthogonal_marginal_is_isotropic():
    n = 20_000
    rng = np.random.default_rng(3)
    u = np.concatenate([sample_directions(rng, 2, (3,), sum_zero=False, orthogonal=True) for _ in range(n // 2)])
    np.testing.assert_allclose(np.einsum("ni,nj->ij", u, u) / n, np.eye(3) / 3, atol=0.01)


def test_same_generator_state_same_directions():
    a = sample_directions(np.random.default_rng(5), 3, (4,))
    b = sample_directions(np.random.default_rng(5), 3, (4,))
    np.testing.assert_array_equal(a, b)


def test_single_vertex_gives_zero_directions():
    assert np.all(sample_directions(np.random.default_rng(0), 2, (1,)) == 0)


def test_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"directions must be one of .* but got 'sobol'"):
        sample_directions(rng, 1, (3,), kind="sobol")
    with pytest.raises(ValueError, match=r"orthogonal=True needs m <= 2 .* but got m=3"):
        sample_directions(rng, 3, (3,), orthogonal=True)
    with pytest.raises(ValueError, match=r"orthogonal=True is defined for .* but got kind='rademacher'"):
        sample_directions(rng, 2, (3,), kind="rademacher", orthogonal=True)


# ---------------------------------------------------------------- domains with extra coordinates
MIXED = Domain((2, 3), positive=1, real=1)  # 6 weights, then a positive and a real coordinate


def _projector(domain: Domain, sum_zero: bool) -> np.ndarray:
    """Orthogonal projector onto the direction space: the sum-zero subspace of every
    logit row (with sum_zero), times R^e for the extra coordinates."""
    P = np.eye(domain.size)
    if sum_zero:
        k = domain.k
        for g in range(domain.n_weights // k):
            P[g * k:(g + 1) * k, g * k:(g + 1) * k] -= 1.0 / k
    return P


@pytest.mark.parametrize(("kind", "orthogonal"), [(kind, False) for kind in KINDS]
                         + [("normalized-gaussian", True), ("gaussian", True)])  # no orthogonal signs
@pytest.mark.parametrize("sum_zero", [True, False])
def test_scale_makes_second_moment_the_projector_on_a_mixed_domain(kind, orthogonal, sum_zero):
    """c E[u u^T] = P on {sum-zero rows} x R^2, with c = d = G (K - 1) + 2 for unit
    directions and 1 otherwise: the estimate is unbiased in the extra coordinates too."""
    n = 60_000
    d = space_dim(MIXED, sum_zero)
    if orthogonal:  # d orthogonal directions per draw, each marginally as the i.i.d. kind
        rng = np.random.default_rng(1)
        u = np.concatenate([sample_directions(rng, d, MIXED, kind=kind, sum_zero=sum_zero, orthogonal=True)
                            for _ in range(n // d)])
        n = len(u)
    else:
        u = sample_directions(np.random.default_rng(1), n, MIXED, kind=kind, sum_zero=sum_zero)
    assert u.shape == (n, MIXED.size)
    c = estimator_scale(kind, MIXED, sum_zero)
    assert d == (6 if sum_zero else 8) and c == (d if kind == "normalized-gaussian" else 1.0)
    second = np.einsum("ni,nj->ij", u, u) / n * c
    np.testing.assert_allclose(second, _projector(MIXED, sum_zero), atol=0.03)


def test_mixed_domain_directions_project_the_logit_rows_only():
    u = sample_directions(np.random.default_rng(0), 50, MIXED, kind="rademacher")
    weights, extra = u[:, :6].reshape(50, 2, 3), u[:, 6:]
    np.testing.assert_allclose(weights.sum(axis=-1), 0.0, atol=1e-12)  # each logit row centred
    assert set(np.unique(extra)) == {-1.0, 1.0}  # the extra coordinates keep their signs
    g = sample_directions(np.random.default_rng(0), 50, MIXED, kind="normalized-gaussian")
    np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1.0)  # one unit vector, extras included
    np.testing.assert_allclose(g[:, :6].reshape(50, 2, 3).sum(axis=-1), 0.0, atol=1e-12)
    o = sample_directions(np.random.default_rng(0), 6, MIXED, kind="gaussian", orthogonal=True)
    gram = o @ o.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-10)
    with pytest.raises(ValueError, match=r"orthogonal=True needs m <= 6 .* but got m=7"):
        sample_directions(np.random.default_rng(0), 7, MIXED, orthogonal=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_simplex_only_domain_draws_exactly_as_its_shape(kind):
    for shape in [(4,), (2, 3)]:
        a = sample_directions(np.random.default_rng(5), 3, Domain(shape), kind=kind)
        b = sample_directions(np.random.default_rng(5), 3, shape, kind=kind)
        np.testing.assert_array_equal(a, b)
        assert estimator_scale(kind, Domain(shape), True) == estimator_scale(kind, shape, True)


# ---------------------------------------------------------------- no zero Rademacher rows (issue 13, item 7)
@pytest.mark.parametrize("shape", [(2,), (3,), (4,), (3, 2), Domain(2, positive=1), Domain((2, 3), real=1)])
def test_sum_zero_rademacher_rows_are_never_zero_and_keep_the_projector(shape):
    """Centred signs vanish in a row whose k signs agree (probability 2^(1-k): half the
    steps at k = 2); such rows are drawn again, and the row is scaled by sqrt(1 - 2^(1-k))
    so that E[u u^T] is still the projector (Monte Carlo, 200k draws)."""
    n = 200_000
    u = sample_directions(np.random.default_rng(7), n, shape, kind="rademacher")
    domain = Domain.of(shape)
    flat = u.reshape(n, -1)
    rows = flat[:, : domain.n_weights].reshape(n, -1, domain.k)
    assert np.abs(rows).sum(axis=-1).min() > 0  # no zero row, ever
    np.testing.assert_allclose(rows.sum(axis=-1), 0.0, atol=1e-12)
    P = _projector(domain, True) if not domain.simplex_only else np.kron(
        np.eye(domain.n_weights // domain.k), np.eye(domain.k) - 1.0 / domain.k)
    second = flat.T @ flat / n * estimator_scale("rademacher", shape, True)
    np.testing.assert_allclose(second, P, atol=0.01)
    g = np.random.default_rng(8).standard_normal(flat.shape[1])
    est = (flat @ g)[:, None] * flat  # c (g.u) u with c = 1: unbiased for P g
    np.testing.assert_allclose(est.mean(axis=0), P @ g, atol=0.03 * np.linalg.norm(g))


def test_k2_sum_zero_rademacher_is_the_one_direction_of_the_plane():
    u = sample_directions(np.random.default_rng(0), 1000, (2,), kind="rademacher")
    np.testing.assert_array_equal(np.abs(u), np.sqrt(0.5))  # +-(1, -1) / sqrt(2), never 0
    assert 400 < int((u[:, 0] > 0).sum()) < 600
