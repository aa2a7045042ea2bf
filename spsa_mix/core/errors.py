"""Exceptions raised by the optimisers, and the argument checks they share.

Every bad argument raises ``ValueError`` naming the argument and the value received.

Example
-------
>>> check_positive(0.0, "lr")
Traceback (most recent call last):
...
ValueError: lr must be positive, but got 0.0
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

if TYPE_CHECKING:
    from spsa_mix.core.result import OptimizeResult

__all__ = [
    "NonFiniteLossError",
    "ObjectiveError",
    "check_positive",
    "check_positive_int",
    "check_probability",
    "normalize_shape",
    "normalize_rng",
]


class NonFiniteLossError(ValueError):
    """A loss told to an optimiser (or returned by an objective) is NaN or infinite.

    ``index`` is the position of the first offending loss in its batch and ``value`` the
    value itself. The optimiser's state is unchanged when this is raised.
    """

    def __init__(self, message: str, *, index: int, value: float) -> None:
        super().__init__(message)
        self.index = index
        self.value = value


class ObjectiveError(RuntimeError):
    """The objective raised; ``partial_result`` holds everything computed before that.

    The original exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, partial_result: OptimizeResult) -> None:
        super().__init__(message)
        self.partial_result = partial_result


def check_positive(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite positive real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a positive number, but got {value!r}")
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive, but got {value!r}")
    return v


@overload
def check_positive_int(value: Any, name: str, *, allow_none: Literal[False] = ...) -> int: ...
@overload
def check_positive_int(value: Any, name: str, *, allow_none: bool) -> int | None: ...
def check_positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    """Return ``value`` if it is an int of at least 1 (or ``None`` where allowed).

    >>> check_positive_int(0, "m")
    Traceback (most recent call last):
    ...
    ValueError: m must be an integer >= 1, but got 0
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")
    if int(value) < 1:
        raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")
    return int(value)


def check_probability(value: Any, name: str) -> float:
    """Return ``value`` if it lies in ``[0, 1)``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1), but got {value!r}")
    v = float(value)
    if not (0.0 <= v < 1.0):
        raise ValueError(f"{name} must be in [0, 1), but got {value!r}")
    return v


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
    if isinstance(k, numbers.Integral) and not isinstance(k, bool):
        if k < 1:
            raise ValueError(msg)
        return (int(k),)
    if isinstance(k, (tuple, list)) and len(k) in (1, 2):
        if all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in k):
            if all(v >= 1 for v in k):
                return tuple(int(v) for v in k)
            raise ValueError(msg)
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
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0
    ):
        raise ValueError(f"seed must be a non-negative integer or None, but got {seed!r}")
    return np.random.default_rng(None if seed is None else int(seed))
