"""``start="race"``: a short run from the start and one from the best vertex, the better continued.

When the start check (:mod:`spsa_mix.core.start`) finds a vertex better than the start
(``x0``, default the uniform point), neither place is a safe start. From a vertex softened to
``VERTEX_WEIGHT`` the softmax saturates: the loss's gradient with respect to logit ``j`` is
``alpha_j (g_j - <alpha, g>)``, so every other expert's coordinate gets a signal ``alpha_j``
times smaller, while an SPSA estimate carries the same noise in every coordinate (about
``|grad|`` times a sign), which is also what Adam divides by. The run first pours the last
weight into the vertex (every other expert is worse alone) and its other coordinates then
move by noise only: on a convex quadratic it ends near the vertex, far from an optimum that
needs several experts (``docs/directions.md``, "The start: a race"). From the start the
run does not saturate, but a vertex's basin may be out of its reach within the budget.

So both are tried, on a quarter of the budget each (``RACE_FRACTION``, at least
``MIN_RACE_STEPS`` steps), as two complete short runs (each with its own step size and
cosine decay for its length: ``lr="auto"`` gives ``1/sqrt(steps)``). Their end points and
the vertex itself are then scored together, ``compare_calls`` times (one call each, so a
minibatch objective compares them on the same batches; ``CHECK_FRACTION`` of the budget),
and the vertex run is continued only if it ended lower than both the start's run and its
vertex; otherwise the start's run is. A vertex run that cannot beat its own vertex is the
saturated one: continuing it can at best give back the vertex, which the final comparison of
:func:`~spsa_mix.core.start.run_from_best` returns anyway. The chosen run is continued as a
fresh run from its end point with the rest of the budget (its step size set by that rest).
When the rest would be shorter than a racer, the two racers share the whole budget and the
better one is the answer.

This module holds the plan (:func:`race_plan`), the ask/tell race (:class:`StartRace`:
its ``state_dict`` is what a checkpoint saves) and its run loop (:func:`run_race`);
:func:`~spsa_mix.core.start.run_from_best` scores the candidates before it and compares the
answer with the best candidate after it.

Example
-------
>>> plan = race_plan(400, step_cost=2.0)
>>> plan.race_steps, plan.compare_calls, plan.rest_steps
(50, 6, 91)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.domain import Domain
from spsa_mix.core.driver import Run
from spsa_mix.core.optimizer import SimplexSPSA, StepInfo
from spsa_mix.core.result import OptimizeResult
from spsa_mix.core.validation import check_int

__all__ = ["RACE_FRACTION", "MIN_RACE_STEPS", "RacePlan", "race_plan", "StartRace", "run_race"]

FloatArray = NDArray[np.float64]
RACE_FRACTION = 0.25  # of the run's budget, for each of the two short runs (measured: docs/directions.md)
MIN_RACE_STEPS = 10  # a shorter racer tells nothing: the race needs two of these (and start.MIN_STEPS_AFTER = 20)
_PHASES = ("race", "compare", "continue")


@dataclass(frozen=True)
class RacePlan:
    """How a budget is shared: ``race_steps`` steps for each racer, ``compare_calls`` calls
    scoring the two end points and the vertex, ``rest_steps`` planned steps for the run
    continued (0: the racers share the whole budget)."""

    race_steps: int
    compare_calls: int
    rest_steps: int


def race_plan(evals: float, step_cost: float) -> RacePlan | None:
    """The plan for ``evals`` evaluations and steps of ``step_cost`` evaluations; ``None``
    when two racers of ``MIN_RACE_STEPS`` steps do not fit.

    >>> race_plan(100, step_cost=2.0), race_plan(40, step_cost=2.0)
    (RacePlan(race_steps=12, compare_calls=1, rest_steps=24), None)
    """
    from spsa_mix.core.start import check_repeats

    calls = check_repeats(3, int(evals))[0]
    usable = evals - 3 * calls
    race = max(int(RACE_FRACTION * evals / step_cost), MIN_RACE_STEPS)
    rest = int((usable - 2 * race * step_cost + 1e-9) // step_cost)
    if rest < race:  # a continuation shorter than a racer: the racers share everything
        race, rest = int((usable + 1e-9) // (2 * step_cost)), 0
    return RacePlan(race, calls, rest) if race >= MIN_RACE_STEPS else None


class StartRace:
    """Two SPSA runs raced, the better continued: an ask/tell object (see the module
    docstring) whose ``ask()`` gives the points to score next and ``tell(losses)`` takes
    their losses.

    ``starts``: the racers' names and starting points (the first is the default, kept on a
    tie); ``reference``: the vertex candidate a vertex racer must beat; ``make(x0, steps)``:
    a :class:`~spsa_mix.core.optimizer.SimplexSPSA` from ``x0`` planned for ``steps`` steps
    (all on one generator). ``tell`` returns the step's :class:`StepInfo`, or ``None`` for a
    call of the comparison.

    >>> f = lambda p: ((p - np.array([0.6, 0.3, 0.1])) ** 2).sum(axis=-1)
    >>> make = lambda x0, steps: SimplexSPSA(3, x0=x0, total_steps=steps, rng=np.random.default_rng(0))
    >>> race = StartRace({"start": np.full(3, 1 / 3), "vertex 0": np.array([0.9, 0.05, 0.05])},
    ...                  reference=np.array([1.0, 0.0, 0.0]), plan=RacePlan(20, 2, 40), make=make)
    >>> while not race.done:
    ...     _ = race.tell(f(race.ask()))
    >>> race.winner, bool(np.abs(race.x - [0.6, 0.3, 0.1]).max() < 0.05)
    ('start', True)
    """

    def __init__(self, starts: dict[str, ArrayLike], *, reference: ArrayLike, plan: RacePlan,
                 make: Callable[[FloatArray, int], SimplexSPSA]) -> None:
        if len(starts) != 2:
            raise ValueError(f"starts must name two racers, but got {list(starts)}")
        self.names = list(starts)
        self.plan = plan
        self.reference = np.array(reference, dtype=np.float64)
        self._make = make
        self.racers = [make(np.asarray(x, dtype=np.float64), plan.race_steps) for x in starts.values()]
        self.phase = "race"
        self._racer = 0  # the racer stepping now
        self._sums = np.zeros(3)
        self._calls = 0
        self._winner: int | None = None
        self.continuation: SimplexSPSA | None = None

    # ------------------------------------------------------------------ where it is
    @property
    def done(self) -> bool:
        """Whether the planned steps are all taken (a larger budget may still continue)."""
        if self.phase != "continue":
            return False
        return self.plan.rest_steps == 0 or (self.continuation is not None
                                             and self.continuation.step_count >= self.plan.rest_steps)

    @property
    def winner(self) -> str | None:
        """The name of the racer continued, once the comparison has decided."""
        return None if self._winner is None else self.names[self._winner]

    @property
    def current(self) -> SimplexSPSA:
        """The optimiser taking steps now (or the last one that did)."""
        if self.continuation is not None and self.continuation.step_count > 0:
            return self.continuation
        return self.racers[self._racer if self._winner is None else self._winner]

    @property
    def x(self) -> FloatArray:
        """The current point: the stepping racer's, then the run continued."""
        return self.current.x

    @property
    def racer_index(self) -> int:
        """0 or 1 for a racer's step, 2 for a step of the run continued (a history column)."""
        return 2 if self.phase == "continue" else self._racer

    def next_cost(self) -> float:
        """Evaluations the next ``ask()`` costs."""
        return 3.0 if self.phase == "compare" else 2.0 * self.current.m

    def scores(self) -> list[float] | None:
        """The mean losses of the two end points and the reference, once compared."""
        return None if self._calls < self.plan.compare_calls else (self._sums / self._calls).tolist()

    # ------------------------------------------------------------------ ask / tell
    def ask(self) -> FloatArray:
        """The points to score next: two probes of a step, or the two racers' end points and
        the reference (``(3, *shape)``) during the comparison."""
        if self.phase == "compare":
            return np.stack([self.racers[0].x, self.racers[1].x, self.reference])
        if self.phase == "continue":
            return self._continued().ask()
        return self.racers[self._racer].ask()

    def tell(self, losses: ArrayLike) -> StepInfo | None:
        """The losses of ``ask()``'s points, in order."""
        if self.phase == "compare":
            arr = np.asarray(losses, dtype=np.float64).reshape(-1)
            if arr.shape != (3,):
                raise ValueError(f"tell() expects 3 losses during the comparison, but got shape {arr.shape}")
            self._sums += arr
            self._calls += 1
            if self._calls >= self.plan.compare_calls:
                self._decide()
            return None
        if self.phase == "continue":
            return self._continued().tell(losses)
        info = self.racers[self._racer].tell(losses)
        if self.racers[self._racer].step_count >= self.plan.race_steps:
            if self._racer == 0:
                self._racer = 1
            else:
                self.phase = "compare"
        return info

    def _decide(self) -> None:
        mean = self._sums / self._calls
        self._winner = 1 if mean[1] < mean[0] and mean[1] < mean[2] else 0
        self.phase = "continue"

    def _continued(self) -> SimplexSPSA:
        if self.continuation is None:
            assert self._winner is not None
            self.continuation = self._make(self.racers[self._winner].x, max(self.plan.rest_steps, 1))
        return self.continuation

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: the phase, the racers' and the continued
        run's optimiser states, the comparison's sums and the plan."""
        return {
            "phase": self.phase, "racer": self._racer, "names": list(self.names),
            "plan": [self.plan.race_steps, self.plan.compare_calls, self.plan.rest_steps],
            "sums": self._sums.tolist(), "calls": self._calls, "winner": self._winner,
            "racers": [r.state_dict() for r in self.racers],
            "continuation": None if self.continuation is None else self.continuation.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`: each entry checked (a ``ValueError`` names the key)
        before anything changes."""
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict from StartRace.state_dict(), but got {type(state).__name__}")
        missing = [k for k in ("phase", "racer", "names", "plan", "sums", "calls", "winner", "racers", "continuation")
                   if k not in state]
        if missing:
            raise ValueError(f"state lacks the keys {missing}")
        if state["phase"] not in _PHASES:
            raise ValueError(f"state['phase'] must be one of {list(_PHASES)}, but got {state['phase']!r}")
        if state["names"] != self.names:
            raise ValueError(f"state['names'] is {state['names']!r}, but this race has {self.names!r}")
        plan = state["plan"]
        if not isinstance(plan, list) or len(plan) != 3:
            raise ValueError(f"state['plan'] must be [race_steps, compare_calls, rest_steps], but got {plan!r}")
        plan = RacePlan(*(check_int(v, f"state['plan'][{i}]", minimum=0) for i, v in enumerate(plan)))
        racer = check_int(state["racer"], "state['racer']", minimum=0)
        calls = check_int(state["calls"], "state['calls']", minimum=0)
        winner = state["winner"]
        if winner not in (None, 0, 1) or racer > 1:
            raise ValueError(f"state['winner'] and state['racer'] must be 0 or 1, but got {winner!r} and {racer!r}")
        sums = np.asarray(state["sums"], dtype=np.float64)
        if sums.shape != (3,):
            raise ValueError(f"state['sums'] must hold 3 numbers, but got {state['sums']!r}")
        if not isinstance(state["racers"], list) or len(state["racers"]) != 2:
            raise ValueError("state['racers'] must hold the two racers' states")
        racers = [self._make(r.x, max(plan.race_steps, 1)) for r in self.racers]
        for i, (opt, saved) in enumerate(zip(racers, state["racers"], strict=True)):
            try:
                opt.load_state_dict(saved)
            except ValueError as e:
                raise ValueError(f"state['racers'][{i}]: {e}") from None
        continuation = None
        if state["continuation"] is not None:
            if winner is None:
                raise ValueError("state['continuation'] is set before a winner is")
            continuation = self._make(racers[winner].x, max(plan.rest_steps, 1))
            try:
                continuation.load_state_dict(state["continuation"])
            except ValueError as e:
                raise ValueError(f"state['continuation']: {e}") from None
        self.plan, self.phase, self._racer, self._calls, self._winner = plan, state["phase"], racer, calls, winner
        self._sums, self.racers, self.continuation = sums, racers, continuation

    def record(self) -> dict[str, Any]:
        """What the race did, for ``res.start["race"]`` (JSON values)."""
        return {"racers": list(self.names), "race_steps": self.plan.race_steps,
                "compare_calls": self.plan.compare_calls, "scores": self.scores(),
                "scored": [f"run from {self.names[0]}", f"run from {self.names[1]}", self.names[1]],
                "winner": self.winner,
                "continued_steps": 0 if self.continuation is None else self.continuation.step_count}

    def final_state(self) -> dict[str, Any]:
        """The state of the optimiser that holds the answer (``res.state``: a
        :class:`SimplexSPSA` state, which ``initial_state`` continues)."""
        return copy.deepcopy(self.current.state_dict())


