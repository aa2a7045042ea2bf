import numpy as np
import pytest

import spsa_mix
from spsa_mix.adapters import nevergrad as ng_adapter
from spsa_mix.problems import Quadratic, ScaledQuadratic


def test_unknown_optimizer_lists_close_and_common_names():
    with pytest.raises(ValueError, match=r"unknown Nevergrad optimizer 'NGOptt' in method 'nevergrad:NGOptt'; "
                                         r"close names: \['NGOpt'.*common ones: \['NGOpt', 'CMA'"):
        spsa_mix.minimize(lambda a: 0.0, 3, method="nevergrad:NGOptt")


def test_options_are_checked():
    q = Quadratic.random(3, rng=0)
    with pytest.raises(ValueError, match=r"options of method 'nevergrad:CMA' must be among \['batch_size', 'bound', "
                                         r"'lower', 'noisy', 'parametrization'\], but got 'sigma'"):
        spsa_mix.minimize(q, 3, method="nevergrad:CMA", max_evals=10, options={"sigma": 1.0})
    with pytest.raises(ValueError, match=r"options\['batch_size'\] must be an integer >= 1, but got 0"):
        spsa_mix.minimize(q, 3, method="nevergrad:CMA", max_evals=10, options={"batch_size": 0})
    with pytest.raises(ValueError, match=r"options\['parametrization'\] must be one of \['softmax', 'normalize', "
                                         r"'stick'\], but got 'ilr'"):
        spsa_mix.minimize(q, 3, method="nevergrad:CMA", max_evals=10, options={"parametrization": "ilr"})
    with pytest.raises(ValueError, match=r"method 'nevergrad:CMA' does not use lr=0.1"):
        spsa_mix.minimize(q, 3, method="nevergrad:CMA", max_evals=10, lr=0.1)


@pytest.mark.parametrize("parametrization", ["softmax", "normalize", "stick"])
def test_every_parametrization_runs_and_improves(parametrization):
    q = Quadratic.random(4, rng=2, optimum="boundary")
    res = spsa_mix.minimize(q, 4, method="nevergrad:CMA", max_evals=80, seed=0, vectorized=True,
                            options={"parametrization": parametrization})
    assert res.parametrization == parametrization
    assert q.value(res.x) < q.value(np.full(4, 0.25))


def test_unevaluated_recommendation_is_scored_with_the_reserved_evaluation(counting):
    # TBPSA recommends the centre of its population, which it has not evaluated
    q = Quadratic.random(4, rng=0)
    f, calls = counting(q)
    res = spsa_mix.minimize(f, 4, method="nevergrad:TBPSA", max_evals=30, seed=0, vectorized=True)
    assert res.nfev == 30 and res.cost == 30
    np.testing.assert_array_equal(calls[-1][0], res.x)  # the last evaluation scored the answer
    assert res.fun == pytest.approx(q.value(res.x), abs=1e-15)


def test_evaluated_recommendation_spends_no_extra_evaluation(counting):
    # OnePlusOne recommends its best evaluated point: the reserved evaluation stays unspent
    q = Quadratic.random(4, rng=0)
    f, calls = counting(q)
    res = spsa_mix.minimize(f, 4, method="nevergrad:OnePlusOne", max_evals=30, seed=0, vectorized=True)
    assert res.nfev == 29
    seen = np.concatenate(calls)
    assert np.any(np.all(seen == res.x, axis=1))
    assert res.fun == pytest.approx(q.value(res.x), abs=1e-15)


def test_without_final_eval_the_best_evaluated_point_is_returned(counting):
    q = Quadratic.random(4, rng=0)
    f, calls = counting(q)
    res = spsa_mix.minimize(f, 4, method="nevergrad:CMA", max_evals=30, seed=0, vectorized=True, final_eval=False)
    assert res.nfev == 30
    seen = np.concatenate(calls)
    losses = q(seen)
    np.testing.assert_array_equal(res.x, seen[np.argmin(losses)])
    assert res.fun == losses.min()


