"""The recorded default run (README, docs/glue.md) is what the current code gives.

``spsa-mix experiment`` with no arguments is re-run from scratch (experts trained again in a
fresh cache) and compared with ``benchmarks/results/glue_digits_small_cnn.json``, then
re-run once more and compared with itself. Marked slow (a minute or two on a 2-core CPU);
run it with ``python -m pytest -m slow``.

* Always, exactly: the configuration, the data split, each expert's images and cache
  key, the runs and what each spent to set alpha. None of it depends on float rounding.
* Same numerics as the recorded run (every key of
  :data:`spsa_mix.experiment.environment.BIT_EXACT_KEYS` known and equal: PyTorch build,
  CPU and its instruction sets, threads, ...): every number bit for bit.
* Otherwise (other numerics, or a recorded file that predates those keys and so does
  not say): within the tolerances below.

The tolerances come from re-running the default experiment on one machine (2 cores,
PyTorch 2.14.1+cu130, NumPy 2.4.6, a CPU with AVX-512) with its numerics varied: as is;
with PyTorch's and oneDNN's kernels held to AVX2 (``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``), which gives every accuracy and loss of the recorded file bit for
bit, and its alpha to 5e-15 (so it was recorded on a CPU whose kernels were AVX2); with
PyTorch's alone held to AVX2; with SSE4 kernels; with 2 threads. Between any two of these
five, 29 to 31 of the 33 runs differ, by at most: 0.8 points in an expert's test accuracy,
2.0 points in one run's test accuracy at one epoch (10 of the 500 test images), 0.5 points
in a configuration's accuracy averaged over seeds (final, or over the fine-tuning epochs:
the README's tables), 0.0007 in a weight of alpha learned by gradient (GLUE, forward
gradient, backprop) and 0.0017 for proxy accuracy (through the experts' held-out
accuracies); data-size and uniform weights are exact. Nevergrad's and Optuna's alpha move by
up to 0.056 (their samplers branch on noisy comparisons), and best-single's and the greedy
soup's hang on comparisons of held-out accuracies: those are checked through their
accuracies only. Each tolerance is two to three times the largest difference measured.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from spsa_mix.experiment.environment import bits_comparable

RECORDED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "glue_digits_small_cnn.json"

EXPERT_ATOL = 0.02  # an expert's test accuracy (measured <= 0.008)
EPOCH_ATOL = 0.04  # one run's test accuracy at one epoch, the prior included (measured <= 0.020)
MEAN_ATOL = 0.01  # a configuration's seed-mean accuracy: final, and over the fine-tuning epochs (<= 0.0047)
ALPHA_ATOL = {  # max |alpha_i - recorded alpha_i|
    "data-size": 0.0, "uniform": 0.0,  # from the split sizes alone (measured 0)
    "from-scratch": 0.0,  # no blend: alpha is empty
    # spsa-defaults, task-arithmetic and task-vectors branch on noisy comparisons (the start
    # candidate, the scale on held-out accuracy), as Nevergrad and Optuna do: accuracies only
    "spsa": 5e-3, "forward-grad": 5e-3, "backprop": 5e-3, "proxy-accuracy": 5e-3, "sail": 5e-3,  # <= 0.0017
}


def _runs(res: dict) -> dict[tuple[str, int], dict]:
    return {(r["config"], r["seed"]): r for r in res["runs"]}


def _seed_means(res: dict) -> dict[str, tuple[float, float]]:
    """Per configuration: (final accuracy, accuracy over the fine-tuning epochs), averaged over seeds."""
    out: dict[str, list[tuple[float, float]]] = {}
    for r in res["runs"]:
        out.setdefault(r["config"], []).append((r["test_accuracy"][-1], float(np.mean(r["test_accuracy"][1:]))))
    return {c: tuple(np.mean(v, axis=0)) for c, v in out.items()}


def check_exact_parts(results: dict, recorded: dict) -> None:
    """What does not depend on float rounding: equal on every machine."""
    same = [k for k in recorded["config"] if k != "cache_dir"]  # a field added since has its default
    assert {k: results["config"][k] for k in same} == {k: recorded["config"][k] for k in same}, "config"
    assert results["dataset"] == recorded["dataset"], "dataset"
    assert results["split"] == recorded["split"], "split"
    for mine, theirs in zip(results["experts"], recorded["experts"], strict=True):
        assert (mine["key"], mine["size"], mine["class_counts"]) == (theirs["key"], theirs["size"], theirs["class_counts"]), \
            theirs["index"]
    assert _runs(results).keys() == _runs(recorded).keys()
    for key, run in _runs(results).items():
        theirs = _runs(recorded)[key]
        assert (run["evaluations"], run["images"], run["eval_unit"]) == \
            (theirs["evaluations"], theirs["images"], theirs["eval_unit"]), key


def check_bits(results: dict, recorded: dict) -> None:
    """Same numerics: every accuracy, loss and weight bit for bit."""
    assert [(e["test_accuracy"], e["holdout_accuracy"]) for e in results["experts"]] == \
        [(e["test_accuracy"], e["holdout_accuracy"]) for e in recorded["experts"]]
    fields = ("alpha", "test_accuracy", "test_loss", "train_loss")
    assert {k: [r[f] for f in fields] for k, r in _runs(results).items()} == \
        {k: [r[f] for f in fields] for k, r in _runs(recorded).items()}


def check_within_tolerances(results: dict, recorded: dict) -> None:
    """Other numerics: the rounding differs, and the accuracies by a few test images."""
    for mine, theirs in zip(results["experts"], recorded["experts"], strict=True):
        assert mine["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=EXPERT_ATOL), mine["index"]
    for key, run in _runs(results).items():
        theirs = _runs(recorded)[key]
        assert run["test_accuracy"] == pytest.approx(theirs["test_accuracy"], abs=EPOCH_ATOL), key
        if key[0] in ALPHA_ATOL:
            assert run["alpha"] == pytest.approx(theirs["alpha"], abs=ALPHA_ATOL[key[0]], rel=0), key
    mine, theirs = _seed_means(results), _seed_means(recorded)
    for config in theirs:
        assert mine[config] == pytest.approx(theirs[config], abs=MEAN_ATOL), config


def _default_run(folder: Path) -> dict:
    """``spsa-mix experiment`` with no arguments, experts trained in a fresh cache; its results JSON."""
    from spsa_mix.experiment import ExperimentConfig, run_experiment

    run_experiment(ExperimentConfig(cache_dir=str(folder / "cache")), output=folder / "r.json", progress=False)
    results = json.loads((folder / "r.json").read_text())  # as recorded: through JSON
    assert results["status"] == "complete" and not results["errors"]
    return results


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory) -> dict:
    return _default_run(tmp_path_factory.mktemp("fresh"))


@pytest.mark.slow
def test_the_default_run_reproduces_the_recorded_results(fresh_run):
    recorded = json.loads(RECORDED.read_text())
    check_exact_parts(fresh_run, recorded)
    if bits_comparable(recorded["environment"], fresh_run["environment"]):
        check_bits(fresh_run, recorded)
    else:
        check_within_tolerances(fresh_run, recorded)


@pytest.mark.slow
def test_on_the_same_machine_and_build_a_second_run_gives_the_same_bits(fresh_run, tmp_path):
    again = _default_run(tmp_path)
    assert bits_comparable(fresh_run["environment"], again["environment"])
    check_exact_parts(again, fresh_run)
    check_bits(again, fresh_run)

# The comparison itself, on the recorded file (default suite: no training).
@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


def test_the_recorded_file_agrees_with_itself_in_every_check(recorded):
    check_exact_parts(recorded, recorded)
    check_bits(recorded, recorded)
    check_within_tolerances(recorded, recorded)


def test_one_test_image_breaks_the_bits_but_not_the_tolerances(recorded):
    moved = copy.deepcopy(recorded)
    moved["runs"][0]["test_accuracy"][-1] += 1 / 500
    with pytest.raises(AssertionError):
        check_bits(moved, recorded)
    check_within_tolerances(moved, recorded)


@pytest.mark.parametrize(("change", "match"), [
    ("expert", r"^3\n"), ("epoch", r"^\('spsa', 0\)"), ("seed-mean", r"^spsa\n"), ("alpha", r"^\('spsa', 1\)"),
    ("evaluations", r"^\('spsa', 2\)"), ("split", r"^split\n"),
])
def test_what_the_tolerances_and_exact_checks_catch(recorded, change, match):
    moved = copy.deepcopy(recorded)
    glue = [r for r in moved["runs"] if r["config"] == "spsa"]
    if change == "expert":
        moved["experts"][3]["test_accuracy"] += 0.03
    elif change == "epoch":
        glue[0]["test_accuracy"][2] -= 0.05
    elif change == "seed-mean":  # each run within EPOCH_ATOL, their mean is not within MEAN_ATOL
        for run in glue:
            run["test_accuracy"] = [a + 0.015 for a in run["test_accuracy"]]
    elif change == "alpha":
        glue[1]["alpha"][0] += 0.01
    elif change == "evaluations":
        glue[2]["evaluations"] += 2
    else:
        moved["split"]["target_class_counts"][0] += 1
    check = check_exact_parts if change in ("evaluations", "split") else check_within_tolerances
    with pytest.raises(AssertionError, match=match):
        check(moved, recorded)
