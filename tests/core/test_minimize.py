import json
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import spsa_mix
from spsa_mix import ObjectiveError, OptimizeResult, Status
from spsa_mix.problems import Quadratic, ScaledQuadratic

# ---------------------------------------------------------------- convergence (properties)
# Stated tolerance and budget: with max_evals=3000, m=1, lr=0.05 and a cosine step size,
# the relative suboptimality (f(x) - f*) / (f(1/k) - f*) is below 1e-2 for k in 2..20 and
# condition number 10, optimum inside the simplex or on its boundary (measured worst case
# over 40 problems: 5e-3, see docs/directions.md).
TOL_REL = 1e-2
BUDGET = 3000


@given(k=st.integers(2, 20), seed=st.integers(0, 10_000), optimum=st.sampled_from(["interior", "boundary"]))
def test_reaches_the_independently_computed_optimum(k, seed, optimum):
    q = Quadratic.random(k, rng=seed, optimum=optimum)
    x_star = q.minimizer()  # closed form (interior) or SciPy SLSQP (boundary)
    if optimum == "boundary":
        assert x_star.min() < 1e-6  # the optimum really lies on a face
    f_star, f_0 = q.value(x_star), q.value(np.full(k, 1 / k))
    seen = []
    res = spsa_mix.minimize(
        lambda pts: (seen.append(pts.copy()), q(pts))[1], k=k, vectorized=True,
        max_evals=BUDGET, lr=0.05, lr_schedule="cosine", seed=seed,
    )
    assert res.success and res.nfev <= BUDGET
    assert (q.value(res.x) - f_star) / (f_0 - f_star) < TOL_REL
    probes = np.concatenate(seen)
    assert np.all(probes > 0) and np.allclose(probes.sum(axis=1), 1.0, atol=1e-12)
    hx = res.history["x"]
    assert np.all(hx > 0) and np.allclose(hx.sum(axis=1), 1.0, atol=1e-12)
    if optimum == "interior":
        assert np.abs(res.x - x_star).max() < 0.05


def test_layerwise_several_simplices():
    qs = [Quadratic.random(4, rng=s) for s in range(3)]
    f = lambda a: sum(q.value(row) for q, row in zip(qs, a, strict=False))  # noqa: E731
    res = spsa_mix.minimize(f, k=(3, 4), max_evals=3000, lr=0.05, lr_schedule="cosine", seed=0)
    assert res.x.shape == (3, 4)
    np.testing.assert_allclose(res.x, np.stack([q.minimizer() for q in qs]), atol=0.05)


@pytest.mark.parametrize("method", ["spsa", "forward-grad", "backprop"])
def test_builtin_methods_share_the_result_type(method):
    q = Quadratic.random(5, rng=0)
    res = spsa_mix.minimize(q, k=5, method=method, max_evals=300, seed=0, vectorized=True)
    assert isinstance(res, OptimizeResult)
    for field in ["x", "fun", "nit", "nfev", "njev", "cost", "success", "status", "message", "method", "history"]:
        assert field in res and getattr(res, field) is res[field]
    assert res.method == method and res.status is Status.BUDGET and res.success
    assert res.cost <= 300
    hist = res.history
    for key in ["step", "x", "loss", "lr", "grad_norm", "nfev", "cost"]:
        assert len(hist[key]) == res.nit
    assert hist["x"].shape == (res.nit, 5)
    np.testing.assert_array_equal(hist["step"], np.arange(res.nit))
    assert np.all(np.diff(hist["nfev"]) > 0)
    assert res.fun == pytest.approx(q.value(res.x))  # final evaluation at res.x
    assert q.value(res.x) < q.value(np.full(5, 0.2))
    json.dumps(res.to_json())


