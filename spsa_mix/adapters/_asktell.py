"""The run loop shared by the adapters: a library's ask/tell inside a core :class:`Run`.

Each round asks ``b = min(batch_size, evaluations left)`` points of the library's search
space, maps them onto the simplex, or onto the flat points of a
:class:`~spsa_mix.core.domain.Domain` with coordinates beside it
(:mod:`spsa_mix.adapters._parametrization`), scores them
through :meth:`Run.evaluate` (one call with ``vectorized=True``) and tells the losses
back. One history row per round: ``x`` and ``loss`` are the incumbent (the best point
evaluated so far and its loss), ``batch_loss`` the best loss of the round's batch and
``batch_size`` its size. The budget, validation, patience, callback, NaN policy and
Ctrl-C are the core's (:mod:`spsa_mix.core.driver`).

With a checkpoint (``minimize(..., checkpoint=...)``) the adapter's state is the record
of every round told, ``{"told": [{"z": (b, dim) free coordinates, "losses": (b,)}, ...]}``:
the libraries' own states are not JSON (and pickling them would tie a state file to their
versions). A resumed run creates the library again, with the same seed and the budget of
the run's first call, and *replays* the record: each round is asked again and told the
recorded losses, the objective is not called, and each asked candidate must equal the
recorded one bit for bit (else ``ValueError``: another library version, or something that
drew from NumPy's global generator during the run that wrote the file), so the library
continues from exactly the state it had.

The returned point is the library's recommendation. When the library recommends a point
it evaluated, ``res.fun`` is that loss; otherwise the point is evaluated once more if an
evaluation was reserved (``final_eval``), and the incumbent is returned if not. A
recommended point that was evaluated but scored higher than the incumbent (CMA's on a
budget of a few evaluations) gives way to the incumbent: an answer taken from the points
scored is the best of them.

Example
-------
>>> parse_options({"batch_size": 2}, method="optuna:tpe", allowed={"batch_size": 1})
{'batch_size': 2}
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from spsa_mix.adapters._parametrization import (
    DEFAULT_POSITIVE_BOUNDS,
    DEFAULT_REAL_BOUNDS,
    PARAMETRIZATIONS,
    DomainParametrization,
    SimplexParametrization,
    check_bounds,
)
from spsa_mix.core.domain import Domain
from spsa_mix.core.driver import Run
from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.core.result import OptimizeResult
from spsa_mix.core.validation import check_int

__all__ = ["AskTellBackend", "parse_options", "options_for", "run_ask_tell", "make_parametrization", "batch_size_of"]

FloatArray = NDArray[np.float64]
MATCH_ATOL = 1e-12  # a recommendation within this of an evaluated point counts as evaluated


class AskTellBackend(Protocol):
    """What an adapter wraps: ask ``n`` vectors, tell their losses, recommend one."""

    def ask(self, n: int) -> tuple[list[Any], FloatArray]:
        """``n`` handles and their free coordinates, shape ``(n, dim)``."""
        ...

    def tell(self, handles: list[Any], losses: FloatArray) -> None: ...

    def recommend(self) -> FloatArray | None:
        """Free coordinates of the library's best point, or ``None`` before any tell."""
        ...

    def close(self) -> None:
        """Release what the library holds (threads), whatever way the run ended."""
        ...


def parse_options(options: Mapping[str, Any] | None, *, method: str, allowed: Mapping[str, Any]) -> dict[str, Any]:
    """``allowed`` (name -> default) updated with ``options``; unknown names are an error.

    >>> parse_options({"bach_size": 2}, method="optuna:tpe", allowed={"batch_size": 1})
    Traceback (most recent call last):
    ...
    ValueError: options of method 'optuna:tpe' must be among ['batch_size'], but got 'bach_size'
    """
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ValueError(f"options must be a dict, but got {type(options).__name__}: {options!r:.80}")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown)
        raise ValueError(f"options of method {method!r} must be among {sorted(allowed)}, but got {shown}")
    return {**allowed, **options}


def batch_size_of(given: Mapping[str, Any]) -> int:
    """``options["batch_size"]`` of the keyword arguments given to ``minimize``, checked
    (the cost of one round, for the core's step count).

    >>> batch_size_of({"options": {"batch_size": 4}}), batch_size_of({})
    (4, 1)
    """
    options = given.get("options")
    value = options.get("batch_size", 1) if isinstance(options, Mapping) else 1
    return check_int(value, "options['batch_size']", minimum=1)


