"""One conformance suite run over every method of ``spsa_mix.minimize``: the built-in ones
and every adapter (as Optuna runs one test class over all its samplers).

Each method must: give the same result for the same seed; never exceed ``max_evals``
(counted independently of the package); hand the objective only points of the simplex
(strictly positive, rows summing to one within 1e-9), for one simplex and for several;
return an ``OptimizeResult`` with the common fields and one history row per step; improve
on the uniform start of a quadratic; stop on a NaN keeping a finite answer; stop on a
callback's ``StopIteration``, on Ctrl-C and on a validation plateau; run vectorized and not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import spsa_mix
from spsa_mix import OptimizeResult, Status
from spsa_mix.problems import Quadratic

BUILTIN = ["spsa", "forward-grad", "backprop"]
ADAPTERS = [
    "nevergrad:NGOpt", "nevergrad:CMA", "nevergrad:TwoPointsDE",
    "optuna:tpe", "optuna:cmaes", "optuna:random", "optuna:qmc", "optuna:gp",
]
METHODS = BUILTIN + ADAPTERS
BUDGET = {"optuna:gp": 8}  # GPSampler refits a Gaussian process per trial: keep it tiny
DEFAULT_BUDGET = 40
EXTRA = {"optuna:gp": {"options": {"sampler_kwargs": {"n_startup_trials": 4}}}}
SIMPLEX_ATOL = 1e-9
# Nothing random: exact gradients; NGOpt on a bounded space (the default "normalize"
# parametrisation) with a small budget picks a deterministic search from the start point.
SEED_FREE = {"backprop", "nevergrad:NGOpt"}


def budget_of(method: str) -> int:
    return BUDGET.get(method, DEFAULT_BUDGET)


def kwargs_of(method: str, *, batch_size: int | None = None) -> dict:
    kw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in EXTRA.get(method, {}).items()}
    if batch_size is not None and method in ADAPTERS:
        options = dict(kw.get("options", {}))
        options["batch_size"] = batch_size
        kw["options"] = options
    return kw


class Recorder:
    """A quadratic on one or several simplices that records every point it is asked about
    and counts the evaluations in the core's currency, independently of the package."""

    def __init__(self, shape: tuple[int, ...], *, seed: int = 0, optimum: str = "boundary",
                 nan_after: int | None = None, interrupt_after: int | None = None) -> None:
        self.shape = shape
        self.qs = [Quadratic.random(shape[-1], rng=seed + g, optimum=optimum) for g in range(int(np.prod(shape[:-1])))]
        self.points: list[np.ndarray] = []
        self.calls = 0
        self.cost = 0.0
        self.nan_after = nan_after
        self.interrupt_after = interrupt_after

    def exact(self, x: np.ndarray) -> float:
        rows = np.asarray(x).reshape(-1, self.shape[-1])
        return float(sum(q.value(r) for q, r in zip(self.qs, rows, strict=True)))

    def _score(self, x: np.ndarray) -> float:
        self.points.append(np.array(x, copy=True))
        n = len(self.points)
        if self.interrupt_after is not None and n > self.interrupt_after:
            raise KeyboardInterrupt
        if self.nan_after is not None and n > self.nan_after:
            return math.nan
        return self.exact(x)

    def __call__(self, points: np.ndarray):
        self.calls += 1
        pts = np.asarray(points)
        if pts.shape == self.shape:
            self.cost += 1
            return self._score(pts)
        self.cost += len(pts)
        return np.array([self._score(p) for p in pts])

    def grad(self, x: np.ndarray) -> np.ndarray:
        rows = np.asarray(x).reshape(-1, self.shape[-1])
        return np.stack([q.grad(r) for q, r in zip(self.qs, rows, strict=True)]).reshape(self.shape)

    def value_and_grad(self, x: np.ndarray):
        self.cost += 1 + 2  # a forward and a backward pass (backward_cost=2)
        return self._score(x), self.grad(x)

    def jvp(self, x: np.ndarray, tangents: np.ndarray):
        self.cost += 1 + len(tangents)
        return self._score(x), np.asarray(tangents).reshape(len(tangents), -1) @ self.grad(x).ravel()


