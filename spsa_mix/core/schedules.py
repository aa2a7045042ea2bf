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

:func:`schedule_spec` describes a built-in schedule as plain values, its parameters
included (the number of planned steps of ``"cosine"``, the offset of ``"power"``), and
:func:`schedule_from_spec` rebuilds it: an optimiser's ``state_dict`` stores the spec, so a
resumed run keeps the schedule of the run that saved it rather than one rebuilt from its
own budget. A callable cannot be stored; its spec is ``{"name": "callable"}``.

Example
-------
>>> lr = resolve_schedule("power", name="lr_schedule", total_steps=100)
>>> round(lr(0), 6), round(lr(100), 4)
(1.0, 0.2487)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from spsa_mix.core.validation import check_int

__all__ = [
    "Schedule",
    "Constant",
    "PowerDecay",
    "Cosine",
    "resolve_schedule",
    "schedule_spec",
    "schedule_from_spec",
    "SCHEDULE_NAMES",
]

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


def schedule_spec(schedule: Schedule) -> dict[str, Any]:
    """A built-in schedule as plain values (``{"name": "callable"}`` for any other callable).

    >>> schedule_spec(Cosine(total_steps=40))
    {'name': 'cosine', 'total_steps': 40, 'floor': 0.01}
    >>> schedule_spec(lambda n: 1.0)
    {'name': 'callable'}
    """
    kind = type(schedule)
    if kind is Constant:
        return {"name": "constant"}
    if kind is PowerDecay:
        return {"name": "power", "exponent": schedule.exponent, "offset": schedule.offset}  # type: ignore[attr-defined]
    if kind is Cosine:
        return {"name": "cosine", "total_steps": schedule.total_steps, "floor": schedule.floor}  # type: ignore[attr-defined]
    return {"name": "callable"}


def schedule_from_spec(spec: Any, *, name: str) -> Schedule | None:
    """The schedule of :func:`schedule_spec`'s output, or ``None`` for ``"callable"``;
    ``name`` names the value in errors.

    >>> schedule_from_spec({"name": "power", "exponent": 0.602, "offset": 8.0}, name="lr_schedule")
    PowerDecay(exponent=0.602, offset=8.0)
    >>> schedule_from_spec({"name": "cosine", "total_steps": 0, "floor": 0.01}, name="lr_schedule")
    Traceback (most recent call last):
    ...
    ValueError: lr_schedule['total_steps'] must be an integer >= 1, but got 0
    """
    if not isinstance(spec, dict) or spec.get("name") not in (*SCHEDULE_NAMES, "callable"):
        raise ValueError(f"{name} must be a schedule spec (a dict with a 'name' among "
                         f"{[*SCHEDULE_NAMES, 'callable']}), but got {spec!r:.100}")
    keys = {"constant": (), "callable": (), "power": ("exponent", "offset"), "cosine": ("total_steps", "floor")}
    missing = [k for k in keys[spec["name"]] if k not in spec]
    if missing:
        raise ValueError(f"{name} of kind {spec['name']!r} must have the keys {list(keys[spec['name']])}, "
                         f"but lacks {missing}")

    def real(key: str, low: float, high: float = math.inf) -> float:
        v = spec[key]
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (low <= float(v) < high):
            raise ValueError(f"{name}[{key!r}] must be a number in [{low}, {high}), but got {v!r}")
        return float(v)

    if spec["name"] == "constant":
        return Constant()
    if spec["name"] == "power":
        return PowerDecay(exponent=real("exponent", 0.0), offset=real("offset", 0.0))
    if spec["name"] == "cosine":
        steps = check_int(spec["total_steps"], f"{name}['total_steps']", minimum=1)
        return Cosine(total_steps=steps, floor=real("floor", 0.0, 1.0))
    return None
