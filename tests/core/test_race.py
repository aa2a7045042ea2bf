"""start='race' (the default): two short runs, from the start and from the best vertex, the
better continued; the traps of start='best' that it removes, its budget, record, ask/tell
state and checkpoints."""

import json
import os

import numpy as np
import pytest

import spsa_mix
from spsa_mix.core.optimizer import SimplexSPSA
from spsa_mix.core.race import MIN_RACE_STEPS, RACE_FRACTION, RacePlan, StartRace, race_plan
from spsa_mix.problems import Quadratic


def relative_gap(q: Quadratic, x: np.ndarray) -> float:
    f_star = q.minimum()
    return (q.value(x) - f_star) / (q.value(np.full(q.k, 1.0 / q.k)) - f_star)


def issue_quadratic() -> Quadratic:
    """Issue 19's trap: the 8th problem of k in (2, 5, 10, 20) x (interior, boundary) drawn
    from numpy.random.default_rng(12345) (k = 20, the minimiser on a face, three experts)."""
    rng = np.random.default_rng(12345)
    return [Quadratic.scattered(k, rng=rng) for k in (2, 5, 10, 20) for _ in range(2)][7]


def test_the_default_escapes_the_vertex_trap_on_the_quadratic():
    q = issue_quadratic()
    f = lambda a: q.value(a)  # noqa: E731  a new user's plain objective
    default = spsa_mix.minimize(f, k=20, max_evals=4000, seed=0)
    best = spsa_mix.minimize(f, k=20, max_evals=4000, seed=0, start="best")
    uniform = spsa_mix.minimize(f, k=20, max_evals=4000, seed=0, start="uniform")
    assert default.start["rule"] == "race" and default.start["chosen"] == "vertex 2"
    assert relative_gap(q, best.x) > 0.02  # the trap: 2.8 %, the run saturated near vertex 2
    assert relative_gap(q, default.x) < 0.01
    assert relative_gap(q, default.x) < 1.5 * relative_gap(q, uniform.x)
    assert default.nfev <= 4000 and default.success


def two_basins(k: int = 4):
    """A fast twin of the blended network's trap: the best single expert (vertex 0) sits in a
    shallow basin (floor 0.9), a deeper one (0.7) lies towards expert 1 and holds the uniform
    point; a run started at vertex 0 stays in its basin."""
    def bowl(weight, i, floor, curvature):
        p = np.full(k, (1 - weight) / k)
        p[i] += weight
        return lambda a: floor + curvature * ((np.asarray(a) - p) ** 2).sum(-1)

    shallow, deep = bowl(0.9, 0, 0.9, 1.0), bowl(0.5, 1, 0.7, 3.0)
    return lambda a: np.minimum(shallow(a), deep(a))


def test_the_default_leaves_the_best_experts_basin_when_a_deeper_one_is_in_reach():
    f = two_basins()
    for seed in range(3):
        default = spsa_mix.minimize(f, k=4, max_evals=400, seed=seed, vectorized=True)
        best = spsa_mix.minimize(f, k=4, max_evals=400, seed=seed, vectorized=True, start="best")
        assert default.start["chosen"] == "vertex 0" and default.start["race"]["winner"] == "start"
        assert f(best.x) > 0.89 and f(default.x) < 0.71


@pytest.mark.slow
def test_the_default_is_within_the_uniform_starts_spread_on_the_blended_network():
    """Issue 19's network trap: K = 10 digits experts (bench compare's), 400 evaluations; the
    start at the best vertex ended at 0.90-0.92 where the uniform start reaches 0.71."""
    pytest.importorskip("torch")
    import torch

    from spsa_mix.compare import network_problem

    torch.set_num_threads(1)
    prob = network_problem(10)

    def losses(start):
        return [prob.target_loss(spsa_mix.minimize(prob.make_objective(s), k=10, max_evals=400, seed=s,
                                                   vectorized=True, start=start).x) for s in range(3)]

    uniform, best, default = losses("uniform"), losses("best"), losses("auto")
    assert max(best) > max(uniform) + 0.1  # the trap shows at this size
    assert max(default) <= max(uniform) + 0.5 * (max(uniform) - min(uniform))


def test_the_plan_shares_the_budget():
    plan = race_plan(1000, step_cost=2.0)
    assert plan == RacePlan(race_steps=int(RACE_FRACTION * 1000 / 2), compare_calls=16, rest_steps=226)
    assert 2 * 2 * plan.race_steps + 3 * plan.compare_calls + 2 * plan.rest_steps <= 1000
    small = race_plan(60, step_cost=2.0)  # a continuation shorter than a racer: the racers share it all
    assert small is not None and small.rest_steps == 0 and small.race_steps >= MIN_RACE_STEPS
    assert race_plan(2 * 2 * MIN_RACE_STEPS, step_cost=2.0) is None  # no room for the comparison


