"""A rerun into the same results file: finished runs with the same settings are reused, and
the file never holds less than it did (an interrupted rerun keeps the old runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import spsa_mix.experiment.pipeline as pipeline_mod
from spsa_mix.experiment.config import ExperimentConfig
from spsa_mix.experiment.pipeline import run_experiment

CONFIGS = ("uniform", "spsa")


def _cfg(tmp: Path, **changes) -> ExperimentConfig:
    return ExperimentConfig.quick(**{"cache_dir": str(tmp / "cache"), "configs": CONFIGS, "seeds": (0, 1), **changes})


def _pairs(runs) -> list[tuple[str, int]]:
    return [(r["config"], r["seed"]) for r in runs]


@pytest.fixture
def first(tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "r.json"
    run_experiment(_cfg(tmp_path), output=out, progress=False)
    return out, json.loads(out.read_text())


def _refuse_work(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a run with the same settings must be reused, not computed again")

    monkeypatch.setattr(pipeline_mod, "set_alpha", refuse)
    monkeypatch.setattr(pipeline_mod, "finetune", refuse)


def test_a_rerun_with_the_same_settings_reuses_every_finished_run(first, tmp_path, monkeypatch) -> None:
    out, before = first
    _refuse_work(monkeypatch)
    lines: list[str] = []
    res = run_experiment(_cfg(tmp_path), output=out, progress=False, log=lines.append)
    assert res["status"] == "complete" and not res["errors"]
    assert res["runs"] == before["runs"]  # the same runs, whole
    assert res["reused_runs"] == [{"config": c, "seed": s} for c, s in _pairs(before["runs"])]
    assert sum("reused from" in line and str(out) in line for line in lines) == 4, lines
    saved = json.loads(out.read_text())
    assert saved["runs"] == before["runs"] and "previous_runs" not in saved
    assert saved["summary"] == before["summary"]


def test_what_is_reused_is_keyed_by_every_setting_that_determines_a_run(first, tmp_path, monkeypatch) -> None:
    out, before = first
    calls: list[str] = []
    original = pipeline_mod.set_alpha

    def counting(name, problem, *, seed=0):
        calls.append(f"{name} {seed}")
        return original(name, problem, seed=seed)

    monkeypatch.setattr(pipeline_mod, "set_alpha", counting)
    # more configurations and seeds: the finished runs are reused, only the new ones run
    res = run_experiment(_cfg(tmp_path, configs=("uniform", "spsa", "data-size"), seeds=(0, 1, 2)), output=out,
                         progress=False)
    assert calls == ["uniform 2", "spsa 2", "data-size 0"]  # data-size seeds 1, 2 reuse their seed-0 alpha
    assert len(res["reused_runs"]) == 4 and len(res["runs"]) == 9
    # another budget changes every run: nothing is reused, and the old runs are kept, not lost
    calls.clear()
    res = run_experiment(_cfg(tmp_path, budget=12), output=out, progress=False)
    assert calls == ["uniform 0", "spsa 0", "spsa 1"] and res["reused_runs"] == []
    saved = json.loads(out.read_text())
    assert _pairs(saved["runs"]) == _pairs(before["runs"])
    assert sorted(_pairs(saved["previous_runs"])) == sorted([
        ("uniform", 0), ("uniform", 1), ("uniform", 2), ("spsa", 0), ("spsa", 1), ("spsa", 2),
        ("data-size", 0), ("data-size", 1), ("data-size", 2)])
    # the former settings again: their runs come back from previous_runs
    calls.clear()
    res = run_experiment(_cfg(tmp_path), output=out, progress=False)
    assert calls == [] and res["runs"] == before["runs"]


def test_an_interrupted_rerun_leaves_the_old_runs_in_the_file(first, tmp_path, monkeypatch) -> None:
    out, before = first
    original = pipeline_mod.Experiment.train_experts

    def interrupted(self):
        original(self)  # the experts are saved into the file, then Ctrl-C before any run
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_mod.Experiment, "train_experts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(_cfg(tmp_path), output=out, progress=False)
    saved = json.loads(out.read_text())
    assert saved["status"] == "interrupted" and saved["runs"] == []
    assert saved["previous_runs"] == before["runs"]  # nothing finished is lost
    monkeypatch.undo()
    _refuse_work(monkeypatch)
    res = run_experiment(_cfg(tmp_path), output=out, progress=False)
    assert res["status"] == "complete" and res["runs"] == before["runs"]
    assert "previous_runs" not in json.loads(out.read_text())


def test_an_unreadable_old_file_is_replaced_with_a_warning(tmp_path, caplog) -> None:
    out = tmp_path / "r.json"
    out.write_text("{not json")
    with caplog.at_level("WARNING", logger="spsa_mix.experiment"):
        res = run_experiment(_cfg(tmp_path, configs=("uniform",), seeds=(0,)), output=out, progress=False)
    assert res["status"] == "complete" and json.loads(out.read_text())["runs"] == res["runs"]
    assert any(str(out) in r.getMessage() and "cannot be read" in r.getMessage() for r in caplog.records)
