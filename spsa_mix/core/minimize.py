"""``minimize``: one entry point for every method, dispatching on ``method``.

Built in: ``"spsa"`` (two-point SPSA, GLUE), ``"forward-grad"`` (exact directional
derivatives by forward-mode AD) and ``"backprop"`` (exact gradients). Methods outside the
core, such as ``"nevergrad:<optimizer>"`` and ``"optuna:<sampler>"`` (the ``adapters``
extra), come from installed packages through :mod:`spsa_mix.core.methods` and are loaded on
first use, so that the core needs only NumPy and SciPy.

Options are declared once, in the signature of :func:`minimize`: every keyword argument
not in ``_RUN_ARGUMENTS`` (the ones ``minimize`` uses itself) is a method option
(:data:`OPTION_NAMES`), forwarded to the method when given and an error for a method that
does not accept it. A built-in method accepts the keyword arguments of its optimiser
class's constructor (:class:`~spsa_mix.core.optimizer.SimplexSPSA` and its bases) that are
options, plus ``initial_state`` (and ``backward_cost`` for ``"backprop"``); other methods
declare theirs in :attr:`MethodSpec.options`. Adding a hyperparameter to an optimiser and to
``minimize`` is therefore one line in each signature (and its line in the docstring of
``minimize``, which a test checks).

Example
-------
>>> import numpy as np
>>> import spsa_mix
>>> c = np.array([0.5, 0.3, 0.2])
>>> res = spsa_mix.minimize(lambda a: float(((a - c) ** 2).sum()), k=3, lr=0.05, seed=0)
>>> res.success, res.nit, res.nfev
(True, 1000, 2001)
>>> bool(np.abs(res.x - c).max() < 0.01)
True

With a learned positive coordinate beside the weights (a :class:`~spsa_mix.core.domain.Domain`),
the objective takes flat points ``(alpha_1, ..., alpha_k, s)``:

>>> f = lambda x: float(((x[:3] - c) ** 2).sum() + np.log(x[3] / 2.0) ** 2)   # s* = 2
>>> res = spsa_mix.minimize(f, k=spsa_mix.Domain(3, positive=1, names=("scale",)), lr=0.05,
...                         lr_schedule="cosine", seed=0)
>>> res.x.shape, bool(np.abs(res.alpha - c).max() < 0.01), round(res.extras["scale"], 3)
((4,), True, 2.0)
"""

from __future__ import annotations

import contextvars
import inspect
import numbers
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from spsa_mix.core.checkpoint import Checkpoint
from spsa_mix.core.domain import Domain
from spsa_mix.core.driver import Run
from spsa_mix.core.methods import MethodSpec, lookup_method, register_method
from spsa_mix.core.optimizer import SimplexForwardGradient, SimplexGradient, SimplexSPSA
from spsa_mix.core.race import run_race
from spsa_mix.core.result import OptimizeResult
from spsa_mix.core.schedules import schedule_spec
from spsa_mix.core.start import resolve_start, run_from_best
from spsa_mix.core.validation import check_positive, check_positive_int, normalize_rng
from spsa_mix.io import to_jsonable

__all__ = ["minimize", "check_method", "planned_steps", "OPTION_NAMES", "DEFAULT_MAXITER"]

DEFAULT_MAXITER = 1000  # steps, when neither max_evals nor maxiter is given

# The arguments minimize uses itself; every other keyword argument of its signature is a
# method option (OPTION_NAMES, derived below).
_RUN_ARGUMENTS = frozenset({
    "objective", "k", "method", "max_evals", "maxiter", "seed", "rng", "vectorized", "callback",
    "val_objective", "val_every", "patience", "final_eval", "show_progress_bar", "checkpoint", "checkpoint_every",
    "start",
})
DEFAULT_CHECKPOINT_EVERY = 10  # steps between two writes of the state file
# The candidates' record of a start="best" or "race" call, seen by the run it makes from the best one
# (so that its checkpoint holds the record and a resumed run does not score them again).
_START_RECORD: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("start_record", default=None)