def test_the_race_counts_every_evaluation_and_says_what_it_did():
    f = two_basins()
    evals = []
    res = spsa_mix.minimize(lambda p: evals.append(len(p)) or f(p), k=4, max_evals=300, seed=1, vectorized=True)
    race = res.start["race"]
    assert res.nfev == sum(evals) <= 300 and res.cost == res.nfev
    assert race["racers"] == ["start", "vertex 0"] and race["winner"] == "start"
    assert race["scored"] == ["run from start", "run from vertex 0", "vertex 0"] and len(race["scores"]) == 3
    assert race["scores"][0] < race["scores"][1] < race["scores"][2]
    plan = race_plan(300 - 5 * res.start["repeats"][0] - 2 * res.start["repeats"][1], 2.0)
    assert race["race_steps"] == plan.race_steps and race["continued_steps"] == plan.rest_steps
    assert res.nit == 2 * plan.race_steps + plan.rest_steps
    assert np.array_equal(np.unique(res.history["racer"]), [0, 1, 2])
    assert res.state["step"] == plan.rest_steps  # the continued run's SimplexSPSA state
    more = spsa_mix.minimize(f, k=4, maxiter=10, vectorized=True, initial_state=res.state)
    assert more.nit == 10  # res.state continues as any run's state


def test_a_start_that_wins_the_check_is_a_plain_run():
    q = Quadratic.random(5, rng=0, optimum="interior")  # the optimum is near the uniform point
    res = spsa_mix.minimize(q, k=5, max_evals=400, seed=0, vectorized=True)
    assert res.start["rule"] == "race" and res.start["chosen"] == "start" and "race" not in res.start
    assert "racer" not in res.history


def test_race_needs_spsa_and_a_budget_in_evaluations():
    with pytest.raises(ValueError, match="start='race' races two SPSA runs: it needs method='spsa', but got "
                                         "method='backprop'"):
        spsa_mix.minimize(Quadratic.random(3, rng=0), k=3, method="backprop", max_evals=300, start="race")
    with pytest.raises(ValueError, match="start='race' shares a budget in evaluations between two runs: give "
                                         "max_evals"):
        spsa_mix.minimize(lambda a: 0.0, k=3, maxiter=100, start="race")


def test_ask_tell_state_round_trips_mid_race():
    f = two_basins()

    def make(x0, steps):
        return SimplexSPSA(4, x0=x0, total_steps=steps, rng=rng)

    def new_race():
        return StartRace({"start": np.full(4, 0.25), "vertex 0": np.array([0.925, 0.025, 0.025, 0.025])},
                         reference=np.array([1.0, 0.0, 0.0, 0.0]), plan=RacePlan(15, 2, 30), make=make)

    rng = np.random.default_rng(3)
    whole = new_race()
    saved = None
    for i in range(200):
        if whole.done:
            break
        if i == 25:  # racer 1 stepping
            saved = json.loads(json.dumps(spsa_mix.io.to_jsonable(whole.state_dict())))
        whole.tell(f(whole.ask()))
    rng = np.random.default_rng(99)  # the state brings the generator
    resumed = new_race()
    resumed.load_state_dict(saved)
    assert resumed.phase == "race" and resumed.racer_index == 1
    while not resumed.done:
        resumed.tell(f(resumed.ask()))
    assert resumed.winner == whole.winner == "start" and np.array_equal(resumed.x, whole.x)
    with pytest.raises(ValueError, match=r"state\['phase'\] must be one of"):
        resumed.load_state_dict({**saved, "phase": "sprint"})


@pytest.mark.parametrize("stop_at", [8, 30, 44, 60])  # racer 0, racer 1, before the comparison, the run continued
def test_a_race_resumes_bit_for_bit_from_its_checkpoint(stop_at, tmp_path):
    f = two_basins()
    path, copy = tmp_path / "run.state", tmp_path / "kept.state"

    def keep(info):
        if info.nit == stop_at:  # the file as a kill right after this step would leave it
            copy.write_bytes(path.read_bytes())

    kw = dict(k=4, max_evals=200, seed=2, vectorized=True, checkpoint_every=2)
    full = spsa_mix.minimize(f, checkpoint=path, callback=keep, **kw)
    assert json.loads(copy.read_text())["fingerprint"]["start"] == "race"
    os.replace(copy, path)
    res = spsa_mix.minimize(f, checkpoint=path, **kw)
    assert res.resumed_from == stop_at and res.start == full.start
    assert np.array_equal(res.x, full.x) and res.nfev == full.nfev
    for key in ("x", "loss", "racer", "nfev"):
        assert np.array_equal(res.history[key], full.history[key])