def test_budget_counts_for_each_method():
    q = Quadratic.random(4, rng=0)
    spsa = spsa_mix.minimize(q, k=4, max_evals=101, m=2, seed=0, start="uniform")
    assert spsa.nit == 25 and spsa.nfev == 101 and spsa.cost == 101  # 25 steps x 4 probes + final
    fg = spsa_mix.minimize(q, k=4, method="forward-grad", max_evals=100, m=2, seed=0)
    assert fg.nit == 33 and fg.njev == 66 and fg.cost == 100  # 33 x (1 + 2) + final
    bp = spsa_mix.minimize(q, k=4, method="backprop", max_evals=100, backward_cost=3.0)
    assert bp.nit == 24 and bp.njev == 24 and bp.cost == 24 * 4 + 1
    no_final = spsa_mix.minimize(q, k=4, max_evals=100, seed=0, start="uniform", final_eval=False)
    assert no_final.nit == 50 and no_final.nfev == 100
    assert no_final.fun == no_final.history["loss"][-1]


@given(max_evals=st.integers(1, 60), m=st.integers(1, 4), final_eval=st.booleans())
def test_budget_never_exceeded(max_evals, m, final_eval):
    calls = []
    res = spsa_mix.minimize(lambda a: calls.append(a) or 1.0, k=3, m=m, max_evals=max_evals,
                            final_eval=final_eval, seed=0, start="uniform")
    assert len(calls) == res.nfev <= max_evals
    assert res.nit == (max_evals - int(final_eval)) // (2 * m)


def test_maxiter_and_default_budget():
    res = spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=7, seed=0)
    assert res.nit == 7 and res.message == "maxiter=7 reached"
    assert spsa_mix.minimize(lambda a: 0.0, k=2, seed=0).nit == 1000


def test_seed_reproducibility_and_rng():
    q = Quadratic.random(6, rng=1, noise_std=0.0)
    a = spsa_mix.minimize(q, k=6, max_evals=200, seed=11)
    b = spsa_mix.minimize(q, k=6, max_evals=200, seed=11)
    c = spsa_mix.minimize(q, k=6, max_evals=200, seed=12)
    d = spsa_mix.minimize(q, k=6, max_evals=200, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.history["x"], b.history["x"])
    np.testing.assert_array_equal(a.x, d.x)
    assert not np.array_equal(a.x, c.x)


def test_resume_from_result_state_equals_uninterrupted():
    q = Quadratic.random(5, rng=4)
    full = spsa_mix.minimize(q, k=5, maxiter=60, seed=3, final_eval=False, lr=0.01)  # a constant step
    first = spsa_mix.minimize(q, k=5, maxiter=20, seed=3, final_eval=False, lr=0.01)
    rest = spsa_mix.minimize(q, k=5, maxiter=40, seed=999, final_eval=False, initial_state=first.state)
    np.testing.assert_array_equal(rest.x, full.x)


def test_vectorized_sees_all_probes_of_a_step_at_once():
    shapes = []
    q = Quadratic.random(4, rng=0)
    spsa_mix.minimize(lambda p: (shapes.append(p.shape), q(p))[1], k=4, m=3, vectorized=True, maxiter=2, seed=0)
    assert shapes == [(6, 4), (6, 4), (1, 4)]


def test_callback_receives_intermediate_result_and_can_stop():
    seen = []

    def cb(r):
        seen.append((r.nit, r.nfev, r.x.copy()))
        if r.nit == 5:
            raise StopIteration

    res = spsa_mix.minimize(lambda a: float(a[0]), k=3, callback=cb, max_evals=1000, seed=0, start="uniform")
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5] and seen[-1][1] == 10
    assert res.status is Status.CALLBACK and not res.success and res.nit == 5
    assert "StopIteration" in res.message
    np.testing.assert_array_equal(res.x, seen[-1][2])


def test_the_last_iterate_is_validated_when_the_last_step_was_not_a_check():
    q = Quadratic.random(3, rng=2, noise_std=0.0)
    seen: list[np.ndarray] = []
    val = lambda a: seen.append(np.array(a)) or q(a)  # noqa: E731
    res = spsa_mix.minimize(q, k=3, max_evals=12, lr=0.2, val_objective=val, val_every=10, seed=0, start="uniform")
    assert res.nit == 5 and res.nval == 2 == len(seen)  # the start, and the last iterate (step 5 is no check)
    np.testing.assert_array_equal(seen[-1], res.history["x"][-1])
    assert res.history["val_loss"][-1] == q(seen[-1]) and np.isnan(res.history["val_loss"][:-1]).all()
    assert res.val_fun == min(q(s) for s in seen)
    np.testing.assert_array_equal(res.x, seen[int(np.argmin([q(s) for s in seen]))])
    assert q(res.x) < q(np.full(3, 1 / 3))  # five steps beat the start: the search is not discarded
    on_a_check = spsa_mix.minimize(q, k=3, max_evals=21, val_objective=q, val_every=5, seed=0, start="uniform")
    assert on_a_check.nit == 10 and on_a_check.nval == 3  # the last step was a check: no extra one


