"""Maps from a box (or all of R^d) onto one or several probability simplices.

Black-box libraries search a vector ``z``; the objective must only ever see points of the
simplex. Three maps, each applied row by row to a point of shape ``(k,)`` or
``(groups, k)``:

``"softmax"``
    ``alpha = softmax(z)``, ``z`` in ``R^k`` (or the box ``[-bound, bound]^k``); uniform
    start ``z = 0``. Invariant to a shift of ``z``: one direction of ``z`` is wasted.
``"normalize"``
    ``alpha = z / sum(z)``, ``z`` in ``[lower, upper]^k`` with ``lower > 0``; uniform start
    ``z = 1``. Invariant to a scaling of ``z``.
``"stick"``
    stick-breaking, ``alpha_1 = v_1``, ``alpha_j = v_j prod_{l<j} (1 - v_l)``,
    ``alpha_k = prod_l (1 - v_l)``, ``v`` in ``[lower, 1 - lower]^(k-1)``: a bijection
    between the open cube and the open simplex, no wasted direction; uniform start
    ``v_j = 1 / (k - j + 1)``.

Every map ends with a floor at :data:`FLOOR` and a renormalisation, so each point is
strictly positive and each row sums to one to rounding, even when the softmax underflows.

A :class:`~spsa_mix.core.domain.Domain` with coordinates beside the simplex is searched by
:class:`DomainParametrization`: the simplex's free coordinates as above, then one free
coordinate per extra coordinate, in a box: ``log s`` in ``[log lo, log hi]`` for a positive
coordinate ``s`` (``positive_bounds``, default :data:`DEFAULT_POSITIVE_BOUNDS`
``= (1/8, 8)``), the value in ``[lo, hi]`` for a real one (``real_bounds``, default
:data:`DEFAULT_REAL_BOUNDS` ``= (-2, 2)``). The libraries need bounded coordinates (Optuna
always, Nevergrad for its bounded searches), and the coordinates beside the simplex have no
natural range; the defaults give each one the reach of the simplex's logits in Optuna's
default box (``[-2, 2]``, measured in :mod:`spsa_mix.adapters.optuna`): half-width about 2
around the start (``log 8 = 2.08`` around ``log 1 = 0``; ``2`` around ``0``), so a scale
can grow or shrink eightfold, the range within which a task-vector scale is useful, and a
real coordinate can move by two units either way. The start (``x0``, default ``s = 1``,
real coordinates ``0``, the centres of the boxes) must lie in the box.

Example
-------
>>> import numpy as np
>>> p = SimplexParametrization("stick", (3,))
>>> p.dim, p.to_simplex(p.initial()[None]).round(6).tolist()
(2, [[0.333333, 0.333333, 0.333333]])
>>> z = p.from_simplex(np.array([0.5, 0.3, 0.2]))
>>> p.to_simplex(z[None]).round(12).tolist()
[[0.5, 0.3, 0.2]]
>>> from spsa_mix.core.domain import Domain
>>> d = DomainParametrization(p, Domain(3, positive=1, names=("scale",)))
>>> d.dim, d.to_point(d.from_point(np.array([0.5, 0.3, 0.2, 4.0]))[None]).round(12).tolist()
(3, [[0.5, 0.3, 0.2, 4.0]])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.domain import Domain
from spsa_mix.core.simplex import logits_from_simplex, softmax

__all__ = [
    "SimplexParametrization",
    "DomainParametrization",
    "PARAMETRIZATIONS",
    "FLOOR",
    "DEFAULT_POSITIVE_BOUNDS",
    "DEFAULT_REAL_BOUNDS",
    "check_bounds",
    "stick_breaking",
    "inverse_stick_breaking",
]

FloatArray = NDArray[np.float64]
Kind = Literal["softmax", "normalize", "stick"]
PARAMETRIZATIONS: tuple[str, ...] = ("softmax", "normalize", "stick")
FLOOR = 1e-300  # smallest weight handed to an objective (keeps points strictly positive)
DEFAULT_LOWER = 1e-6  # lower end of the box for "normalize" and "stick" (this package's choice)
DEFAULT_NORMALIZE_UPPER = 2.0  # "normalize": z in [1e-6, 2], start at 1, the middle of the box
DEFAULT_POSITIVE_BOUNDS = (0.125, 8.0)  # s in [1/8, 8]: log s in [-2.08, 2.08] (module docstring)
DEFAULT_REAL_BOUNDS = (-2.0, 2.0)  # the reach of Optuna's default softmax box (module docstring)


def stick_breaking(v: ArrayLike) -> FloatArray:
    """Map ``v`` in ``(0, 1)^(k-1)`` (last axis) to the simplex of ``k`` vertices.

    >>> stick_breaking([0.5, 0.5]).tolist()
    [0.5, 0.25, 0.25]
    """
    v = np.asarray(v, dtype=np.float64)
    ones = np.ones(v.shape[:-1] + (1,))
    remaining = np.cumprod(np.concatenate([ones, 1.0 - v], axis=-1), axis=-1)  # (..., k)
    return remaining * np.concatenate([v, ones], axis=-1)


def inverse_stick_breaking(alpha: ArrayLike) -> FloatArray:
    """Inverse of :func:`stick_breaking` on the open simplex: ``v_j = alpha_j / (1 - sum_{l<j} alpha_l)``.

    >>> inverse_stick_breaking([0.5, 0.25, 0.25]).tolist()
    [0.5, 0.5]
    """
    a = np.asarray(alpha, dtype=np.float64)
    left = 1.0 - np.cumsum(a, axis=-1) + a  # mass not yet broken off before j
    return a[..., :-1] / np.maximum(left[..., :-1], FLOOR)


@dataclass(frozen=True)
class SimplexParametrization:
    """A map from a vector of ``dim`` free coordinates to a point of shape ``shape``.

    ``lower`` and ``upper`` bound every coordinate (``None`` for the unbounded softmax).
    ``bound`` is the half-width of the softmax box (``None``: unbounded) and ``lower`` the
    smallest value of ``z`` (normalize) or ``v`` (stick).

    >>> p = SimplexParametrization("normalize", (2, 2))
    >>> p.to_simplex(np.array([[0.5, 1.5, 1.0, 1.0]])).tolist()
    [[[0.25, 0.75], [0.5, 0.5]]]
    """

    kind: Kind
    shape: tuple[int, ...]
    bound: float | None = None
    lower: float = DEFAULT_LOWER

    def __post_init__(self) -> None:
        if self.kind not in PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {list(PARAMETRIZATIONS)}, but got {self.kind!r}")
        if self.kind == "stick" and self.shape[-1] < 2:
            raise ValueError(f"parametrization='stick' needs k >= 2 vertices, but got shape {self.shape}")
        if self.bound is not None and not (isinstance(self.bound, (int, float)) and math.isfinite(self.bound)
                                           and self.bound > 0):
            raise ValueError(f"bound must be a positive number or None, but got {self.bound!r}")
        if not (0.0 < self.lower < 0.5):
            raise ValueError(f"lower must be in (0, 0.5), but got {self.lower!r}")

    @property
    def rows(self) -> int:
        return int(np.prod(self.shape[:-1], dtype=int)) if len(self.shape) > 1 else 1

    @property
    def k(self) -> int:
        return self.shape[-1]

    @property
    def dim(self) -> int:
        """Number of free coordinates."""
        return self.rows * (self.k - 1 if self.kind == "stick" else self.k)

    @property
    def bounds(self) -> tuple[float, float] | None:
        """``(lower, upper)`` of every coordinate, or ``None`` when unbounded."""
        if self.kind == "softmax":
            return None if self.bound is None else (-self.bound, self.bound)
        if self.kind == "normalize":
            return (self.lower, DEFAULT_NORMALIZE_UPPER)
        return (self.lower, 1.0 - self.lower)

    def to_simplex(self, z: ArrayLike) -> FloatArray:
        """``(n, dim)`` free coordinates to ``(n, *shape)`` points, each row strictly
        positive and summing to one."""
        z = np.asarray(z, dtype=np.float64)
        n = z.shape[0]
        rows = z.reshape(n, self.rows, -1)
        if self.bounds is not None:  # the libraries keep to the box; rounding may not
            rows = np.clip(rows, *self.bounds)
        if self.kind == "softmax":
            alpha = softmax(rows)
        elif self.kind == "normalize":
            alpha = rows / rows.sum(axis=-1, keepdims=True)
        else:
            alpha = stick_breaking(rows)
        alpha = np.maximum(alpha, FLOOR)
        alpha = alpha / alpha.sum(axis=-1, keepdims=True)
        return alpha.reshape((n,) + self.shape)

    def from_simplex(self, alpha: ArrayLike) -> FloatArray:
        """Free coordinates of a point of the open simplex (clipped into the box)."""
        a = np.asarray(alpha, dtype=np.float64).reshape(self.rows, self.k)
        if self.kind == "softmax":
            z = logits_from_simplex(a)
        elif self.kind == "normalize":
            z = a / a.max(axis=-1, keepdims=True)  # largest weight at 1, the middle of the box
        else:
            z = inverse_stick_breaking(a)
        if self.bounds is not None:
            z = np.clip(z, *self.bounds)
        return z.reshape(-1)

    def initial(self) -> FloatArray:
        """Free coordinates of the uniform point (every row ``1/k``)."""
        return self.from_simplex(np.full(self.shape, 1.0 / self.k))

    # The names DomainParametrization uses, so that the adapters treat both alike.
    def to_point(self, z: ArrayLike) -> FloatArray:
        """:meth:`to_simplex`."""
        return self.to_simplex(z)

    def from_point(self, x: ArrayLike, *, name: str = "x0") -> FloatArray:
        """:meth:`from_simplex`."""
        return self.from_simplex(x)


def check_bounds(value: object, name: str, *, positive: bool) -> tuple[float, float]:
    """``(lo, hi)`` as floats if finite with ``lo < hi`` (and ``lo > 0`` for ``positive``).

    >>> check_bounds((0, 8), "options['positive_bounds']", positive=True)
    Traceback (most recent call last):
    ...
    ValueError: options['positive_bounds'] must be a pair (lo, hi) of finite numbers with 0 < lo < hi, but got (0, 8)
    """
    rule = "0 < lo < hi" if positive else "lo < hi"
    msg = f"{name} must be a pair (lo, hi) of finite numbers with {rule}, but got {value!r}"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(msg)
    if not all(isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) for v in value):
        raise ValueError(msg)
    lo, hi = float(value[0]), float(value[1])
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and (lo > 0 or not positive)):
        raise ValueError(msg)
    return lo, hi


@dataclass(frozen=True)
class DomainParametrization:
    """``simplex``'s free coordinates, then one per extra coordinate of ``domain``: ``log s``
    in ``[log lo, log hi]`` of ``positive_bounds`` for a positive coordinate, the value in
    ``real_bounds`` for a real one (see the module docstring).

    >>> d = DomainParametrization(SimplexParametrization("softmax", (2,)), Domain(2, positive=1, real=1))
    >>> d.initial().tolist(), d.extra_bounds[0].round(3).tolist()
    ([0.0, 0.0, 0.0, 0.0], [-2.079, -2.0])
    """

    simplex: SimplexParametrization
    domain: Domain
    positive_bounds: tuple[float, float] = DEFAULT_POSITIVE_BOUNDS
    real_bounds: tuple[float, float] = DEFAULT_REAL_BOUNDS

    def __post_init__(self) -> None:
        if self.simplex.shape != self.domain.simplex:
            raise ValueError(f"the simplex parametrization has shape {self.simplex.shape}, but the domain's simplex "
                             f"is {self.domain.simplex}")

    @property
    def kind(self) -> str:
        return self.simplex.kind

    @property
    def n_extras(self) -> int:
        return self.domain.positive + self.domain.real

    @property
    def dim(self) -> int:
        """Number of free coordinates: the simplex's, then one per extra coordinate."""
        return self.simplex.dim + self.n_extras

    @property
    def extra_bounds(self) -> tuple[FloatArray, FloatArray]:
        """Lower and upper ends of the extra free coordinates (``log`` ends for positive ones)."""
        p, r = self.domain.positive, self.domain.real
        lo = np.concatenate([np.full(p, math.log(self.positive_bounds[0])), np.full(r, self.real_bounds[0])])
        hi = np.concatenate([np.full(p, math.log(self.positive_bounds[1])), np.full(r, self.real_bounds[1])])
        return lo, hi

    def to_point(self, z: ArrayLike) -> FloatArray:
        """``(n, dim)`` free coordinates to ``(n, domain.size)`` flat points."""
        z = np.asarray(z, dtype=np.float64)
        alpha = self.simplex.to_simplex(z[:, : self.simplex.dim])
        extra = np.clip(z[:, self.simplex.dim :], *self.extra_bounds)  # the libraries keep to the box; rounding may not
        p = self.domain.positive
        return self.domain.join(alpha, np.exp(extra[:, :p]) if p else None, extra[:, p:] if self.domain.real else None)

    def from_point(self, x: ArrayLike, *, name: str = "x0") -> FloatArray:
        """Free coordinates of a point whose extra coordinates lie in their boxes (an error
        naming ``name``, the coordinate and the option otherwise)."""
        alpha, pos, real = self.domain.split(x)
        names = iter(self.domain.names)
        for values, (lo, hi), option in ((pos, self.positive_bounds, "positive_bounds"),
                                         (real, self.real_bounds, "real_bounds")):
            for v in values:
                coord = next(names)
                if not lo <= v <= hi:
                    raise ValueError(f"{name}'s {coord}={float(v)!r} is outside options[{option!r}]=({lo!r}, {hi!r}), "
                                     "the box the library searches")
        return np.concatenate([self.simplex.from_simplex(alpha), np.log(pos), real])

    def initial(self) -> FloatArray:
        """Free coordinates of the domain's centre: uniform weights, ``s = 1``, real ``0``."""
        return self.from_point(self.domain.center())
