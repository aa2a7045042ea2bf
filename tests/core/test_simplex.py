import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spsa_mix.core.simplex import (
    check_simplex_point,
    logits_from_simplex,
    project_onto_simplex,
    project_sum_zero,
    softmax,
    softmax_jvp,
    softmax_vjp,
)

finite = st.floats(-30, 30, allow_nan=False)


@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=finite))
def test_softmax_rows_on_simplex(beta):
    a = softmax(beta)
    assert np.all(a > 0)
    np.testing.assert_allclose(a.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


@given(arrays(np.float64, st.integers(2, 12), elements=st.floats(-5, 5)))
def test_logits_invert_softmax(beta):
    a = softmax(beta)
    b = logits_from_simplex(a)
    np.testing.assert_allclose(softmax(b), a, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(b, beta - beta.mean(), atol=1e-9)


def test_softmax_jvp_matches_finite_difference():
    rng = np.random.default_rng(0)
    beta, v = rng.standard_normal(6), rng.standard_normal(6)
    h = 1e-6
    fd = (softmax(beta + h * v) - softmax(beta - h * v)) / (2 * h)
    np.testing.assert_allclose(softmax_jvp(softmax(beta), v), fd, atol=1e-9)


def test_softmax_vjp_is_chain_rule():
    rng = np.random.default_rng(1)
    beta, g = rng.standard_normal(5), rng.standard_normal(5)
    a = softmax(beta)
    J = np.diag(a) - np.outer(a, a)
    np.testing.assert_allclose(softmax_vjp(a, g), J.T @ g, atol=1e-14)
    assert abs(softmax_vjp(a, g).sum()) < 1e-14  # lies in the sum-zero subspace


def test_several_simplices_are_independent_rows():
    beta = np.array([[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]])
    np.testing.assert_allclose(softmax(beta)[1], [1 / 3] * 3)
    np.testing.assert_allclose(project_sum_zero(beta).sum(axis=-1), 0.0, atol=1e-14)


@given(arrays(np.float64, st.integers(1, 15), elements=finite))
def test_projection_matches_quadratic_program(v):
    from scipy.optimize import minimize

    p = project_onto_simplex(v)
    assert np.all(p >= 0) and abs(p.sum() - 1) < 1e-12
    k = v.size
    ref = minimize(
        lambda x: 0.5 * np.sum((x - v) ** 2), np.full(k, 1 / k), jac=lambda x: x - v, method="SLSQP",
        bounds=[(0, 1)] * k, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
        options={"ftol": 1e-14, "maxiter": 500},
    )
    assert 0.5 * np.sum((p - v) ** 2) <= 0.5 * np.sum((ref.x - v) ** 2) + 1e-8


def test_check_simplex_point_accepts_and_renormalises():
    x = check_simplex_point([0.2, 0.3, 0.5 + 1e-9], (3,))
    assert abs(x.sum() - 1) < 1e-15


@pytest.mark.parametrize(
    "x, shape, match",
    [
        ([0.5, 0.5], (3,), r"x0 must have shape \(3,\), but got shape \(2,\)"),
        ([0.0, 1.0], (2,), r"x0 must be strictly positive .* but got \[0, 1\]"),
        ([-0.5, 1.5], (2,), r"strictly positive"),
        ([np.nan, 1.0], (2,), r"x0 must be finite, but got \[nan, 1\]"),
        ([0.5, 0.6], (2,), r"x0 must sum to 1 .* row 0 sums to 1\.1"),
        ([[0.5, 0.5], [0.2, 0.2]], (2, 2), r"row 1 sums to 0\.4"),
    ],
)
def test_check_simplex_point_errors(x, shape, match):
    with pytest.raises(ValueError, match=match):
        check_simplex_point(x, shape)