def test_validation_patience_returns_best_point():
    q = Quadratic.random(4, rng=5)
    target = np.array([0.7, 0.1, 0.1, 0.1])
    val = lambda a: float(np.sum((a - target) ** 2))  # noqa: E731 - disagrees with the training loss
    res = spsa_mix.minimize(q, k=4, max_evals=4000, lr=0.05, val_objective=val, val_every=5, patience=3, seed=0)
    assert res.status is Status.CONVERGED and res.success
    assert "did not improve for 3 checks" in res.message
    vals = res.history["val_loss"]
    checked = vals[~np.isnan(vals)]
    assert len(checked) == res.nit // 5 and res.nval == len(checked) + 1  # + the check at the start
    assert res.val_fun == pytest.approx(val(res.x)) and res.val_fun <= checked.min() + 1e-15
    assert res.nit < 4000 // 2 - 1  # stopped early


def test_nonfinite_loss_stops_and_keeps_last_finite_iterate():
    calls = {"n": 0}

    def f(a):
        calls["n"] += 1
        return np.nan if calls["n"] == 21 else float(a[0])

    res = spsa_mix.minimize(f, k=3, max_evals=100, seed=0, start="uniform")
    assert res.status is Status.NONFINITE and not res.success
    assert res.nit == 10 and res.nfev == 21
    assert "the objective returned nan" in res.message and "evaluation 21" in res.message
    np.testing.assert_array_equal(res.x, res.history["x"][-1])
    assert res.fun == res.history["loss"][-1]


def test_keyboard_interrupt_returns_result_so_far():
    calls = {"n": 0}

    def f(a):
        calls["n"] += 1
        if calls["n"] == 31:
            raise KeyboardInterrupt
        return float(a[1])

    res = spsa_mix.minimize(f, k=3, max_evals=100, seed=0, start="uniform")
    assert res.status is Status.INTERRUPTED and not res.success and res.nit == 15
    assert "interrupted" in res.message


def test_objective_error_carries_partial_result():
    calls = {"n": 0}

    def f(a):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("GPU on fire")
        return float(a[0])

    with pytest.raises(ObjectiveError, match=r"the objective raised at evaluation 13 of method 'spsa': RuntimeError: GPU on fire") as info:
        spsa_mix.minimize(f, k=3, max_evals=100, seed=0, start="uniform")
    partial = info.value.partial_result
    assert partial.nit == 6 and partial.status is Status.ERROR and len(partial.history["x"]) == 6
    assert isinstance(info.value.__cause__, RuntimeError)


def test_objective_returning_wrong_shape():
    with pytest.raises(ObjectiveError, match=r"must return one float .* vectorized=True"):
        spsa_mix.minimize(lambda a: a, k=3, maxiter=2)
    with pytest.raises(ObjectiveError, match=r"must return 2 losses .* but returned ndarray of shape \(3,\)"):
        spsa_mix.minimize(lambda p: np.zeros(3), k=3, vectorized=True, maxiter=2)


