"""Closed forms for the bias, variance and MSE of the averaged two-point estimate.

The estimate at a fixed point is ``g_bar = c / m * sum_r d_r u_r`` with ``d_r`` the
directional derivative along ``u_r`` (exact in the limit ``mu -> 0``, and exactly for a
quadratic in the space where the directions are drawn). The directions live in a space
``S`` of dimension ``d`` with orthogonal projector ``P`` (the whole space, or the sum-zero
subspace of every simplex row: ``d = groups * (k - 1)``), and only ``h = P g`` enters the
estimate, so every closed form is written for ``h``. Two moments of the direction
distribution decide everything (derivations in ``docs/variance.md``):

* ``E[u u^T] = kappa P``: ``kappa = 1/d`` on the unit sphere, ``1`` for Gaussian and
  Rademacher directions (projected or not);
* ``E[(h.u)^2 |u|^2] = M |h|^2`` for every ``h`` in ``S``: ``M = 1/d`` (sphere),
  ``d + 2`` (Gaussian), ``d`` (Rademacher signs in the full space) and
  ``d - (k - 1) + (1 - q) (k - 1 + 2/k)`` with ``q = 2^(1-k)`` (Rademacher signs in the
  sum-zero subspace, rows of ``k`` entries: ``sample_directions`` draws a row whose signs
  all agree again and scales the centred row by ``sqrt(1 - q)``, which multiplies the
  fourth moments within a row by ``1 - q``; centred signs without that would give
  ``d + 2/k``).

Then, for ``m`` i.i.d. directions, ``E[g_bar] = c kappa h``, the bias is
``(c kappa - 1) h``, ``Var = tr Cov(g_bar) = c^2 (M - kappa^2) |h|^2 / m`` and
``MSE = E|g_bar - h|^2 = |bias|^2 + Var``. Orthogonal directions within one step
(``sample_directions(..., orthogonal=True)``) keep the mean and lower the variance.

Example
-------
>>> th = estimator_theory("normalized-gaussian", (10,), sum_zero=False, m=4, scale=1.0,
...                       target_norm=1.0)
>>> round(th.bias_norm, 6), round(th.variance, 6), round(th.mse, 6)
(0.9, 0.0225, 0.8325)
>>> paper_proposition1(10, 4, grad_norm=1.0)  # GLUE eq. (6): (K - 1) / (m K) |g|^2
0.225
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.directions import DIRECTION_KINDS, space_dim
from spsa_mix.core.validation import check_positive, check_positive_int, normalize_shape

__all__ = [
    "DirectionMoments",
    "Theory",
    "direction_moments",
    "estimator_theory",
    "cosine_theory",
    "paper_proposition1",
    "project",
    "mu_bias_leading",
]

FloatArray = NDArray[np.float64]


class DirectionMoments(NamedTuple):
    """The two moments of a direction distribution that the closed forms need.

    ``E[u u^T] = second * P`` and ``E[(h.u)^2 |u|^2] = fourth * |h|^2`` for every ``h``
    in the direction space, of dimension ``dim``.

    >>> direction_moments("normalized-gaussian", 5, sum_zero=False).second
    0.2
    """

    dim: int
    second: float
    fourth: float


class Theory(NamedTuple):
    """Closed-form values for one (distribution, K, m, scale); ``cosine`` is ``None``
    where no closed form is known (it is then measured only).

    >>> estimator_theory("gaussian", 3, sum_zero=False, m=2, scale=1.0, target_norm=1.0).variance
    2.0
    """

    bias_norm: float
    variance: float
    mse: float
    cosine: float | None


def _check_kind(kind: str) -> None:
    if kind not in DIRECTION_KINDS:
        raise ValueError(f"kind must be one of {list(DIRECTION_KINDS)}, but got {kind!r}")


def _dim(shape: tuple[int, ...], sum_zero: bool) -> int:
    d = space_dim(shape, sum_zero)
    if d < 1:
        raise ValueError(
            f"the direction space is empty for shape {shape} with sum_zero={sum_zero} "
            "(a simplex of one vertex): no estimate to analyse"
        )
    return d


def direction_moments(kind: str, shape: tuple[int, ...] | int, *, sum_zero: bool) -> DirectionMoments:
    """``kappa`` and ``M`` (module docstring) for directions of ``sample_directions``.

    Parameters
    ----------
    kind:
        ``"normalized-gaussian"``, ``"gaussian"`` or ``"rademacher"``.
    shape:
        Shape of one point, ``k`` or ``(groups, k)``.
    sum_zero:
        Whether the directions are restricted to the sum-zero subspace of every row.

    Returns
    -------
    DirectionMoments

    Examples
    --------
    >>> direction_moments("gaussian", 5, sum_zero=True)
    DirectionMoments(dim=4, second=1.0, fourth=6.0)
    >>> direction_moments("rademacher", (2, 5), sum_zero=True).fourth  # d - 4 + (1 - 1/16) (4 + 2/5)
    8.125
    """
    _check_kind(kind)
    shp = normalize_shape(shape)
    d = _dim(shp, sum_zero)
    if kind == "normalized-gaussian":
        return DirectionMoments(d, 1.0 / d, 1.0 / d)
    if kind == "gaussian":
        return DirectionMoments(d, 1.0, d + 2.0)
    if not sum_zero:
        return DirectionMoments(d, 1.0, float(d))
    k = shp[-1]
    q = 2.0 ** (1 - k)  # the probability of a row of equal signs, drawn again (sample_directions)
    return DirectionMoments(d, 1.0, d - (k - 1) + (1.0 - q) * (k - 1 + 2.0 / k))


def _check_scale(scale: float) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, but got {scale!r}")
    return float(scale)


def _check_norm(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, but got {value!r}")
    return float(value)


def estimator_theory(
    kind: str,
    shape: tuple[int, ...] | int,
    *,
    sum_zero: bool,
    m: int,
    scale: float,
    target_norm: float,
    orthogonal: bool = False,
) -> Theory:
    """Bias norm, variance (trace of the covariance), MSE and mean cosine of ``g_bar``.

    Exact for a directional derivative without error (the limit ``mu -> 0``; exactly
    at any ``mu`` for a quadratic in the space of the directions).

    Parameters
    ----------
    kind, shape, sum_zero:
        The direction distribution, as for ``sample_directions``.
    m:
        Number of directions averaged in one estimate.
    scale:
        The factor ``c``: ``1`` for GLUE's eq. (3), ``estimator_scale(kind, shape,
        sum_zero)`` for the package's unbiased estimate.
    target_norm:
        ``|h| = |P g|``, the norm of the gradient projected onto the direction space.
    orthogonal:
        ``m`` mutually orthogonal directions per estimate (``m <= d``, not Rademacher).

    Returns
    -------
    Theory
        ``bias_norm = |c kappa - 1| |h|``; i.i.d.: ``variance = c^2 (M - kappa^2) |h|^2 / m``;
        orthogonal unit directions: ``c^2 |h|^2 (1/m - 1/d) / d``; orthogonal Gaussian
        directions: ``c^2 |h|^2 ((d + 2)/m - 1)``; ``mse = bias_norm^2 + variance``.

    Raises
    ------
    ValueError
        For an unknown ``kind``, an empty direction space, ``m`` not a positive integer,
        a non-positive ``scale``, a negative ``target_norm``, or ``orthogonal=True`` with
        Rademacher signs or ``m > d``.

    Examples
    --------
    >>> th = estimator_theory("normalized-gaussian", 10, sum_zero=True, m=9, scale=9.0,
    ...                       target_norm=1.0, orthogonal=True)
    >>> th.bias_norm, abs(th.variance) < 1e-12, th.cosine   # m = d: the estimate is exact
    (0.0, True, 1.0)
    >>> estimator_theory("rademacher", 4, sum_zero=True, m=2, scale=1.0, target_norm=1.0,
    ...                  orthogonal=True)
    Traceback (most recent call last):
    ...
    ValueError: orthogonal=True is defined for kind='normalized-gaussian' or 'gaussian', but got kind='rademacher'
    """
    mom = direction_moments(kind, shape, sum_zero=sum_zero)
    m = check_positive_int(m, "m")
    c = _check_scale(scale)
    h2 = _check_norm(target_norm, "target_norm") ** 2
    d, kappa = mom.dim, mom.second
    bias = abs(c * kappa - 1.0) * math.sqrt(h2)
    if orthogonal:
        _check_orthogonal(kind, m, d)
        if kind == "normalized-gaussian":
            var = c * c * h2 * (1.0 / m - 1.0 / d) / d
        else:
            var = c * c * h2 * ((d + 2.0) / m - 1.0)
    else:
        var = c * c * (mom.fourth - kappa * kappa) * h2 / m
    return Theory(bias, var, bias * bias + var, cosine_theory(kind, d, m, orthogonal=orthogonal))


def _check_orthogonal(kind: str, m: int, d: int) -> None:
    if kind == "rademacher":
        raise ValueError(
            "orthogonal=True is defined for kind='normalized-gaussian' or 'gaussian', but got kind='rademacher'"
        )
    if m > d:
        raise ValueError(f"orthogonal=True needs m <= d = {d} (the dimension of the direction space), but got m={m}")


def cosine_theory(kind: str, dim: int, m: int, *, orthogonal: bool = False) -> float | None:
    """``E[cos(g_bar, h)]`` where a closed form is known, else ``None``.

    For one direction drawn isotropically in ``S`` (unit or Gaussian: only its direction
    matters), ``cos = |h.u| / (|h| |u|) = |w_1|`` with ``w`` uniform on the sphere of
    dimension ``dim``, so ``E cos = Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2))``. For ``m``
    orthogonal unit directions ``g_bar`` is ``c/m`` times the projection of ``h`` onto
    a uniformly random ``m``-dimensional subspace, so ``cos^2 ~ Beta(m/2, (d-m)/2)`` and
    ``E cos = Gamma((m+1)/2) Gamma(d/2) / (Gamma(m/2) Gamma((d+1)/2))``. The cosine
    does not depend on the scale ``c > 0``. Rademacher signs (the cosine depends on the
    direction of ``h``), i.i.d. ``m > 1`` and orthogonal Gaussian ``m > 1`` (the lengths
    weight the directions) have none.

    >>> round(cosine_theory("gaussian", 2, 1), 6)   # 2 / pi
    0.63662
    >>> cosine_theory("rademacher", 5, 1) is None
    True
    """
    _check_kind(kind)
    dim = check_positive_int(dim, "dim")
    m = check_positive_int(m, "m")
    if kind == "rademacher":
        return None
    if m == 1 or (orthogonal and kind == "normalized-gaussian"):
        if m > dim:
            raise ValueError(f"m must be at most dim = {dim} for orthogonal directions, but got m={m}")
        if m == dim:
            return 1.0
        return math.exp(
            math.lgamma((m + 1) / 2) + math.lgamma(dim / 2) - math.lgamma(m / 2) - math.lgamma((dim + 1) / 2)
        )
    return None


def paper_proposition1(k: int, m: int, *, grad_norm: float) -> float:
    """GLUE's eq. (6): ``(K - 1) / (m K) |g|^2``, claimed both for ``E|g_bar - g|^2`` and
    for ``Var[g_bar]`` with unit directions in ``R^K`` and ``c = 1``.

    Neither holds for ``m > 1`` (``docs/variance.md``): the true values are
    ``MSE = (1 - 1/K)^2 |g|^2 + (K - 1) |g|^2 / (m K^2)`` and
    ``Var = (K - 1) |g|^2 / (m K^2)``; the two agree with eq. (6) only at ``m = 1`` for the
    MSE.

    >>> paper_proposition1(2, 1, grad_norm=2.0)
    2.0
    """
    k = check_positive_int(k, "k")
    m = check_positive_int(m, "m")
    g = _check_norm(grad_norm, "grad_norm")
    return (k - 1) / (m * k) * g * g


def project(g: ArrayLike, *, sum_zero: bool) -> FloatArray:
    """``P g``: the part of ``g`` the estimate can see (its target).

    >>> project([1.0, 2.0, 3.0], sum_zero=True).tolist()
    [-1.0, 0.0, 1.0]
    """
    arr = np.asarray(g, dtype=np.float64)
    return arr - arr.mean(axis=-1, keepdims=True) if sum_zero else arr.copy()


def mu_bias_leading(
    kind: str,
    shape: tuple[int, ...] | int,
    *,
    sum_zero: bool,
    scale: float,
    mu: float,
    trace_term: ArrayLike,
    cube_terms: ArrayLike | None = None,
    row_trace_term: ArrayLike | None = None,
) -> FloatArray:
    """Leading ``O(mu^2)`` part of ``E[g_bar]`` due to the central difference.

    With ``T`` the third derivative of the objective at the point,
    ``(F(x + mu u) - F(x - mu u)) / (2 mu) = g.u + mu^2/6 T[u, u, u] + O(mu^4)``, so the
    mean of the estimate moves by ``c mu^2 / 6 E[T[u, u, u] u]``, with

    * Gaussian: ``E[T[u,u,u] u] = 3 P t``, ``t_e = sum_j T[b_j, b_j, e]`` over an
      orthonormal basis ``b_j`` of ``S`` (``trace_term``);
    * unit sphere: ``3 P t / (d (d + 2))``;
    * Rademacher in the full space: ``3 P t - 2 sum_f T[p_f, p_f, p_f] p_f``, ``p_f = P e_f``
      the columns of ``P`` (``cube_terms[f] = T[p_f, p_f, p_f]``, flat index ``f``);
    * Rademacher in the sum-zero subspace, as ``sample_directions`` draws them (rows of
      equal signs drawn again, rows scaled by ``sqrt(1 - q)``, ``q = 2^(1-k)``): the fourth
      moments within a row are ``1 - q`` times those of centred signs, those across two rows
      unchanged, so ``3 P t - 3 q P t_row - 2 (1 - q) sum_f T[p_f, p_f, p_f] p_f`` with
      ``t_row`` the part of ``t`` within each row (``row_trace_term``: ``t_row[e] = sum_j
      T[b_j, b_j, e]`` over the basis vectors ``b_j`` of the row of ``e``); for one simplex
      (one row) ``t_row = t``, and it need not be given.

    ``m`` does not enter (every direction has the same mean).
    :func:`spsa_mix.variance.problems.third_derivative_terms` computes ``t`` and the cubes
    from a gradient function.

    >>> t = np.array([1.0, -1.0])
    >>> mu_bias_leading("gaussian", 2, sum_zero=False, scale=1.0, mu=0.1, trace_term=t).round(6).tolist()
    [0.005, -0.005]
    """
    _check_kind(kind)
    shp = normalize_shape(shape)
    d = _dim(shp, sum_zero)
    c = _check_scale(scale)
    mu = check_positive(mu, "mu")
    t = np.asarray(trace_term, dtype=np.float64)
    if t.shape != shp:
        raise ValueError(f"trace_term must have shape {shp}, but got shape {t.shape}")
    moment = 3.0 * project(t, sum_zero=sum_zero)
    if kind == "normalized-gaussian":
        moment = moment / (d * (d + 2.0))
    elif kind == "rademacher":
        if cube_terms is None:
            raise ValueError("kind='rademacher' needs cube_terms (T[p_f, p_f, p_f] for every column p_f of P)")
        cubes = np.asarray(cube_terms, dtype=np.float64)
        n = int(np.prod(shp))
        if cubes.shape != (n,):
            raise ValueError(f"cube_terms must have shape ({n},), but got shape {cubes.shape}")
        # sum_f cubes_f * P e_f  ==  P @ cubes  (P symmetric)
        cube_part = 2.0 * project(cubes.reshape(shp), sum_zero=sum_zero)
        if not sum_zero:
            moment = moment - cube_part
        else:
            q = 2.0 ** (1 - shp[-1])
            if row_trace_term is None and n != shp[-1]:
                raise ValueError(f"kind='rademacher' with sum_zero=True on {n // shp[-1]} rows needs row_trace_term "
                                 "(the part of trace_term within each row)")
            t_row = t if row_trace_term is None else np.asarray(row_trace_term, dtype=np.float64)
            if t_row.shape != shp:
                raise ValueError(f"row_trace_term must have shape {shp}, but got shape {t_row.shape}")
            moment = moment - 3.0 * q * project(t_row, sum_zero=True) - (1.0 - q) * cube_part
    return c * mu * mu / 6.0 * moment