def minimize(
    objective: Callable[..., Any],
    k: int | tuple[int, int] | Domain,
    *,
    method: str = "spsa",
    x0: Any = None,
    m: int | None = None,
    lr: float | str | None = None,
    betas: tuple[float, float] | None = None,
    eps: float | None = None,
    update: str | None = None,
    momentum: float | None = None,
    mu: float | None = None,
    mu_schedule: Any = None,
    lr_schedule: Any = None,
    directions: str | None = None,
    sum_zero: bool | None = None,
    orthogonal: bool | None = None,
    max_evals: int | None = None,
    maxiter: int | None = None,
    seed: int | None = None,
    rng: np.random.Generator | None = None,
    vectorized: bool = False,
    callback: Callable[[OptimizeResult], Any] | None = None,
    val_objective: Callable[[np.ndarray], float] | None = None,
    val_every: int = 10,
    patience: int | None = None,
    final_eval: bool = True,
    initial_state: dict[str, Any] | None = None,
    backward_cost: float | None = None,
    show_progress_bar: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY,
    start: str = "auto",
    options: dict[str, Any] | None = None,
) -> OptimizeResult:
    """Minimise ``objective(alpha)`` over the probability simplex (or several), optionally
    with positive and real coordinates beside the weights.

    Parameters
    ----------
    objective:
        ``objective(alpha) -> float`` with ``alpha`` of shape ``(k,)`` (or ``(groups, k)``);
        with a :class:`~spsa_mix.core.domain.Domain` of extra coordinates, ``objective(x)``
        with ``x`` the flat point of shape ``(domain.size,)`` (weights row by row, then the
        positive and the real coordinates; ``domain.split(x)`` gives the parts).
    k:
        Number of vertices, ``(groups, k)`` for one simplex per row, or a
        :class:`~spsa_mix.core.domain.Domain` (``spsa_mix.Domain(3, positive=1,
        names=("scale",))``: weights and a learned scale ``s > 0``). Every built-in method
        and adapter optimises the extra coordinates too, on the same budget: the optimisers
        in ``log s`` and the real coordinates as they are, the Nevergrad and Optuna methods
        in a box (their ``options["positive_bounds"]`` and ``options["real_bounds"]``).
    method:
        ``"spsa"`` (default), ``"forward-grad"``, ``"backprop"``, ``"nevergrad:<name>"``,
        ``"optuna:<sampler>"``: see :func:`~spsa_mix.core.methods.available_methods`.
        Passing an option the method does not use is an error.
    x0, m, lr, betas, eps, update, momentum, mu, mu_schedule, lr_schedule, directions, sum_zero, orthogonal:
        Options of the optimiser: see :class:`~spsa_mix.core.optimizer.SimplexSPSA`;
        defaults there (``None`` means the default).
    max_evals:
        Budget in evaluations, never exceeded (see :mod:`spsa_mix.core.driver` for how
        gradient methods count a backward pass).
    maxiter:
        Budget in steps. With neither budget, ``maxiter=1000``.
    seed, rng:
        An integer seed or a ``numpy.random.Generator``; same seed, same run, bit for bit.
    vectorized:
        Call ``objective(points) -> losses`` for ``points`` of shape ``(n, *shape)`` (``(n,
        domain.size)`` with extra coordinates): all probes of one step in one call, so a
        stochastic objective can score them on one minibatch.
    callback:
        ``callback(intermediate_result)`` after each step; raise ``StopIteration`` to stop.
    val_objective, val_every, patience:
        Validation loss, evaluated at the start, every ``val_every`` steps and on the last
        iterate (not budgeted); with ``patience``, stop after that many checks without improvement.
        With ``val_objective``, ``res.x`` is the best point on validation.
    final_eval:
        Spend one evaluation (reserved in the budget) to score the returned point, so
        ``res.fun`` is ``objective(res.x)``; otherwise it is the last step's estimate.
    initial_state:
        A ``res.state`` (or ``state_dict()``) to resume from. As ``torch.optim``'s
        ``load_state_dict``, the state brings its point, moments, generator state (so
        ``seed`` and ``rng`` do not matter), hyperparameters and schedules, their planned
        number of steps included (a run stopped early and resumed is the uninterrupted
        one, bit for bit). An explicit option that would be ignored is refused, never
        dropped: ``x0`` with ``initial_state`` is an error, and so is ``lr``, ``mu``,
        ``betas``, ``eps``, ``update``, ``momentum``, ``m``, ``directions``, ``sum_zero``,
        ``orthogonal``, ``lr_schedule`` or ``mu_schedule`` that differs from the state's
        (the same value is accepted; a callable schedule, which a state cannot hold, must
        be given again).
    backward_cost:
        What a backward pass counts in the budget for ``method="backprop"`` (default 2).
    show_progress_bar:
        A tqdm bar over steps; without tqdm (an optional dependency) a ``ValueError``.
    checkpoint, checkpoint_every:
        A path for the run's state file (:mod:`spsa_mix.core.checkpoint`: JSON, no
        pickle). If the file exists the run resumes from it, and ``res.resumed_from`` is
        the number of steps it held; otherwise the run starts from the beginning. The state
        is written atomically every ``checkpoint_every`` steps and when the run ends,
        whatever way (budget, callback, non-finite loss, Ctrl-C, an error of the
        objective), so a killed process loses at most ``checkpoint_every`` steps; the
        resumed run is the uninterrupted one, bit for bit (for the Nevergrad and Optuna
        methods by replaying the library's asks with the recorded losses). The method,
        ``k``, the options, ``vectorized``, ``final_eval``, the validation settings and
        the generator (``seed`` or ``rng``; leave both out to use the file's) must be those
        of the run that wrote the file, else ``ValueError`` naming the setting; a larger
        ``max_evals`` or ``maxiter`` continues the run further (the schedules keep the
        original run's plan), a smaller one is refused. An objective (or
        ``val_objective``) with ``state_dict()`` and ``load_state_dict()`` has its state
        saved and restored too (a :class:`~spsa_mix.blend.BlendedObjective`: the
        minibatches drawn).
    start:
        ``"best"``: score the start (``x0``, default uniform) and the K vertices first
        (K + 1 evaluations, counted), start from the best, and at the end return the better
        of the answer and that candidate, both scored in one call (``res.start`` says which);
        ``"race"`` (``"spsa"`` with ``max_evals``): the same checks, but when a vertex is the
        best candidate a short run from the start and one from that vertex each take a quarter
        of the budget and the better is continued (``res.start["race"]`` says which;
        :mod:`spsa_mix.core.race`); ``"uniform"``: start at ``x0``; ``"auto"`` (default):
        ``"race"`` for ``"spsa"`` when ``max_evals`` leaves at least 20 steps after the
        candidates, else ``"uniform"`` (:mod:`spsa_mix.core.start`).
    options:
        A dict of method-specific settings (methods outside the core).

    Returns
    -------
    OptimizeResult
        ``x, fun, nit, nfev, njev, cost, success, status, message, method, history``,
        plus ``state`` for the built-in methods and ``val_fun, nval`` with validation;
        with extra coordinates, ``x`` (and the history's ``x``) is the flat point and the
        result also carries ``alpha`` (the weights, shaped ``domain.simplex``) and
        ``extras`` (a dict, name -> value); ``resumed_from`` (steps the checkpoint held)
        for a run resumed from a ``checkpoint``.
        Stops on a non-finite loss (``status=NONFINITE``, ``success=False``) keeping the
        last finite iterate; Ctrl-C returns the result so far (``status=INTERRUPTED``);
        both apply to the final evaluation too (``fun`` is then the last step's estimate).

    Raises
    ------
    ValueError
        For a bad argument, naming it and the value received.
    ObjectiveError
        If the objective (or ``val_objective``, or the callback, which the message names)
        raises; ``.partial_result`` holds the steps completed.
    """
    arguments = dict(locals())  # before any other name is bound
    given = {name: arguments[name] for name in OPTION_NAMES if arguments[name] is not None}
    spec = lookup_method(method)
    if not callable(objective):
        raise ValueError(f"objective must be callable, but got {type(objective).__name__}")
    domain = Domain.of(k)
    max_evals = check_positive_int(max_evals, "max_evals", allow_none=True)
    maxiter = check_positive_int(maxiter, "maxiter", allow_none=True)
    if max_evals is None and maxiter is None:
        maxiter = DEFAULT_MAXITER
    if not isinstance(vectorized, bool):
        raise ValueError(f"vectorized must be True or False, but got {vectorized!r}")
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable, but got {callback!r}")
    if val_objective is not None and not callable(val_objective):
        raise ValueError(f"val_objective must be callable, but got {val_objective!r}")
    val_every = check_positive_int(val_every, "val_every")
    patience = check_positive_int(patience, "patience", allow_none=True)
    if patience is not None and val_objective is None:
        raise ValueError(f"patience={patience} needs val_objective (patience counts validation checks)")
    generator = normalize_rng(seed, rng)

    _reject_unused_options(spec, method, given)
    _reject_domain(spec, method, domain)
    checkpoint_every = check_positive_int(checkpoint_every, "checkpoint_every")
    if checkpoint is not None and not spec.resumable:
        raise ValueError(f"method {method!r} cannot resume a run (its MethodSpec has resumable=False), so it takes "
                         f"no checkpoint, but got checkpoint={checkpoint!r}")
    if backward_cost is not None:
        backward_cost = check_positive(backward_cost, "backward_cost")

    cost = spec.cost_per_step(given)
    rule = resolve_start(start, method=method, max_evals=max_evals, step_cost=cost, k=domain.k, maxiter=maxiter)
    if checkpoint is not None and initial_state is None and _START_RECORD.get() is None:
        rule = _resumed_start(checkpoint, start, rule)
    if rule in ("best", "race") and initial_state is None:
        inner = {name: arguments[name] for name in inspect.signature(minimize).parameters
                 if name not in ("objective", "k", "x0", "max_evals", "final_eval", "start", "seed", "rng")}

        def call(*, x0: Any, max_evals: int | None, final_eval: bool, record: dict[str, Any]) -> OptimizeResult:
            token = _START_RECORD.set(record)  # for the checkpoint of the run from the best candidate
            try:
                return minimize(objective, k, x0=x0, max_evals=max_evals, final_eval=final_eval, start="uniform",
                                rng=generator, **inner)
            finally:
                _START_RECORD.reset(token)

        return run_from_best(objective, domain, x0=x0, vectorized=vectorized, max_evals=max_evals,
                             final_eval=final_eval, call=call, val_objective=val_objective,
                             saved=Checkpoint.saved_start(checkpoint) if checkpoint is not None else None, rule=rule)
    start_record = _START_RECORD.get()
    reserve = 1 if (final_eval and spec.final_eval) else 0
    total_steps = planned_steps(max_evals, maxiter, cost, reserve)
    run_kwargs: dict[str, Any] = dict(
        method=method, vectorized=vectorized, max_evals=max_evals, maxiter=maxiter, reserve=reserve,
        callback=callback, val_objective=val_objective, val_every=val_every, patience=patience,
        show_progress_bar=show_progress_bar, total_steps=total_steps,
        backward_cost=backward_cost if backward_cost is not None else 2.0,
    )
    if checkpoint is not None:
        fingerprint = {
            "method": method, "k": domain.to_dict(), "options": _jsonable_options(given), "vectorized": vectorized,
            "final_eval": final_eval, "val_objective": val_objective is not None, "val_every": val_every,
            "patience": patience, "seed": seed,
        }
        if start_record is not None:  # the run of start="best" or "race": its candidates' record goes in the file
            fingerprint["start"] = start_record.get("rule", "best")
        else:  # a run begun at x0, as asked ("uniform"), or as "auto" (or "best" without room) chose
            fingerprint["start"] = "uniform" if start == "uniform" else "auto"
        run_kwargs["checkpoint"], generator = Checkpoint.open(
            checkpoint, every=checkpoint_every, fingerprint=fingerprint,
            budget={"max_evals": max_evals, "maxiter": maxiter}, rng=generator,
            rng_given=seed is not None or rng is not None, start=start_record)
    if start_record is not None and start_record.get("rule") == "race" and start_record["chosen"] != "start":
        return run_race(objective, domain, rng=generator, run_kwargs=run_kwargs, final_eval=final_eval,
                        vertex=start_record["chosen"], **given)
    shape = domain.simplex if domain.simplex_only else domain  # methods without extra coordinates get a shape
    return spec.run(objective, shape, rng=generator, run_kwargs=run_kwargs, final_eval=final_eval,
                    total_steps=total_steps, **given)


