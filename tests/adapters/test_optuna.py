import logging

import numpy as np
import optuna
import pytest

import spsa_mix
from spsa_mix.adapters import optuna as optuna_adapter
from spsa_mix.adapters.optuna import SAMPLERS, make_sampler, param_names
from spsa_mix.problems import Quadratic, ScaledQuadratic


def test_unknown_sampler_lists_the_samplers():
    with pytest.raises(ValueError, match=r"unknown Optuna sampler 'nsga2' in method 'optuna:nsga2'; "
                                         r"available: \['tpe', 'cmaes', 'random', 'qmc', 'gp'\]"):
        spsa_mix.minimize(lambda a: 0.0, 3, method="optuna:nsga2")


def test_options_are_checked():
    q = Quadratic.random(3, rng=0)
    with pytest.raises(ValueError, match=r"options of method 'optuna:tpe' must be among \['batch_size', 'bound', "
                                         r"'enqueue_x0', 'lower', 'parametrization', 'sampler_kwargs'\], but got 'seed'"):
        spsa_mix.minimize(q, 3, method="optuna:tpe", max_evals=5, options={"seed": 1})
    with pytest.raises(ValueError, match=r"options\['sampler_kwargs'\] must not set seed \(it comes from seed/rng\), "
                                         r"but got seed=1"):
        spsa_mix.minimize(q, 3, method="optuna:tpe", max_evals=5, options={"sampler_kwargs": {"seed": 1}})
    with pytest.raises(ValueError, match=r"options\['sampler_kwargs'\] do not fit optuna.samplers.TPESampler"):
        spsa_mix.minimize(q, 3, method="optuna:tpe", max_evals=5, options={"sampler_kwargs": {"n_startup": 1}})
    with pytest.raises(ValueError, match=r"options\['bound'\] must be a positive number for Optuna"):
        spsa_mix.minimize(q, 3, method="optuna:tpe", max_evals=5,
                          options={"parametrization": "softmax", "bound": None})


@pytest.mark.parametrize("sampler", ["tpe", "cmaes", "random", "qmc"])
def test_x0_is_the_first_trial(sampler, counting):
    q = Quadratic.random(3, rng=0)
    f, calls = counting(q)
    x0 = np.array([0.5, 0.3, 0.2])
    spsa_mix.minimize(f, 3, method=f"optuna:{sampler}", max_evals=4, seed=0, vectorized=True, x0=x0)
    np.testing.assert_allclose(calls[0][0], x0, atol=1e-12)


def test_without_enqueue_the_sampler_picks_the_first_trial(counting):
    q = Quadratic.random(3, rng=0)
    f, calls = counting(q)
    spsa_mix.minimize(f, 3, method="optuna:random", max_evals=2, seed=0, vectorized=True,
                      options={"enqueue_x0": False})
    assert not np.allclose(calls[0][0], 1 / 3)


def test_answer_is_the_best_trial_and_no_evaluation_is_reserved(counting):
    q = Quadratic.random(4, rng=1)
    f, calls = counting(q)
    res = spsa_mix.minimize(f, 4, method="optuna:tpe", max_evals=25, seed=0, vectorized=True)
    seen = np.concatenate(calls)
    losses = q(seen)
    assert res.nfev == 25 == len(seen)
    np.testing.assert_array_equal(res.x, seen[np.argmin(losses)])
    assert res.fun == losses.min()
    np.testing.assert_array_equal(res.history["loss"], np.minimum.accumulate(losses))


def test_batches_are_asked_before_telling(counting):
    q = Quadratic.random(4, rng=0)
    f, calls = counting(q)
    res = spsa_mix.minimize(f, 4, method="optuna:tpe", max_evals=10, seed=0, vectorized=True,
                            options={"batch_size": 4})
    assert [len(c) for c in calls] == [4, 4, 2]
    assert res.nit == 3 and res.nfev == 10


@pytest.mark.parametrize("parametrization", ["softmax", "normalize", "stick"])
def test_every_parametrization_on_several_simplices(parametrization):
    qs = [Quadratic.random(3, rng=s, optimum="boundary") for s in range(2)]

    def f(points):
        return np.array([sum(q.value(r) for q, r in zip(qs, p, strict=True)) for p in points])

    res = spsa_mix.minimize(f, (2, 3), method="optuna:cmaes", max_evals=60, seed=0, vectorized=True,
                            options={"parametrization": parametrization})
    assert res.x.shape == (2, 3)
    assert f(res.x[None])[0] < f(np.full((1, 2, 3), 1 / 3))[0]


