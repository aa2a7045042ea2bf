"""The merge methods' keys of ``spsa-mix merge``: parameters of a method space, and the fixed baselines.

A config learns the weights of one space (``space: ties``, ``space: dare_ties``, ...; see
:mod:`spsa_mix.blend.methods.space`) with mergekit's parameters as keys of their own:

=============  ==========================================================================
key            meaning (mergekit's name and default)
=============  ==========================================================================
``density``    fraction of each task vector kept: a number in (0, 1] or one per expert
               (default 1)
``gamma``      breadcrumbs: fraction of the largest entries dropped (default 0.01)
``epsilon``    DELLA: half-width of the keep probabilities (default 0.15)
``normalize``  divide by the weights' sum (TIES: per entry) (default: the method's)
``rescale``    keep each task vector's L1 norm after the drop (default: the method's)
``consensus``  ``fixed`` (the elected sign and divisor of the uniform weights, one blend
               per probe) or ``per-probe`` (recomputed by every probe)
``scale``      mergekit's ``lambda``: a number or ``learned``
=============  ==========================================================================

and ``baselines``: the fixed merges that ``select: best`` scores beside the uniform blend
and the best single expert (:data:`BASELINES`; ``auto``: every one that applies to the
experts, ``none``: none of them).

Example
-------
>>> method_parameters({"density": 0.5, "gamma": None, "epsilon": None, "normalize": None, "rescale": True})
{'density': 0.5, 'rescale': True}
>>> check_baselines(["ties", "slerp"], k=3, has_base=True, kind="hf")
Traceback (most recent call last):
...
ValueError: baselines: slerp merges exactly 2 models (mergekit's slerp: a base and one other), but there are 3 experts
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

__all__ = ["METHOD_KEYS", "BASELINES", "method_parameters", "check_method_keys", "check_lengths", "check_baselines",
           "auto_baselines", "space_argument"]

METHOD_KEYS = ("density", "gamma", "epsilon", "normalize", "rescale")
# The fixed candidates of select: best, as mergekit names them ("base": the base model alone).
BASELINES = ("base", "linear", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs",
             "breadcrumbs_ties", "della", "della_linear", "model_stock", "slerp", "nuslerp")
_NEEDS_BASE = {"base", "task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
               "della", "della_linear", "model_stock"}


def method_parameters(values: dict[str, Any]) -> dict[str, Any]:
    """The mergekit parameters a config sets (``None``: the method's default)."""
    return {k: values[k] for k in METHOD_KEYS if values.get(k) is not None}


def _spaces_taking(key: str) -> tuple[str, ...]:
    from spsa_mix.blend.methods.registry import LEARNED_SPACES, METHODS

    if key in ("normalize", "rescale"):
        return LEARNED_SPACES
    return tuple(m for m in LEARNED_SPACES if key in METHODS[m].per_expert)


def check_method_keys(space: str, values: dict[str, Any], consensus: Any) -> None:
    """Each method key set is one the space takes, of the right type and range (lists are
    checked against the number of experts later, by :func:`check_lengths`)."""
    from spsa_mix.blend.methods.registry import CONSENSUS

    for key, value in method_parameters(values).items():
        takers = _spaces_taking(key)
        if space not in takers:
            raise ValueError(f"{key} applies to space {' / '.join(takers)}, but space is {space!r}")
        if key in ("normalize", "rescale"):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, but got {value!r}")
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        low = "(0" if key == "density" else "[0"
        for v in items:
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) \
                    or (v <= 0 if key == "density" else v < 0) or v > 1:
                raise ValueError(f"{key} must be a number in {low}, 1] or a list of them (one per expert), "
                                 f"but got {value!r}")
    if consensus not in CONSENSUS:
        raise ValueError(f"consensus must be one of {', '.join(CONSENSUS)}, but got {consensus!r}")
    from spsa_mix.blend.methods.registry import LEARNED_SPACES

    if consensus != "fixed" and space not in LEARNED_SPACES:
        raise ValueError(f"consensus applies to the spaces {', '.join(LEARNED_SPACES)}, but space is {space!r}")


def check_lengths(space: str, values: dict[str, Any], k: int) -> None:
    """The per-expert lists name one value per expert; and the whole set is valid for the
    method (DELLA's ``density +/- epsilon`` in (0, 1)), with ``k`` experts."""
    from spsa_mix.blend.methods.registry import LEARNED_SPACES, check_parameters

    if space in LEARNED_SPACES:
        check_parameters(space, method_parameters(values), k=k)


