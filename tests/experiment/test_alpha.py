"""Every way to set alpha gives a point of the simplex, within its budget, reproducibly."""

from __future__ import annotations

import numpy as np
import pytest

import spsa_mix.experiment.alpha as alpha_mod
from spsa_mix.experiment.alpha import AlphaResult, set_alpha, spsa_steps
from spsa_mix.experiment.config import ALL_CONFIGS, ExperimentConfig
from spsa_mix.experiment.pipeline import Experiment

BUDGET = 21


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Experiment:
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path_factory.mktemp("cache")), budget=BUDGET, per_expert=[30, 40, 50])
    exp = Experiment(cfg)
    exp.prepare()
    exp.train_experts()
    return exp


@pytest.mark.parametrize("name", ALL_CONFIGS)
def test_every_configuration_gives_a_point_of_the_simplex(experiment: Experiment, name: str) -> None:
    res = set_alpha(name, experiment.problem(), seed=0)
    assert res.alpha.shape == (3,)
    assert np.all(res.alpha >= 0) and res.alpha.sum() == pytest.approx(1.0, abs=1e-12)
    assert res.seconds >= 0 and res.evaluations >= 0 and res.images >= 0
    if name in ("spsa", "nevergrad", "optuna"):
        assert 0 < res.evaluations <= BUDGET  # the same forward-pass budget
        assert res.images == res.evaluations * experiment.cfg.alpha_batch_size
    steps = spsa_steps(BUDGET, 1)
    if name == "backprop":  # GLUE's minibatch schedule: as many steps, each costs 1 + 2
        assert res.details["nit"] == steps and res.evaluations == 3 * steps
    if name == "forward-grad":
        assert res.details["nit"] == steps and res.evaluations == 2 * steps
    if name == "spsa":
        assert res.details["nit"] == steps


def test_heuristics_are_what_they_say(experiment: Experiment) -> None:
    problem = experiment.problem()
    sizes = np.array([30, 40, 50])
    np.testing.assert_allclose(set_alpha("data-size", problem).alpha, sizes / sizes.sum())
    acc = np.asarray(problem.expert_holdout_accuracy)
    np.testing.assert_allclose(set_alpha("proxy-accuracy", problem).alpha, acc / acc.sum())
    best = set_alpha("best-single", problem).alpha
    assert best[np.argmax(acc)] == 1.0 and best.sum() == 1.0
    np.testing.assert_allclose(set_alpha("uniform", problem).alpha, np.full(3, 1 / 3))


def test_greedy_soup_counts_held_out_evaluations(experiment: Experiment) -> None:
    res = set_alpha("greedy-soup", experiment.problem())
    calls = res.details["soup_evaluations"]
    assert 1 <= calls <= 3 and res.evaluations == 3 + calls
    assert res.images == res.evaluations * experiment.cfg.holdout_size


def test_learned_alpha_is_reproducible_by_seed(experiment: Experiment) -> None:
    problem = experiment.problem()
    a, b, c = (set_alpha("spsa", problem, seed=s).alpha for s in (0, 0, 1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_spsa_with_several_directions(experiment: Experiment) -> None:
    problem = experiment.problem()
    problem.m = 3
    res = set_alpha("spsa", problem, seed=0)
    assert res.details["nit"] == spsa_steps(BUDGET, 3) == 3 and res.evaluations <= BUDGET


def test_sail_on_penultimate_features(tmp_path) -> None:
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path), sail_features="penultimate")
    exp = Experiment(cfg)
    exp.prepare()
    exp.train_experts()
    res = set_alpha("sail", exp.problem())
    assert res.alpha.shape == (3,) and res.evaluations > 0 and res.alpha.sum() == pytest.approx(1.0)


def test_unknown_configuration_lists_the_available_ones(experiment: Experiment) -> None:
    with pytest.raises(ValueError, match=r"unknown configuration 'magic'; available: \['data-size', 'proxy-accuracy'"):
        set_alpha("magic", experiment.problem())


def test_a_point_off_the_simplex_is_refused(experiment: Experiment, monkeypatch) -> None:
    monkeypatch.setitem(alpha_mod.CONFIG_FUNCTIONS, "uniform",
                        lambda problem, seed: AlphaResult(np.array([1.5, -0.5, 0.0]), 0.0, 0.0, "none"))
    with pytest.raises(RuntimeError, match="configuration 'uniform' returned alpha .*not a point of the 3-simplex"):
        set_alpha("uniform", experiment.problem())
