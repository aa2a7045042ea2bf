"""minimize(..., checkpoint=...): the state file, resuming bit for bit, refusals."""

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spsa_mix
from spsa_mix import ObjectiveError, Status
from spsa_mix.core.result import History
from spsa_mix.problems import Quadratic

ROOT = Path(__file__).resolve().parents[2]

# One setting per method: spsa with a cosine schedule and m=2, the gradient methods, and
# the two adapters that resume by replay.
METHODS = {
    "spsa": dict(m=2, lr_schedule="cosine", mu_schedule="power", maxiter=40),
    "forward-grad": dict(m=2, lr_schedule="cosine", maxiter=40),
    "backprop": dict(lr_schedule="cosine", maxiter=40),
    "nevergrad:NGOpt": dict(max_evals=60),
    "optuna:tpe": dict(max_evals=40, options={"sampler_kwargs": {"n_startup_trials": 5}}),
}


def _problem():
    return Quadratic.random(4, rng=0)


def _run(method, objective=None, **kw):
    settings = {**METHODS[method], **kw}
    return spsa_mix.minimize(objective or _problem(), k=4, method=method, seed=3, vectorized=True, **settings)


def _assert_same_run(res, full):
    np.testing.assert_array_equal(res.x, full.x)
    assert res.fun == full.fun
    assert (res.nit, res.nfev, res.njev, res.cost) == (full.nit, full.nfev, full.njev, full.cost)
    assert sorted(res.history) == sorted(full.history)
    for key in full.history:
        np.testing.assert_array_equal(res.history[key], full.history[key], err_msg=key)
    assert res.status == full.status


def _interrupt_at(step):
    def callback(info):
        if info.nit == step:
            raise KeyboardInterrupt

    return callback


# ---------------------------------------------------------------- resuming bit for bit
@pytest.mark.parametrize("method", list(METHODS))
def test_resume_after_ctrl_c_in_the_callback_is_the_uninterrupted_run(method, tmp_path):
    full = _run(method)
    path = tmp_path / "run.state"
    first = _run(method, checkpoint=path, checkpoint_every=4, callback=_interrupt_at(7))
    assert first.status is Status.INTERRUPTED and first.nit == 7
    assert json.loads(path.read_text())["run"]["nit"] == 7  # written when the run ended, not only every 4 steps
    res = _run(method, checkpoint=path, checkpoint_every=4)
    assert res.resumed_from == 7
    _assert_same_run(res, full)


_KILLED_RUN = textwrap.dedent("""
    import json, sys, time
    import spsa_mix
    from spsa_mix.problems import Quadratic

    method, path, settings = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    q = Quadratic.random(4, rng=0)

    class Slow:  # the same values, 20 ms a call: the run is killed long before its end
        def __call__(self, points):
            time.sleep(0.02)
            return q(points)

        def value_and_grad(self, alpha):
            time.sleep(0.02)
            return q.value_and_grad(alpha)

        def jvp(self, alpha, tangents):
            time.sleep(0.02)
            return q.jvp(alpha, tangents)

    spsa_mix.minimize(Slow(), k=4, method=method, seed=3, vectorized=True, checkpoint=path, checkpoint_every=2,
                      **settings)
""")


def _steps_in(path):
    try:
        return json.loads(path.read_text())["run"]["nit"]
    except (FileNotFoundError, ValueError):  # not written yet (a write is atomic: never half a file)
        return 0


@pytest.mark.parametrize("method", list(METHODS))
def test_resume_after_sigkill_is_the_uninterrupted_run(method, tmp_path):
    settings = {**METHODS[method], "maxiter": 400} if "maxiter" in METHODS[method] else {**METHODS[method],
                                                                                          "max_evals": 400}
    path = tmp_path / "run.state"
    script = tmp_path / "run.py"
    script.write_text(_KILLED_RUN)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(script), method, str(path), json.dumps(settings)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _steps_in(path) < 2:
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "the run wrote no checkpoint"
            time.sleep(0.01)
    finally:
        alive = proc.poll() is None
        proc.kill() if os.name == "nt" else os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert alive
    done = _steps_in(path)
    assert 2 <= done < 100, done  # killed mid-run
    res = _run(method, checkpoint=path, **settings)
    assert res.resumed_from == done
    _assert_same_run(res, _run(method, **settings))


