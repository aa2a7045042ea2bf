"""The argument checks shared by the whole package, and the one place a seed becomes a generator.

Every check returns the value, converted (``int``, ``float``, a shape tuple, a
``numpy.random.Generator``), or raises ``ValueError`` naming the argument and the value
received.

Example
-------
>>> check_positive(0.0, "lr")
Traceback (most recent call last):
...
ValueError: lr must be positive, but got 0.0
>>> check_int(-1, "seed", minimum=0)
Traceback (most recent call last):
...
ValueError: seed must be an integer >= 0, but got -1
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, overload

import numpy as np

__all__ = [
    "check_array",
    "check_bool",
    "check_int",
    "check_positive",
    "check_positive_int",
    "check_probability",
    "real_array",
    "check_real_array",
    "normalize_shape",
    "normalize_rng",
]


def _is_int(value: Any) -> bool:
    """An integer (Python or NumPy), and not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


@overload
def check_int(value: Any, name: str, *, minimum: int, allow_none: Literal[False] = ...) -> int: ...
@overload
def check_int(value: Any, name: str, *, minimum: int, allow_none: bool) -> int | None: ...
def check_int(value: Any, name: str, *, minimum: int, allow_none: bool = False) -> int | None:
    """Return ``value`` as an ``int`` if it is an integer of at least ``minimum`` (or
    ``None`` where allowed); bools are not integers here.

    >>> check_int(3, "max_points", minimum=2), check_int(None, "patience", minimum=1, allow_none=True)
    (3, None)
    >>> check_int(True, "m", minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: m must be an integer >= 1, but got True
    """
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")
    return int(value)


@overload
def check_positive_int(value: Any, name: str, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def check_positive_int(value: Any, name: str, *, allow_none: bool) -> int | None: ...
def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """:func:`check_int` with ``minimum=1``.

    >>> check_positive_int(0, "m")
    Traceback (most recent call last):
    ...
    ValueError: m must be an integer >= 1, but got 0
    """
    return check_int(value, name, minimum=1, allow_none=allow_none)


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite positive real number.

    >>> check_positive(2, "mu")
    2.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, but got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive, but got {value!r}")
    return v


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` as a float if it lies in ``[0, 1)``.

    >>> check_probability(1.0, "momentum")
    Traceback (most recent call last):
    ...
    ValueError: momentum must be in [0, 1), but got 1.0
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), but got {value!r}")
    v = float(value)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be in [0, 1), but got {value!r}")
    return v


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (NumPy's bools too).

    >>> check_bool("yes", "sum_zero")
    Traceback (most recent call last):
    ...
    ValueError: sum_zero must be True or False, but got 'yes'
    """
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, but got {value!r}")
    return bool(value)


def check_array(value: Any, name: str, shape: tuple[int, ...], *, nonnegative: bool = False) -> np.ndarray:
    """A copy of ``value`` as a float array of ``shape`` with finite entries (``>= 0`` with
    ``nonnegative``).

    >>> check_array([1.0, -2.0], "exp_avg_sq", (2,), nonnegative=True)
    Traceback (most recent call last):
    ...
    ValueError: exp_avg_sq must be >= 0, but got [ 1. -2.]
    """
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be an array of shape {shape}, but got {value!r:.100}") from e
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, but got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite, but got {np.array2string(arr.ravel(), threshold=8)}")
    if nonnegative and (arr < 0).any():
        raise ValueError(f"{name} must be >= 0, but got {np.array2string(arr.ravel(), threshold=8)}")
    return arr


def real_array(value: Any) -> np.ndarray | None:
    """``value`` as a float64 array if it holds real numbers only, else ``None``: a string,
    bytes, a bool, ``None``, or an array of any of them (or of complex numbers) is not a
    number here, though NumPy would convert several of them (``"0.5"``, ``True``, ``None``
    as NaN).

    >>> real_array([1, 2.5]).tolist(), real_array(np.float32(0.5)).tolist()
    ([1.0, 2.5], 0.5)
    >>> real_array("0.5"), real_array(True), real_array([None, 1.0]), real_array(["a"])
    (None, None, None, None)
    """
    if value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        return None
    try:
        arr = np.asarray(value)
    except Exception:  # e.g. a tensor that requires grad, a ragged list
        return None
    if arr.dtype.kind == "O":
        if not all(_is_real(v) for v in arr.flat):
            return None
    elif arr.dtype.kind not in "iuf":
        return None
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError):
        return None


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def check_real_array(value: Any, name: str) -> np.ndarray:
    """:func:`real_array` of ``value``, or a ``ValueError`` naming ``name``.

    >>> check_real_array("abc", "x0")
    Traceback (most recent call last):
    ...
    ValueError: x0 must be an array of numbers, but got str: 'abc'
    """
    arr = real_array(value)
    if arr is None:
        raise ValueError(f"{name} must be an array of numbers, but got {type(value).__name__}: {value!r:.100}")
    return arr


def normalize_shape(k: Any) -> tuple[int, ...]:
    """Turn ``k`` (an int, or a shape ``(groups, k)``) into the shape of one point.

    >>> normalize_shape(3), normalize_shape((2, 4))
    ((3,), (2, 4))
    >>> normalize_shape(0)
    Traceback (most recent call last):
    ...
    ValueError: k must be an integer >= 1 or a shape (groups, k) of such integers, but got 0
    """
    msg = f"k must be an integer >= 1 or a shape (groups, k) of such integers, but got {k!r}"
    if _is_int(k):
        if k < 1:
            raise ValueError(msg)
        return (int(k),)
    if isinstance(k, (tuple, list)) and len(k) in (1, 2) and all(_is_int(v) and v >= 1 for v in k):
        return tuple(int(v) for v in k)
    raise ValueError(msg)


def normalize_rng(seed: Any = None, rng: Any = None) -> np.random.Generator:
    """One ``numpy.random.Generator`` from ``seed`` (int or None) or ``rng``, not both.

    >>> int(normalize_rng(seed=0).integers(10)) == int(normalize_rng(seed=0).integers(10))
    True
    """
    if seed is not None and rng is not None:
        raise ValueError(f"give seed or rng, not both (got seed={seed!r} and rng={rng!r})")
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng must be a numpy.random.Generator, but got {type(rng).__name__}")
        return rng
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, but got {seed!r}")
    return np.random.default_rng(None if seed is None else int(seed))