def test_schedules_reach_the_history():
    res = spsa_mix.minimize(lambda a: float(a[0]), k=3, maxiter=50, mu=0.1, mu_schedule="power",
                            lr_schedule="cosine", seed=0, lr=0.01)
    assert res.history["mu"][0] == pytest.approx(0.1) and res.history["mu"][-1] == pytest.approx(0.1 * 50**-0.101)
    assert res.history["lr"][0] == pytest.approx(0.01) and res.history["lr"][-1] < 0.001
    custom = spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=3, lr_schedule=lambda n: 2.0**-n, seed=0, lr=0.01)
    np.testing.assert_allclose(custom.history["lr"], [0.01, 0.005, 0.0025])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k=0), r"k must be an integer >= 1"),
        (dict(max_evals=0), r"max_evals must be an integer >= 1, but got 0"),
        (dict(maxiter=-3), r"maxiter must be an integer >= 1, but got -3"),
        (dict(method="adam"), r"unknown method 'adam'; available: \['backprop', 'forward-grad', 'spsa'"),
        (dict(method="backprop"), r"method='backprop' needs an objective with a value_and_grad\(\) method"),
        (dict(method="forward-grad"), r"method='forward-grad' needs an objective with a jvp\(\) method"),
        (dict(method="backprop", mu=0.1), r"method 'backprop' does not use mu=0\.1; it accepts"),
        (dict(patience=3), r"patience=3 needs val_objective"),
        (dict(val_every=0), r"val_every must be an integer >= 1, but got 0"),
        (dict(callback=5), r"callback must be callable, but got 5"),
        (dict(vectorized="yes"), r"vectorized must be True or False, but got 'yes'"),
        (dict(x0=[0.9, 0.2, 0.1]), r"x0 must sum to 1"),
        (dict(backward_cost=0), r"method 'spsa' does not use backward_cost=0"),
        (dict(mu=-0.1), r"mu must be positive, but got -0\.1"),
        (dict(m=0), r"m must be an integer >= 1, but got 0"),
        (dict(lr=0), r"lr must be positive, but got 0"),
    ],
)
def test_minimize_argument_errors(kwargs, match):
    kwargs.setdefault("k", 3)
    with pytest.raises(ValueError, match=match):
        spsa_mix.minimize(lambda a: 0.0, **kwargs)
    with pytest.raises(ValueError, match=r"objective must be callable, but got int"):
        spsa_mix.minimize(3, k=3)


def test_progress_bar_and_logging(caplog, capsys):
    import logging

    pytest.importorskip("tqdm")  # an optional dependency (the extras extra)
    with caplog.at_level(logging.INFO, logger="spsa_mix"):
        spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=5, seed=0, show_progress_bar=True)
    assert "spsa finished: maxiter=5 reached" in caplog.text
    assert "5/5" in capsys.readouterr().err


def test_progress_bar_without_tqdm_fails_before_any_evaluation(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # what `import tqdm` meets when it is not installed
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    calls = []
    with pytest.raises(ValueError, match=r"show_progress_bar=True needs tqdm, which is not installed: "
                                         r"pip install tqdm \(or pip install 'spsa-mix\[extras\]'\)"):
        spsa_mix.minimize(lambda a: calls.append(a) or 0.0, k=3, maxiter=5, seed=0, show_progress_bar=True)
    assert calls == []
    assert spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=5, seed=0).nit == 5  # no bar asked: no tqdm needed


# ---------------------------------------------------------------- coordinates beside the simplex
# SPSA's minimiser is biased by O(mu^2): here s = 2.95 with the default mu = 0.05 (log s moves
# by +-0.05 in a probe) whatever the budget, 2.99 with mu = 0.02.
@pytest.mark.parametrize(("method", "budget", "kw"), [("spsa", 3000, {"mu": 0.02}), ("forward-grad", 900, {}),
                                                      ("backprop", 600, {})])
def test_every_builtin_method_learns_the_scale(method, budget, kw):
    p = ScaledQuadratic.random(4, rng=1, s_star=3.0)
    res = spsa_mix.minimize(p, k=p.domain, method=method, max_evals=budget, lr=0.05, lr_schedule="cosine",
                            seed=0, vectorized=True, **kw)
    assert res.success and res.cost <= budget
    assert res.x.shape == (5,) and res.alpha.shape == (4,) and list(res.extras) == ["scale"]
    np.testing.assert_array_equal(res.alpha, res.x[:4])
    assert res.extras["scale"] == res.x[4] == pytest.approx(3.0, rel=0.01)
    np.testing.assert_allclose(res.alpha, p.c, atol=0.01)
    assert res.history["x"].shape == (res.nit, 5)  # history rows keep the whole point
    assert res.to_json()["extras"] == {"scale": res.x[4]}