def test_a_finished_run_resumed_returns_the_same_result_and_a_larger_budget_continues_it(tmp_path):
    path = tmp_path / "run.state"
    q = _problem()
    calls = []
    counted = lambda pts: (calls.append(len(pts)), q(pts))[1]  # noqa: E731
    first = spsa_mix.minimize(counted, k=4, maxiter=20, seed=0, vectorized=True, checkpoint=path)
    again = spsa_mix.minimize(counted, k=4, maxiter=20, seed=0, vectorized=True, checkpoint=path)
    assert calls[-1:] == [1] and len(calls) == 20 + 1 + 1  # resumed: only the final evaluation again
    np.testing.assert_array_equal(again.x, first.x)
    assert again.fun == first.fun and again.resumed_from == 20
    longer = spsa_mix.minimize(q, k=4, maxiter=30, seed=0, vectorized=True, checkpoint=path)
    assert longer.nit == 30 and longer.resumed_from == 20
    np.testing.assert_array_equal(longer.history["x"][:20], first.history["x"])
    # the same as a run stopped at 20 and resumed from its state (the schedules keep the first plan)
    stopped = spsa_mix.minimize(q, k=4, maxiter=20, seed=0, vectorized=True, final_eval=False)
    rest = spsa_mix.minimize(q, k=4, maxiter=10, vectorized=True, initial_state=stopped.state)
    np.testing.assert_array_equal(longer.x, rest.x)


def test_resume_with_validation_and_patience(tmp_path):
    q, v = _problem(), Quadratic.random(4, rng=1)
    kw = dict(k=4, maxiter=60, seed=0, vectorized=True, val_objective=v, val_every=3, patience=4, lr=0.05)
    full = spsa_mix.minimize(q, **kw)
    path = tmp_path / "run.state"
    spsa_mix.minimize(q, **kw, checkpoint=path, callback=_interrupt_at(8))
    res = spsa_mix.minimize(q, **kw, checkpoint=path)
    _assert_same_run(res, full)
    assert (res.val_fun, res.nval) == (full.val_fun, full.nval)
    if full.status is Status.CONVERGED:  # resuming a run that stopped on its plateau stops again
        again = spsa_mix.minimize(q, **kw, checkpoint=path)
        assert again.status is Status.CONVERGED and again.nit == full.nit


def test_a_run_started_without_a_seed_resumes_with_the_files_generator(tmp_path):
    path = tmp_path / "run.state"
    q = _problem()
    first = spsa_mix.minimize(q, k=4, maxiter=20, vectorized=True, checkpoint=path, callback=_interrupt_at(5))
    rest = spsa_mix.minimize(q, k=4, maxiter=20, vectorized=True, checkpoint=path)
    start = json.loads(path.read_text())["fingerprint"]["rng"]
    bit_generator = np.random.PCG64()
    bit_generator.state = start
    full = spsa_mix.minimize(q, k=4, maxiter=20, vectorized=True, rng=np.random.Generator(bit_generator))
    np.testing.assert_array_equal(rest.x, full.x)
    np.testing.assert_array_equal(rest.history["x"][:5], first.history["x"])


def test_an_objective_error_and_a_nan_keep_the_steps_in_the_file(tmp_path):
    q = _problem()
    full = spsa_mix.minimize(q, k=4, maxiter=15, seed=0, vectorized=True)
    calls = {"n": 0}

    def flaky(pts):
        calls["n"] += 1
        if calls["n"] == 9:
            raise RuntimeError("disk full")
        return q(pts)

    path = tmp_path / "run.state"
    with pytest.raises(ObjectiveError, match="disk full"):
        spsa_mix.minimize(flaky, k=4, maxiter=15, seed=0, vectorized=True, checkpoint=path)
    assert json.loads(path.read_text())["run"]["nit"] == 8
    _assert_same_run(spsa_mix.minimize(q, k=4, maxiter=15, seed=0, vectorized=True, checkpoint=path), full)

    nan_at = {"n": 0}

    def once_nan(pts):
        nan_at["n"] += 1
        return np.full(len(pts), np.nan) if nan_at["n"] == 4 else q(pts)

    path = tmp_path / "nan.state"
    assert spsa_mix.minimize(once_nan, k=4, maxiter=15, seed=0, vectorized=True,
                             checkpoint=path).status is Status.NONFINITE
    _assert_same_run(spsa_mix.minimize(q, k=4, maxiter=15, seed=0, vectorized=True, checkpoint=path), full)


