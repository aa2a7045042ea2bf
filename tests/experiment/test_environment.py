"""A run records what bit-exactness depends on, and only a full match promises bits."""

from __future__ import annotations

import json

import pytest

from spsa_mix.experiment.config import ExperimentConfig
from spsa_mix.experiment.environment import BIT_EXACT_KEYS, bits_comparable
from spsa_mix.experiment.pipeline import Experiment


@pytest.fixture
def env(tmp_path) -> dict:
    exp = Experiment(ExperimentConfig.quick(cache_dir=str(tmp_path)))
    return json.loads(json.dumps(exp.results["environment"]))  # as a results file holds it


def test_a_run_records_every_key_that_bits_depend_on(env):
    assert set(BIT_EXACT_KEYS) <= set(env)
    assert isinstance(env["torch_cpu_capability"], str) and env["cpu"]
    assert bits_comparable(env, dict(env))


@pytest.mark.parametrize("key", [k for k in BIT_EXACT_KEYS if k != "numerics_env"])
def test_any_difference_rules_bits_out(env, key):
    other = {**env, key: f"other {env[key]}"}
    assert not bits_comparable(env, other) and not bits_comparable(other, env)


def test_a_variable_that_overrides_the_kernels_rules_bits_out(env):
    other = {**env, "numerics_env": {**env["numerics_env"], "ATEN_CPU_CAPABILITY": "avx2"}}
    assert not bits_comparable(env, other)


def test_an_environment_not_known_in_full_promises_no_bits(env):
    assert not bits_comparable({**env, "cpu_simd": None}, {**env, "cpu_simd": None})  # no /proc/cpuinfo
    assert not bits_comparable({k: v for k, v in env.items() if k != "numpy"}, env)

