import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spsa_mix.adapters._parametrization import (
    FLOOR,
    DomainParametrization,
    SimplexParametrization,
    check_bounds,
    inverse_stick_breaking,
    stick_breaking,
)
from spsa_mix.core.domain import Domain

KINDS = ["softmax", "normalize", "stick"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(2,), (5,), (3, 4)])
def test_initial_point_is_uniform(kind, shape):
    p = SimplexParametrization(kind, shape, bound=5.0 if kind == "softmax" else None)
    x = p.to_simplex(p.initial()[None])[0]
    np.testing.assert_allclose(x, np.full(shape, 1 / shape[-1]), atol=1e-12)
    assert p.initial().shape == (p.dim,)


@pytest.mark.parametrize("kind,dim", [("softmax", 12), ("normalize", 12), ("stick", 9)])
def test_dimension(kind, dim):
    assert SimplexParametrization(kind, (3, 4)).dim == dim


@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000), k=st.integers(2, 12), groups=st.integers(1, 3))
def test_round_trip_inside_the_box(kind, seed, k, groups):
    shape = (groups, k) if groups > 1 else (k,)
    rng = np.random.default_rng(seed)
    alpha = rng.dirichlet(np.full(k, 2.0), size=groups).reshape(shape)
    alpha = 0.9 * alpha + 0.1 / k  # away from the faces, so no coordinate is clipped
    p = SimplexParametrization(kind, shape, bound=20.0 if kind == "softmax" else None)
    back = p.to_simplex(p.from_simplex(alpha)[None])[0]
    np.testing.assert_allclose(back, alpha, atol=1e-12)


@given(kind=st.sampled_from(KINDS), z=arrays(np.float64, (3, 8), elements=st.floats(-1e6, 1e6)))
def test_any_vector_maps_strictly_inside_the_simplex(kind, z):
    p = SimplexParametrization(kind, (2, 4) if kind != "stick" else (2, 5))
    if kind == "stick":
        z = z[:, :8]
    x = p.to_simplex(z)
    assert x.shape == (3, *p.shape)
    assert np.all(x > 0)
    np.testing.assert_allclose(x.sum(axis=-1), 1.0, rtol=0, atol=1e-12)


def test_softmax_underflow_is_floored():
    p = SimplexParametrization("softmax", (3,))
    x = p.to_simplex(np.array([[0.0, -1e4, -2e4]]))
    assert np.all(x >= FLOOR) and x[0, 0] == 1.0


def test_stick_breaking_by_hand():
    np.testing.assert_allclose(stick_breaking([0.5, 0.5, 0.5]), [0.5, 0.25, 0.125, 0.125])
    np.testing.assert_allclose(inverse_stick_breaking([0.5, 0.25, 0.125, 0.125]), [0.5, 0.5, 0.5])


def test_normalize_by_hand():
    p = SimplexParametrization("normalize", (3,))
    np.testing.assert_allclose(p.to_simplex(np.array([[1.0, 1.0, 2.0]])), [[0.25, 0.25, 0.5]])
    lo, hi = p.bounds
    assert lo == pytest.approx(1e-6) and hi == 2.0


def test_errors():
    with pytest.raises(ValueError, match=r"parametrization must be one of \['softmax', 'normalize', 'stick'\], but got 'logit'"):
        SimplexParametrization("logit", (3,))
    with pytest.raises(ValueError, match=r"parametrization='stick' needs k >= 2 vertices, but got shape \(1,\)"):
        SimplexParametrization("stick", (1,))
    with pytest.raises(ValueError, match="bound must be a positive number or None, but got -1"):
        SimplexParametrization("softmax", (3,), bound=-1)
    with pytest.raises(ValueError, match=r"lower must be in \(0, 0.5\), but got 0.0"):
        SimplexParametrization("normalize", (3,), lower=0.0)


# ---------------------------------------------------------------- domains with extra coordinates
@pytest.mark.parametrize("kind", KINDS)
def test_domain_parametrization_round_trip_and_boxes(kind):
    d = Domain((2, 3), positive=2, real=1)
    p = DomainParametrization(SimplexParametrization(kind, (2, 3), bound=5.0 if kind == "softmax" else None), d,
                              positive_bounds=(0.25, 4.0), real_bounds=(-1.0, 3.0))
    assert p.dim == p.simplex.dim + 3
    lo, hi = p.extra_bounds
    np.testing.assert_allclose(lo, [np.log(0.25), np.log(0.25), -1.0])
    np.testing.assert_allclose(hi, [np.log(4.0), np.log(4.0), 3.0])
    x = d.join(np.array([[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]]), [0.5, 3.0], [2.5])
    np.testing.assert_allclose(p.to_point(p.from_point(x)[None])[0], x, atol=1e-12)
    np.testing.assert_allclose(p.to_point(p.initial()[None])[0], d.center(), atol=1e-12)
    far = p.from_point(x)[None].copy()
    far[0, -3:] = [10.0, -10.0, 10.0]  # out of the boxes: clipped onto them
    np.testing.assert_allclose(p.to_point(far)[0, -3:], [4.0, 0.25, 3.0])
    with pytest.raises(ValueError, match=r"x0's real_0=5\.0 is outside options\['real_bounds'\]=\(-1\.0, 3\.0\)"):
        p.from_point(d.join(x[:6].reshape(2, 3), [0.5, 3.0], [5.0]))


def test_check_bounds():
    assert check_bounds([1, 2], "b", positive=True) == (1.0, 2.0)
    for bad in [(2, 1), (1, np.inf), (1,), "ab", (True, 2)]:
        with pytest.raises(ValueError, match=r"b must be a pair \(lo, hi\) of finite numbers with lo < hi"):
            check_bounds(bad, "b", positive=False)