def run(method: str, obj: Recorder, *, seed: int = 0, vectorized: bool = True, batch_size: int | None = None,
        max_evals: int | None = None, **kw):
    return spsa_mix.minimize(obj, obj.shape if len(obj.shape) > 1 else obj.shape[0], method=method, seed=seed,
                             vectorized=vectorized, max_evals=max_evals or budget_of(method),
                             **kwargs_of(method, batch_size=batch_size), **kw)


@pytest.fixture(params=METHODS)
def method(request: pytest.FixtureRequest) -> str:
    return request.param


class TestConformance:
    def test_same_seed_same_result(self, method: str) -> None:
        a = run(method, Recorder((4,)), seed=3)
        b = run(method, Recorder((4,)), seed=3)
        np.testing.assert_array_equal(a.x, b.x)
        assert a.fun == b.fun and a.nfev == b.nfev
        np.testing.assert_array_equal(a.history["loss"], b.history["loss"])
        np.testing.assert_array_equal(a.history["x"], b.history["x"])
        if method not in SEED_FREE:
            c = run(method, Recorder((4,)), seed=4)
            assert not np.array_equal(a.history["x"], c.history["x"])

    @pytest.mark.parametrize("vectorized", [True, False])
    @pytest.mark.parametrize("max_evals", [9, 23])
    def test_budget_is_never_exceeded(self, method: str, vectorized: bool, max_evals: int) -> None:
        max_evals = min(max_evals, budget_of(method))
        obj = Recorder((4,))
        res = run(method, obj, vectorized=vectorized, max_evals=max_evals)
        assert obj.cost <= max_evals  # counted by the objective itself
        assert res.cost == obj.cost and res.cost <= max_evals
        assert res.nfev == len(obj.points)
        assert res.status is Status.BUDGET and res.success

    @pytest.mark.parametrize("shape", [(5,), (2, 3)])
    @pytest.mark.parametrize("vectorized", [True, False])
    def test_every_point_is_on_the_simplex(self, method: str, shape: tuple[int, ...], vectorized: bool) -> None:
        obj = Recorder(shape)
        res = run(method, obj, vectorized=vectorized)
        pts = np.stack(obj.points)
        assert pts.shape[1:] == shape
        assert np.all(pts > 0)
        np.testing.assert_allclose(pts.sum(axis=-1), 1.0, rtol=0, atol=SIMPLEX_ATOL)
        assert res.x.shape == shape and np.all(res.x > 0)
        np.testing.assert_allclose(res.x.sum(axis=-1), 1.0, rtol=0, atol=SIMPLEX_ATOL)
        hx = res.history["x"]
        assert hx.shape == (res.nit, *shape) and np.all(hx > 0)
        np.testing.assert_allclose(hx.sum(axis=-1), 1.0, rtol=0, atol=SIMPLEX_ATOL)

    def test_result_type_and_history(self, method: str) -> None:
        obj = Recorder((4,))
        res = run(method, obj)
        assert isinstance(res, OptimizeResult)
        for name in ["x", "fun", "nit", "nfev", "njev", "cost", "success", "status", "message", "method", "history"]:
            assert name in res and getattr(res, name) is res[name]
        assert res.method == method and isinstance(res.status, Status) and isinstance(res.message, str)
        assert math.isfinite(res.fun) and res.nit >= 1
        hist = res.history
        for key in ["step", "x", "loss", "nfev", "cost"]:
            assert len(hist[key]) == res.nit, key
        np.testing.assert_array_equal(hist["step"], np.arange(res.nit))
        assert np.all(np.diff(hist["nfev"]) > 0) and np.all(np.diff(hist["cost"]) > 0)
        assert hist["nfev"][-1] <= res.nfev
        if method in ADAPTERS:
            # res.fun is the objective at res.x, evaluated once more only when needed
            assert res.fun == pytest.approx(obj.exact(res.x), rel=1e-12, abs=1e-15)
        assert res.to_json()["status"] == "BUDGET"

    def test_improves_on_the_uniform_start(self, method: str) -> None:
        obj = Recorder((5,), seed=1, optimum="boundary")
        budget = 100 if method != "optuna:gp" else budget_of(method)
        res = run(method, obj, max_evals=budget)
        assert obj.exact(res.x) < obj.exact(np.full(5, 0.2))

    @pytest.mark.parametrize("vectorized", [True, False])
    def test_nan_stops_the_run_and_keeps_a_finite_answer(self, method: str, vectorized: bool) -> None:
        obj = Recorder((4,), nan_after=5)
        res = run(method, obj, vectorized=vectorized)
        assert res.status is Status.NONFINITE and not res.success
        assert "nan" in res.message
        assert res.nfev == len(obj.points) <= 5 + 4  # a vectorized batch may hold more points after the NaN
        assert np.all(np.isfinite(res.x)) and np.all(res.x > 0)
        assert len(obj.points) == res.nfev  # nothing evaluated after the stop

    def test_callback_stop_iteration(self, method: str) -> None:
        seen = []

        def callback(info: OptimizeResult) -> None:
            seen.append(info.nit)
            if len(seen) == 3:
                raise StopIteration

        res = run(method, Recorder((4,)), callback=callback)
        assert res.status is Status.CALLBACK and not res.success
        assert res.nit == 3 and seen == [1, 2, 3]

    def test_keyboard_interrupt_returns_the_result_so_far(self, method: str) -> None:
        res = run(method, Recorder((4,), interrupt_after=6))
        assert res.status is Status.INTERRUPTED
        assert res.x.shape == (4,) and np.all(np.isfinite(res.x))

    def test_validation_patience(self, method: str) -> None:
        res = run(method, Recorder((4,)), val_objective=lambda a: 1.0, val_every=1, patience=2)
        assert res.status is Status.CONVERGED and res.success
        assert res.nval == 3 and res.nit == 2

    def test_vectorized_and_not_agree(self, method: str) -> None:
        a = run(method, Recorder((4,)), vectorized=True)
        b = run(method, Recorder((4,)), vectorized=False)
        np.testing.assert_array_equal(a.x, b.x)
        assert a.nfev == b.nfev


