"""Fixed points in alpha and beta space: gradients against finite differences, the linear
objective, third-derivative contractions on a cubic, errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from spsa_mix.core.simplex import softmax
from spsa_mix.problems import Quadratic
from spsa_mix.variance.problems import (
    FixedPoint,
    Linear,
    at_point,
    problem_at_uniform,
    third_derivative_terms,
)


def _fd_gradient(fp: FixedPoint, step: float = 1e-5) -> np.ndarray:
    n = fp.x.size
    eye = np.eye(n).reshape(n, *fp.shape)
    plus = fp.losses(fp.x + step * eye)
    minus = fp.losses(fp.x - step * eye)
    return ((plus - minus) / (2 * step)).reshape(fp.shape)


@pytest.mark.parametrize("name", ["quadratic", "linear"])
@pytest.mark.parametrize("space", ["alpha", "beta"])
@pytest.mark.parametrize("k", [2, 5])
def test_gradient_matches_finite_differences(name, space, k):
    fp = problem_at_uniform(name, k, space=space, rng=k)
    np.testing.assert_allclose(fp.gradient, _fd_gradient(fp), rtol=1e-6, atol=1e-8)
    assert fp.space == space and fp.shape == (k,)
    assert fp.exact_differences == (space == "alpha")
    if space == "beta":
        np.testing.assert_allclose(fp.x.sum(), 0.0, atol=1e-12)
        np.testing.assert_allclose(softmax(fp.x), np.full(k, 1 / k))
        assert abs(fp.gradient.sum()) < 1e-12  # softmax ignores a constant shift of beta


def test_beta_space_evaluates_the_objective_at_softmax():
    q = Quadratic.random(4, rng=0)
    alpha = np.array([0.1, 0.2, 0.3, 0.4])
    fp = at_point(q, alpha, space="beta")
    betas = np.random.default_rng(0).standard_normal((3, 4))
    np.testing.assert_allclose(fp.losses(betas), q(softmax(betas)))
    np.testing.assert_allclose(fp.grad_at(fp.x), fp.gradient)


def test_same_seed_same_problem_and_different_k_different_problem():
    a = problem_at_uniform("quadratic", 4, rng=1)
    b = problem_at_uniform("quadratic", 4, rng=1)
    np.testing.assert_array_equal(a.gradient, b.gradient)
    c = problem_at_uniform("quadratic", 4, rng=2)
    assert not np.allclose(a.gradient, c.gradient)


def test_linear():
    f = Linear(np.array([1.0, -2.0, 0.5]))
    pts = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(f(pts), [1.0, 1.0 * 0.2 - 0.6 + 0.25])
    assert f(pts[1]) == pytest.approx(-0.15)
    value, grad = f.value_and_grad(pts[1])
    assert value == pytest.approx(-0.15) and grad.tolist() == [1.0, -2.0, 0.5]
    _, derivs = f.jvp(pts[1], np.eye(3))
    np.testing.assert_allclose(derivs, [1.0, -2.0, 0.5])
    assert Linear.random(4, rng=0).k == 4
    with pytest.raises(ValueError, match=r"w must be a non-empty finite vector, but got shape \(2, 2\)"):
        Linear(np.ones((2, 2)))


def _cubic_point(n: int):
    rng = np.random.default_rng(4)
    a = rng.standard_normal((n, n, n))
    t = sum(np.transpose(a, p) for p in itertools.permutations(range(3))) / 6
    g = rng.standard_normal(n)
    x0 = np.full(n, 1.0 / n)

    def grad_at(x):
        y = x - x0
        return g + 0.5 * np.einsum("abc,a,b->c", t, y, y)

    def losses(pts):
        y = pts - x0
        return y @ g + np.einsum("abc,na,nb,nc->n", t, y, y, y) / 6

    return FixedPoint(losses=losses, x=x0, gradient=g, grad_at=grad_at), t


@pytest.mark.parametrize("sum_zero", [True, False])
def test_third_derivative_terms_on_a_cubic(sum_zero):
    n = 4
    fp, t = _cubic_point(n)
    proj = np.eye(n) - (1.0 / n if sum_zero else 0.0)
    trace, cubes = third_derivative_terms(fp, sum_zero=sum_zero)
    np.testing.assert_allclose(trace, np.einsum("abe,ab->e", t, proj), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(cubes, np.einsum("abc,af,bf,cf->f", t, proj, proj, proj), rtol=1e-6, atol=1e-6)
    only_trace, none = third_derivative_terms(fp, sum_zero=sum_zero, cubes=False)
    assert none is None
    np.testing.assert_allclose(only_trace, trace)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: at_point(Linear(np.ones(2)), [0.5, 0.5], space="logits"), "space must be 'alpha' or 'beta'"),
        (lambda: at_point(Linear(np.ones(2)), [0.7, 0.5]), "alpha must sum to 1"),
        (lambda: at_point(Linear(np.ones(2)), [0.5, 0.5], chunk_size=0), "chunk_size must be an integer >= 1"),
        (lambda: problem_at_uniform("cubic", 3), r"problem must be one of \['quadratic', 'linear'\]"),
        (lambda: problem_at_uniform("linear", 1), "k must be at least 2"),
        (lambda: third_derivative_terms(problem_at_uniform("linear", 3), sum_zero=True, step=0.0),
         "step must be positive, but got 0.0"),
    ],
)
def test_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ----------------------------------------------------------------------------- the mu^2 term in beta space
def _all_signs(k: int, sum_zero: bool) -> np.ndarray:
    """The Rademacher directions as ``sample_directions`` draws them, all equally likely
    (in the sum-zero subspace: no row of equal signs, centred, times sqrt(1 - 2^(1-k)))."""
    z = np.array(list(itertools.product([-1.0, 1.0], repeat=k)))
    if not sum_zero:
        return z
    z = z[~np.all(z == z[:, :1], axis=1)]
    return (z - z.mean(axis=1, keepdims=True)) * np.sqrt(1.0 - 2.0 ** (1 - k))


@pytest.mark.parametrize("sum_zero", [True, False])
@pytest.mark.parametrize("name", ["quadratic", "linear"])
def test_mu_squared_bias_of_the_softmax_objective_is_the_leading_term(name, sum_zero):
    """Exact expectation over every Rademacher direction (no sampling noise): the mean shift
    c E[(d_fd - g.u) u] of the central difference on L(softmax(beta)) equals
    mu_bias_leading up to O(mu^4): the error falls 16-fold when mu halves."""
    from spsa_mix.variance.empirical import directional_derivatives
    from spsa_mix.variance.theory import mu_bias_leading

    k = 5
    fp = problem_at_uniform(name, k, space="beta", rng=11)
    u = _all_signs(k, sum_zero)
    trace, cubes = third_derivative_terms(fp, sum_zero=sum_zero)
    errors = []
    for mu in (0.2, 0.1):
        shift = directional_derivatives(fp, u, mu=mu) - u @ fp.gradient
        exact = (shift[:, None] * u).mean(axis=0)
        lead = mu_bias_leading("rademacher", k, sum_zero=sum_zero, scale=1.0, mu=mu, trace_term=trace,
                               cube_terms=cubes)
        assert np.linalg.norm(lead) > 0
        errors.append(np.linalg.norm(exact - lead))
        assert errors[-1] < 0.02 * np.linalg.norm(lead)
    assert 14 < errors[0] / errors[1] < 18  # the remainder is O(mu^4): 2^4 = 16 per halving