def test_extras_reach_the_callback_and_validation():
    p = ScaledQuadratic.random(3, rng=0)
    seen, checked = [], []
    spsa_mix.minimize(p, k=p.domain, maxiter=3, seed=0, callback=lambda r: seen.append((r.x, r.alpha, r.extras)),
                      val_objective=lambda x: (checked.append(x.shape), 0.0)[1], val_every=1)
    assert [s[0].shape for s in seen] == [(4,)] * 3 and seen[0][1].shape == (3,) and "scale" in seen[0][2]
    assert checked == [(4,)] * 4


def test_plain_simplex_results_are_unchanged_by_the_domain():
    q = Quadratic.random(4, rng=0)
    a = spsa_mix.minimize(q, k=4, max_evals=60, seed=0)
    b = spsa_mix.minimize(q, k=spsa_mix.Domain(4), max_evals=60, seed=0)
    assert "alpha" not in a and "extras" not in a and set(a) == set(b)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.history["x"], b.history["x"])


def test_x0_is_the_whole_point_of_the_domain():
    p = ScaledQuadratic.random(3, rng=0)
    res = spsa_mix.minimize(p, k=p.domain, maxiter=1, seed=0, x0=[0.2, 0.3, 0.5, 4.0], final_eval=False, lr=0.01)
    np.testing.assert_allclose(res.state["beta"][3], np.log(4.0), atol=0.05)  # one step from log 4
    with pytest.raises(ValueError, match=r"x0 must be a point of Domain\(simplex=\(3,\), positive=1, "
                                         r"names=\('scale',\)\) of shape \(4,\)"):
        spsa_mix.minimize(p, k=p.domain, x0=[0.2, 0.3, 0.5])


# ---------------------------------------------------------------- faults of the final evaluation
def _failing_at(n_call, fault):
    calls = {"n": 0}

    def f(a):
        calls["n"] += 1
        if calls["n"] == n_call:
            if fault == "nan":
                return float("nan")
            raise fault
        return float(a[0])

    return f


def test_ctrl_c_in_the_final_evaluation_ends_as_interrupted():
    res = spsa_mix.minimize(_failing_at(11, KeyboardInterrupt()), k=3, maxiter=5, seed=0)  # 5 steps of 2, then the final one
    assert res.status is Status.INTERRUPTED and not res.success and res.nit == 5
    assert "final evaluation" in res.message
    assert res.fun == res.history["loss"][-1]  # the last step's estimate


def test_nan_in_the_final_evaluation_ends_as_nonfinite():
    res = spsa_mix.minimize(_failing_at(11, "nan"), k=3, maxiter=5, seed=0)
    assert res.status is Status.NONFINITE and not res.success and res.nit == 5
    assert "final evaluation" in res.message and "nan" in res.message
    assert res.fun == res.history["loss"][-1] and np.isfinite(res.fun)


def test_an_exception_in_the_final_evaluation_raises_with_the_partial_result():
    with pytest.raises(ObjectiveError, match=r"the objective raised at evaluation 11 \(the final evaluation of the "
                                             r"returned point\) of method 'spsa': RuntimeError: disk full") as info:
        spsa_mix.minimize(_failing_at(11, RuntimeError("disk full")), k=3, maxiter=5, seed=0)
    partial = info.value.partial_result
    assert partial.status is Status.ERROR and partial.nit == 5 and partial.nfev == 10
    assert isinstance(info.value.__cause__, RuntimeError)


def test_val_objective_failures_are_reported_as_the_validation_objectives():
    def val(a):
        raise RuntimeError("no validation data")

    with pytest.raises(ObjectiveError, match=r"^val_objective raised at validation check 1 of method 'spsa': "
                                             r"RuntimeError: no validation data") as info:
        spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=5, seed=0, val_objective=val)
    assert "val_objective raised after 0 validation checks" in info.value.partial_result.message
    with pytest.raises(ObjectiveError, match=r"val_objective must return one float, but returned ndarray"):
        spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=5, seed=0, val_objective=lambda a: np.zeros(2))