def verbosity_during_run(q):
    seen = []

    def f(points):
        seen.append(optuna.logging.get_verbosity())
        return q(points)

    return f, seen


def test_logging_is_silenced_during_the_run_and_restored():
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        f, seen = verbosity_during_run(Quadratic.random(3, rng=0))
        spsa_mix.minimize(f, 3, method="optuna:qmc", max_evals=5, seed=0, vectorized=True)
        assert set(seen) == {optuna.logging.ERROR}
        assert optuna.logging.get_verbosity() == optuna.logging.INFO
    finally:
        optuna.logging.set_verbosity(old)


def test_debug_logging_keeps_optuna_logs(caplog):
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        f, seen = verbosity_during_run(Quadratic.random(3, rng=0))
        with caplog.at_level(logging.DEBUG, logger="spsa_mix"):
            spsa_mix.minimize(f, 3, method="optuna:random", max_evals=2, seed=0, vectorized=True)
        assert set(seen) == {optuna.logging.INFO}
    finally:
        optuna.logging.set_verbosity(old)


def test_make_sampler_and_names():
    assert sorted(SAMPLERS) == ["cmaes", "gp", "qmc", "random", "tpe"]
    assert type(make_sampler("qmc", seed=1)).__name__ == "QMCSampler"
    with pytest.raises(ValueError, match=r"sampler must be one of \['tpe', 'cmaes', 'random', 'qmc', 'gp'\], but got 'x'"):
        make_sampler("x", seed=0)
    assert param_names(3) == ["z0", "z1", "z2"]
    assert sorted(param_names(12)) == param_names(12)


# ---------------------------------------------------------------- coordinates beside the simplex
@pytest.mark.parametrize(("sampler", "rel"), [("cmaes", 0.01), ("tpe", 0.05)])
def test_the_scale_is_learned_on_the_same_budget(sampler, rel, counting):
    p = ScaledQuadratic.random(3, rng=0, s_star=2.0)
    f, calls = counting(p)
    res = spsa_mix.minimize(f, p.domain, method=f"optuna:{sampler}", max_evals=200, seed=0, vectorized=True)
    assert res.nfev == 200 == sum(len(c) for c in calls)
    np.testing.assert_allclose(calls[0][0], p.domain.center(), atol=1e-12)  # x0, enqueued: s = 1
    assert res.extras["scale"] == pytest.approx(2.0, rel=rel)
    np.testing.assert_allclose(res.alpha, p.c, atol=0.03)
    assert res.fun == p(res.x)  # the best trial, evaluated


def test_extra_coordinates_are_named_distributions(monkeypatch):
    created = []
    original = optuna_adapter._OptunaBackend.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(optuna_adapter._OptunaBackend, "__init__", spy)
    d = spsa_mix.Domain(2, positive=1, real=1, names=("scale", "z0"))  # "z0" is also a simplex coordinate's name
    x0 = [0.4, 0.6, 3.0, 0.5]
    res = spsa_mix.minimize(lambda x: float(np.sum(x ** 2)), d, method="optuna:random", max_evals=5, seed=0,
                            x0=x0, options={"positive_bounds": (0.5, 4.0), "real_bounds": (-1.0, 1.0)})
    dists = created[0].distributions
    assert list(dists) == ["z0", "z1", "scale", "extra_z0"]
    assert (dists["scale"].low, dists["scale"].high, dists["scale"].log) == (0.5, 4.0, True)
    assert (dists["extra_z0"].low, dists["extra_z0"].high, dists["extra_z0"].log) == (-1.0, 1.0, False)
    first = created[0].study.trials[0]
    assert first.params["scale"] == pytest.approx(3.0, rel=1e-12) and first.params["extra_z0"] == 0.5
    assert res.history["x"].shape == (5, 4)


def test_numpy_global_random_state_is_left_alone():
    p = ScaledQuadratic.random(3, rng=0)
    before = np.random.get_state()  # noqa: NPY002 - the legacy global state under test
    spsa_mix.minimize(p, p.domain, method="optuna:cmaes", max_evals=10, seed=0, vectorized=True)
    after = np.random.get_state()  # noqa: NPY002 - the legacy global state under test
    assert np.array_equal(after[1], before[1]) and after[2:] == before[2:]
