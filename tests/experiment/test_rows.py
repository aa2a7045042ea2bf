"""The rows beside GLUE's: library defaults, task vectors over the shared initialisation, the
from-scratch reference, a label-shifted target, the calibrated loss, and the report's check."""

from __future__ import annotations

import numpy as np
import pytest

from spsa_mix.experiment import ExperimentConfig, run_experiment
from spsa_mix.experiment.report import baseline_check, render_markdown


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path_factory.mktemp("cache")), budget=60, from_scratch=True,
                                 configs=("uniform", "best-single", "greedy-soup", "spsa-defaults", "task-arithmetic",
                                          "task-vectors"), seeds=(0, 1))
    return run_experiment(cfg, progress=False)


def test_every_row_runs_and_the_from_scratch_row_has_no_blend(results):
    assert results["status"] == "complete", results["errors"]
    names = list(results["summary"])
    assert names[-1] == "from-scratch" and results["summary"]["from-scratch"]["effective_experts"] is None
    scratch = [r for r in results["runs"] if r["config"] == "from-scratch"]
    assert len(scratch) == 2 and all(r["alpha"] == [] and r["evaluations"] == 0 for r in scratch)
    assert scratch[0]["details"]["init_seed"] != scratch[1]["details"]["init_seed"]


def test_task_vector_rows_carry_their_scale(results):
    from spsa_mix.experiment.alpha import TASK_SCALES

    arith = [r for r in results["runs"] if r["config"] == "task-arithmetic"]
    assert all(r["scale"] in TASK_SCALES for r in arith) and arith[0]["evaluations"] == len(TASK_SCALES)
    np.testing.assert_allclose(arith[0]["alpha"], np.full(3, 1 / 3))
    learned = [r for r in results["runs"] if r["config"] == "task-vectors"]
    assert all(0.125 <= r["scale"] <= 20 and abs(sum(r["alpha"]) - 1) < 1e-9 for r in learned)
    assert all(0 < r["evaluations"] <= 60 for r in learned)
    md = render_markdown(results)
    assert "Task-vector scales" in md and "task vectors, learned scale: s = " in md


def test_the_library_defaults_row_checks_the_candidates(results):
    run = next(r for r in results["runs"] if r["config"] == "spsa-defaults")
    assert run["details"]["start"]["candidates"][0] == "start" and run["evaluations"] <= 60


def test_the_report_checks_learned_blends_against_the_candidates(results):
    lines = baseline_check(results["summary"])
    assert any(line.startswith("- SPSA, library defaults:") for line in lines)
    assert "against the best candidate they could have checked" in render_markdown(results)


def test_the_default_run_is_a_label_shifted_target_with_the_calibrated_loss():
    cfg = ExperimentConfig()
    assert cfg.target_concentration == 0.5 and cfg.alpha_loss == "calibrated" and cfg.from_scratch
    paper = ExperimentConfig.paper()
    assert paper.target_concentration is None and paper.alpha_loss is None  # GLUE's protocol


def test_a_shifted_target_evaluates_on_its_own_test_set(tmp_path):
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path), configs=("uniform",), target_concentration=0.3)
    res = run_experiment(cfg, progress=False)
    split = res["split"]
    assert split["test_size"] < 500 and len(split["target_proportions"]) == 10
    assert "label-shifted domain" in render_markdown(res)


def test_target_used_takes_a_nested_subset_and_keeps_the_experts():
    from spsa_mix.experiment.pool import default_splits, load_pool_task

    cfg = ExperimentConfig.quick(target_size=120)
    task = load_pool_task(cfg.pool_spec())
    full = default_splits(cfg.pool_spec(), task)
    small, smaller = (default_splits(cfg.replace(target_used=n).pool_spec(), task) for n in (60, 30))
    assert len(small.target) == 60 and len(smaller.target) == 30
    assert set(smaller.target) <= set(small.target) <= set(full.target)
    for a, b in zip(small.experts, full.experts, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(small.holdout, full.holdout)
    with pytest.raises(ValueError, match="target_used must be at most target_size=120"):
        cfg.replace(target_used=121)