def test_x0_is_the_starting_point(counting):
    q = Quadratic.random(3, rng=0)
    f, calls = counting(q)
    x0 = np.array([0.6, 0.3, 0.1])
    spsa_mix.minimize(f, 3, method="nevergrad:OnePlusOne", max_evals=5, seed=0, vectorized=True, x0=x0)
    np.testing.assert_allclose(calls[0][0], x0, atol=1e-12)  # OnePlusOne first asks its initial value


def test_batches_go_to_the_library_as_workers(counting):
    q = Quadratic.random(5, rng=0)
    f, calls = counting(q)
    res = spsa_mix.minimize(f, 5, method="nevergrad:TwoPointsDE", max_evals=22, seed=1, vectorized=True,
                            options={"batch_size": 8})
    assert [len(c) for c in calls[:3]] == [8, 8, 5]  # one evaluation reserved
    assert res.history["batch_size"].tolist() == [8.0, 8.0, 5.0]


def test_ngopt_meta_model_runs_under_numpy_2_4():
    # NGOpt picks a meta-model in small dimensions; Nevergrad 1.0.12's meta-model calls
    # float() on a one-element array, an error since NumPy 2.4 (see _metamodel_numpy_compat)
    from nevergrad.optimization import metamodel

    q = Quadratic.random(3, rng=0)
    res = spsa_mix.minimize(q, 3, method="nevergrad:NGOpt", max_evals=80, seed=0, vectorized=True)
    assert res.success and res.nfev <= 80
    assert "float" not in vars(metamodel)  # the shim is removed after the run


def test_library_warnings_are_silenced(recwarn):
    q = Quadratic.random(3, rng=0)
    spsa_mix.minimize(q, 3, method="nevergrad:NGOpt", max_evals=60, seed=0, vectorized=True,
                      options={"batch_size": 4})
    assert [str(w.message) for w in recwarn] == []


def test_size_one_float():
    assert ng_adapter._size_one_float(np.array([[3.0]])) == 3.0
    assert ng_adapter._size_one_float(2) == 2.0
    with pytest.raises(TypeError):
        ng_adapter._size_one_float(np.array([1.0, 2.0]))


