"""SAIL's Theorem 3 checked against brute force on synthetic parameter vectors whose
pairwise distances are fed in, and the MMD machinery checked against its definitions."""

import numpy as np
import pytest
import scipy.optimize
from hypothesis import given
from hypothesis import strategies as st

from spsa_mix.baselines.sail import (
    median_bandwidth,
    mmd2_matrix,
    sail_from_distances,
    sail_weights,
    simplex_qp,
)


def distances(thetas, target):
    to_target = ((thetas - target) ** 2).sum(1)
    between = ((thetas[:, None] - thetas[None]) ** 2).sum(-1)
    return to_target, between


def brute_force(thetas, target):
    """min |sum_i gamma_i theta_i - theta*|^2 over the simplex by SciPy's SLSQP from several
    starts; SLSQP meets the constraints to ~1e-9 only, so its answer is put back on the
    simplex before it is scored."""
    n = len(thetas)

    def f(g):
        return ((g @ thetas - target) ** 2).sum()

    best_x, best_f = None, np.inf
    for start in np.vstack([np.full(n, 1 / n), np.eye(n)]):
        res = scipy.optimize.minimize(
            f, start, method="SLSQP", bounds=[(0, 1)] * n,
            constraints=[{"type": "eq", "fun": lambda g: g.sum() - 1}], options={"ftol": 1e-14, "maxiter": 500},
        )
        x = np.clip(res.x, 0, None) / np.clip(res.x, 0, None).sum()
        if f(x) < best_f:
            best_x, best_f = x, f(x)
    return best_x, best_f


@pytest.mark.parametrize("seed", range(5))
def test_two_experts_main_text_eq_11_not_the_appendix_statement(seed):
    rng = np.random.default_rng(seed)
    t1, t2 = rng.normal(size=(2, 7))
    target = 0.3 * t1 + 0.7 * t2 + 0.2 * rng.normal(size=7)  # closest point of the segment is inside
    (d1, d2), between = distances(np.stack([t1, t2]), target)
    d12 = between[0, 1]
    line = scipy.optimize.minimize_scalar(lambda g: ((g * t1 + (1 - g) * t2 - target) ** 2).sum()).x
    eq11 = (d2 + d12 - d1) / (2 * d12)  # section 4.2, eq. (11)
    appendix = (d1 + d12 - d2) / (2 * d12)  # appendix E statement and section 4.4
    assert eq11 == pytest.approx(line, abs=1e-7)
    assert appendix == pytest.approx(1 - line, abs=1e-7)  # the weight of the other expert
    w, rec = sail_from_distances([d1, d2], between)
    np.testing.assert_allclose(w, [eq11, 1 - eq11], atol=1e-10)
    assert rec["closed_form_on_simplex"] and rec["solver"] == "closed form"


@given(seed=st.integers(0, 10_000), n=st.integers(2, 6), dim=st.integers(1, 12))
def test_matches_brute_force_on_the_simplex(seed, n, dim):
    rng = np.random.default_rng(seed)
    thetas = rng.normal(size=(n, dim))
    target = rng.normal(size=dim) * rng.uniform(0.1, 2.0)
    to_target, between = distances(thetas, target)
    w, rec = sail_from_distances(to_target, between)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0, abs=1e-12)
    _, f_bf = brute_force(thetas, target)
    f_sail = ((w @ thetas - target) ** 2).sum()
    assert f_sail <= f_bf + 1e-9 * max(1.0, f_bf)
    scale = to_target.max()  # the Gram matrix is formed from distances: rounding of that order
    assert rec["distance_to_target"] ** 2 == pytest.approx(f_sail, rel=1e-6, abs=1e-12 * scale)


def test_closed_form_equals_eq_12_inside_the_simplex():
    rng = np.random.default_rng(0)
    thetas = rng.normal(size=(4, 10))
    target = np.array([0.4, 0.3, 0.2, 0.1]) @ thetas + 0.01 * rng.normal(size=10)
    to_target, between = distances(thetas, target)
    H = to_target[:, None] + to_target[None, :] - between  # SAIL eq. (13)
    e = np.ones(4)
    eq12 = np.linalg.solve(H, e) / (e @ np.linalg.solve(H, e))
    w, rec = sail_from_distances(to_target, between)
    assert rec["closed_form_on_simplex"]
    np.testing.assert_allclose(w, eq12, atol=1e-9)
    np.testing.assert_allclose(rec["gram"], H / 2, atol=1e-12)


def test_closed_form_outside_the_simplex_falls_back_to_the_qp():
    # the target is beyond expert 0 on the line from expert 1: eq. 11 gives gamma_1 > 1
    thetas = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]])
    target = np.array([1.5, -0.2])
    to_target, between = distances(thetas, target)
    w, rec = sail_from_distances(to_target, between)
    assert not rec["closed_form_on_simplex"] and rec["solver"] == "simplex QP"
    assert min(rec["closed_form"]) < 0
    x_bf, _ = brute_force(thetas, target)
    np.testing.assert_allclose(w, x_bf, atol=1e-6)
    np.testing.assert_allclose(w, [1.0, 0.0, 0.0], atol=1e-9)


