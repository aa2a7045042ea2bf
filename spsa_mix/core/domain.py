"""Where a point lives: simplex weights, plus positive and real coordinates beside them.

A :class:`Domain` is one or several probability simplices (``simplex=(k,)`` or
``(groups, k)``), optionally followed by ``positive`` coordinates (e.g. the scale ``s > 0``
of a task-vector blend) and ``real`` (unconstrained) ones. A point of a domain with extra
coordinates is one flat vector: the simplex weights row by row, then the positive
coordinates, then the real ones; :meth:`Domain.split` and :meth:`Domain.join` convert.
A domain of simplices only keeps the shape of the weights, ``(k,)`` or ``(groups, k)``,
so everything written for plain simplex points works unchanged.

Optimisers work in unconstrained coordinates ``z`` of the same layout: softmax logits for
each simplex row, ``log`` of each positive coordinate, the real coordinates as they are.
:meth:`Domain.to_point`, :meth:`Domain.from_point`, :meth:`Domain.jvp` and
:meth:`Domain.vjp` are the maps and their derivatives (pure functions of ``z``).

Example
-------
>>> import numpy as np
>>> d = Domain((3,), positive=1, names=("scale",))
>>> d.size, d.point_shape
(4, (4,))
>>> x = d.join(np.array([0.2, 0.3, 0.5]), positive=np.array([2.0]))
>>> alpha, pos, real = d.split(x)
>>> alpha.tolist(), pos.tolist(), real.shape
([0.2, 0.3, 0.5], [2.0], (0,))
>>> np.allclose(d.to_point(d.from_point(x)), x)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.simplex import (
    check_simplex_point,
    logits_from_simplex,
    project_sum_zero,
    softmax,
    softmax_jvp,
)
from spsa_mix.core.validation import check_int, check_real_array, normalize_shape

__all__ = ["Domain"]

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Domain:
    """One or several simplices, then ``positive`` coordinates ``> 0``, then ``real`` ones.

    Parameters
    ----------
    simplex:
        ``k`` or ``(groups, k)``: the shape of the simplex weights.
    positive, real:
        Numbers of positive and of unconstrained coordinates after the weights.
    names:
        Optional names of the extra coordinates (``positive + real`` of them), used in
        results (``res.extras``); default ``positive_0, ..., real_0, ...``.

    >>> Domain((2, 3)).point_shape, Domain(4, real=2).size
    ((2, 3), 6)
    >>> Domain(3, positive=-1)
    Traceback (most recent call last):
    ...
    ValueError: positive must be an integer >= 0, but got -1
    """

    simplex: tuple[int, ...]
    positive: int = 0
    real: int = 0
    names: tuple[str, ...] = field(default=())

    def __init__(self, simplex: Any, positive: int = 0, real: int = 0, names: Any = ()) -> None:
        object.__setattr__(self, "simplex", normalize_shape(simplex))
        object.__setattr__(self, "positive", check_int(positive, "positive", minimum=0))
        object.__setattr__(self, "real", check_int(real, "real", minimum=0))
        extras = self.positive + self.real
        names = tuple(names) if names else self._default_names()
        if len(names) != extras or not all(isinstance(n, str) and n for n in names) or len(set(names)) != extras:
            raise ValueError(f"names must be {extras} distinct non-empty strings (one per extra coordinate), "
                             f"but got {list(names)}")
        object.__setattr__(self, "names", names)

    # ------------------------------------------------------------------ shapes
    @classmethod
    def of(cls, k: Any) -> Domain:
        """``k`` (an int, a shape ``(groups, k)``, or a :class:`Domain`) as a domain.

        >>> Domain.of(3) == Domain((3,)), Domain.of(Domain(2, positive=1)).positive
        (True, 1)
        """
        return k if isinstance(k, Domain) else cls(k)

    @property
    def k(self) -> int:
        """Vertices per simplex."""
        return self.simplex[-1]

    @property
    def n_weights(self) -> int:
        """Number of simplex weights, ``groups * k``."""
        return math.prod(self.simplex)

    @property
    def size(self) -> int:
        """Length of a flat point: weights, positive and real coordinates."""
        return self.n_weights + self.positive + self.real

    @property
    def simplex_only(self) -> bool:
        """Whether there are no coordinates beside the simplex weights."""
        return self.positive + self.real == 0

    @property
    def point_shape(self) -> tuple[int, ...]:
        """The shape of one point: the simplex shape, or ``(size,)`` with extra coordinates."""
        return self.simplex if self.simplex_only else (self.size,)

    # ------------------------------------------------------------------ points
    def split(self, x: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
        """``(alpha, positive, real)`` of a point ``(*point_shape)`` or points ``(n, *point_shape)``.

        >>> a, p, r = Domain((2, 2), real=1).split(np.arange(5.0))
        >>> a.tolist(), p.shape, r.tolist()
        ([[0.0, 1.0], [2.0, 3.0]], (0,), [4.0])
        """
        arr = np.asarray(x, dtype=np.float64)
        shape = self.point_shape
        if arr.shape[arr.ndim - len(shape):] != shape:
            raise ValueError(f"a point of {self} has shape {shape} (or (n, {', '.join(map(str, shape))})), "
                             f"but got shape {arr.shape}")
        lead = arr.shape[: arr.ndim - len(shape)]
        flat = arr.reshape(*lead, self.size)
        w, p = self.n_weights, self.n_weights + self.positive
        return flat[..., :w].reshape(*lead, *self.simplex), flat[..., w:p], flat[..., p:]

    def join(self, alpha: ArrayLike, positive: ArrayLike | None = None, real: ArrayLike | None = None) -> FloatArray:
        """The point (or points, with a leading axis) made of these parts.

        >>> Domain(2, positive=1).join([0.5, 0.5], [3.0]).tolist()
        [0.5, 0.5, 3.0]
        """
        a = np.asarray(alpha, dtype=np.float64)
        if a.shape[a.ndim - len(self.simplex):] != self.simplex:
            raise ValueError(f"alpha must end in shape {self.simplex}, but got shape {a.shape}")
        lead = a.shape[: a.ndim - len(self.simplex)]
        parts = [a.reshape(*lead, self.n_weights)]
        for value, n, name in ((positive, self.positive, "positive"), (real, self.real, "real")):
            if n == 0:
                if value is not None and np.size(value):
                    raise ValueError(f"{self} has no {name} coordinates, but got {name}={value!r}")
                continue
            v = np.broadcast_to(np.asarray(1.0 if value is None and name == "positive" else
                                           0.0 if value is None else value, dtype=np.float64), (*lead, n))
            parts.append(v)
        out = np.concatenate(parts, axis=-1)
        return out if not self.simplex_only else out.reshape(*lead, *self.simplex)

    def extras(self, x: ArrayLike) -> dict[str, float]:
        """The extra coordinates of one point, by name.

        >>> Domain(2, positive=1, names=("scale",)).extras([0.5, 0.5, 2.0])
        {'scale': 2.0}
        """
        _, p, r = self.split(x)
        return dict(zip(self.names, [float(v) for v in np.concatenate([p, r], axis=-1).reshape(-1)], strict=True))

    def center(self) -> FloatArray:
        """The default starting point: uniform weights, positive coordinates 1, real 0.

        >>> Domain(2, positive=1, real=1).center().tolist()
        [0.5, 0.5, 1.0, 0.0]
        """
        return self.join(np.full(self.simplex, 1.0 / self.k))

    # ------------------------------------------------------------------ unconstrained coordinates
    def to_point(self, z: ArrayLike) -> FloatArray:
        """Point of unconstrained coordinates ``z``: softmax rows, ``exp`` of the positive
        part, the real part as it is (leading axes allowed).

        >>> Domain(2, positive=1).to_point([0.0, 0.0, 0.0]).tolist()
        [0.5, 0.5, 1.0]
        """
        logits, logpos, real = self.split(z)
        return self.join(softmax(logits), np.exp(logpos), real)

    def from_point(self, x: ArrayLike) -> FloatArray:
        """Unconstrained coordinates of an interior point (centred logits, ``log``).

        >>> Domain(2, positive=1).from_point([0.5, 0.5, 1.0]).tolist()
        [0.0, 0.0, 0.0]
        """
        alpha, pos, real = self.split(x)
        return self.join(logits_from_simplex(alpha), np.log(pos), real)

    def jvp(self, z: ArrayLike, tangent: ArrayLike) -> FloatArray:
        """Push a tangent in ``z`` forward to the point: ``J_softmax u``, ``exp(z) u``, ``u``.

        >>> Domain(2, positive=1).jvp([0.0, 0.0, np.log(2.0)], [1.0, -1.0, 1.0]).tolist()
        [0.5, -0.5, 2.0]
        """
        logits, logpos, _ = self.split(z)
        u_s, u_p, u_r = self.split(tangent)
        return self.join(softmax_jvp(softmax(logits), u_s), np.exp(logpos) * u_p, u_r)

    def vjp(self, z: ArrayLike, cotangent: ArrayLike) -> FloatArray:
        """Pull a gradient at the point back to ``z`` (the Jacobian is symmetric block by block).

        >>> Domain(2, positive=1).vjp([0.0, 0.0, 0.0], [1.0, 1.0, 3.0]).tolist()
        [0.0, 0.0, 3.0]
        """
        return self.jvp(z, cotangent)

    def project(self, z: ArrayLike) -> FloatArray:
        """Remove each logit row's component along the all-ones vector (the softmax ignores
        it); the other coordinates are left as they are.

        >>> Domain(2, real=1).project([1.0, 3.0, 5.0]).tolist()
        [-1.0, 1.0, 5.0]
        """
        logits, pos, real = self.split(z)
        return self.join(project_sum_zero(logits), pos if self.positive else None, real if self.real else None)

    def check_point(self, x: ArrayLike, *, name: str = "x0") -> FloatArray:
        """Validate one point and return it (weights renormalised), or raise ``ValueError``
        naming ``name`` and what is wrong: the shape, weights that are not strictly positive
        or do not sum to one per row, a positive coordinate that is not ``> 0``, a
        coordinate that is not finite.

        >>> Domain(2, positive=1, names=("scale",)).check_point([0.5, 0.5, 2.0]).tolist()
        [0.5, 0.5, 2.0]
        >>> Domain(2, positive=1, names=("scale",)).check_point([0.5, 0.5, 0.0])
        Traceback (most recent call last):
        ...
        ValueError: x0's scale must be a finite number > 0, but got 0.0
        """
        if self.simplex_only:
            return check_simplex_point(x, self.simplex, name=name)
        arr = check_real_array(x, name)
        if arr.shape != self.point_shape:
            raise ValueError(f"{name} must be a point of {self} of shape {self.point_shape} (the weights row by "
                             f"row, then {', '.join(self.names)}), but got shape {arr.shape}")
        alpha, pos, real = self.split(arr)
        alpha = check_simplex_point(alpha, self.simplex, name=f"{name}'s weights")
        for i, v in enumerate(pos):
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}'s {self.names[i]} must be a finite number > 0, but got {float(v)!r}")
        for i, v in enumerate(real):
            if not math.isfinite(v):
                raise ValueError(f"{name}'s {self.names[self.positive + i]} must be finite, but got {float(v)!r}")
        return self.join(alpha, pos if self.positive else None, real if self.real else None)

    def to_dict(self) -> dict[str, Any]:
        """The domain as plain values (what a ``state_dict`` stores); :meth:`from_dict` inverts it.

        >>> Domain.from_dict(Domain(3, real=1).to_dict()) == Domain(3, real=1)
        True
        """
        return {"simplex": list(self.simplex), "positive": self.positive, "real": self.real,
                "names": list(self.names)}

    @classmethod
    def from_dict(cls, d: Any) -> Domain:
        """The domain of :meth:`to_dict`'s output."""
        if not isinstance(d, dict) or not {"simplex", "positive", "real", "names"} <= set(d):
            raise ValueError(f"a domain must be a dict with keys simplex, positive, real and names, but got {d!r:.100}")
        simplex = d["simplex"]
        return cls(tuple(simplex) if isinstance(simplex, list) else simplex, d["positive"], d["real"], d["names"])

    def _default_names(self) -> tuple[str, ...]:
        return tuple([f"positive_{i}" for i in range(self.positive)] + [f"real_{i}" for i in range(self.real)])

    def __repr__(self) -> str:
        extra = "".join(f", {n}={v}" for n, v in (("positive", self.positive), ("real", self.real)) if v)
        if self.names != self._default_names():
            extra += f", names={self.names}"
        return f"Domain(simplex={self.simplex}{extra})"
