"""LoraHub's search: Nevergrad's NGOpt over unconstrained weights in a box, with an L1 penalty.

LoraHub (Huang et al., "LoraHub: Efficient Cross-Task Generalization via Dynamic LoRA
Composition", 2023; ``lorahub/algorithm.py`` of sail-sg/lorahub) learns one weight per
LoRA module with ``ng.optimizers.NGOpt`` on ``ng.p.Array(init=0, lower=-1.5, upper=1.5)``
and a budget of 40 evaluations (``max_inference_step``), minimising the few-shot loss plus
``0.05 * mean_i |w_i|``; it returns NGOpt's recommendation. :func:`lorahub_search` is that
search on any vectorised objective (``objective(points (n, K)) -> (n,)`` losses), such as a
:class:`~spsa_mix.blend.BlendedObjective` built with ``simplex_atol=None`` (any real
weights):

* in the ``lora`` space the weights give ``W + sum_i w_i scaling_i B_i A_i``, linear in w.
  LoraHub itself composes the factors, ``(sum_i w_i B_i)(sum_i w_i A_i)`` (its ``get_score``
  scales every tensor of each adapter's state dict by ``w_i``), which adds the cross terms
  ``w_i w_j B_i A_j``; the box, the start, the penalty and the optimiser are LoraHub's, the
  composition is this package's;
* in the ``task-vectors`` space (scale 1) they give ``theta_b + sum_i w_i (theta_i - theta_b)``,
  task arithmetic with free coefficients.

Each evaluation is one objective call with one point; the budget is never exceeded and the
recommendation is not re-evaluated (as LoraHub). A point whose loss is not finite (the
objective returns NaN or raises :class:`~spsa_mix.core.errors.NonFiniteLossError`: weights
off the simplex can make a blended BatchNorm variance negative) is told as
:data:`NONFINITE_LOSS`, worse than any real loss, and counted in ``res.nonfinite``.
Randomness only from ``seed`` (the parametrisation's ``RandomState``).

Example
-------
>>> import numpy as np
>>> c = np.array([0.8, -0.4, 0.2])
>>> res = lorahub_search(lambda w: ((w - c) ** 2).sum(axis=1), k=3, max_evals=60, seed=0)
>>> res.nfev, bool(np.abs(res.x).max() <= 1.5), bool(res.fun < (c ** 2).sum())
(60, True, True)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.core.result import OptimizeResult, Status
from spsa_mix.core.validation import check_int, normalize_rng

__all__ = ["lorahub_search", "LORAHUB_BOUND", "LORAHUB_L1", "LORAHUB_BUDGET", "NONFINITE_LOSS"]

FloatArray = NDArray[np.float64]
LORAHUB_BOUND = 1.5  # lorahub/algorithm.py: ng.p.Array(upper=[1.5] * n, lower=[-1.5] * n)
LORAHUB_L1 = 0.05  # lorahub/algorithm.py: default_l1_regularization = 0.05 * sum(|w|) / n
LORAHUB_BUDGET = 40  # lorahub/algorithm.py: max_inference_step in its examples
NONFINITE_LOSS = 1e6  # told for a point whose loss is NaN or infinite (this package's choice: finite, for Cobyla)


def lorahub_search(objective: Callable[[FloatArray], Any], k: int, *, max_evals: int = LORAHUB_BUDGET,
                   bound: float = LORAHUB_BOUND, l1: float = LORAHUB_L1, optimizer: str = "NGOpt",
                   x0: Any = None, seed: int | None = None, rng: np.random.Generator | None = None) -> OptimizeResult:
    """Minimise ``objective(w) + l1 * mean(|w|)`` over ``w`` in ``[-bound, bound]^k`` with Nevergrad.

    Parameters
    ----------
    objective:
        Vectorised: ``objective(points)`` with ``points`` of shape ``(1, k)`` returns one loss
        (an array of shape ``(1,)`` or a float).
    k:
        Number of weights.
    max_evals:
        Objective evaluations (LoraHub: 40).
    bound, l1:
        The box half-width (1.5) and the penalty weight (0.05), LoraHub's.
    optimizer:
        A name of ``nevergrad.optimizers.registry`` (LoraHub: ``"NGOpt"``).
    x0:
        The start (default zeros, LoraHub's: every adapter off).
    seed, rng:
        Seed the parametrisation's random state (one of them, or neither).

    Returns
    -------
    OptimizeResult
        ``x`` (NGOpt's recommendation), ``fun`` (the penalised loss of the best evaluated
        point, Nevergrad's view of the run), ``nfev``, ``nit``, ``success``, ``status``,
        ``message``, ``method``, ``nonfinite`` (evaluations whose loss was not finite),
        ``history`` (``loss``: the penalised loss of each evaluation, :data:`NONFINITE_LOSS`
        where it was not finite; ``x``: each point).

    Raises
    ------
    ValueError
        For a bad argument, naming it.
    """
    import nevergrad as ng

    from spsa_mix.adapters.nevergrad import _quiet  # Nevergrad's warnings and its NumPy >= 2.4 fix

    k = check_int(k, "k", minimum=1)
    max_evals = check_int(max_evals, "max_evals", minimum=1)
    if not (isinstance(bound, (int, float)) and np.isfinite(bound) and bound > 0):
        raise ValueError(f"bound must be a positive number, but got {bound!r}")
    if not (isinstance(l1, (int, float)) and np.isfinite(l1) and l1 >= 0):
        raise ValueError(f"l1 must be a non-negative number, but got {l1!r}")
    if optimizer not in ng.optimizers.registry:
        raise ValueError(f"unknown Nevergrad optimizer {optimizer!r}")
    start = np.zeros(k) if x0 is None else np.asarray(x0, dtype=np.float64)
    if start.shape != (k,) or not np.all(np.abs(start) <= bound):
        raise ValueError(f"x0 must have shape ({k},) and lie in [-{bound}, {bound}], but got {x0!r}")
    generator = normalize_rng(seed, rng)
    array = ng.p.Array(init=start, lower=-float(bound), upper=float(bound))
    array.random_state = np.random.RandomState(int(generator.integers(2**32 - 1)))
    points, losses = [], []
    nonfinite = 0
    with _quiet():
        opt = ng.optimizers.registry[optimizer](parametrization=array, budget=max_evals)
        try:
            for _ in range(max_evals):
                cand = opt.ask()
                w = np.asarray(cand.value, dtype=np.float64)
                try:
                    loss = float(np.asarray(objective(w[None])).reshape(-1)[0])
                except NonFiniteLossError:
                    loss = math.nan
                value = loss + float(l1) * float(np.abs(w).mean())
                if not math.isfinite(value):
                    value = NONFINITE_LOSS
                    nonfinite += 1
                opt.tell(cand, value)
                points.append(w)
                losses.append(value)
            x = np.asarray(opt.provide_recommendation().value, dtype=np.float64)
        finally:
            _stop_threads(opt)
    best = int(np.argmin(losses))
    return OptimizeResult(x=x, fun=losses[best], nit=max_evals, nfev=max_evals, success=True,
                          status=int(Status.BUDGET), message="evaluation budget reached",
                          method=f"lorahub:{optimizer}", nonfinite=nonfinite,
                          history={"loss": np.array(losses), "x": np.array(points)})


def _stop_threads(opt: Any) -> None:
    """Stop the solver threads of Nevergrad's recast optimizers (SciPy's Cobyla, Powell...),
    which NGOpt may pick; each waits for its next tell in a non-daemon thread and would keep
    the interpreter from exiting (as :mod:`spsa_mix.adapters.nevergrad` does)."""
    from nevergrad.optimization import base

    stack, seen = [opt], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        thread = getattr(o, "_messaging_thread", None)
        if thread is not None:
            thread.stop()
        for value in vars(o).values():
            items = value if isinstance(value, (list, tuple)) else [value]
            stack.extend(v for v in items if isinstance(v, base.Optimizer))
