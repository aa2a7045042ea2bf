"""Random perturbation directions for two-point (SPSA) gradient estimates.

Three distributions, each optionally restricted to the subspace where every row sums to
zero (the only directions that move ``softmax(beta)``), and optionally mutually orthogonal
within one step:

``"normalized-gaussian"``
    uniform on the unit sphere of the (sub)space of dimension ``d``: GLUE's choice
    (section 3.2). ``E[u u^T] = P / d``, with ``P`` the projector onto the space.
``"gaussian"``
    standard normal on the (sub)space: ``E[u u^T] = P``.
``"rademacher"``
    independent signs, Spall's classical SPSA. In the sum-zero subspace each row of signs
    is centred; a row whose ``k`` signs all agree would centre to zero (probability
    ``q = 2^(1-k)``: half the rows at ``k = 2``, so half of the steps would spend two
    evaluations on a zero estimate), so such rows are drawn again, and the centred row is
    multiplied by ``sqrt(1 - q)`` so that ``E[u u^T] = P`` still (see below). The entries
    are then no longer plus or minus one.

:func:`estimator_scale` returns the factor ``c`` with ``c E[u u^T] = P``; multiplying the
two-point estimate by it makes ``E[c (g.u) u] = P g`` (unbiased for the gradient with
respect to ``beta``, which always lies in the sum-zero subspace). GLUE's equation (3) omits
this factor, so with unit directions its estimate has mean ``g / d``; the factor cancels
inside Adam, but not in plain gradient descent. See ``docs/variance.md``.

A :class:`~spsa_mix.core.domain.Domain` with coordinates beside the simplex (``positive``
ones in log space, ``real`` ones) is accepted wherever a shape is: a direction is then one
flat vector in the domain's layout. The logit rows are drawn and projected as above; the
extra coordinates get the same kind of entries (signs or normal draws) without projection,
and ``"normalized-gaussian"`` normalises the whole vector. The space is then
``S = {sum-zero rows} x R^e`` (``e`` extra coordinates), of dimension
``d = groups (k - 1) + e`` (``groups k + e`` without ``sum_zero``), with projector
``P = diag(I - 11^T / k, ..., I - 11^T / k, I_e)``:

* ``"gaussian"``: ``u = P z`` with ``z ~ N(0, I)``, so ``E[u u^T] = P P^T = P`` and ``c = 1``;
* ``"rademacher"``: the blocks are independent with mean zero, so ``E[u u^T]`` is block
  diagonal. For a row, ``s`` uniform on the signs that are not all equal: the two constant
  rows ``+-1`` carry probability ``q = 2^(1-k)`` of ``E[s s^T] = I``, so
  ``E[s s^T | not constant] = (I - q 11^T) / (1 - q)``, and with ``C = I - 11^T/k``
  (``C 1 = 0``) the row ``u = sqrt(1 - q) C s`` has ``E[u u^T] = C``. The extra signs have
  ``E[s s^T] = I_e``: ``E[u u^T] = P`` and ``c = 1``. (Without the redraw, ``C s`` has
  ``E = C`` too, but is zero with probability ``q``.) Every other moment of a row is
  ``(1 - q)`` times that of the centred signs without the redraw (the constant rows
  centre to zero), which :mod:`spsa_mix.variance.theory` uses;
* ``"normalized-gaussian"``: ``P z`` is a standard normal vector of ``S`` (isotropic in
  it), so ``u = P z / |P z|`` is uniform on the unit sphere of ``S``, ``E[u u^T] = P / d``
  (the trace is ``E|u|^2 = 1``) and ``c = d``.

The simplex-only domain gives exactly the draws of its shape.

Example
-------
>>> import numpy as np
>>> u = sample_directions(np.random.default_rng(0), 4, (3,), kind="normalized-gaussian")
>>> u.shape, np.allclose(np.linalg.norm(u, axis=1), 1.0), np.allclose(u.sum(axis=1), 0.0)
((4, 3), True, True)
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.domain import Domain
from spsa_mix.core.simplex import project_sum_zero

__all__ = ["DIRECTION_KINDS", "DirectionKind", "sample_directions", "estimator_scale", "space_dim"]

DirectionKind = Literal["normalized-gaussian", "gaussian", "rademacher"]
DIRECTION_KINDS: tuple[str, ...] = ("normalized-gaussian", "gaussian", "rademacher")


Shape = tuple[int, ...] | Domain


def _simplex_shape(shape: Shape) -> tuple[tuple[int, ...], int]:
    """The shape of the simplex weights and the number of extra coordinates."""
    if isinstance(shape, Domain):
        return shape.simplex, shape.positive + shape.real
    return shape, 0


def space_dim(shape: Shape, sum_zero: bool) -> int:
    """Dimension of the space the directions live in: ``groups (k - 1)`` (``groups k``
    without ``sum_zero``), plus the extra coordinates of a :class:`Domain`.

    >>> space_dim((3, 5), sum_zero=True), space_dim(Domain((3, 5), positive=1), sum_zero=True)
    (12, 13)
    """
    simplex, extras = _simplex_shape(shape)
    n = math.prod(simplex)
    if sum_zero:
        groups = n // simplex[-1]
        n -= groups
    return n + extras


def estimator_scale(kind: str, shape: Shape, sum_zero: bool) -> float:
    """Factor that makes ``scale * (g.u) u`` unbiased for ``P g`` (see module docstring):
    the dimension ``d`` of the space for unit directions, ``1`` otherwise.

    >>> estimator_scale("normalized-gaussian", (10,), sum_zero=True)
    9.0
    >>> estimator_scale("normalized-gaussian", Domain((2, 10), positive=1), sum_zero=True)
    19.0
    """
    _check_kind(kind)
    return float(space_dim(shape, sum_zero)) if kind == "normalized-gaussian" else 1.0


def sample_directions(
    rng: np.random.Generator,
    m: int,
    shape: Shape,
    *,
    kind: str = "normalized-gaussian",
    sum_zero: bool = True,
    orthogonal: bool = False,
) -> NDArray[np.float64]:
    """Draw ``m`` directions of shape ``shape`` (a shape, or a :class:`Domain`: then of its
    ``point_shape``); returns an array of shape ``(m, *shape)``.

    With ``orthogonal=True`` the ``m`` directions are mutually orthogonal: the first ``m``
    columns of a Haar-random orthonormal basis of the space (so each one is marginally
    uniform on the unit sphere), rescaled by independent chi-distributed lengths for
    ``kind="gaussian"``. It needs ``m`` at most the dimension of the space and is not
    defined for Rademacher signs.

    >>> rng = np.random.default_rng(1)
    >>> u = sample_directions(rng, 3, (4,), kind="gaussian", orthogonal=True)
    >>> bool(abs(u[0] @ u[1]) < 1e-12)
    True
    """
    _check_kind(kind)
    if isinstance(shape, Domain):
        if shape.simplex_only:
            shape = shape.simplex  # exactly the draws of the plain shape
        else:
            return _sample_domain(rng, m, shape, kind=kind, sum_zero=sum_zero, orthogonal=orthogonal)
    d = space_dim(shape, sum_zero)
    if d == 0:  # a single simplex of one vertex: nothing can move
        return np.zeros((m, *shape))
    if orthogonal:
        return _sample_orthogonal(rng, m, shape, _space_basis(shape, sum_zero), kind=kind, sum_zero=sum_zero)

    size = (m, *shape)
    if kind == "rademacher":
        u = _signs(rng, size)
        if sum_zero:
            u = _centred_signs(rng, u)
    else:
        u = rng.standard_normal(size)
        if sum_zero:
            u = project_sum_zero(u)
    if kind == "normalized-gaussian":
        norms = np.sqrt(np.sum(u.reshape(m, -1) ** 2, axis=1))
        u = u / norms.reshape((m,) + (1,) * len(shape))
    return u


def _sample_orthogonal(rng: np.random.Generator, m: int, shape: Shape, basis: NDArray[np.float64], *,
                       kind: str, sum_zero: bool) -> NDArray[np.float64]:
    """``m`` orthogonal directions in the span of ``basis`` (``(n, d)``, orthonormal columns)."""
    d = basis.shape[1]
    if kind == "rademacher":
        raise ValueError(
            "orthogonal=True is defined for kind='normalized-gaussian' or 'gaussian', "
            "but got kind='rademacher'"
        )
    if m > d:
        raise ValueError(
            f"orthogonal=True needs m <= {d} (the dimension of the direction space for "
            f"shape {shape}, sum_zero={sum_zero}), but got m={m}"
        )
    z = rng.standard_normal((d, m))
    q, r = np.linalg.qr(z)
    q = q * np.sign(np.diag(r))  # Haar measure (Mezzadri 2007)
    u = (basis @ q).T  # (m, n)
    if kind == "gaussian":
        u = u * np.sqrt(rng.chisquare(d, size=(m, 1)))
    point_shape = shape.point_shape if isinstance(shape, Domain) else shape
    return u.reshape((m, *point_shape))


def _sample_domain(rng: np.random.Generator, m: int, domain: Domain, *, kind: str, sum_zero: bool,
                   orthogonal: bool) -> NDArray[np.float64]:
    """Directions for a domain with extra coordinates: flat ``(m, domain.size)`` vectors,
    the logit rows projected (with ``sum_zero``), the extra coordinates left as drawn."""
    if orthogonal:
        basis = _space_basis(domain.simplex, sum_zero)
        extras = domain.positive + domain.real
        full = np.zeros((domain.size, basis.shape[1] + extras))
        full[: domain.n_weights, : basis.shape[1]] = basis
        full[domain.n_weights :, basis.shape[1] :] = np.eye(extras)
        return _sample_orthogonal(rng, m, domain, full, kind=kind, sum_zero=sum_zero)
    size = (m, domain.size)
    w = domain.n_weights
    if kind == "rademacher":
        u = _signs(rng, size)
        if sum_zero:
            u[:, :w] = _centred_signs(rng, u[:, :w].reshape(m, *domain.simplex)).reshape(m, w)
    else:
        u = rng.standard_normal(size)
        if sum_zero:
            u[:, :w] = project_sum_zero(u[:, :w].reshape(m, *domain.simplex)).reshape(m, w)
    if kind == "normalized-gaussian":
        u = u / np.sqrt(np.sum(u * u, axis=1, keepdims=True))
    return u


def _signs(rng: np.random.Generator, size: tuple[int, ...]) -> NDArray[np.float64]:
    """Independent signs, +1 or -1 with probability 1/2 each."""
    return np.where(rng.random(size) < 0.5, -1.0, 1.0)


def _centred_signs(rng: np.random.Generator, signs: NDArray[np.float64]) -> NDArray[np.float64]:
    """Rows (last axis, ``k`` entries) of ``signs`` centred, those whose signs all agree
    drawn again first, times ``sqrt(1 - 2^(1-k))`` (module docstring): ``E[u u^T] = I - 11^T/k``
    and never a zero row. A row of one entry (``k = 1``) stays zero: it cannot move.

    >>> u = _centred_signs(np.random.default_rng(0), np.ones((1000, 2)))
    >>> bool(np.all(np.abs(u) == np.sqrt(0.5))), np.allclose(u.sum(axis=1), 0.0)
    (True, True)
    """
    k = signs.shape[-1]
    if k < 2:
        return np.zeros_like(signs)
    rows = signs.reshape(-1, k).copy()
    constant = np.all(rows == rows[:, :1], axis=1)
    while constant.any():  # each row again with probability 2^(1-k): at most twice on average
        rows[constant] = _signs(rng, (int(constant.sum()), k))
        constant = np.all(rows == rows[:, :1], axis=1)
    return project_sum_zero(rows.reshape(signs.shape)) * math.sqrt(1.0 - 2.0 ** (1 - k))


def _space_basis(shape: tuple[int, ...], sum_zero: bool) -> NDArray[np.float64]:
    """Orthonormal basis (columns) of the direction space, as a dense ``(n, d)`` array."""
    n = math.prod(shape)
    if not sum_zero:
        return np.eye(n)
    k = shape[-1]
    # Helmert-type basis of {x in R^k : sum x = 0}: QR of the centred identity.
    centred = np.eye(k) - 1.0 / k
    q, _ = np.linalg.qr(centred[:, : k - 1])
    groups = n // k
    return np.kron(np.eye(groups), q)


def _check_kind(kind: str) -> None:
    if kind not in DIRECTION_KINDS:
        raise ValueError(f"directions must be one of {list(DIRECTION_KINDS)}, but got {kind!r}")