def test_singular_gram_target_on_the_line_between_two_experts():
    # G has rank 1 (delta_1 and delta_2 are collinear): eq. 12 has no inverse, eq. 11 holds
    thetas = np.array([[0.0, 0.0], [1.0, 0.0]])
    target = np.array([0.25, 0.0])
    w, rec = sail_from_distances(*distances(thetas, target))
    np.testing.assert_allclose(w, [0.75, 0.25], atol=1e-9)
    assert np.linalg.matrix_rank(np.array(rec["gram"])) == 1


def test_simplex_qp_by_hand():
    # min w1^2 + 4 w2^2 on w1 + w2 = 1: w = (4/5, 1/5)
    np.testing.assert_allclose(simplex_qp(np.diag([1.0, 4.0])), [0.8, 0.2], atol=1e-10)
    # a vertex: G = diag(1, 1, 100) with a strong coupling pushes the third weight to 0
    g = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0], [2.0, 2.0, 100.0]])
    np.testing.assert_allclose(simplex_qp(g), [0.5, 0.5, 0.0], atol=1e-9)


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_mmd_gram_is_positive_semidefinite(kernel):
    rng = np.random.default_rng(1)
    sets = [rng.normal(loc=rng.normal(size=3), scale=rng.uniform(0.5, 2), size=(rng.integers(20, 60), 3))
            for _ in range(6)]
    d2 = mmd2_matrix(sets, kernel=kernel, bandwidth=1.3)
    np.testing.assert_allclose(d2, d2.T, atol=1e-12)
    np.testing.assert_allclose(np.diag(d2), 0, atol=1e-12)
    to_target, between = d2[:-1, -1], d2[:-1, :-1]
    gram = 0.5 * (to_target[:, None] + to_target[None, :] - between)
    assert np.linalg.eigvalsh(gram).min() >= -1e-12 * np.abs(gram).max()


def test_mmd_against_its_definition():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(7, 2)), rng.normal(1.0, 1.0, size=(5, 2))

    def k(x, y):
        return np.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / (2 * 0.7**2))

    expected = k(a, a).mean() + k(b, b).mean() - 2 * k(a, b).mean()
    assert mmd2_matrix([a, b], bandwidth=0.7)[0, 1] == pytest.approx(expected, rel=1e-12)
    lin = mmd2_matrix([a, b], kernel="linear")[0, 1]
    assert lin == pytest.approx(((a.mean(0) - b.mean(0)) ** 2).sum(), rel=1e-12)


def test_median_bandwidth():
    assert median_bandwidth(np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 4.0]])) == 4.0  # distances 5, 4, 3
    with pytest.raises(ValueError, match="the features are all identical"):
        median_bandwidth(np.zeros((4, 2)))


def test_sail_weights_end_to_end():
    rng = np.random.default_rng(0)
    experts = [rng.normal(m, 1.0, size=(300, 4)) for m in (0.0, 2.0, 4.0)]
    target = np.concatenate([rng.normal(0.0, 1.0, (150, 4)), rng.normal(2.0, 1.0, (150, 4))])
    w, rec = sail_weights(experts, target, rng=0, max_points=200)
    assert np.all(w >= 0) and w.sum() == pytest.approx(1.0)
    assert w[2] < 0.05 and w[0] > 0.25 and w[1] > 0.25  # the target mixes the first two
    assert rec["points"] == [200, 200, 200, 200] and rec["kernel"] == "rbf" and rec["bandwidth"] > 0
    w2, _ = sail_weights(experts, target, rng=0, max_points=200)
    np.testing.assert_array_equal(w, w2)  # same rng, same weights


def test_sail_weights_errors():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="expert_features must be a non-empty sequence of \\(n_i, p\\) arrays"):
        sail_weights(np.zeros((2, 5, 2)), x)
    with pytest.raises(ValueError, match="kernel must be 'rbf' or 'linear', but got 'poly'"):
        sail_weights([x, x], x, kernel="poly")
    with pytest.raises(ValueError, match="expert_features\\[1\\] has 3 features per row but target_features has 2"):
        sail_weights([x, np.zeros((5, 3))], x)
    with pytest.raises(ValueError, match="bandwidth must be a positive number or 'median', but got -1"):
        sail_weights([x + 1, x], x, bandwidth=-1)
    with pytest.raises(ValueError, match="target_features must be a non-empty 2-D array, but got shape \\(5,\\)"):
        sail_weights([x, x], np.zeros(5))
    with pytest.raises(ValueError, match="max_points must be an integer >= 2, but got 1"):
        sail_weights([x, x], x, max_points=1)
    with pytest.raises(ValueError, match="between must have shape \\(2, 2\\) to match to_target"):
        sail_from_distances([1.0, 2.0], np.zeros((3, 3)))