def test_the_objective_state_protocol(tmp_path):
    class Noisy:
        """A stochastic objective whose generator is its state."""

        def __init__(self):
            self.q, self.rng = _problem(), np.random.default_rng(7)

        def __call__(self, pts):
            return self.q(pts) + 0.01 * self.rng.standard_normal(len(pts))

        def state_dict(self):
            return {"rng": self.rng.bit_generator.state}

        def load_state_dict(self, state):
            self.rng.bit_generator.state = state["rng"]

    kw = dict(k=4, maxiter=20, seed=0, vectorized=True)
    full = spsa_mix.minimize(Noisy(), **kw)
    path = tmp_path / "run.state"
    spsa_mix.minimize(Noisy(), **kw, checkpoint=path, callback=_interrupt_at(6))
    assert json.loads(path.read_text())["objective_state"]["rng"]["bit_generator"] == "PCG64"
    _assert_same_run(spsa_mix.minimize(Noisy(), **kw, checkpoint=path), full)
    with pytest.raises(ValueError, match=r"it holds a state of the objective, but this objective \(Quadratic\) has no "
                                         r"state_dict\(\)/load_state_dict\(\)"):
        spsa_mix.minimize(_problem(), **kw, checkpoint=path)


def test_an_objective_state_that_is_not_json_is_refused_before_any_evaluation(tmp_path):
    class Bad:
        def __call__(self, pts):
            raise AssertionError("evaluated")

        def state_dict(self):
            return {"gen": np.random.default_rng(0)}

        def load_state_dict(self, state):
            pass

    with pytest.raises(ValueError, match=r"objective\.state_dict\(\) must return JSON values"):
        spsa_mix.minimize(Bad(), k=3, maxiter=3, seed=0, vectorized=True, checkpoint=tmp_path / "s")


# ---------------------------------------------------------------- the file
def test_the_file_is_json_without_pickle_and_floats_round_trip(tmp_path):
    path = tmp_path / "run.state"
    res = spsa_mix.minimize(_problem(), k=4, maxiter=12, seed=0, vectorized=True, checkpoint=path,
                            val_objective=_problem(), val_every=5)
    raw = path.read_bytes()
    assert b"\x80" not in raw and b"pickle" not in raw  # text, no pickle protocol
    state = json.loads(raw)

    def leaves(v):
        if isinstance(v, dict):
            return [x for e in v.values() for x in leaves(e)]
        if isinstance(v, list):
            return [x for e in v for x in leaves(e)]
        return [v]

    assert {type(v) for v in leaves(state)} <= {int, float, str, bool, type(None)}
    assert state["format"] == "spsa_mix.checkpoint" and state["version"] == 1
    assert sorted(state) == sorted(["format", "version", "fingerprint", "budget", "plan", "run", "history",
                                    "method_state", "objective_state", "val_objective_state"])
    np.testing.assert_array_equal(np.array(state["history"]["columns"]["x"]), res.history["x"])
    np.testing.assert_array_equal(np.array(state["method_state"]["beta"]), res.state["beta"])


@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=20))
def test_history_round_trips_floats_exactly_through_json(values):
    h = History()
    for i, v in enumerate(values):
        h.append(step=i, x=np.array([v, -v]), loss=v)
    back = History.from_dict(json.loads(json.dumps(h.to_dict()))).as_arrays()
    for key, column in h.as_arrays().items():
        assert back[key].tobytes() == column.tobytes() and back[key].dtype == column.dtype


