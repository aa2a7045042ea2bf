"""mergekit's merge methods by name: what each one does, its parameters and their defaults.

The table follows mergekit 0.1.5 (``mergekit/merge_methods/registry.py`` and the methods'
``ParameterSpec``\\ s). The task-vector family (``delta_i = theta_i - theta_base``) merges
``theta = theta_base + lambda * sum_i w_i delta'_i / divisor`` where ``delta'_i`` is the
sparsified task vector (:mod:`spsa_mix.blend.methods.sparsification`), and, for the methods with a
sign consensus, only the entries whose sign agrees with the elected sign are summed
(:mod:`spsa_mix.blend.methods.task_arithmetic`):

====================  ===================  =========  ================  ===============
method                sparsification       consensus  normalize (def.)  rescale (def.)
====================  ===================  =========  ================  ===============
``task_arithmetic``   none                 no         false             false
``ties``              magnitude            sign sum   true              false
``dare_ties``         random               sign sum   false             true
``dare_linear``       random               no         false             true
``breadcrumbs``       magnitude_outliers   no         false             false
``breadcrumbs_ties``  magnitude_outliers   sign sum   false             false
``della``             della_magprune       sign sum   true              true
``della_linear``      della_magprune       no         false             true
====================  ===================  =========  ================  ===============

Per-expert parameters: ``weight`` (required), ``density`` (default 1: nothing dropped),
``gamma`` (breadcrumbs, default 0.01), ``epsilon`` (DELLA, default 0.15); shared:
``lambda`` (default 1), ``normalize``, ``rescale``. Besides them, ``linear`` (a weighted
average, ``normalize`` default true), ``slerp`` (a base and one model, ``t``), ``nuslerp``
(two models, ``weight`` each, base optional) and ``model_stock`` (a base and at least two
models) are fixed merges (:mod:`spsa_mix.blend.methods.interpolation`).

Example
-------
>>> METHODS["ties"].sparsification, METHODS["ties"].consensus, METHODS["ties"].default_normalize
('magnitude', True, True)
>>> check_parameters("dare_ties", {"density": 0.7}, k=3)
{'density': (0.7, 0.7, 0.7), 'normalize': False, 'rescale': True, 'lambda': 1.0}
>>> check_parameters("ties", {"density": 1.5}, k=2)
Traceback (most recent call last):
...
ValueError: density must be a number in (0, 1] or a list of 2 of them (one per expert), but got 1.5
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

__all__ = ["CONSENSUS", "MethodSpec", "METHODS", "TASK_VECTOR_METHODS", "FIXED_METHODS", "LEARNED_SPACES",
           "check_parameters", "PER_EXPERT", "method_of_space"]

CONSENSUS = ("fixed", "per-probe")  # a learned space's sign election: fixed at the start, or per probe


@dataclass(frozen=True)
class MethodSpec:
    """One mergekit method of the task-vector family (see the module docstring)."""

    name: str
    sparsification: str | None
    consensus: bool
    default_normalize: bool
    default_rescale: bool

    @property
    def per_expert(self) -> tuple[str, ...]:
        """The per-expert parameters beside ``weight``."""
        extra = {"magnitude_outliers": ("gamma",), "della_magprune": ("epsilon",)}.get(self.sparsification or "", ())
        return (("density",) if self.sparsification else ()) + extra

    @property
    def random(self) -> bool:
        """Whether the sparsification draws a random mask (DARE, DELLA)."""
        return self.sparsification in ("random", "della_magprune")


METHODS: dict[str, MethodSpec] = {m.name: m for m in (
    MethodSpec("task_arithmetic", None, False, False, False),
    MethodSpec("ties", "magnitude", True, True, False),
    MethodSpec("dare_ties", "random", True, False, True),
    MethodSpec("dare_linear", "random", False, False, True),
    MethodSpec("breadcrumbs", "magnitude_outliers", False, False, False),
    MethodSpec("breadcrumbs_ties", "magnitude_outliers", True, False, False),
    MethodSpec("della", "della_magprune", True, True, True),
    MethodSpec("della_linear", "della_magprune", False, False, True),
)}
TASK_VECTOR_METHODS = tuple(METHODS)
FIXED_METHODS = ("linear", "slerp", "nuslerp", "model_stock")  # merged with fixed weights only
# spsa_mix's learned spaces of this family: task-vectors is mergekit's task_arithmetic
LEARNED_SPACES = tuple(m for m in TASK_VECTOR_METHODS if m != "task_arithmetic")
PER_EXPERT = {"density": 1.0, "gamma": 0.01, "epsilon": 0.15}  # mergekit's defaults


def method_of_space(space: str) -> str:
    """The mergekit method a space of spsa_mix is: ``convex`` is ``linear``, ``task-vectors``
    is ``task_arithmetic``, the others keep their name.

    >>> method_of_space("task-vectors"), method_of_space("dare_ties")
    ('task_arithmetic', 'dare_ties')
    """
    return {"convex": "linear", "task-vectors": "task_arithmetic"}.get(space, space)


def _per_expert(name: str, value: Any, k: int, *, low_open: bool) -> tuple[float, ...]:
    lo = "(0" if low_open else "[0"
    bad = ValueError(f"{name} must be a number in {lo}, 1] or a list of {k} of them (one per expert), "
                     f"but got {value!r}")
    values = list(value) if isinstance(value, (list, tuple)) else [value] * k
    if len(values) != k:
        raise bad
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise bad
        if (v <= 0 if low_open else v < 0) or v > 1:
            raise bad
        out.append(float(v))
    return tuple(out)


def check_parameters(method: str, parameters: dict[str, Any], *, k: int) -> dict[str, Any]:
    """The parameters of ``method`` for ``k`` experts, checked and completed with mergekit's
    defaults: per-expert ones as tuples of ``k`` floats, ``normalize`` and ``rescale`` as
    bools, ``lambda`` as a float. ``weight`` is not among them (it is what is learned).

    Raises ``ValueError`` naming an unknown method or parameter (with the valid ones), a
    density outside ``(0, 1]``, a gamma or epsilon outside ``[0, 1]``, or DELLA's
    ``density +/- epsilon`` outside ``(0, 1)``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, but got {method!r}")
    spec = METHODS[method]
    valid = (*spec.per_expert, "normalize", "rescale", "lambda")
    for key in parameters:
        if key not in valid:
            raise ValueError(f"{method} has no parameter {key!r}; its parameters: {', '.join(valid)}")
    out: dict[str, Any] = {}
    for key in spec.per_expert:
        out[key] = _per_expert(key, parameters.get(key, PER_EXPERT[key]), k, low_open=key == "density")
    for key, default in (("normalize", spec.default_normalize), ("rescale", spec.default_rescale)):
        value = parameters.get(key, default)
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, but got {value!r}")
        out[key] = value
    lam = parameters.get("lambda", 1.0)
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam):
        raise ValueError(f"lambda must be a number, but got {lam!r}")
    out["lambda"] = float(lam)
    if spec.sparsification == "della_magprune":
        for d, e in zip(out["density"], out["epsilon"], strict=True):
            if d < 1 and (d + e >= 1 or d - e <= 0):
                raise ValueError(f"{method}: density +/- epsilon must lie in (0, 1), but density={d:g} and "
                                 f"epsilon={e:g} give [{d - e:g}, {d + e:g}]")
    return out
