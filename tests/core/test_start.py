"""start='best': the candidates are scored and counted, the run starts from the best, and the
answer is never worse than the candidate on the final comparison."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import spsa_mix
from spsa_mix import ObjectiveError, Status
from spsa_mix.core.start import VERTEX_EPS, candidates, resolve_start
from spsa_mix.problems import Quadratic


def far_vertex(a):
    """Flat around the uniform point (no slope for a finite difference to see), a basin
    towards vertex 0 beyond alpha_0 = 0.5."""
    a = np.asarray(a)
    return 1.0 - np.clip((a[..., 0] - 0.5) / 0.5, 0.0, 1.0) ** 2 + 0.01 * a[..., 1]


@given(max_evals=st.integers(1, 80), m=st.integers(1, 3), final_eval=st.booleans())
@settings(deadline=None, max_examples=40)
def test_budget_counts_every_evaluation(max_evals, m, final_eval):
    calls = []
    res = spsa_mix.minimize(lambda a: calls.append(a) or float(a[0]), k=3, m=m, max_evals=max_evals,
                            final_eval=final_eval, seed=0, start="best")
    assert len(calls) == res.nfev == res.cost <= max_evals
    assert all(np.all(np.asarray(c) > 0) for c in calls)  # every point strictly inside
    if res.nit and max_evals >= 4:
        assert res.history["nfev"][0] > 4  # the 4 candidates come first


def test_the_vertex_basin_is_found_and_the_uniform_start_misses_it():
    best = spsa_mix.minimize(far_vertex, k=5, max_evals=300, seed=0)  # start="auto": best for spsa
    uniform = spsa_mix.minimize(far_vertex, k=5, max_evals=300, seed=0, start="uniform")
    assert best.start["chosen"] == "vertex 0" and best.x[0] > 0.99
    assert uniform.x[0] < 0.5 and far_vertex(best.x) < far_vertex(uniform.x) - 0.5
    assert best.success and best.nfev <= 300


@given(k=st.integers(2, 12), seed=st.integers(0, 1000))
@settings(deadline=None, max_examples=25)
def test_never_worse_than_the_candidates_on_a_deterministic_objective(k, seed):
    q = Quadratic.random(k, rng=seed, optimum="boundary")
    res = spsa_mix.minimize(q, k=k, max_evals=200, seed=seed, start="best")
    pts, _ = candidates(spsa_mix.Domain(k))
    assert res.fun == pytest.approx(q(res.x), abs=1e-12)
    assert res.fun <= min(q(p) for p in pts) + 1e-12


def test_the_candidate_is_returned_when_learning_makes_things_worse():
    # lr so large that every step overshoots: the learned point loses to the best candidate
    q = Quadratic.random(4, rng=0)
    res = spsa_mix.minimize(q, k=4, max_evals=60, seed=0, start="best", lr=50.0)
    assert res.start["returned"] == res.start["chosen"] and "scored lower" in res.message
    assert res.fun == pytest.approx(min(res.start["losses"]))


def test_vectorized_objectives_score_the_candidates_in_one_call():
    shapes = []

    def f(points):
        shapes.append(points.shape)
        return ((points - 0.2) ** 2).sum(axis=1)

    res = spsa_mix.minimize(f, k=4, max_evals=100, seed=0, vectorized=True, start="best")
    assert shapes[0] == (5, 4) and shapes[-1] == (2, 4)  # candidates, ..., the final pair
    assert res.nfev == sum(s[0] for s in shapes) <= 100


def test_extra_coordinates_stay_at_the_start_in_the_candidates():
    domain = spsa_mix.Domain(3, positive=1, names=("scale",))
    pts, names = candidates(domain, x0=[0.2, 0.3, 0.5, 2.0])
    assert pts.shape == (4, 4) and np.all(pts[:, 3] == 2.0) and names[0] == "start"
    np.testing.assert_allclose(pts[2, :3], [VERTEX_EPS / 3, 1 - VERTEX_EPS + VERTEX_EPS / 3, VERTEX_EPS / 3])
    f = lambda x: float(((x[:3] - [0.6, 0.3, 0.1]) ** 2).sum() + np.log(x[3] / 2) ** 2)  # noqa: E731
    res = spsa_mix.minimize(f, k=domain, max_evals=400, seed=0, start="best", lr=0.05)
    assert res.success and set(res.extras) == {"scale"} and res.alpha.shape == (3,)


def test_validation_decides_the_final_comparison_without_budget():
    q = Quadratic.random(3, rng=1)
    vals = []
    res = spsa_mix.minimize(q, k=3, max_evals=100, seed=0, start="best", val_objective=lambda a: vals.append(a) or
                            q(a), val_every=5)
    assert res.start["final_losses"][0] == res.val_fun or res.start["returned"] != "learned"
    assert res.nfev <= 100 and len(vals) == res.nval + 1  # the candidate's validation is the extra one


def test_errors_number_the_evaluations_from_the_first_candidate():
    calls = {"n": 0}

    def f(a):
        calls["n"] += 1
        if calls["n"] == 13:
            raise RuntimeError("GPU on fire")
        return float(a[0])

    with pytest.raises(ObjectiveError, match=r"at evaluation 13 of method 'spsa': RuntimeError: GPU on fire") as info:
        spsa_mix.minimize(f, k=3, max_evals=100, seed=0, start="best")
    assert info.value.partial_result.nfev == 12

    def bad(a):
        raise ValueError("no")

    with pytest.raises(ObjectiveError, match=r"scoring the 4 start candidates \(evaluations 1 to 4\): ValueError: no"):
        spsa_mix.minimize(bad, k=3, max_evals=100, seed=0, start="best")


def test_ctrl_c_while_scoring_the_candidates_returns_the_start():
    def f(a):
        raise KeyboardInterrupt

    res = spsa_mix.minimize(f, k=3, max_evals=100, seed=0, start="best")
    assert res.status is Status.INTERRUPTED and not res.success
    np.testing.assert_allclose(res.x, np.full(3, 1 / 3))


def test_a_budget_that_holds_only_the_candidates_returns_the_best_of_them():
    res = spsa_mix.minimize(far_vertex, k=4, max_evals=6, seed=0, start="best")
    assert res.nit == 0 and res.nfev == 5 and res.start["returned"] == "vertex 0"


def test_auto_is_the_race_for_spsa_on_an_evaluation_budget_only():
    assert resolve_start("auto", method="spsa", max_evals=None, step_cost=2, k=3) == "uniform"
    assert resolve_start("auto", method="nevergrad:CMA", max_evals=10_000, step_cost=1, k=3) == "uniform"
    assert resolve_start("auto", method="spsa", max_evals=10_000, step_cost=2, k=3) == "race"
    # the race needs two runs of MIN_RACE_STEPS: a budget that leaves 20 steps but not those is "best"
    assert resolve_start("auto", method="spsa", max_evals=48, step_cost=2, k=3) == "best"
    assert resolve_start("race", method="spsa", max_evals=30, step_cost=2, k=3) == "best"
    plain = spsa_mix.minimize(lambda a: float(a[0]), k=3, maxiter=7, seed=0)
    assert plain.nfev == 15 and "start" not in plain
    with pytest.raises(ValueError, match=r"start must be one of \['auto', 'race', 'best', 'uniform'\], but got 'vertex'"):
        spsa_mix.minimize(lambda a: 0.0, k=3, start="vertex")


def test_the_message_states_the_budget_the_user_gave():
    q = Quadratic.random(3, rng=1)
    res = spsa_mix.minimize(q, k=3, max_evals=200, seed=0)  # start="auto": candidates, steps, final comparison
    assert res.message.startswith("max_evals=200 reached ("), res.message
    n = len(res.start["candidates"]) * res.start["repeats"][0]
    assert f"{n} on the start candidates" in res.message and "on the steps" in res.message
    assert "on the final comparison" in res.message and res.nfev <= 200