@pytest.mark.parametrize("method", ADAPTERS)
def test_adapters_give_vectorized_objectives_whole_batches(method: str) -> None:
    obj = Recorder((4,))
    shapes = []

    def f(points: np.ndarray) -> np.ndarray:
        shapes.append(points.shape)
        return obj(points)

    max_evals = 10 if method != "optuna:gp" else 6
    opts = kwargs_of(method, batch_size=4)
    res = spsa_mix.minimize(f, 4, method=method, vectorized=True, max_evals=max_evals, seed=0, final_eval=False, **opts)
    assert shapes[0] == (4, 4)
    assert all(s[0] <= 4 for s in shapes) and sum(s[0] for s in shapes) == res.nfev <= max_evals
    assert res.nit == len(shapes)


# ---------------------------------------------------------------- coordinates beside the simplex
MIXED = spsa_mix.Domain((2, 3), positive=1, real=1, names=("scale", "shift"))


class MixedRecorder(Recorder):
    """A quadratic in the weights of MIXED plus (log s - log 2)^2 + (shift - 0.5)^2, recording
    every flat point it is asked about and counting the evaluations itself."""

    def __init__(self, **kw) -> None:
        super().__init__(MIXED.simplex, **kw)
        self.shape = MIXED.point_shape

    def exact(self, x: np.ndarray) -> float:
        alpha, pos, real = MIXED.split(x)
        weights = sum(q.value(row) for q, row in zip(self.qs, alpha, strict=True))
        return float(weights + np.log(pos[0] / 2.0) ** 2 + (real[0] - 0.5) ** 2)

    def grad(self, x: np.ndarray) -> np.ndarray:
        alpha, pos, real = MIXED.split(x)
        weights = np.stack([q.grad(row) for q, row in zip(self.qs, alpha, strict=True)])
        return MIXED.join(weights, [2 * np.log(pos[0] / 2.0) / pos[0]], [2 * (real[0] - 0.5)])