def _resumed_start(checkpoint: str | os.PathLike[str], start: str, rule: str) -> str:
    """The start rule of a run resumed from ``checkpoint``: as the saved run began, where
    ``start`` allows it (``"auto"`` goes on as an ``"auto"``, ``"race"`` or ``"best"`` run
    began, even when its larger budget crosses the threshold of "auto"; ``"uniform"`` as a
    run begun at ``x0``); else a ``ValueError`` naming both."""
    saved = Checkpoint.saved_start_rule(checkpoint)
    if saved is None:
        return rule
    began = saved if saved in ("best", "race") else "uniform"
    allowed = {"auto": ("race", "best", "auto", "unrecorded"), "uniform": ("uniform", "auto", "unrecorded"),
               "best": ("best",), "race": ("race",)}[start]
    if saved not in allowed:
        raise ValueError(f"checkpoint {str(checkpoint)!r} was written by a run with start={saved!r}, but this call has "
                         f"start={start!r}: resume with the settings of that run, or delete the file (or give "
                         "another path) to start over")
    return began


def _jsonable_options(given: dict[str, Any]) -> dict[str, Any]:
    """The options as a checkpoint's fingerprint holds them (a callable schedule by its
    name only: it cannot be compared)."""
    return {name: "callable" if callable(value) else to_jsonable(value) for name, value in given.items()}


