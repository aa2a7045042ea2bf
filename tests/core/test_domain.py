"""Domain: simplex weights with positive and real coordinates, and the maps to unconstrained ones."""

from __future__ import annotations

import numpy as np
import pytest

from spsa_mix.core.domain import Domain


def test_round_trip_and_layout_with_leading_axes() -> None:
    d = Domain((2, 3), positive=1, real=2, names=("scale", "a", "b"))
    rng = np.random.default_rng(0)
    alpha = rng.dirichlet(np.ones(3), size=(4, 2))  # (n=4, 2, 3)
    x = d.join(alpha, rng.uniform(0.5, 2, (4, 1)), rng.normal(size=(4, 2)))
    assert x.shape == (4, d.size) == (4, 9)
    a, p, r = d.split(x)
    assert np.array_equal(a, alpha) and p.shape == (4, 1) and r.shape == (4, 2)
    assert np.allclose(d.to_point(d.from_point(x)), x)
    assert d.extras(x[0]) == {"scale": p[0, 0], "a": r[0, 0], "b": r[0, 1]}


def test_simplex_only_keeps_the_shape_of_the_weights() -> None:
    d = Domain.of((2, 3))
    assert d.simplex_only and d.point_shape == (2, 3)
    x = d.center()
    assert x.shape == (2, 3) and np.allclose(x, 1 / 3)


def test_jvp_matches_finite_differences_of_to_point() -> None:
    d = Domain((2, 3), positive=2, real=1)
    rng = np.random.default_rng(1)
    z, u = rng.normal(size=d.size), rng.normal(size=d.size)
    h = 1e-6
    fd = (d.to_point(z + h * u) - d.to_point(z - h * u)) / (2 * h)
    assert np.allclose(d.jvp(z, u), fd, atol=1e-8)
    g = rng.normal(size=d.size)  # <g, J u> == <J^T g, u>
    assert np.isclose(g @ d.jvp(z, u), d.vjp(z, g) @ u)


def test_project_removes_only_the_logit_shift() -> None:
    d = Domain(3, positive=1)
    z = np.array([1.0, 2.0, 3.0, 0.7])
    out = d.project(z)
    assert np.allclose(out[:3], [-1, 0, 1]) and out[3] == 0.7
    assert np.allclose(d.to_point(out), d.to_point(z))


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(simplex=0), "k must be an integer >= 1"),
    (dict(simplex=3, real=1.5), "real must be an integer >= 0, but got 1.5"),
    (dict(simplex=3, positive=1, names=("a", "b")), "names must be 1 distinct non-empty strings"),
])
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Domain(**kwargs)


def test_split_refuses_the_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"a point of Domain\(simplex=\(3,\), positive=1\) has shape \(4,\)"):
        Domain(3, positive=1).split(np.zeros(3))
