"""Schedules for the perturbation radius ``mu`` and the step size ``lr``.

A schedule is a function of the step index ``n = 0, 1, 2, ...`` that returns a positive
*factor*; the value used at step ``n`` is ``base * factor(n)``, as in
``torch.optim.lr_scheduler.LambdaLR``. Every built-in schedule has ``factor(0) == 1``, so
``lr`` and ``mu`` are always the values at the first step.

Built-ins, by name:

``"constant"``
    ``1``.
``"power"``
    Spall's gain sequences (Spall 1998, "Implementation of the simultaneous perturbation
    algorithm", section III): ``a_n = a / (A + n + 1)^0.602`` for the step size, with the
    stability constant ``A`` about 10% of the planned steps, and ``c_n = c / (n + 1)^0.101``
    for the radius. Normalised to one at ``n = 0``:
    ``((A + 1) / (A + n + 1))^exponent``.
``"cosine"``
    ``floor + (1 - floor) (1 + cos(pi n / N)) / 2`` over ``N`` planned steps (Loshchilov
    and Hutter 2017), with ``floor = 0.01``; needs a known number of steps.

Any callable ``f(n) -> float`` is accepted too.

Example
-------
>>> lr = resolve_schedule("power", name="lr_schedule", total_steps=100)
>>> round(lr(0), 6), round(lr(100), 4)
(1.0, 0.2487)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Schedule", "Constant", "PowerDecay", "Cosine", "resolve_schedule", "SCHEDULE_NAMES"]

Schedule = Callable[[int], float]
SCHEDULE_NAMES: tuple[str, ...] = ("constant", "power", "cosine")

SPALL_LR_EXPONENT = 0.602  # Spall (1998), eq. for a_k, asymptotically optimal choice
SPALL_MU_EXPONENT = 0.101  # Spall (1998), eq. for c_k


@dataclass(frozen=True)
class Constant:
    """``factor(n) = 1``.

    >>> Constant()(7)
    1.0
    """

    def __call__(self, n: int) -> float:
        return 1.0


@dataclass(frozen=True)
class PowerDecay:
    """``factor(n) = ((offset + 1) / (offset + n + 1)) ** exponent`` (Spall's gains).

    >>> round(PowerDecay(exponent=0.5, offset=0.0)(3), 6)
    0.5
    """

    exponent: float
    offset: float = 0.0

    def __call__(self, n: int) -> float:
        return ((self.offset + 1.0) / (self.offset + n + 1.0)) ** self.exponent


@dataclass(frozen=True)
class Cosine:
    """``factor(n) = floor + (1 - floor) * (1 + cos(pi * min(n, N) / N)) / 2``.

    >>> Cosine(total_steps=10, floor=0.0)(10)
    0.0
    """

    total_steps: int
    floor: float = 0.01

    def __call__(self, n: int) -> float:
        t = min(n, self.total_steps) / max(self.total_steps, 1)
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def resolve_schedule(
    spec: str | Schedule | None, *, name: str, total_steps: int | None
) -> Schedule:
    """Turn ``spec`` (a name, a callable or ``None``) into a schedule callable.

    ``name`` is ``"lr_schedule"`` or ``"mu_schedule"``: it picks Spall's exponent for
    ``"power"`` and names the argument in errors.

    >>> resolve_schedule(None, name="mu_schedule", total_steps=None)(5)
    1.0
    """
    if spec is None or spec == "constant":
        return Constant()
    if callable(spec):
        return spec
    if spec == "power":
        if name == "mu_schedule":
            return PowerDecay(exponent=SPALL_MU_EXPONENT, offset=0.0)
        offset = 0.1 * total_steps if total_steps is not None else 0.0
        return PowerDecay(exponent=SPALL_LR_EXPONENT, offset=offset)
    if spec == "cosine":
        if total_steps is None:
            raise ValueError(
                f"{name}='cosine' needs a known number of steps: give maxiter or max_evals"
            )
        return Cosine(total_steps=total_steps)
    raise ValueError(
        f"{name} must be one of {list(SCHEDULE_NAMES)} or a callable of the step index, "
        f"but got {spec!r}"
    )


def evaluate_schedule(schedule: Schedule, n: int, *, name: str) -> float:
    """Call ``schedule(n)`` and check that the factor is finite and positive.

    >>> evaluate_schedule(lambda n: -1.0, 3, name="lr_schedule")
    Traceback (most recent call last):
    ...
    ValueError: lr_schedule must return a finite positive factor, but returned -1.0 at step 3
    """
    value = float(schedule(n))
    if not (math.isfinite(value) and value > 0):
        raise ValueError(
            f"{name} must return a finite positive factor, but returned {value!r} at step {n}"
        )
    return value