# ---------------------------------------------------------------- resuming
@pytest.mark.parametrize(("lr_schedule", "mu_schedule"), [("cosine", "power"), ("power", "cosine")])
@pytest.mark.parametrize("method", ["spsa", "forward-grad", "backprop"])
def test_a_run_stopped_early_and_resumed_is_the_uninterrupted_one_with_schedules(method, lr_schedule, mu_schedule):
    q = Quadratic.random(4, rng=2)
    kw = dict(method=method, lr_schedule=lr_schedule, final_eval=False, vectorized=True)
    if method == "spsa":
        kw["mu_schedule"] = mu_schedule
    full = spsa_mix.minimize(q, k=4, maxiter=30, seed=1, **kw)

    def stop(info):
        if info.nit == 12:
            raise StopIteration

    first = spsa_mix.minimize(q, k=4, maxiter=30, seed=1, callback=stop, **kw)
    rest = spsa_mix.minimize(q, k=4, maxiter=18, initial_state=first.state, **kw)  # plans 18 steps, not 30
    np.testing.assert_array_equal(np.concatenate([first.history["lr"], rest.history["lr"]]), full.history["lr"])
    np.testing.assert_array_equal(rest.x, full.x)


def test_options_that_conflict_with_the_state_are_refused():
    q = Quadratic.random(3, rng=0)
    state = spsa_mix.minimize(q, k=3, maxiter=4, lr=0.02, mu=0.1, lr_schedule="cosine", seed=0).state
    resume = dict(k=3, maxiter=4, initial_state=state)
    spsa_mix.minimize(q, lr=0.02, mu=0.1, lr_schedule="cosine", **resume)  # the state's own values: accepted
    for kwargs, match in [
        (dict(lr=0.1), r"lr=0\.1 conflicts with initial_state, which has lr=0\.02: a resumed run keeps the "
                       r"state's hyperparameters; drop lr or give the state's value"),
        (dict(mu=0.05), r"mu=0\.05 conflicts with initial_state, which has mu=0\.1"),
        (dict(betas=(0.8, 0.99)), r"betas=\(0\.8, 0\.99\) conflicts with initial_state, which has betas=\(0\.9, 0\.99\)"),
        (dict(directions="gaussian"), r"directions='gaussian' conflicts with initial_state, which has "
                                      r"directions='rademacher'"),
        (dict(x0=[0.2, 0.3, 0.5]), r"x0 conflicts with initial_state: a resumed run continues from the state's point"),
        (dict(lr_schedule="power"), r"lr_schedule='power' conflicts with initial_state, whose lr_schedule is "
                                    r"\{'name': 'cosine', 'total_steps': 4, 'floor': 0\.01\}"),
    ]:
        with pytest.raises(ValueError, match=match):
            spsa_mix.minimize(q, **kwargs, **resume)


def test_a_callable_schedule_must_be_given_again_to_resume():
    q = Quadratic.random(3, rng=0)
    halve = lambda n: 0.5 ** n  # noqa: E731
    state = spsa_mix.minimize(q, k=3, maxiter=3, lr_schedule=halve, seed=0, lr=0.01).state
    with pytest.raises(ValueError, match=r"state\['config'\]\['lr_schedule'\] is a callable, which a state cannot "
                                         r"hold: build this optimiser with that callable \(lr_schedule=\.\.\.\)"):
        spsa_mix.minimize(q, k=3, maxiter=3, initial_state=state)
    res = spsa_mix.minimize(q, k=3, maxiter=3, initial_state=state, lr_schedule=halve)
    np.testing.assert_allclose(res.history["lr"], 0.01 * 0.5 ** np.arange(3, 6))


