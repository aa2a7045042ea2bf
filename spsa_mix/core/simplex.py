"""Maps between unconstrained logits and points of one or several probability simplices.

An optimiser works on unconstrained logits ``beta`` of shape ``(k,)`` or ``(groups, k)``;
the objective sees ``alpha = softmax(beta)``, computed row by row, so every row of
``alpha`` is strictly positive and sums to one. The softmax ignores a shift of a row of
``beta`` by a constant, so only the part of ``beta`` orthogonal to the all-ones vector of
each row matters; :func:`project_sum_zero` removes the rest.

All functions are pure and accept a leading batch axis: ``beta`` of shape ``(n, *shape)``
maps to ``alpha`` of the same shape.

Example
-------
>>> import numpy as np
>>> from spsa_mix.core.simplex import softmax, logits_from_simplex
>>> alpha = softmax(np.array([0.0, np.log(3.0)]))
>>> alpha.round(3).tolist()
[0.25, 0.75]
>>> np.allclose(softmax(logits_from_simplex(alpha)), alpha)
True
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.validation import check_real_array

__all__ = [
    "softmax",
    "logits_from_simplex",
    "softmax_jvp",
    "softmax_vjp",
    "project_sum_zero",
    "project_onto_simplex",
    "check_simplex_point",
]

FloatArray = NDArray[np.float64]


def softmax(beta: ArrayLike) -> FloatArray:
    """Row-wise softmax over the last axis: ``alpha_i = exp(beta_i) / sum_j exp(beta_j)``.

    >>> softmax([[0.0, 0.0], [0.0, np.log(4.0)]]).tolist()
    [[0.5, 0.5], [0.2, 0.8]]
    """
    b = np.asarray(beta, dtype=np.float64)
    z = np.exp(b - b.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def logits_from_simplex(alpha: ArrayLike) -> FloatArray:
    """Inverse of :func:`softmax` on the interior: centred log, each row summing to zero.

    >>> logits_from_simplex([0.5, 0.5]).tolist()
    [0.0, 0.0]
    """
    a = np.asarray(alpha, dtype=np.float64)
    log_a = np.log(a)
    return log_a - log_a.mean(axis=-1, keepdims=True)


def softmax_jvp(alpha: ArrayLike, tangent: ArrayLike) -> FloatArray:
    """Push a tangent of ``beta`` forward through the softmax: ``J(beta) @ tangent``.

    ``J = diag(alpha) - alpha alpha^T`` row by row, so
    ``J v = alpha * (v - <alpha, v>)``. ``tangent`` may carry extra leading axes.

    >>> softmax_jvp([0.5, 0.5], [1.0, -1.0]).tolist()
    [0.5, -0.5]
    """
    a = np.asarray(alpha, dtype=np.float64)
    v = np.asarray(tangent, dtype=np.float64)
    return a * (v - (a * v).sum(axis=-1, keepdims=True))


def softmax_vjp(alpha: ArrayLike, cotangent: ArrayLike) -> FloatArray:
    """Pull a gradient with respect to ``alpha`` back to ``beta``: ``J(beta)^T @ g``.

    The softmax Jacobian is symmetric, so this equals :func:`softmax_jvp`; it is kept as
    its own name so that call sites say which direction they mean.

    >>> softmax_vjp([0.25, 0.75], [1.0, 1.0]).tolist()  # a constant gradient does nothing
    [0.0, 0.0]
    """
    return softmax_jvp(alpha, cotangent)


def project_sum_zero(v: ArrayLike) -> FloatArray:
    """Remove from each row (last axis) its component along the all-ones vector.

    >>> project_sum_zero([1.0, 2.0, 3.0]).tolist()
    [-1.0, 0.0, 1.0]
    """
    x = np.asarray(v, dtype=np.float64)
    return x - x.sum(axis=-1, keepdims=True) / x.shape[-1]  # = x.mean(...), bit for bit, faster


def project_onto_simplex(v: ArrayLike) -> FloatArray:
    """Euclidean projection of each row onto the probability simplex.

    Sort-based algorithm of Held, Wolfe and Crowder (1974), as in Duchi et al. (2008).

    >>> project_onto_simplex([2.0, 0.0]).tolist()
    [1.0, 0.0]
    """
    x = np.asarray(v, dtype=np.float64)
    k = x.shape[-1]
    u = -np.sort(-x, axis=-1)
    css = np.cumsum(u, axis=-1) - 1.0
    idx = np.arange(1, k + 1)
    cond = u - css / idx > 0
    rho = k - 1 - np.argmax(cond[..., ::-1], axis=-1)  # last index where cond holds
    theta = np.take_along_axis(css, rho[..., None], axis=-1) / (rho[..., None] + 1.0)
    return np.maximum(x - theta, 0.0)


def check_simplex_point(
    x: ArrayLike, shape: tuple[int, ...], *, name: str = "x0", atol: float = 1e-6
) -> FloatArray:
    """Validate a point of the simplex (or of several) and return it renormalised.

    Raises ``ValueError`` naming ``name`` and the value received when the shape is not
    ``shape``, an entry is not strictly positive and finite, or a row does not sum to one
    within ``atol``.

    >>> check_simplex_point([0.25, 0.75], (2,)).tolist()
    [0.25, 0.75]
    >>> check_simplex_point([0.5, 0.6], (2,))
    Traceback (most recent call last):
    ...
    ValueError: x0 must sum to 1 (one simplex per row), but row 0 sums to 1.1: [0.5, 0.6]
    """
    arr = check_real_array(x, name)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, but got shape {arr.shape}: {_show(arr)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, but got {_show(arr)}")
    if np.any(arr <= 0):
        raise ValueError(
            f"{name} must be strictly positive (the softmax never reaches a face of the "
            f"simplex), but got {_show(arr)}"
        )
    sums = arr.reshape(-1, shape[-1]).sum(axis=-1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > atol)
    if bad.size:
        r = int(bad[0])
        raise ValueError(
            f"{name} must sum to 1 (one simplex per row), but row {r} sums to "
            f"{sums[r]:.6g}: {_show(arr)}"
        )
    return arr / arr.sum(axis=-1, keepdims=True)


def _show(arr: np.ndarray, limit: int = 12) -> str:
    flat = arr.ravel()
    text = ", ".join(f"{v:.6g}" for v in flat[:limit])
    return f"[{text}]" if flat.size <= limit else f"[{text}, ...]"