def run_mixed(method: str, obj: MixedRecorder, **kw):
    kw.setdefault("max_evals", budget_of(method))
    return spsa_mix.minimize(obj, MIXED, method=method, vectorized=kw.pop("vectorized", True),
                             **kwargs_of(method), **kw)


class TestConformanceMixedDomain:
    """The checks that make sense with a positive and a real coordinate beside two simplices."""

    @pytest.mark.parametrize("vectorized", [True, False])
    def test_budget_points_and_result(self, method: str, vectorized: bool) -> None:
        obj = MixedRecorder()
        max_evals = min(23, budget_of(method))
        res = run_mixed(method, obj, seed=0, vectorized=vectorized, max_evals=max_evals)
        assert obj.cost <= max_evals and res.cost == obj.cost and res.nfev == len(obj.points)
        assert res.status is Status.BUDGET and res.success
        pts = np.stack(obj.points)
        assert pts.shape[1:] == (MIXED.size,)
        alpha, pos, real = MIXED.split(pts)
        assert np.all(alpha > 0) and np.all(pos > 0) and np.all(np.isfinite(real))
        np.testing.assert_allclose(alpha.sum(axis=-1), 1.0, rtol=0, atol=SIMPLEX_ATOL)
        assert res.x.shape == (MIXED.size,) and res.alpha.shape == MIXED.simplex
        np.testing.assert_array_equal(MIXED.split(res.x)[0], res.alpha)
        assert res.extras == {"scale": res.x[6], "shift": res.x[7]}
        assert res.history["x"].shape == (res.nit, MIXED.size)
        if method in ADAPTERS:
            assert res.fun == pytest.approx(obj.exact(res.x), rel=1e-12, abs=1e-15)

    def test_same_seed_same_result(self, method: str) -> None:
        a = run_mixed(method, MixedRecorder(), seed=3)
        b = run_mixed(method, MixedRecorder(), seed=3)
        np.testing.assert_array_equal(a.history["x"], b.history["x"])
        assert a.fun == b.fun and a.extras == b.extras
        if method not in SEED_FREE:
            c = run_mixed(method, MixedRecorder(), seed=4)
            assert not np.array_equal(a.history["x"], c.history["x"])

    def test_improves_on_the_start(self, method: str) -> None:
        obj = MixedRecorder(seed=1)
        res = run_mixed(method, obj, seed=0, max_evals=100 if method != "optuna:gp" else budget_of(method))
        assert obj.exact(res.x) < obj.exact(MIXED.center())


@pytest.mark.parametrize("method", BUILTIN)
def test_mixed_domain_state_round_trip_is_bit_for_bit(method: str) -> None:
    """Stopped by the callback after 7 of 20 planned steps, resumed from res.state with the
    rest of the budget: the uninterrupted run, bit for bit (schedules included)."""
    kw = dict(maxiter=20, lr_schedule="cosine", final_eval=False, seed=5)
    full = run_mixed(method, MixedRecorder(), max_evals=None, **kw)

    def stop(info: OptimizeResult) -> None:
        if info.nit == 7:
            raise StopIteration

    first = run_mixed(method, MixedRecorder(), max_evals=None, callback=stop, **kw)
    assert first.nit == 7
    rest = run_mixed(method, MixedRecorder(), max_evals=None, initial_state=first.state,
                     **{**kw, "maxiter": 13, "seed": 99})
    np.testing.assert_array_equal(rest.x, full.x)
    np.testing.assert_array_equal(np.concatenate([first.history["x"], rest.history["x"]]), full.history["x"])