# ---------------------------------------------------------------- what the objective and the callback return (issue 13, item 10)
@pytest.mark.parametrize("value", ["0.5", True, np.bool_(False), None, b"1", 1 + 2j, [None]])
def test_an_objective_returning_something_other_than_a_number_is_refused(value):
    with pytest.raises(ObjectiveError, match=r"the objective must return one float, but returned "
                                             + type(value).__name__):
        spsa_mix.minimize(lambda a: value, k=2, maxiter=2, seed=0)
    with pytest.raises(ObjectiveError, match=r"the objective must return 2 losses \(numbers\)"):
        spsa_mix.minimize(lambda pts: [value] * len(pts), k=2, maxiter=2, seed=0, vectorized=True)


def test_numbers_of_every_kind_are_losses():
    for value in [1, 0.5, np.float32(0.5), np.int64(1), np.array(0.5), [0.5], np.array([0.5], dtype=object)]:
        assert spsa_mix.minimize(lambda a, v=value: v, k=2, maxiter=2, seed=0).success


def test_x0_and_tell_name_what_is_not_a_number():
    with pytest.raises(ValueError, match=r"x0 must be an array of numbers, but got str: 'abc'"):
        spsa_mix.minimize(lambda a: 0.0, k=3, x0="abc", maxiter=2)
    with pytest.raises(ValueError, match=r"x0 must be an array of numbers, but got list: \['a', 'b', 'c', 'd'\]"):
        spsa_mix.minimize(lambda a: 0.0, k=spsa_mix.Domain(3, positive=1), x0=list("abcd"), maxiter=2)
    with pytest.raises(ValueError, match=r"x0 must be an array of numbers, but got str"):
        spsa_mix.minimize(lambda a: 0.0, k=3, x0="abc", method="optuna:random", max_evals=2)
    opt = spsa_mix.SimplexSPSA(2, seed=0)
    opt.ask()
    for losses in (["a", "b"], [None, 1.0], [True, False], ["0.5", "0.1"]):
        with pytest.raises(ValueError, match=r"tell\(\) expects 2 losses as numbers, but got list"):
            opt.tell(losses)
    opt.tell([1.0, 0.5])  # the refusals left the pending probes
    grad = spsa_mix.SimplexGradient(2)
    grad.ask()
    with pytest.raises(ValueError, match=r"tell\(\) expects a gradient of numbers, but got list"):
        grad.tell(0.0, ["a", "b"])


def test_a_callback_raising_keeps_the_finished_steps_in_the_partial_result():
    q = Quadratic.random(3, rng=0)

    def callback(info):
        if info.nit == 4:
            raise RuntimeError("plot window closed")

    with pytest.raises(ObjectiveError, match=r"the callback raised after step 4 of method 'spsa': RuntimeError: plot "
                                             r"window closed \(the 4 steps completed are in \.partial_result\)") as e:
        spsa_mix.minimize(q, k=3, maxiter=10, seed=0, callback=callback)
    partial = e.value.partial_result
    assert partial.status is Status.ERROR and partial.nit == 4 and len(partial.history["loss"]) == 4
    assert isinstance(e.value.__cause__, RuntimeError)
    full = spsa_mix.minimize(q, k=3, maxiter=10, seed=0)  # the same run, not stopped: its step 4 is the partial's
    np.testing.assert_array_equal(partial.x, full.history["x"][3])


def test_the_radius_biases_a_learned_scale_by_order_mu_squared_and_a_decaying_radius_removes_it():
    # What docs/directions.md says ("When to change it"): SPSA settles where the smoothed
    # gradient vanishes, O(mu^2) from the optimum; for a learned scale most of it comes from
    # the logits' radius, so a smaller radius for the scale alone would not remove it.
    p = ScaledQuadratic.random(5, rng=0, s_star=3.0)
    kw = dict(k=p.domain, maxiter=1000, lr=0.05, lr_schedule="cosine", seed=0, vectorized=True, final_eval=False)
    s = {name: spsa_mix.minimize(p, **kw, **extra).extras["scale"] for name, extra in [
        ("mu=0.05", {}), ("mu=0.01", dict(mu=0.01)), ("cosine", dict(mu_schedule="cosine"))]}
    assert s["mu=0.05"] < 3.0 - 0.01  # about -0.7 %
    assert abs(s["mu=0.01"] - 3.0) < 0.003 and abs(s["cosine"] - 3.0) < 0.002