@pytest.mark.parametrize(("change", "match"), [
    (dict(method="forward-grad"), r"with method='spsa', but this call has method='forward-grad'"),
    (dict(k=5), r"with k=4, but this call has k=5"),
    (dict(lr=0.1), r"with lr=not given \(the default\), but this call has lr=0\.1"),
    (dict(m=2), r"with m=not given \(the default\), but this call has m=2"),
    (dict(vectorized=False), r"with vectorized=True, but this call has vectorized=False"),
    (dict(seed=4), r"started with seed=3, but this call has seed=4: give the same seed"),
    (dict(maxiter=5), r"with maxiter=10, but this call has maxiter=5: a resumed run may be given a larger budget"),
])
def test_a_mismatched_resume_is_refused_naming_the_setting(tmp_path, change, match):
    path = tmp_path / "run.state"
    base = dict(k=4, method="spsa", maxiter=10, seed=3, vectorized=True)
    spsa_mix.minimize(_problem(), **base, checkpoint=path)
    before = path.read_bytes()
    kw = {**base, **change}
    q = Quadratic.random(kw["k"], rng=0)
    with pytest.raises(ValueError, match=match) as info:
        spsa_mix.minimize(q, **kw, checkpoint=path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before  # refused before anything is written


def test_an_adapter_refuses_other_options(tmp_path):
    path = tmp_path / "run.state"
    spsa_mix.minimize(_problem(), k=4, method="optuna:random", max_evals=5, seed=0, checkpoint=path)
    with pytest.raises(ValueError, match=r"with options=not given \(the default\), but this call has options="):
        spsa_mix.minimize(_problem(), k=4, method="optuna:random", max_evals=5, seed=0, checkpoint=path,
                          options={"parametrization": "softmax"})


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other-json", "version"])
def test_a_corrupt_file_is_refused_naming_it(tmp_path, damage):
    path = tmp_path / "run.state"
    spsa_mix.minimize(_problem(), k=4, maxiter=10, seed=0, checkpoint=path)
    text = path.read_text()
    path.write_text({"truncate": text[: len(text) // 2], "garbage": "\x00\x01 not json",
                     "other-json": json.dumps({"a": 1}),
                     "version": text.replace('"version": 1', '"version": 99')}[damage])
    with pytest.raises(ValueError, match=r"checkpoint '.*run\.state' is not a readable state file of spsa_mix "
                                         r"\(.*\); delete it") as info:
        spsa_mix.minimize(_problem(), k=4, maxiter=10, seed=0, checkpoint=path)
    e = info.value
    assert e.__cause__ is None and (e.__context__ is None or e.__suppress_context__)  # no traceback from json


def test_a_replay_that_diverges_is_refused(tmp_path):
    path = tmp_path / "run.state"
    spsa_mix.minimize(_problem(), k=4, method="optuna:random", max_evals=6, seed=0, checkpoint=path)
    state = json.loads(path.read_text())
    state["method_state"]["told"][2]["z"][0][0] += 1e-12
    path.write_text(json.dumps(state))
    with pytest.raises(ValueError, match=r"replaying optuna:random diverged at round 3 of 6: the library asked"):
        spsa_mix.minimize(_problem(), k=4, method="optuna:random", max_evals=6, seed=0, checkpoint=path)


def test_a_missing_file_starts_from_the_beginning_and_says_so(tmp_path, caplog):
    path = tmp_path / "sub" / "run.state"
    with caplog.at_level(logging.INFO, logger="spsa_mix"):
        res = spsa_mix.minimize(_problem(), k=4, maxiter=3, seed=0, checkpoint=path)
        assert "resumed_from" not in res
        assert f"no checkpoint at {path} yet: spsa starts from the beginning" in caplog.text
        res = spsa_mix.minimize(_problem(), k=4, maxiter=3, seed=0, checkpoint=path)
        assert f"spsa resumes from checkpoint {path} at step 3" in caplog.text and res.resumed_from == 3


def test_checkpoint_argument_errors(tmp_path):
    with pytest.raises(ValueError, match=r"checkpoint_every must be an integer >= 1, but got 0"):
        spsa_mix.minimize(_problem(), k=4, maxiter=3, checkpoint=tmp_path / "s", checkpoint_every=0)
    with pytest.raises(ValueError, match=r"checkpoint must be a path \(str or os\.PathLike\), but got int"):
        spsa_mix.minimize(_problem(), k=4, maxiter=3, checkpoint=3)


def test_every_few_steps_and_at_the_end(tmp_path, monkeypatch):
    from spsa_mix.core import checkpoint as ckpt

    written = []
    real = ckpt.write_json
    monkeypatch.setattr(ckpt, "write_json", lambda state, path, **kw: (written.append(state["run"]["nit"]),
                                                                       real(state, path, **kw))[1])
    spsa_mix.minimize(_problem(), k=4, maxiter=10, seed=0, checkpoint=tmp_path / "s", checkpoint_every=4)
    assert written == [4, 8, 10]


class _Stream:
    """A minibatch objective like BlendedObjective: each call draws the next noise from a
    generator seeded once; ``load_state_dict`` skips the draws of the saved run, which is
    right only on an objective that has drawn nothing yet (a shuffled DataLoader's order
    depends on what its generator gave before)."""

    def __init__(self):
        self.rng, self.drawn = np.random.default_rng(7), 0
        self.q = Quadratic.random(4, rng=0)

    def __call__(self, a):
        a = np.asarray(a)
        self.drawn += 1
        shift = 0.05 * self.rng.normal(size=a.shape[-1])
        return np.array([self.q(p) + float(p @ shift) for p in a.reshape(-1, a.shape[-1])]).reshape(a.shape[:-1])

    def state_dict(self):
        return {"drawn": self.drawn}

    def load_state_dict(self, state):
        for _ in range(state["drawn"]):
            self.rng.normal(size=4)
        self.drawn = state["drawn"]


@pytest.mark.parametrize(("vectorized", "start", "rule"), [(True, "best", "best"), (False, "best", "best"),
                                                          (True, "auto", "race")])
def test_start_best_resumes_bit_for_bit_without_scoring_the_candidates_again(vectorized, start, rule, tmp_path):
    path, copy = tmp_path / "run.state", tmp_path / "at_step_6.state"

    def keep_step_6(info):
        if info.nit == 6:  # the file as a SIGKILL after step 6 would leave it (written every 2 steps)
            copy.write_bytes(path.read_bytes())

    kw = dict(k=4, max_evals=200, seed=5, vectorized=vectorized, checkpoint_every=2, start=start)
    full = spsa_mix.minimize(_Stream(), checkpoint=path, callback=keep_step_6, **kw)
    assert full.start["chosen"] is not None and full.nit > 20
    saved = json.loads(copy.read_text())
    assert saved["fingerprint"]["start"] == rule and saved["start"]["losses"] == full.start["losses"]
    os.replace(copy, path)
    resumed_objective = _Stream()
    res = spsa_mix.minimize(resumed_objective, checkpoint=path, **kw)
    assert res.resumed_from == 6 and res.start == full.start
    _assert_same_run(res, full)
    # a file of a start="uniform" run is refused by a start="best" call, naming the setting
    spsa_mix.minimize(_Stream(), checkpoint=tmp_path / "u.state", **{**kw, "start": "uniform"})
    with pytest.raises(ValueError, match="start"):
        spsa_mix.minimize(_Stream(), checkpoint=tmp_path / "u.state", **{**kw, "max_evals": 300})


@pytest.mark.parametrize(("first", "then"), [(40, 60), (40, 80), (20, 1000), (200, 400)])
def test_a_larger_budget_resumes_as_the_run_began(tmp_path, first, then):
    """start="auto" chooses by the budget; a resumed run keeps the start its first call chose
    (the budget may grow: docs), never final_eval=False from the best start's inner run."""
    f = lambda a: float((a[0] - 0.7) ** 2)  # noqa: E731
    path = tmp_path / "run.state"
    done = spsa_mix.minimize(f, k=3, max_evals=first, seed=0, checkpoint=path)
    began = json.loads(path.read_text())["fingerprint"]["start"]
    more = spsa_mix.minimize(f, k=3, max_evals=then, seed=0, checkpoint=path)
    assert more.resumed_from == done.nit and more.nit > done.nit and more.nfev <= then
    assert json.loads(path.read_text())["fingerprint"]["start"] == began
    if began == "best":  # the candidates are not scored again, nor counted twice
        assert more.start["losses"] == done.start["losses"] and more.start["repeats"][0] == done.start["repeats"][0]
        assert more.history["nfev"][0] == done.history["nfev"][0]


def test_an_asked_start_other_than_the_runs_is_refused(tmp_path):
    f = lambda a: float((a[0] - 0.7) ** 2)  # noqa: E731
    spsa_mix.minimize(f, k=3, max_evals=40, seed=0, checkpoint=tmp_path / "auto.state")  # auto: began at x0
    spsa_mix.minimize(f, k=3, max_evals=60, seed=0, checkpoint=tmp_path / "auto.state", start="uniform")
    with pytest.raises(ValueError, match="written by a run with start='auto', but this call has start='best'"):
        spsa_mix.minimize(f, k=3, max_evals=400, seed=0, checkpoint=tmp_path / "auto.state", start="best")
    spsa_mix.minimize(f, k=3, max_evals=200, seed=0, checkpoint=tmp_path / "best.state", start="best")
    with pytest.raises(ValueError, match="written by a run with start='best', but this call has start='uniform'"):
        spsa_mix.minimize(f, k=3, max_evals=400, seed=0, checkpoint=tmp_path / "best.state", start="uniform")
    spsa_mix.minimize(f, k=3, max_evals=200, seed=0, checkpoint=tmp_path / "race.state", start="race")
    assert json.loads((tmp_path / "race.state").read_text())["fingerprint"]["start"] == "race"
    for other in ("best", "uniform"):
        with pytest.raises(ValueError, match=f"written by a run with start='race', but this call has start='{other}'"):
            spsa_mix.minimize(f, k=3, max_evals=400, seed=0, checkpoint=tmp_path / "race.state", start=other)
    more = spsa_mix.minimize(f, k=3, max_evals=400, seed=0, checkpoint=tmp_path / "race.state")  # auto goes on
    assert more.resumed_from is not None and more.nfev <= 400