def space_argument(space: str, values: dict[str, Any], consensus: str, seed: int,
                   start: Sequence[float] | None = None) -> Any:
    """What :class:`~spsa_mix.blend.BlendedObjective` takes as ``space``: the name, or a
    :class:`~spsa_mix.blend.methods.space.TaskVectorMethod` with the config's parameters."""
    from spsa_mix.blend.methods.registry import LEARNED_SPACES

    if space not in LEARNED_SPACES:
        return space
    from spsa_mix.blend.methods.space import TaskVectorMethod

    return TaskVectorMethod(space, method_parameters(values), seed=seed, consensus=consensus,
                            start=None if start is None else tuple(float(w) for w in start))


def check_baselines(value: Any, *, k: int | None = None, has_base: bool | None = None,
                    kind: str | None = None) -> tuple[str, ...] | str:
    """``baselines`` checked: ``"auto"``, ``"none"`` or a list of :data:`BASELINES`; with
    ``k``, ``has_base`` and ``kind`` (the experts' kind), each named one must apply to them
    (a base where it needs one, two experts for SLERP and NuSLERP, full models)."""
    if isinstance(value, str) and value in ("auto", "none"):
        return value
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError(f"baselines must be 'auto', 'none' or a list of {', '.join(BASELINES)}, but got {value!r}")
    for b in items:
        if b not in BASELINES:
            raise ValueError(f"baselines: unknown method {b!r}; the baselines are {', '.join(BASELINES)}")
    if k is not None:
        for b in items:
            if kind == "adapter":
                raise ValueError(f"baselines: {b} merges full models, but the experts are LoRA adapters "
                                 "(baselines: none or auto)")
            if b in _NEEDS_BASE and not has_base:
                raise ValueError(f"baselines: {b} needs a base model (base: path/to/base)")
            if b == "slerp" and k != 2:
                raise ValueError(f"baselines: slerp merges exactly 2 models (mergekit's slerp: a base and one "
                                 f"other), but there are {k} experts")
            if b == "nuslerp" and k != 2:
                raise ValueError(f"baselines: nuslerp merges exactly 2 models, but there are {k} experts")
    return tuple(items)


def auto_baselines(*, k: int, has_base: bool, kind: str) -> tuple[str, ...]:
    """Every baseline that applies: with a base, the base alone, the task-vector methods at
    mergekit's defaults and Model Stock; SLERP and NuSLERP for two experts; linear. None for
    LoRA adapters.

    >>> auto_baselines(k=2, has_base=False, kind="hf")
    ('linear', 'slerp', 'nuslerp')
    """
    if kind == "adapter":
        return ()
    out = [b for b in BASELINES if (has_base or b not in _NEEDS_BASE) and (k == 2 or b not in ("slerp", "nuslerp"))]
    return tuple(out)


def baseline_names(cfg: Any, k: int, kind: str) -> tuple[str, ...]:
    """The baselines a run scores: the config's list, every one that applies (``auto``), or none."""
    value = check_baselines(cfg.baselines, k=k, has_base=cfg.base is not None, kind=kind)
    if value == "none":
        return ()
    if value == "auto":  # linear at its defaults is the convex space's uniform blend, scored anyway
        return tuple(b for b in auto_baselines(k=k, has_base=cfg.base is not None, kind=kind)
                     if not (b == "linear" and cfg.space == "convex"))
    return tuple(value)


def check_plan(cfg: Any, *, k: int, kind: str) -> tuple[float, ...] | None:
    """The checks of the method keys that need the number of experts and their kind (before
    any weight is read); returns the starting weights of a ``mergekit`` config, if any."""
    check_lengths(cfg.space, cfg.to_dict(), k)
    baseline_names(cfg, k, kind)
    if kind == "file" and cfg.space == "lora":
        raise ValueError("space: lora blends PEFT adapters")
    if cfg.mergekit is None:
        return None
    from spsa_mix.merge.mergekit import read_config

    start = read_config(cfg.mergekit)["start"]
    if len(start) != k:
        raise ValueError(f"mergekit: {cfg.mergekit} weighs {len(start)} models, but the merge has {k} experts")
    floored = [max(float(w), START_FLOOR) for w in start]  # the search and a fixed consensus need w > 0
    return tuple(w / sum(floored) for w in floored)


START_FLOOR = 1e-3  # a zero weight of a mergekit config starts at this share (the search needs interior points)


def start_point(domain: Any, start: Sequence[float], scale: Any) -> Any:
    """The search's first point from the starting weights (:func:`check_plan`): the weights
    in every group, and a learned scale of 1.

    >>> from spsa_mix.core.domain import Domain
    >>> start_point(Domain(3, positive=1, names=("scale",)), [0.25, 0.25, 0.5], "learned").tolist()
    [0.25, 0.25, 0.5, 1.0]
    """
    import numpy as np

    w = np.asarray(start, dtype=np.float64)
    alpha = np.broadcast_to(w, domain.simplex).copy()
    if domain.simplex_only:
        return alpha
    return domain.join(alpha, np.array([1.0]))