Parametrization = SimplexParametrization | DomainParametrization


def options_for(shape: tuple[int, ...] | Domain, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` without the bounds of coordinates the domain lacks (so that setting them
    is an error), for :func:`parse_options`.

    >>> sorted(options_for((3,), {"batch_size": 1, "positive_bounds": (1, 2), "real_bounds": (0, 1)}))
    ['batch_size']
    """
    domain = Domain.of(shape)
    drop = {name for name, n in (("positive_bounds", domain.positive), ("real_bounds", domain.real)) if n == 0}
    return {name: value for name, value in defaults.items() if name not in drop}


def make_parametrization(shape: tuple[int, ...] | Domain, opts: Mapping[str, Any]) -> Parametrization:
    """The :class:`SimplexParametrization` named by ``opts["parametrization"]``, within a
    :class:`DomainParametrization` (``opts["positive_bounds"]``, ``opts["real_bounds"]``)
    for a domain with extra coordinates."""
    kind = opts["parametrization"]
    if kind not in PARAMETRIZATIONS:
        raise ValueError(f"options['parametrization'] must be one of {list(PARAMETRIZATIONS)}, but got {kind!r}")
    domain = Domain.of(shape)
    simplex = SimplexParametrization(kind, domain.simplex, bound=opts.get("bound"), lower=opts["lower"])
    if domain.simplex_only:
        return simplex
    return DomainParametrization(
        simplex, domain,
        positive_bounds=check_bounds(opts.get("positive_bounds", DEFAULT_POSITIVE_BOUNDS),
                                     "options['positive_bounds']", positive=True),
        real_bounds=check_bounds(opts.get("real_bounds", DEFAULT_REAL_BOUNDS), "options['real_bounds']",
                                 positive=False),
    )


def planned_asks(run_kwargs: Mapping[str, Any], batch_size: int) -> int:
    """How many points the run will ask at most (the budget told to the library)."""
    counts = []
    if run_kwargs.get("max_evals") is not None:
        counts.append(int(run_kwargs["max_evals"]) - int(run_kwargs.get("reserve", 0)))
    if run_kwargs.get("maxiter") is not None:
        counts.append(int(run_kwargs["maxiter"]) * batch_size)
    return max(min(counts), 1) if counts else 1


class _Evaluated:
    """Every point scored so far, and the incumbent."""

    def __init__(self) -> None:
        self.points: list[FloatArray] = []
        self.losses: list[float] = []
        self.best = -1

    def add(self, points: FloatArray, losses: FloatArray) -> None:
        for pt, loss in zip(points, losses, strict=True):
            self.points.append(pt)
            self.losses.append(float(loss))
            if self.best < 0 or loss < self.losses[self.best]:
                self.best = len(self.losses) - 1

    def index(self, x: FloatArray) -> int | None:
        """Index of the evaluated point ``x`` (to ``MATCH_ATOL``: a library's round trip
        through its own coordinates may move it by a few ulps), or ``None``."""
        if not self.points:
            return None
        dist = np.abs(np.stack(self.points) - x).reshape(len(self.points), -1).max(axis=1)
        i = int(np.argmin(dist))
        return i if dist[i] <= MATCH_ATOL else None

    def lookup(self, x: FloatArray) -> float | None:
        """The loss at ``x`` if ``x`` was evaluated."""
        i = self.index(x)
        return None if i is None else self.losses[i]


def run_ask_tell(
    objective: Callable[..., Any],
    shape: tuple[int, ...] | Domain,
    *,
    make_backend: Callable[[Any, FloatArray, int], AskTellBackend],
    param: Parametrization,
    x0: Any,
    batch_size: int,
    run_kwargs: dict[str, Any],
    final_eval: bool,
    quiet: Callable[[], AbstractContextManager[Any]],
) -> OptimizeResult:
    """Run ``make_backend(param, z0, budget)`` through ask/tell inside a :class:`Run`,
    all of it (the backend's creation and close included) within ``quiet()``: the context
    the library runs in (its warnings silenced, its global state set).

    ``z0`` are the free coordinates of ``x0`` (default: the uniform point, with positive
    coordinates 1 and real ones 0) and ``budget`` the number of points that will be asked at
    most.
    """
    domain = Domain.of(shape)
    start = domain.center() if x0 is None else domain.check_point(x0, name="x0")
    z0 = param.from_point(start, name="x0")
    x_start = param.to_point(z0[None])[0]
    checkpoint = run_kwargs.get("checkpoint")
    plan = {**run_kwargs, **checkpoint.plan} if checkpoint is not None else run_kwargs  # the first call's budget
    run = Run(objective, domain, **run_kwargs)
    seen = _Evaluated()
    told: list[dict[str, Any]] = []  # every round told, for a checkpoint
    state = {"aborted": False}
    with quiet():
        backend = make_backend(param, z0, planned_asks(plan, batch_size))
        if checkpoint is not None and checkpoint.loaded is not None:
            _replay(backend, param, checkpoint, run, seen, told)

        def loop(run: Run) -> None:
            try:
                while run.budget_allows(1):
                    b = batch_size if math.isinf(run.remaining) else min(batch_size, int(run.remaining + 1e-9))
                    if not run.budget_allows(b):
                        break
                    handles, z = backend.ask(b)
                    points = param.to_point(z)  # (b, *shape)
                    losses = run.evaluate(points)
                    backend.tell(handles, losses)
                    seen.add(points, losses)
                    if checkpoint is not None:
                        told.append({"z": z.tolist(), "losses": losses.tolist()})
                    run.record_step(seen.points[seen.best], seen.losses[seen.best],
                                    batch_loss=float(losses.min()), batch_size=float(b))
            except (NonFiniteLossError, KeyboardInterrupt):
                state["aborted"] = True  # the driver will not score an unevaluated point
                raise

        def current_x() -> FloatArray:
            if seen.best < 0:
                return x_start
            z = backend.recommend()
            if z is not None:
                rec = param.to_point(np.asarray(z, dtype=np.float64)[None])[0]
                i = seen.index(rec)
                if i is not None:  # exactly the point evaluated, unless a point scored lower
                    return seen.points[i] if seen.losses[i] <= seen.losses[seen.best] else seen.points[seen.best]
                if final_eval and run.reserve > 0 and not state["aborted"]:
                    return rec  # the driver spends the reserved evaluation on it
            return seen.points[seen.best]

        try:
            return run.execute(loop, current_x=current_x, final_eval=final_eval, known_fun=seen.lookup,
                               extra=lambda: {"parametrization": param.kind, "batch_size": batch_size},
                               method_state=lambda: {"told": told[:]})
        finally:
            backend.close()


def _replay(backend: AskTellBackend, param: Parametrization, checkpoint: Any, run: Run, seen: _Evaluated,
            told: list[dict[str, Any]]) -> None:
    """Ask and tell ``backend`` the rounds recorded in ``checkpoint`` (see the module
    docstring), checking every candidate bit for bit; fills ``seen`` and ``told``."""
    record = checkpoint.method_state
    rounds = record.get("told") if isinstance(record, dict) else None
    if not isinstance(rounds, list) or len(rounds) != run.nit:
        raise checkpoint.error(f"its method_state must be {{'told': [one round per step, {run.nit} of them]}}, but "
                               f"is {record!r:.100}")
    for i, entry in enumerate(rounds):
        try:
            z_rec = np.asarray(entry["z"], dtype=np.float64)
            losses = np.asarray(entry["losses"], dtype=np.float64).reshape(-1)
        except (TypeError, ValueError, KeyError) as e:
            raise checkpoint.error(f"round {i + 1} of its method_state is not {{'z': [...], 'losses': [...]}} ({e})"
                                   ) from None
        handles, z = backend.ask(len(losses))
        z = np.ascontiguousarray(z, dtype=np.float64)
        if z.shape != z_rec.shape or z.tobytes() != np.ascontiguousarray(z_rec).tobytes():
            raise ValueError(
                f"checkpoint {str(checkpoint.path)!r}: replaying {run.method} diverged at round {i + 1} of "
                f"{len(rounds)}: the library asked {np.array2string(z.ravel(), precision=17, threshold=8)} where the "
                f"run that wrote the file had {np.array2string(z_rec.ravel(), precision=17, threshold=8)}; the run "
                "cannot be continued bit for bit (another version of the library, or something that drew from "
                "NumPy's global generator during that run?): delete the file (or give another path) to start over")
        backend.tell(handles, losses)
        seen.add(param.to_point(z), losses)
        told.append({"z": z.tolist(), "losses": losses.tolist()})