def _reject_unused_options(spec: MethodSpec, method: str, given: dict[str, Any]) -> None:
    unused = sorted(set(given) - spec.options)
    if unused:
        shown = ", ".join(f"{n}={given[n]!r:.60}" for n in unused)
        raise ValueError(f"method {method!r} does not use {shown}; it accepts {sorted(spec.options)}")


def check_method(method: str, settings: dict[str, Any] | None = None) -> None:
    """Fail as :func:`minimize` would, before any work, for an unknown ``method``, a
    setting among ``settings`` (keyword arguments of ``minimize``) that the method does not
    use, or a ``k`` with coordinates beside the simplex that it cannot optimise; the other
    arguments of ``minimize`` that are not method options are not checked here.

    >>> check_method("spsa", {"lr": 0.1, "max_evals": 10})
    >>> check_method("backprop", {"mu": 0.1})
    Traceback (most recent call last):
    ...
    ValueError: method 'backprop' does not use mu=0.1; it accepts ['backward_cost', 'betas', ...]
    """
    spec = lookup_method(method)
    given = {n: v for n, v in (settings or {}).items() if n in OPTION_NAMES and v is not None}
    _reject_unused_options(spec, method, given)
    if (settings or {}).get("k") is not None:
        _reject_domain(spec, method, Domain.of(settings["k"]))  # type: ignore[index]


