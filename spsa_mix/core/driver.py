"""The run loop shared by every method: budget, history, validation, callback, faults.

A method builds a :class:`Run`, writes its loop as a function of the run, and calls
:meth:`Run.execute`. The run

* scores points through :meth:`Run.evaluate` (or :meth:`evaluate_grad`,
  :meth:`evaluate_jvp`), counting every evaluation and refusing to exceed ``max_evals``;
* records one history row per step in :meth:`Run.record_step`, runs validation every
  ``val_every`` steps with ``patience`` (and on the last iterate, when the last step was
  not a check, so that a budget shorter than ``val_every`` steps still returns the best
  validated point of the search), calls the callback and advances the progress bar;
* turns the ways a run can end into one :class:`~spsa_mix.core.result.OptimizeResult`:
  budget reached, validation plateau, callback ``StopIteration``, a non-finite loss
  (stop and keep the last finite iterate), Ctrl-C (return what was computed). If the
  objective (or ``val_objective``, named as such) raises,
  :class:`~spsa_mix.core.errors.ObjectiveError` carries the partial result. The final
  evaluation that scores the returned point is no exception: a non-finite loss there
  ends the run with ``status=NONFINITE``, Ctrl-C with ``INTERRUPTED`` (``fun`` is then
  the last step's estimate), an exception raises ``ObjectiveError``; so does an exception
  of the callback (other than ``StopIteration``), the steps done in its partial result;
* with a :class:`~spsa_mix.core.checkpoint.Checkpoint`, restores a resumed run's
  bookkeeping, history and objectives' states, takes a snapshot after every step (before
  the callback) and writes it every ``checkpoint.every`` steps and when the run ends.

The points are those of a :class:`~spsa_mix.core.domain.Domain`; with coordinates beside
the simplex, ``res.x`` and the history's ``x`` are flat points, and the result (and the
callback's) also carries ``alpha`` (the weights, shaped ``domain.simplex``) and ``extras``
(the other coordinates by name).

Budget currency: one evaluation of the objective at one point costs 1. Gradient methods
count a backward pass as ``backward_cost`` (2 by default, GLUE section 4.1's
``gamma >= 2``) and a tangent (jvp) pass as 1; ``res.cost`` is the total, and
``max_evals`` bounds it.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.checkpoint import Checkpoint, check_state_json, has_state
from spsa_mix.core.domain import Domain
from spsa_mix.core.errors import NonFiniteLossError, ObjectiveError
from spsa_mix.core.result import History, OptimizeResult, Status
from spsa_mix.core.validation import real_array
from spsa_mix.progress import require_tqdm

__all__ = ["Run"]

logger = logging.getLogger("spsa_mix")
FloatArray = NDArray[np.float64]


_OBJECTIVE = "the objective"
_VALIDATION = "val_objective"
_CALLBACK = "the callback"


class _ObjectiveFailed(Exception):
    """Internal: the user's objective (or ``val_objective``: ``source``) raised or returned
    something unusable (the cause is chained)."""

    def __init__(self, message: str, source: str = _OBJECTIVE) -> None:
        super().__init__(message)
        self.source = source


class _Stop(Exception):
    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _count(d: dict[str, Any], key: str) -> int:
    value = d[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"run[{key!r}] must be an integer >= 0, but is {value!r}")
    return value


def _number(d: dict[str, Any], key: str) -> float:
    value = d[key]
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"run[{key!r}] must be a number, but is {value!r}")
    return float(value)


class Run:
    """Bookkeeping of one optimisation run (see the module docstring)."""

    def __init__(
        self,
        objective: Callable[..., Any],
        shape: tuple[int, ...] | Domain,
        *,
        method: str,
        vectorized: bool = False,
        max_evals: int | None = None,
        maxiter: int | None = None,
        reserve: int = 0,
        callback: Callable[[OptimizeResult], Any] | None = None,
        val_objective: Callable[[FloatArray], float] | None = None,
        val_every: int = 10,
        patience: int | None = None,
        show_progress_bar: bool = False,
        total_steps: int | None = None,
        backward_cost: float = 2.0,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self.objective = objective
        self.domain = Domain.of(shape)
        self.shape = self.domain.point_shape
        self.method = method
        self.vectorized = vectorized
        self.max_evals = max_evals
        self.maxiter = maxiter
        self.reserve = reserve
        self.callback = callback
        self.val_objective = val_objective
        self.val_every = val_every
        self.patience = patience
        self.backward_cost = backward_cost
        self.nfev = 0
        self.njev = 0
        self.cost = 0.0
        self.nit = 0
        self.nval = 0
        self.history = History()
        self.best_val = math.inf
        self.best_val_x: FloatArray | None = None
        self._bad_checks = 0
        self._last_loss = math.nan
        self._limit = ""
        self.checkpoint = checkpoint
        self.resumed_from: int | None = None
        self._method_state: Callable[[], Any] | None = None
        self._snapshot: dict[str, Any] | None = None
        if checkpoint is not None and checkpoint.loaded is not None:
            self._restore(checkpoint.loaded)
        self._bar = None
        if show_progress_bar:  # asked for explicitly: no tqdm is an error, before any evaluation
            tqdm = require_tqdm("show_progress_bar=True")
            self._bar = tqdm(total=total_steps, initial=self.nit, desc=method, unit="step", dynamic_ncols=True)

    # ------------------------------------------------------------------ budget
    def budget_allows(self, cost: float) -> bool:
        """Whether a step that costs ``cost`` may start (keeps ``reserve`` for the end)."""
        if self.maxiter is not None and self.nit >= self.maxiter:
            self._limit = f"maxiter={self.maxiter} reached"
            return False
        if self.max_evals is not None and self.cost + cost + self.reserve > self.max_evals + 1e-9:
            self._limit = f"max_evals={self.max_evals} reached (the next step needs {cost:g} more)"
            return False
        return True

    @property
    def remaining(self) -> float:
        """Evaluations left before ``max_evals`` (infinite without one), reserve excluded."""
        if self.max_evals is None:
            return math.inf
        return self.max_evals - self.cost - self.reserve

    def _check_budget(self, cost: float) -> None:
        if self.max_evals is not None and self.cost + cost > self.max_evals + 1e-9:
            raise RuntimeError(  # a method bug, never the user's
                f"internal error: {self.method} tried to spend {cost:g} evaluations with "
                f"{self.max_evals - self.cost:g} left of max_evals={self.max_evals}"
            )

    def _charge(self, cost: float) -> None:
        self._check_budget(cost)
        self.cost += cost

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, points: FloatArray) -> FloatArray:
        """Score ``points`` of shape ``(n, *shape)``; returns ``n`` finite losses."""
        pts = np.asarray(points, dtype=np.float64)
        n = pts.shape[0]
        self._check_budget(n)
        if self.vectorized:
            self.cost += n
            out = self._call(self.objective, pts)
            arr = real_array(out)
            if arr is None:
                raise self._bad_return(out, f"{n} losses (numbers)")
            losses = arr.reshape(-1)
            if losses.shape != (n,):
                raise self._bad_return(out, f"{n} losses (one per row of the (n, ...) input)")
            self.nfev += n
        else:
            losses = np.empty(n)
            for i in range(n):  # stop at the first non-finite loss: no evaluation wasted
                self.cost += 1
                losses[i] = self._scalar(self._call(self.objective, pts[i]))
                self.nfev += 1
                self._check_finite(losses[i : i + 1], pts[i : i + 1])
            return losses
        self._check_finite(losses, pts)
        return losses

    def evaluate_grad(self, point: FloatArray) -> tuple[float, FloatArray]:
        """Loss and gradient with respect to alpha at one point (one forward, one backward)."""
        self._charge(1.0 + self.backward_cost)
        out = self._call(self.objective.value_and_grad, np.asarray(point, dtype=np.float64))  # type: ignore[attr-defined]
        loss, grad = self._scalar(out[0]), self._numbers(out[1], "a gradient of numbers")
        self.nfev += 1
        self.njev += 1
        self._check_finite(np.array([loss]), point[None])
        return loss, grad

    def evaluate_jvp(self, point: FloatArray, tangents: FloatArray) -> tuple[float, FloatArray]:
        """Loss and ``m`` directional derivatives at one point (one forward, ``m`` tangents)."""
        m = tangents.shape[0]
        self._charge(1.0 + m)
        out = self._call(self.objective.jvp, np.asarray(point, dtype=np.float64), tangents)  # type: ignore[attr-defined]
        loss, derivs = self._scalar(out[0]), self._numbers(out[1], f"{m} directional derivatives").reshape(-1)
        self.nfev += 1
        self.njev += m
        self._check_finite(np.array([loss]), point[None])
        return loss, derivs

    @staticmethod
    def _call(fn: Callable[..., Any], *args: Any, source: str = _OBJECTIVE) -> Any:
        try:
            return fn(*args)
        except (KeyboardInterrupt, _Stop, NonFiniteLossError):
            raise
        except Exception as e:
            raise _ObjectiveFailed(f"{type(e).__name__}: {e}", source) from e

    def _numbers(self, value: Any, expected: str) -> FloatArray:
        arr = real_array(value)
        if arr is None:
            raise self._bad_return(value, expected)
        return arr

    def _scalar(self, value: Any, source: str = _OBJECTIVE) -> float:
        """One loss: a real number (a NumPy scalar, a one-element array or tensor); a
        string, a bool or ``None`` is refused, though NumPy would convert them."""
        arr = real_array(value)
        if arr is None:
            raise self._bad_return(value, "one float", source)
        if arr.size != 1:
            hint = " (or pass vectorized=True for batched objectives)" if source == _OBJECTIVE else ""
            raise self._bad_return(value, "one float" + hint, source)
        return float(arr.reshape(()))

    def _bad_return(self, value: Any, expected: str, source: str = _OBJECTIVE) -> _ObjectiveFailed:
        shape = getattr(value, "shape", None)
        if shape is None:
            try:
                shape = np.shape(np.asarray(value, dtype=object))
            except Exception:  # a ragged list
                shape = None
        shape = None if shape is None else tuple(shape)
        return _ObjectiveFailed(
            f"{source} must return {expected}, but returned {type(value).__name__} of shape {shape}: {value!r:.200}",
            source,
        )

    def _check_finite(self, losses: FloatArray, points: FloatArray) -> None:
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            i = int(bad[0])
            raise NonFiniteLossError(
                f"the objective returned {float(losses[i])!r} at point "
                f"{np.array2string(points[i].ravel(), precision=4, threshold=12)} "
                f"(evaluation {self.nfev - len(losses) + i + 1})",
                index=i,
                value=float(losses[i]),
            )

    # ------------------------------------------------------------------ steps
    def record_step(self, x: FloatArray, loss: float, **extra: float) -> None:
        """One history row: ``x`` is the iterate after the step, ``loss`` the step's loss
        estimate; then validation, callback and progress bar."""
        self.nit += 1
        self._last_loss = loss
        self.history.append(step=self.nit - 1, x=np.array(x, copy=True), loss=loss, nfev=self.nfev,
                            cost=self.cost, **extra)
        logger.debug("%s step %d: loss=%.6g nfev=%d %s", self.method, self.nit - 1, loss, self.nfev, extra)
        if self.val_objective is not None and self.nit % self.val_every == 0:
            val = self.validate(x)
            self.history.set_last(val_loss=val)
        if self.checkpoint is not None:  # the step is complete: what the callback does cannot undo it
            self.take_snapshot()
            if self.nit % self.checkpoint.every == 0:
                self.save_checkpoint()
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4g}", nfev=self.nfev, refresh=False)
        if self.callback is not None:
            info = OptimizeResult(**self._point_fields(x), fun=loss, nit=self.nit, nfev=self.nfev, **extra)
            try:
                self.callback(info)
            except StopIteration:
                raise _Stop(Status.CALLBACK, "the callback raised StopIteration") from None
            except KeyboardInterrupt:
                raise
            except Exception as e:  # the steps so far are kept in the partial result, as for the objective
                raise _ObjectiveFailed(f"{type(e).__name__}: {e}", _CALLBACK) from e
        if self._bad_checks_exceeded():
            raise _Stop(Status.CONVERGED, self._plateau_message())

    def _plateau_message(self) -> str:
        return (f"validation loss did not improve for {self.patience} checks (every {self.val_every} steps); "
                f"best {self.best_val:.6g}")

    def validate(self, x: FloatArray) -> float:
        """Evaluate ``val_objective`` at ``x`` and track the best point (not budgeted)."""
        assert self.val_objective is not None
        value = self._scalar(self._call(self.val_objective, np.array(x, copy=True), source=_VALIDATION), _VALIDATION)
        self.nval += 1
        if not math.isfinite(value):
            raise NonFiniteLossError(f"val_objective returned {value!r}", index=0, value=value)
        if value < self.best_val:
            self.best_val, self.best_val_x, self._bad_checks = value, np.array(x, copy=True), 0
        else:
            self._bad_checks += 1
        return value

    def _bad_checks_exceeded(self) -> bool:
        return self.patience is not None and self._bad_checks >= self.patience

    # ------------------------------------------------------------------ the whole run
    def execute(
        self,
        loop: Callable[[Run], None],
        *,
        current_x: Callable[[], FloatArray],
        final_eval: bool = True,
        known_fun: Callable[[FloatArray], float | None] | None = None,
        extra: Callable[[], dict[str, Any]] | None = None,
        method_state: Callable[[], Any] | None = None,
    ) -> OptimizeResult:
        """Run ``loop(self)`` and build the result, whatever way the run ends.

        ``current_x`` gives the method's current answer at any time; ``known_fun(x)`` the
        objective at ``x`` if the method already evaluated it; otherwise, with
        ``final_eval`` (and the reserved budget), ``x`` is evaluated once more.
        ``method_state()`` is the method's state after the last step, JSON values or
        arrays, which a checkpoint saves (required with one; a resumed run's method has
        restored it from ``self.checkpoint.method_state`` before calling this).
        """
        if self.checkpoint is not None and method_state is None:
            raise RuntimeError(f"internal error: {self.method} runs with a checkpoint but gave no method_state")
        self._method_state = method_state
        status, message = Status.BUDGET, ""
        try:
            if self.checkpoint is not None:
                self.take_snapshot()  # the state before the first step (or as resumed): checked to be JSON now
            try:
                if self.val_objective is not None and self.nval == 0:  # a resumed run has checked already
                    self.validate(current_x())
                    if self.checkpoint is not None:
                        self.take_snapshot()
                if self._bad_checks_exceeded():  # a run resumed after its validation plateau stays stopped
                    raise _Stop(Status.CONVERGED, self._plateau_message())
                loop(self)
                status, message = Status.BUDGET, self._limit or "finished"
            except _Stop as stop:
                status, message = stop.status, stop.message
            except NonFiniteLossError as e:
                status = Status.NONFINITE
                message = f"stopped: {e}; the result is the last iterate with finite losses"
            except KeyboardInterrupt:
                status, message = Status.INTERRUPTED, "interrupted (KeyboardInterrupt); the result is the last iterate"
            except _ObjectiveFailed as e:
                raise self._objective_error(e, current_x(), extra) from e.__cause__
            if self.val_objective is not None and self.nit % self.val_every != 0 and status not in (
                    Status.NONFINITE, Status.INTERRUPTED):  # the last iterate is a candidate too: check it
                try:
                    self.history.set_last(val_loss=self.validate(current_x()))
                except NonFiniteLossError as e:
                    status, message = Status.NONFINITE, f"stopped: the last iterate's validation failed: {e}"
                except KeyboardInterrupt:
                    status, message = Status.INTERRUPTED, "interrupted (KeyboardInterrupt) validating the last iterate"
                except _ObjectiveFailed as e:
                    raise self._objective_error(e, current_x(), extra) from e.__cause__
            x = self.best_val_x if self.best_val_x is not None else current_x()
            fun = known_fun(x) if known_fun is not None else None
            if fun is None and final_eval and status not in (Status.NONFINITE, Status.INTERRUPTED) and (
                    self.max_evals is None or self.cost + 1 <= self.max_evals + 1e-9):
                try:
                    fun = float(self.evaluate(np.asarray(x)[None])[0])
                except NonFiniteLossError as e:
                    status = Status.NONFINITE
                    message = (f"stopped: the final evaluation of the returned point failed: {e}; fun is the last "
                               "step's estimate")
                except KeyboardInterrupt:
                    status = Status.INTERRUPTED
                    message = ("interrupted (KeyboardInterrupt) in the final evaluation of the returned point; fun is "
                               "the last step's estimate")
                except _ObjectiveFailed as e:
                    raise self._objective_error(e, x, extra, final=True) from e.__cause__
            return self._result(x, self._last_loss if fun is None else fun, status, message, extra)
        finally:
            if self._bar is not None:
                self._bar.close()
            if self._snapshot is not None:  # whatever way the run ended: the last complete step
                self.save_checkpoint()

    def _objective_error(self, e: _ObjectiveFailed, x: FloatArray, extra: Callable[[], dict[str, Any]] | None,
                         *, final: bool = False) -> ObjectiveError:
        """The :class:`ObjectiveError` for ``e``, with the partial result at ``x``."""
        if e.source == _VALIDATION:
            where, after = f"at validation check {self.nval + 1}", f"after {self.nval} validation checks"
        elif e.source == _CALLBACK:
            where, after = f"after step {self.nit}", f"after step {self.nit}"
        else:
            where, after = f"at evaluation {self.nfev + 1}", f"after {self.nfev} evaluations"
        if final:
            where += " (the final evaluation of the returned point)"
        partial = self._result(x, self._last_loss, Status.ERROR, f"{e.source} raised {after}: {e}", extra)
        return ObjectiveError(
            f"{e.source} raised {where} of method {self.method!r}: {e} "
            f"(the {self.nit} steps completed are in .partial_result)",
            partial,
        )

    def _result(
        self,
        x: FloatArray,
        fun: float,
        status: Status,
        message: str,
        extra: Callable[[], dict[str, Any]] | None,
    ) -> OptimizeResult:
        res = OptimizeResult(
            **self._point_fields(x),
            fun=float(fun),
            nit=self.nit,
            nfev=self.nfev,
            njev=self.njev,
            cost=self.cost,
            success=status.success,
            status=status,
            message=message,
            method=self.method,
            history=self.history.as_arrays(),
        )
        if self.val_objective is not None:
            res["val_fun"], res["nval"] = self.best_val, self.nval
        if extra is not None:
            res.update(extra())
        if self.resumed_from is not None:
            res["resumed_from"] = self.resumed_from
        logger.info("%s finished: %s (fun=%.6g, nit=%d, nfev=%d)", self.method, message, res.fun, self.nit, self.nfev)
        return res

    # ------------------------------------------------------------------ checkpoints
    def _objectives(self) -> list[tuple[str, Any]]:
        """The objectives whose state a checkpoint holds, by the key of their state."""
        pairs = [("objective_state", self.objective), ("val_objective_state", self.val_objective)]
        return [(key, obj) for key, obj in pairs if obj is not None]

    def take_snapshot(self) -> None:
        """Remember the state after the last complete step (what :meth:`save_checkpoint`
        writes): the bookkeeping, the method's state and the objectives' states."""
        assert self.checkpoint is not None and self._method_state is not None
        first = self._snapshot is None
        states: dict[str, Any] = {"objective_state": None, "val_objective_state": None}
        for key, obj in self._objectives():
            if has_state(obj):
                name = "objective" if key == "objective_state" else "val_objective"
                state = obj.state_dict()
                states[key] = copy.deepcopy(check_state_json(state, f"{name}.state_dict()") if first else state)
        self._snapshot = {
            "run": {
                "nit": self.nit, "nfev": self.nfev, "njev": self.njev, "cost": self.cost, "nval": self.nval,
                "best_val": self.best_val, "best_val_x": self.best_val_x, "bad_checks": self._bad_checks,
                "last_loss": self._last_loss,
            },
            "rows": len(self.history),
            "method_state": self._method_state(),
            **states,
        }

    def save_checkpoint(self) -> None:
        """Write the last snapshot to the checkpoint file (atomically)."""
        assert self.checkpoint is not None and self._snapshot is not None
        self.checkpoint.save(self._snapshot, self.history.to_dict(self._snapshot["rows"]))

    def _restore(self, state: dict[str, Any]) -> None:
        """The bookkeeping, history and objectives' states of a checkpoint's content."""
        assert self.checkpoint is not None
        ckpt = self.checkpoint
        run = state["run"]
        try:
            self.nit, self.nfev, self.nval, self._bad_checks = (
                _count(run, key) for key in ("nit", "nfev", "nval", "bad_checks"))
            self.njev = _count(run, "njev")
            self.cost = _number(run, "cost")
            self.best_val = math.inf if run["best_val"] is None else _number(run, "best_val")
            self._last_loss = math.nan if run["last_loss"] is None else _number(run, "last_loss")
            self.best_val_x = None if run["best_val_x"] is None else np.asarray(run["best_val_x"], dtype=np.float64)
            if self.best_val_x is not None and self.best_val_x.shape != self.shape:
                raise ValueError(f"run['best_val_x'] must have shape {self.shape}, but has {self.best_val_x.shape}")
            self.history = History.from_dict(state["history"])
        except KeyError as e:
            raise ckpt.error(f"run lacks the key {e}") from None
        except (TypeError, ValueError) as e:
            raise ckpt.error(str(e)) from None
        if len(self.history) != self.nit:
            raise ckpt.error(f"the history has {len(self.history)} rows for {self.nit} steps")
        for key, obj in self._objectives():
            saved = state[key]
            name = "objective" if key == "objective_state" else "val_objective"
            if has_state(obj) != (saved is not None):
                held = "holds" if saved is not None else "does not hold"
                has = "has" if has_state(obj) else "has no"
                raise ckpt.error(f"it {held} a state of the {name}, but this {name} ({type(obj).__name__}) {has} "
                                 "state_dict()/load_state_dict()")
            if saved is not None:
                obj.load_state_dict(saved)
        self.resumed_from = self.nit

    def _point_fields(self, x: FloatArray) -> dict[str, Any]:
        """``x`` (a copy), and ``alpha`` and ``extras`` when the domain has extra coordinates."""
        fields: dict[str, Any] = {"x": np.array(x, copy=True)}
        if not self.domain.simplex_only:
            fields["alpha"] = self.domain.split(fields["x"])[0].copy()
            fields["extras"] = self.domain.extras(fields["x"])
        return fields
