"""Where a run starts, and a guarantee at its end: never worse than a point it checked.

``minimize(..., start="best")`` scores the candidates before learning: the starting point
(``x0``, default the uniform point) and every vertex of the simplex (each weight row on the same expert,
to within ``VERTEX_EPS``; extra coordinates as at the start), ``K + 1`` evaluations in one call
(one minibatch for all of them when ``vectorized``), counted in the budget. The run starts
from the best; a vertex is softened to ``VERTEX_WEIGHT`` on it and the rest spread evenly,
since the softmax's gradient vanishes at a vertex. At the end, the returned point and the
best candidate are scored together, and the lower wins: so the answer is never worse, on
that comparison, than a candidate the run checked. Each check spends ``CHECK_FRACTION`` of
the budget (at least one call): the candidates are scored by as many calls as that pays for
and the final pair by as many pairs, and the means decide (:func:`check_repeats`), so that
on a noisy objective both decisions average several minibatches; the comparison is paired
(one minibatch per call for both points).

``start="race"`` checks the same candidates and compares at the end the same way, but when a
vertex wins the check it does not simply start there: a short run from the start and one from
that vertex share part of the budget, and the better is continued
(:mod:`spsa_mix.core.race`). Starting at the vertex traps the run there (the softmax
saturates: the other experts' logits get a vanishing share of the gradient, and SPSA's noise
drowns it), and starting at the uniform point may miss a vertex's basin; the race is never
far behind the better of the two (``docs/directions.md``, "The start: a race").

Why check at all (measured in ``docs/directions.md``, "Defaults"): a blend of experts has
basins near the vertices that a run from the uniform point does not reach on a few hundred
evaluations, and a single expert can beat every blend the run visits; checking the K
vertices costs K + 1 evaluations.

``start="best"`` or ``"race"`` with a budget smaller than the K + 1 candidates starts at
``x0`` unchecked; ``"race"`` with too small a budget for two racers of ``MIN_RACE_STEPS``
steps is ``"best"``. ``start="auto"`` (the default) is ``"race"`` for ``method="spsa"``
with a budget in evaluations (``max_evals``) that leaves at least ``MIN_STEPS_AFTER`` SPSA
steps after the candidates, and ``"uniform"`` (start at ``x0``, no check) otherwise.

Example
-------
>>> import numpy as np, spsa_mix
>>> f = lambda a: float((a[0] - 1.0) ** 2 + 0.1 * a[1])      # the best point is vertex 0
>>> res = spsa_mix.minimize(f, k=3, max_evals=200, seed=0)
>>> res.start["chosen"], bool(res.x[0] > 0.99), res.nfev <= 200
('vertex 0', True, True)
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.domain import Domain
from spsa_mix.core.errors import ObjectiveError
from spsa_mix.core.result import OptimizeResult, Status

__all__ = ["START_RULES", "VERTEX_WEIGHT", "VERTEX_EPS", "MIN_STEPS_AFTER", "CHECK_FRACTION", "check_repeats",
           "candidates", "soften", "resolve_start", "run_from_best"]

FloatArray = NDArray[np.float64]
START_RULES = ("auto", "race", "best", "uniform")
VERTEX_WEIGHT = 0.9  # a softened vertex: 0.9 on the expert, the rest spread evenly (measured, module docstring)
VERTEX_EPS = 1e-6  # a candidate vertex keeps this much weight spread evenly: every point handed over is interior
MIN_STEPS_AFTER = 20  # "auto" checks the candidates when at least this many SPSA steps remain (two racers of 10)
CHECK_FRACTION = 0.05  # of max_evals for each check (candidates, final comparison), in repeated calls (measured)


def candidates(domain: Domain, x0: Any = None) -> tuple[FloatArray, list[str]]:
    """The start (``x0`` or the centre) and the K vertices, as flat points ``(K + 1, *point_shape)``.

    A vertex keeps ``VERTEX_EPS`` of its weight spread evenly over the others, so that every
    point an objective sees is strictly inside the simplex, as every probe of the optimisers is.

    >>> pts, names = candidates(Domain(3))
    >>> pts.round(3).tolist(), names
    ([[0.333, 0.333, 0.333], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], ['start', 'vertex 0', 'vertex 1', 'vertex 2'])
    """
    start = domain.center() if x0 is None else domain.check_point(x0, name="x0")
    _, pos, real = domain.split(start)
    rows = [np.asarray(start, dtype=np.float64)]
    for i in range(domain.k):
        alpha = np.full(domain.simplex, VERTEX_EPS / domain.k)
        alpha[..., i] += 1.0 - VERTEX_EPS
        rows.append(domain.join(alpha, pos if domain.positive else None, real if domain.real else None))
    return np.stack(rows), ["start"] + [f"vertex {i}" for i in range(domain.k)]


def soften(domain: Domain, point: FloatArray) -> FloatArray:
    """A vertex moved inside the simplex: ``VERTEX_WEIGHT`` on its expert, the rest even.

    >>> soften(Domain(3), np.array([0.0, 1.0, 0.0])).round(4).tolist()
    [0.0333, 0.9333, 0.0333]
    """
    alpha, pos, real = domain.split(point)
    mixed = VERTEX_WEIGHT * alpha + (1.0 - VERTEX_WEIGHT) / domain.k
    return domain.join(mixed, pos if domain.positive else None, real if domain.real else None)


def resolve_start(start: Any, *, method: str, max_evals: int | None, step_cost: float, k: int,
                  maxiter: int | None = None) -> str:
    """``"race"``, ``"best"`` or ``"uniform"`` for a ``start`` of :data:`START_RULES` (see
    the module docstring): ``"best"`` or ``"race"`` with a ``max_evals`` smaller than the
    ``k + 1`` candidates is ``"uniform"``, and ``"race"`` whose racers do not fit is ``"best"``.

    >>> resolve_start("auto", method="spsa", max_evals=400, step_cost=2, k=10)
    'race'
    >>> resolve_start("auto", method="spsa", max_evals=40, step_cost=2, k=10), resolve_start("auto", method="backprop",
    ...     max_evals=400, step_cost=3, k=10)
    ('uniform', 'uniform')
    """
    from spsa_mix.core.race import race_plan

    if start not in START_RULES:
        raise ValueError(f"start must be one of {list(START_RULES)}, but got {start!r}")
    if start == "race" and method != "spsa":
        raise ValueError(f"start='race' races two SPSA runs: it needs method='spsa', but got method={method!r}")
    if start == "race" and max_evals is None:
        raise ValueError("start='race' shares a budget in evaluations between two runs: give max_evals")
    if start in ("best", "race") and max_evals is not None and max_evals < k + 1:
        return "uniform"  # the candidates do not fit in the budget
    if start in ("best", "uniform"):
        return str(start)
    if start == "auto" and (method != "spsa" or max_evals is None):
        return "uniform"
    assert max_evals is not None
    repeats, pairs = check_repeats(k + 1, max_evals)
    left = max_evals - (k + 1) * repeats - 2 * pairs
    if maxiter is not None:
        left = min(left, maxiter * step_cost)
    if start == "auto" and left < MIN_STEPS_AFTER * step_cost:
        return "uniform"
    return "race" if race_plan(left, step_cost) is not None else "best"


def check_repeats(n: int, max_evals: int | None) -> tuple[int, int]:
    """Calls that score the ``n`` candidates, and pairs of calls for the final comparison:
    each check gets ``CHECK_FRACTION`` of ``max_evals`` (at least one call), so that on a noisy
    objective (a minibatch per call) both decisions average over several draws.

    >>> check_repeats(11, 400), check_repeats(11, 5000), check_repeats(11, None)
    ((1, 10), (22, 125), (1, 1))
    """
    if max_evals is None:
        return 1, 1
    return max(1, int(CHECK_FRACTION * max_evals) // n), max(1, int(CHECK_FRACTION * max_evals) // 2)


def _score(objective: Callable[..., Any], points: FloatArray, vectorized: bool) -> FloatArray:
    """Losses of ``points`` in one call (or one call each); non-finite ones become ``inf``."""
    if vectorized:
        out = np.asarray(objective(points), dtype=np.float64).reshape(-1)
        if out.shape != (len(points),):
            raise ValueError(f"the objective must return {len(points)} losses (one per row), but returned shape "
                             f"{out.shape}")
    else:
        out = np.array([float(np.asarray(objective(p), dtype=np.float64).reshape(())) for p in points])
    return np.where(np.isfinite(out), out, np.inf)


def _empty_result(x: FloatArray, fun: float, nfev: int, status: Status, message: str,
                  record: dict[str, Any]) -> OptimizeResult:
    return OptimizeResult(x=np.array(x, copy=True), fun=float(fun), nit=0, nfev=nfev, njev=0, cost=float(nfev),
                          success=status.success, status=status, message=message, history={}, start=record)


def _shift(res: OptimizeResult, n: int) -> None:
    """Count the ``n`` evaluations spent on the candidates in a result and its history."""
    res.nfev += n
    res.cost += n
    for key in ("nfev", "cost"):
        if key in res.history:
            res.history[key] = np.asarray(res.history[key]) + n


def run_from_best(objective: Callable[..., Any], domain: Domain, *, x0: Any, vectorized: bool,
                  max_evals: int | None, final_eval: bool, call: Callable[..., OptimizeResult],
                  val_objective: Callable[[FloatArray], float] | None = None,
                  saved: dict[str, Any] | None = None, rule: str = "best") -> OptimizeResult:
    """Score the candidates, run ``call(x0=..., max_evals=..., final_eval=..., record=...)`` from the
    best, and return the better of its answer and that candidate (see the module docstring).

    ``rule="race"``: when a vertex wins, ``call`` gets ``x0`` the start and ``record["rule"]
    == "race"`` (it runs :func:`~spsa_mix.core.race.run_race`), and its result's ``race``
    record moves to ``res.start["race"]``.

    The final comparison is on the objective (the two points in one call, two evaluations
    counted), or, with ``val_objective``, on validation (the candidate's validation loss
    against the run's best, ``res.val_fun``; not budgeted). There is none when the run ended
    on a non-finite loss, an interruption, an error or a callback's ``StopIteration``.

    ``saved``: the record of a checkpointed run being resumed (``call`` continues it): the
    candidates are not scored again, their losses and the choice are the file's, so the
    objective draws nothing (no minibatch) before the run restores its state.

    ``res.start`` records the candidates' names and losses, the one chosen, and which point
    was returned (``"learned"`` or the candidate's name); ``nfev``, ``cost``, the history's
    ``nfev`` and ``cost`` and the evaluation numbers of an :class:`ObjectiveError` include
    the evaluations spent here.
    """
    points, names = candidates(domain, x0)
    repeats, pairs = check_repeats(len(points), max_evals)
    if saved is not None and saved.get("candidates") == names and isinstance(saved.get("repeats"), list):
        repeats = int(saved["repeats"][0])  # what the saved run spent on them (its budget may have been smaller)
    n = len(points) * repeats
    record: dict[str, Any] = {"candidates": names, "losses": None, "chosen": None, "returned": None,
                              "final_losses": None, "repeats": [repeats, pairs], "rule": rule}
    try:
        if saved is not None and saved.get("candidates") == names and saved.get("losses") is not None:
            losses = np.asarray(saved["losses"], dtype=np.float64)
        else:
            losses = np.mean([_score(objective, points, vectorized) for _ in range(repeats)], axis=0)
    except KeyboardInterrupt:
        return _empty_result(points[0], float("nan"), 0, Status.INTERRUPTED,
                             "interrupted (KeyboardInterrupt) while scoring the start candidates", record)
    except Exception as e:
        partial = _empty_result(points[0], float("nan"), 0, Status.ERROR,
                                f"the objective raised scoring the start candidates: {e}", record)
        raise ObjectiveError(f"the objective raised scoring the {len(points)} start candidates (evaluations 1 to {n}): "
                             f"{type(e).__name__}: {e}", partial) from e
    best = int(np.argmin(losses)) if np.isfinite(losses).any() else 0
    record.update(losses=losses.tolist(), chosen=names[best])
    if rule == "race" or best == 0:  # a race starts its two runs itself: the start and the vertex softened
        start = points[0]
    else:
        start = soften(domain, points[best])
    use_val = val_objective is not None
    tail = 2 * pairs if final_eval and not use_val else 0
    left = None if max_evals is None else max_evals - n - tail
    if left is not None and left < 1:  # nothing left to learn with: the best candidate is the answer
        record["returned"] = names[best]
        return _empty_result(points[best], losses[best], n, Status.BUDGET,
                             f"max_evals={max_evals} leaves no evaluation after the {len(points)} start candidates; "
                             "the best of them is returned", record)
    try:
        res = call(x0=start, max_evals=left, final_eval=final_eval and use_val,
                   record={k: v for k, v in record.items() if k in ("candidates", "losses", "chosen", "repeats", "rule")})
    except ObjectiveError as e:
        _shift(e.partial_result, n)
        text = re.sub(r"at evaluation (\d+)", lambda m: f"at evaluation {int(m.group(1)) + n}", str(e), count=1)
        raise ObjectiveError(text, e.partial_result) from e.__cause__
    _shift(res, n)
    res.message = re.sub(  # the budget as the user gave it, and where it went
        r"^max_evals=(\d+) reached \(", lambda m: f"max_evals={max_evals} reached ({n} on the start candidates, "
        f"{m.group(1)} on the steps{f', {tail} on the final comparison' if tail else ''}; ", res.message, count=1)
    if "race" in res:
        record["race"] = res.pop("race")
    record["returned"] = "learned"
    if res.status in (Status.NONFINITE, Status.INTERRUPTED, Status.ERROR, Status.CALLBACK):
        res["start"] = record
        return res
    if use_val:
        assert val_objective is not None
        theirs, ours = float(val_objective(points[best].copy())), float(res.val_fun)
        better = theirs < ours
        record["final_losses"] = [ours, theirs]
    elif final_eval:
        both = np.stack([np.asarray(res.x, dtype=np.float64).reshape(domain.point_shape), points[best]])
        pair = np.mean([_score(objective, both, vectorized) for _ in range(pairs)], axis=0)
        res.nfev += 2 * pairs
        res.cost += 2 * pairs
        ours, theirs = float(pair[0]), float(pair[1])
        better = theirs < ours
        res.fun = theirs if better else ours
        record["final_losses"] = [ours, theirs]
    else:
        better = False
    if better:
        res.x = points[best].copy()
        if not domain.simplex_only:
            res.alpha = domain.split(res.x)[0].copy()
            res.extras = domain.extras(res.x)
        if use_val:
            res.val_fun = theirs
        record["returned"] = names[best]
        where = "on validation" if use_val else "on the final evaluation"
        res.message = (f"{res.message}; the start candidate {names[best]!r} scored lower {where} than the learned "
                       f"point ({theirs:.6g} < {ours:.6g}) and is returned")
    res["start"] = record
    return res
