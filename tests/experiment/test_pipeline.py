"""The experiment end to end on a tiny run: JSON, markdown, PNG, cache, partial results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import spsa_mix.experiment.pipeline as pipeline_mod
from spsa_mix.experiment.config import ALL_CONFIGS, ExperimentConfig
from spsa_mix.experiment.pipeline import run_experiment


def _strict_json(path: Path) -> dict:
    return json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("run")
    cfg = ExperimentConfig.quick(cache_dir=str(out / "cache"), seeds=(0, 1))
    res = run_experiment(cfg, output=out / "r.json", markdown=out / "r.md", plot=out / "f.png", progress=False)
    return res, out


def test_end_to_end_writes_valid_json_table_and_png(full_run) -> None:
    res, out = full_run
    assert res["status"] == "complete", res["errors"]
    saved = _strict_json(out / "r.json")
    assert saved["status"] == "complete" and list(saved["summary"]) == list(ALL_CONFIGS)
    assert len(saved["runs"]) == 2 * len(ALL_CONFIGS) and len(saved["experts"]) == 3
    for run in saved["runs"]:
        assert len(run["test_accuracy"]) == 2 and run["prior_accuracy"] == run["test_accuracy"][0]
        assert abs(sum(run["alpha"]) - 1) < 1e-9 and min(run["alpha"]) >= 0
    text = (out / "r.md").read_text()
    assert "| SPSA (GLUE Config 4) |" in text and "### Experts (GLUE Table 1)" in text
    png = (out / "f.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_what_a_seed_varies(full_run) -> None:
    res, _ = full_run
    alphas = {(r["config"], r["seed"]): np.asarray(r["alpha"]) for r in res["runs"]}
    for name in ("data-size", "proxy-accuracy", "uniform", "best-single", "greedy-soup", "sail"):
        np.testing.assert_array_equal(alphas[(name, 0)], alphas[(name, 1)])  # alpha fixed, fine-tuning varies
    assert not np.array_equal(alphas[("spsa", 0)], alphas[("spsa", 1)])
    curves = {(r["config"], r["seed"]): r["train_loss"] for r in res["runs"]}
    assert curves[("uniform", 0)] != curves[("uniform", 1)]  # another fine-tuning order


def test_second_run_reuses_the_experts_and_reproduces_the_numbers(full_run, tmp_path) -> None:
    res, out = full_run
    cfg = ExperimentConfig.quick(cache_dir=str(out / "cache"), seeds=(0,), configs=("uniform", "spsa"))
    again = run_experiment(cfg, progress=False)
    assert all(e["cached"] for e in again["experts"])
    first = {(r["config"], r["seed"]): r for r in res["runs"]}
    for run in again["runs"]:
        assert run["test_accuracy"] == first[(run["config"], 0)]["test_accuracy"]
        assert run["alpha"] == first[(run["config"], 0)]["alpha"]


def test_a_failing_configuration_is_recorded_and_the_rest_runs(tmp_path, monkeypatch) -> None:
    def boom(name, problem, *, seed=0):
        if name == "spsa":
            raise RuntimeError("simulated failure")
        return original(name, problem, seed=seed)

    original = pipeline_mod.set_alpha
    monkeypatch.setattr(pipeline_mod, "set_alpha", boom)
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path / "c"), configs=("spsa", "uniform"))
    res = run_experiment(cfg, output=tmp_path / "r.json", progress=False)
    saved = _strict_json(tmp_path / "r.json")
    assert saved["status"] == "complete with errors" == res["status"]
    assert [e["config"] for e in saved["errors"]] == ["spsa"] and "simulated failure" in saved["errors"][0]["error"]
    assert [r["config"] for r in saved["runs"]] == ["uniform"]


def test_an_interrupted_run_keeps_its_results(tmp_path, monkeypatch) -> None:
    calls = []
    original = pipeline_mod.finetune

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline_mod, "finetune", interrupt_second)
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path / "c"), configs=("uniform", "data-size"))
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, output=tmp_path / "r.json", progress=False)
    saved = _strict_json(tmp_path / "r.json")
    assert saved["status"] == "interrupted" and [r["config"] for r in saved["runs"]] == ["uniform"]
    assert len(saved["experts"]) == 3 and len(list((tmp_path / "c" / "experts").glob("*.json"))) == 3


def test_any_module_through_the_python_api(tmp_path) -> None:
    def mlp() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))

    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path), arch="my-mlp", configs=("spsa", "backprop", "forward-grad"))
    res = run_experiment(cfg, model_fn=mlp, progress=False)
    assert res["status"] == "complete", res["errors"]
    assert set(res["summary"]) == {"spsa", "backprop", "forward-grad"}


def test_bad_input_fails_before_any_training(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg'; available: \['mobilenet_v2', 'resnet20'"):
        run_experiment(ExperimentConfig.quick(cache_dir=str(tmp_path), arch="vgg"), output=tmp_path / "r.json", progress=False)
    with pytest.raises(ValueError, match="the training split holds 1297 images but the sizes need"):
        run_experiment(ExperimentConfig.quick(cache_dir=str(tmp_path), k=40, per_expert=40), progress=False)
    assert not (tmp_path / "experts").exists()


@pytest.mark.parametrize("task", ["causal-lm", "sequence-classification"])
def test_a_text_task_flows_through_the_same_pipeline_cache_and_report(task, tmp_path) -> None:
    pytest.importorskip("transformers")
    configs = ("uniform", "spsa", "backprop", "best-single", "sail")
    cfg = ExperimentConfig.quick(dataset="text-domains", task=task, arch="tiny-llama", cache_dir=str(tmp_path / "c"),
                                 configs=configs, sail_features="penultimate")
    res = run_experiment(cfg, output=tmp_path / "r.json", markdown=tmp_path / "r.md", progress=False)
    assert res["status"] == "complete", res["errors"]
    assert res["task"]["kind"] == task and set(res["summary"]) == set(configs)
    metric = "next-token accuracy" if task == "causal-lm" else "accuracy"
    assert res["task"]["metric"] == metric and f"accuracy below is {metric}." in (tmp_path / "r.md").read_text()
    for run in res["runs"]:
        assert all(0.0 <= a <= 1.0 for a in run["test_accuracy"]) and all(np.isfinite(run["test_loss"]))
    assert all(0.0 <= e["test_accuracy"] <= 1.0 for e in res["experts"])
    again = run_experiment(cfg.replace(configs=("uniform",)), progress=False)
    assert all(e["cached"] for e in again["experts"])  # the same cache, keyed by the task's data
    assert again["runs"][0]["test_accuracy"] == next(r for r in res["runs"] if r["config"] == "uniform")["test_accuracy"]


def test_a_bad_output_path_fails_before_any_work(tmp_path, monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("nothing may run before the paths are checked")

    monkeypatch.setattr(pipeline_mod.Experiment, "prepare", refuse)
    (tmp_path / "a-file").write_text("x")
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path / "c"), configs=("uniform",))
    with pytest.raises(ValueError, match=r"^plot '.*a-file/f.png' cannot be written: '.*a-file' is a file, not a folder$"):
        run_experiment(cfg, output=tmp_path / "r.json", plot=tmp_path / "a-file" / "f.png", progress=False)
    with pytest.raises(ValueError, match=r"^cache_dir '.*a-file' cannot be used: it is a file, not a folder$"):
        run_experiment(cfg.replace(cache_dir=str(tmp_path / "a-file")), output=tmp_path / "r.json", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_a_non_finite_fine_tuning_loss_is_an_error_of_its_configuration(tmp_path, monkeypatch) -> None:
    original = pipeline_mod.finetune

    def diverging_for_spsa(*args, **kwargs):
        if kwargs["desc"].startswith("fine-tune spsa"):
            kwargs["loss_fn"] = lambda out, y: torch.nn.functional.cross_entropy(out, y) * float("nan")
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline_mod, "finetune", diverging_for_spsa)
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path / "c"), configs=("spsa", "uniform"))
    res = run_experiment(cfg, output=tmp_path / "r.json", progress=False)
    assert res["status"] == "complete with errors" and [r["config"] for r in res["runs"]] == ["uniform"]
    assert [e["config"] for e in res["errors"]] == ["spsa"]
    assert res["errors"][0]["error"].startswith("NonFiniteLossError: training loss is nan at epoch 1, batch 1")


def test_the_file_says_running_after_every_expert_and_run_and_failed_on_a_crash(tmp_path, monkeypatch) -> None:
    """What a kill leaves (the last file written, "running") and what a crash leaves ("failed")."""
    out = tmp_path / "r.json"
    seen = []
    original = pipeline_mod.finetune

    def watching(*args, **kwargs):
        seen.append(_strict_json(out))
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline_mod, "finetune", watching)
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path / "c"), configs=("uniform", "spsa"))
    run_experiment(cfg, output=out, progress=False)
    assert [(s["status"], len(s["experts"]), len(s["runs"])) for s in seen] == [("running", 3, 0), ("running", 3, 1)]

    def crash(self):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pipeline_mod.Experiment, "run_configs", crash)
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_experiment(cfg.replace(budget=30), output=out, progress=False)
    saved = _strict_json(out)
    assert saved["status"] == "failed" and saved["errors"][-1]["error"] == "RuntimeError: disk on fire"
    assert len(saved["experts"]) == 3 and len(saved["previous_runs"]) == 2  # the runs of the first call are kept


def test_a_non_finite_loss_while_learning_alpha_is_an_error_of_its_configuration(tmp_path, monkeypatch) -> None:
    original = pipeline_mod.Experiment.objective

    def nan_for_learning(self, seed):
        if seed is None:  # the objective that builds blended models and held-out scores
            return original(self, seed)
        return lambda points: np.full(len(points), np.nan)

    monkeypatch.setattr(pipeline_mod.Experiment, "objective", nan_for_learning)
    cfg = ExperimentConfig.quick(cache_dir=str(tmp_path / "c"), configs=("spsa", "uniform"))
    res = run_experiment(cfg, output=tmp_path / "r.json", progress=False)
    assert res["status"] == "complete with errors" and [r["config"] for r in res["runs"]] == ["uniform"]
    assert res["errors"][0]["error"].startswith("RuntimeError: minimize(method='spsa') did not succeed: stopped: "
                                                "the objective returned nan")