def _reject_domain(spec: MethodSpec, method: str, domain: Domain) -> None:
    if not domain.simplex_only and not spec.domains:
        raise ValueError(f"method {method!r} optimises simplex weights only, but k={domain!r} has coordinates "
                         "beside them")


def planned_steps(max_evals: int | None, maxiter: int | None, cost: float, reserve: int = 0) -> int | None:
    """Steps a budget allows: ``min(maxiter, (max_evals - reserve) // cost)``.

    >>> planned_steps(101, None, 2.0, reserve=1)
    50
    """
    steps = [maxiter] if maxiter is not None else []
    if max_evals is not None:
        steps.append(int((max_evals - reserve + 1e-9) // cost))
    return max(min(steps), 0) if steps else None


#: The method options of :func:`minimize`: its keyword arguments that it does not use itself.
OPTION_NAMES: tuple[str, ...] = tuple(
    name for name, p in inspect.signature(minimize).parameters.items()
    if p.kind is p.KEYWORD_ONLY and name not in _RUN_ARGUMENTS
)


# ---------------------------------------------------------------------- built-in methods
def _constructor_options(cls: type) -> frozenset[str]:
    """The options of :func:`minimize` among the keyword-only arguments of ``cls``'s
    constructor and of its bases' (the optimisers pass ``**kwargs`` up to their base).

    >>> sorted(_constructor_options(SimplexGradient))
    ['betas', 'eps', 'lr', 'lr_schedule', 'momentum', 'update', 'x0']
    """
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:  # object's constructor takes nothing
        init = vars(klass).get("__init__")
        if init is not None:
            names.update(n for n, p in inspect.signature(init).parameters.items() if p.kind is p.KEYWORD_ONLY)
    return frozenset(names.intersection(OPTION_NAMES))


# Options a state_dict restores: given with initial_state, they must agree with it.
_RESTORED = ("lr", "betas", "eps", "update", "momentum", "mu", "m", "directions", "sum_zero", "orthogonal")


def _build(cls: type, shape: tuple[int, ...] | Domain, rng: np.random.Generator, total_steps: int | None,
           opts: dict[str, Any], checkpoint: Checkpoint | None) -> Any:
    state = opts.pop("initial_state", None)
    opt = cls(shape, rng=rng, total_steps=total_steps if total_steps else None, **opts)
    if checkpoint is not None and checkpoint.loaded is not None:  # the fingerprint matched: options agree
        try:
            opt.load_state_dict(checkpoint.method_state)
        except ValueError as e:
            raise checkpoint.error(f"its method_state is not a state of {cls.__name__}: {e}") from None
    elif state is not None:
        opt.load_state_dict(state)
        _refuse_conflicts(opt, opts)
    return opt


def _refuse_conflicts(opt: Any, given: dict[str, Any]) -> None:
    """Raise if an option given with ``initial_state`` differs from what the state restored
    (``opt`` has the state loaded): an explicit value is never silently dropped."""
    if "x0" in given:
        raise ValueError("x0 conflicts with initial_state: a resumed run continues from the state's point; "
                         "give one of them")
    for name in _RESTORED:
        if name in given and hasattr(opt, name) and not _same(given[name], getattr(opt, name)):
            raise ValueError(f"{name}={given[name]!r} conflicts with initial_state, which has "
                             f"{name}={getattr(opt, name)!r}: a resumed run keeps the state's hyperparameters; "
                             f"drop {name} or give the state's value")
    for name in ("lr_schedule", "mu_schedule"):
        current = getattr(opt, f"_{name}", None)
        if name not in given or current is None:
            continue
        wanted = given[name]
        ok = current is wanted if callable(wanted) else schedule_spec(current)["name"] == wanted
        if not ok:
            raise ValueError(f"{name}={wanted!r} conflicts with initial_state, whose {name} is "
                             f"{schedule_spec(current)}: a resumed run keeps the state's schedules; drop {name} "
                             "or give the state's")


def _same(given: Any, restored: Any) -> bool:
    if isinstance(restored, tuple):
        return isinstance(given, (tuple, list)) and len(given) == len(restored) and all(
            _same(g, r) for g, r in zip(given, restored, strict=True))
    if isinstance(restored, float) and isinstance(given, numbers.Real) and not isinstance(given, bool):
        return float(given) == restored
    return bool(given == restored)


def _run_spsa(objective: Callable[..., Any], shape: tuple[int, ...] | Domain, *, rng: np.random.Generator,
              run_kwargs: dict[str, Any], final_eval: bool, total_steps: int | None, **opts: Any) -> OptimizeResult:
    opt = _build(SimplexSPSA, shape, rng, total_steps, opts, run_kwargs.get("checkpoint"))
    run = Run(objective, shape, **run_kwargs)

    def loop(run: Run) -> None:
        while run.budget_allows(2 * opt.m):
            losses = run.evaluate(opt.ask())
            info = opt.tell(losses)
            run.record_step(opt.x, info.loss, mu=info.mu, lr=info.lr, grad_norm=info.grad_norm)

    return run.execute(loop, current_x=lambda: opt.x, final_eval=final_eval,
                       extra=lambda: {"state": opt.state_dict()}, method_state=opt.state_dict)


def _run_forward_grad(objective: Callable[..., Any], shape: tuple[int, ...] | Domain, *, rng: np.random.Generator,
                      run_kwargs: dict[str, Any], final_eval: bool, total_steps: int | None,
                      **opts: Any) -> OptimizeResult:
    _require_attr(objective, "jvp", "forward-grad")
    opt = _build(SimplexForwardGradient, shape, rng, total_steps, opts, run_kwargs.get("checkpoint"))
    run = Run(objective, shape, **run_kwargs)

    def loop(run: Run) -> None:
        while run.budget_allows(1 + opt.m):
            alpha, tangents = opt.ask()
            loss, derivs = run.evaluate_jvp(alpha, tangents)
            info = opt.tell(loss, derivs)
            run.record_step(opt.x, info.loss, lr=info.lr, grad_norm=info.grad_norm)

    return run.execute(loop, current_x=lambda: opt.x, final_eval=final_eval,
                       extra=lambda: {"state": opt.state_dict()}, method_state=opt.state_dict)


def _run_backprop(objective: Callable[..., Any], shape: tuple[int, ...] | Domain, *, rng: np.random.Generator,
                  run_kwargs: dict[str, Any], final_eval: bool, total_steps: int | None,
                  **opts: Any) -> OptimizeResult:
    _require_attr(objective, "value_and_grad", "backprop")
    opts.pop("backward_cost", None)  # used by the Run
    opt = _build(SimplexGradient, shape, rng, total_steps, opts, run_kwargs.get("checkpoint"))
    run = Run(objective, shape, **run_kwargs)
    step_cost = 1.0 + run.backward_cost

    def loop(run: Run) -> None:
        while run.budget_allows(step_cost):
            loss, grad = run.evaluate_grad(opt.ask())
            info = opt.tell(loss, grad)
            run.record_step(opt.x, info.loss, lr=info.lr, grad_norm=info.grad_norm)

    return run.execute(loop, current_x=lambda: opt.x, final_eval=final_eval,
                       extra=lambda: {"state": opt.state_dict()}, method_state=opt.state_dict)


def _require_attr(objective: Any, name: str, method: str) -> None:
    if not callable(getattr(objective, name, None)):
        raise ValueError(
            f"method={method!r} needs an objective with a {name}() method (BlendedObjective and "
            f"spsa_mix.problems.Quadratic have one), but got {type(objective).__name__}"
        )


def _m_of(opts: dict[str, Any]) -> int:
    m = opts.get("m", 1)
    return int(m) if isinstance(m, numbers.Integral) and int(m) >= 1 else 1


_RESUMABLE = frozenset({"initial_state"})  # the built-in runners restore a state_dict

register_method(MethodSpec(
    "spsa", _run_spsa, _constructor_options(SimplexSPSA) | _RESUMABLE,
    cost_per_step=lambda o: 2.0 * _m_of(o), description="two-point SPSA with Adam on softmax logits (GLUE)",
    domains=True, resumable=True,
))
register_method(MethodSpec(
    "forward-grad", _run_forward_grad, _constructor_options(SimplexForwardGradient) | _RESUMABLE,
    cost_per_step=lambda o: 1.0 + _m_of(o), description="forward-gradient (jvp) estimator with Adam",
    domains=True, resumable=True,
))
register_method(MethodSpec(
    "backprop", _run_backprop, _constructor_options(SimplexGradient) | _RESUMABLE | {"backward_cost"},
    cost_per_step=lambda o: 1.0 + float(o.get("backward_cost", 2.0)),
    description="exact gradients through the softmax with Adam (GLUE Config 3)", domains=True, resumable=True,
))