def test_recast_threads_are_stopped_when_the_objective_raises():
    # Cobyla runs in a non-daemon thread; a held ObjectiveError keeps the run's frames (and
    # the optimizer) alive, so without an explicit stop the interpreter would never exit
    import subprocess
    import sys

    code = """
import numpy as np, spsa_mix
calls = [0]
def f(x):
    calls[0] += 1
    if calls[0] > 5:
        raise RuntimeError("boom")
    return float(np.sum(x ** 2))
try:
    spsa_mix.minimize(f, 5, method="nevergrad:Cobyla", max_evals=50, seed=0)
except spsa_mix.ObjectiveError as e:
    err = e
print(type(err.__cause__).__name__, err.partial_result.nfev)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["RuntimeError", "5"]


# ---------------------------------------------------------------- coordinates beside the simplex
@pytest.mark.parametrize("optimizer", ["NGOpt", "CMA"])
def test_the_scale_is_learned_on_the_same_budget(optimizer, counting):
    p = ScaledQuadratic.random(3, rng=0, s_star=2.0)
    f, calls = counting(p)
    res = spsa_mix.minimize(f, p.domain, method=f"nevergrad:{optimizer}", max_evals=300, seed=0, vectorized=True)
    assert res.nfev <= 300 and sum(len(c) for c in calls) == res.nfev
    assert res.x.shape == (4,) and res.extras["scale"] == pytest.approx(2.0, rel=0.01)
    np.testing.assert_allclose(res.alpha, p.c, atol=0.01)


def test_positive_and_real_coordinates_stay_in_their_boxes(counting):
    d = spsa_mix.Domain(3, positive=1, real=1, names=("scale", "shift"))
    f, calls = counting(lambda x: np.sum((x - [0.1, 0.1, 0.8, 6.0, -3.0]) ** 2, axis=-1))  # beyond both boxes
    res = spsa_mix.minimize(f, d, method="nevergrad:CMA", max_evals=150, seed=0, vectorized=True,
                            options={"positive_bounds": (0.5, 4.0), "real_bounds": (-1.0, 1.0),
                                     "parametrization": "normalize"})  # the default before "softmax"
    pts = np.concatenate(calls)
    assert np.all((pts[:, 3] >= 0.5 - 1e-12) & (pts[:, 3] <= 4.0 + 1e-12))
    assert np.all((pts[:, 4] >= -1.0) & (pts[:, 4] <= 1.0))
    assert res.extras["scale"] == pytest.approx(4.0, rel=0.02) and res.extras["shift"] == pytest.approx(-1.0, abs=0.02)


def test_domain_options_are_checked():
    p = ScaledQuadratic.random(3, rng=0)
    with pytest.raises(ValueError, match=r"options\['positive_bounds'\] must be a pair \(lo, hi\) of finite numbers "
                                         r"with 0 < lo < hi, but got \(0.0, 2.0\)"):
        spsa_mix.minimize(p, p.domain, method="nevergrad:CMA", max_evals=10, options={"positive_bounds": (0.0, 2.0)})
    with pytest.raises(ValueError, match=r"x0's scale=10\.0 is outside options\['positive_bounds'\]=\(0\.125, 8\.0\)"):
        spsa_mix.minimize(p, p.domain, method="nevergrad:CMA", max_evals=10, x0=[0.2, 0.3, 0.5, 10.0])
    with pytest.raises(ValueError, match=r"must be among \['batch_size', 'bound', 'lower', 'noisy', 'parametrization', "
                                         r"'positive_bounds'\], but got 'real_bounds'"):  # the domain has no real one
        spsa_mix.minimize(p, p.domain, method="nevergrad:CMA", max_evals=10, options={"real_bounds": (0, 1)})


@pytest.mark.parametrize("optimizer", ["NGOpt", "CMA", "TwoPointsDE", "OnePlusOne"])
@pytest.mark.parametrize("parametrization", ["normalize", "softmax"])
@pytest.mark.parametrize("scaled", [False, True])
def test_numpy_global_random_state_is_neither_used_nor_advanced(optimizer, parametrization, scaled):
    p = ScaledQuadratic.random(3, rng=0)
    k = p.domain if scaled else 3
    f = p if scaled else Quadratic.random(3, rng=0)
    results = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)  # noqa: NPY002 - the legacy global state under test
        before = np.random.get_state()  # noqa: NPY002 - the legacy global state under test
        res = spsa_mix.minimize(f, k, method=f"nevergrad:{optimizer}", max_evals=20, seed=0, vectorized=True,
                                options={"parametrization": parametrization})
        after = np.random.get_state()  # noqa: NPY002 - the legacy global state under test
        assert after[0] == before[0] and np.array_equal(after[1], before[1]) and after[2:] == before[2:]
        results.append(res.history["x"])
    np.testing.assert_array_equal(*results)  # the run depends on its seed only


def test_ngopt_through_pycma_is_reproducible():
    # In 4 dimensions with a few hundred evaluations NGOpt runs a meta-model over Nevergrad's
    # recast CmaFmin2, which calls cma.fmin without a seed: pycma then seeded NumPy's global
    # generator from the clock, and the same seed gave another run each time.
    q = Quadratic.random(4, rng=0)
    runs = [spsa_mix.minimize(q, 4, method="nevergrad:NGOpt", max_evals=400, seed=3, vectorized=True)
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].history["x"], runs[1].history["x"])
    assert runs[0].fun == runs[1].fun


@pytest.mark.parametrize("max_evals", range(2, 11))
def test_cma_on_a_small_budget_returns_the_best_point_it_scored(max_evals):
    target = np.array([0.7, 0.2, 0.1])
    scored = []

    def f(a):
        scored.append((float(np.sum((a - target) ** 2)), np.array(a, copy=True)))
        return scored[-1][0]

    res = spsa_mix.minimize(f, k=3, method="nevergrad:CMA", max_evals=max_evals, seed=0)
    best = min(loss for loss, _ in scored)
    assert res.fun == best and float(np.sum((res.x - target) ** 2)) == best
