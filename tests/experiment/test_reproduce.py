"""The recorded default run (README, docs/glue.md) is what the current code gives.

``spsa-mix glue`` with no arguments, re-run from scratch (experts trained again in a fresh
cache), must reproduce every accuracy of ``benchmarks/results/glue_digits_small_cnn.json``
(prior and after each fine-tuning epoch, per configuration and seed). Marked slow (about a
minute on a 2-core CPU); run it with ``python -m pytest -m slow``. Bit-exact agreement
assumes the same CPU kind and PyTorch build as the recorded run (its JSON names both).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

RECORDED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "glue_digits_small_cnn.json"


@pytest.mark.slow
def test_the_default_run_reproduces_the_recorded_results(tmp_path):
    from spsa_mix.experiment import ExperimentConfig, run_experiment

    recorded = json.loads(RECORDED.read_text())
    results = run_experiment(ExperimentConfig(cache_dir=str(tmp_path / "cache")), output=tmp_path / "r.json", progress=False)
    assert results["status"] == "complete" and not results["errors"]

    def accuracies(res):
        return {(r["config"], r["seed"]): [round(a, 6) for a in r["test_accuracy"]] for r in res["runs"]}

    assert [round(e["test_accuracy"], 6) for e in results["experts"]] == \
        [round(e["test_accuracy"], 6) for e in recorded["experts"]]
    assert accuracies(results) == accuracies(recorded)
