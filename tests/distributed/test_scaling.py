"""The step-time model of docs/distributed.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from spsa_mix.distributed.scaling import StepModel

ROOT = Path(__file__).resolve().parents[2]


def test_data_parallelism_divides_the_forward_and_not_the_blend():
    model = StepModel(t_example=1e-3, t_blend=5e-3, t_hop=0.0)
    one = model.step_s(probes=2, batch=64, world=1)
    eight = model.step_s(probes=2, batch=64, world=8)
    assert one == pytest.approx(2 * (5e-3 + 64e-3)) and eight == pytest.approx(2 * (5e-3 + 8e-3))
    # splitting the probes first divides the blends too
    assert model.step_s(probes=2, batch=64, world=8, probe_groups=2) == pytest.approx(5e-3 + 16e-3)
    assert model.best_layout(probes=2, batch=64, world=8) == (2, pytest.approx(21e-3))


def test_the_slowest_shard_and_the_weight_floor_set_a_ranks_forward():
    model = StepModel(t_example=1e-3, t_weights=2.5e-3)
    assert model.step_s(probes=1, batch=10, world=3) == pytest.approx(4e-3)  # shards of 4, 3, 3
    assert model.step_s(probes=1, batch=10, world=10) == pytest.approx(2.5e-3)  # one example: the floor


def test_the_all_reduce_costs_a_round_per_doubling():
    model = StepModel(t_example=0.0, t_hop=1.0)
    assert [model.allreduce_s(n) for n in (1, 2, 3, 8, 512)] == [0.0, 1.0, 2.0, 3.0, 9.0]


def test_impossible_layouts_are_errors():
    model = StepModel(t_example=1e-3)
    with pytest.raises(ValueError, match=r"probe_groups must divide world=8, but got 3"):
        model.step_s(probes=2, batch=8, world=8, probe_groups=3)
    with pytest.raises(ValueError, match=r"16 data ranks need at least 16 examples per minibatch, but batch=8"):
        model.step_s(probes=2, batch=8, world=16)


def test_the_benchmark_predicts_every_size_and_the_scalars_never_dominate():
    spec = importlib.util.spec_from_file_location("distributed_bench", ROOT / "benchmarks" / "distributed.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.predictions(t_hop_measured=3e-4)
    assert {(r["m"], r["gpus"]) for r in rows} == {(m, g) for m in (1, 8) for g in bench.GPUS}
    for r in rows:
        assert r["allreduce_s"] < 0.01 * r["step_s"]
        assert r["step_s"] <= (r["step_s_data_parallel_only"] or float("inf")) + 1e-12