def run_race(objective: Callable[..., Any], domain: Domain, *, rng: np.random.Generator,
             run_kwargs: dict[str, Any], final_eval: bool, vertex: str, **opts: Any) -> OptimizeResult:
    """The race as one run of :class:`~spsa_mix.core.driver.Run` (budget, history,
    validation, callback, checkpoint): the racers start at ``opts["x0"]`` (the start) and at
    the candidate named ``vertex`` softened (:func:`~spsa_mix.core.start.soften`); ``opts``
    are :class:`SimplexSPSA`'s options. The history has a ``racer`` column (0: the start's
    run, 1: the vertex's, 2: the run continued); ``res.race`` is :meth:`StartRace.record`.
    Validation (``val_objective``, every ``val_every`` steps) runs over the steps of both
    racers and of the run continued: the answer is then the best validated point of any of
    them, and ``patience`` may stop the run during the race.
    """
    from spsa_mix.core.start import candidates, soften

    points, names = candidates(domain, opts.pop("x0", None))
    if vertex not in names[1:]:
        raise ValueError(f"vertex must name a vertex candidate ({names[1:3]}, ...), but got {vertex!r}")
    ref = points[names.index(vertex)]
    m = int(opts.get("m") or 1)
    max_evals, maxiter, reserve = run_kwargs["max_evals"], run_kwargs.get("maxiter"), run_kwargs.get("reserve", 0)
    evals = max_evals - reserve
    if maxiter is not None:
        evals = min(evals, maxiter * 2 * m)
    plan = race_plan(evals, 2.0 * m)
    if plan is None:
        raise ValueError(f"max_evals={max_evals} is too small for a race (two runs of {MIN_RACE_STEPS} steps)")
    shape = domain.simplex if domain.simplex_only else domain

    def make(x0: FloatArray, steps: int) -> SimplexSPSA:
        return SimplexSPSA(shape, x0=x0, rng=rng, total_steps=steps, **opts)

    race = StartRace({names[0]: points[0], vertex: soften(domain, ref)}, reference=ref, plan=plan, make=make)
    checkpoint = run_kwargs.get("checkpoint")
    if checkpoint is not None and checkpoint.loaded is not None:
        try:
            race.load_state_dict(checkpoint.method_state)
        except ValueError as e:
            raise checkpoint.error(f"its method_state is not a state of a start race: {e}") from None
    run = Run(objective, shape, **{**run_kwargs, "total_steps": 2 * plan.race_steps + plan.rest_steps})

    extend = race.plan != plan  # resumed with a larger budget than the plan's: the run continued goes on

    def loop(run: Run) -> None:
        while run.budget_allows(race.next_cost()):
            if race.phase == "compare":
                race.tell(run.evaluate(race.ask()))
                continue
            if race.done and not extend:
                break
            index = race.racer_index
            info = race.tell(run.evaluate(race.ask()))
            assert info is not None
            run.record_step(race.x, info.loss, mu=info.mu, lr=info.lr, grad_norm=info.grad_norm, racer=index)

    return run.execute(loop, current_x=lambda: race.x, final_eval=final_eval,
                       extra=lambda: {"state": race.final_state(), "race": race.record()},
                       method_state=race.state_dict)
