"""benchmarks/defaults.py's suite (its verdict, a tiny run end to end) and benchmarks/drop_runs.py."""

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import defaults  # noqa: E402
import drop_runs  # noqa: E402


def _row(problem="quadratic", budget=400, **medians):
    methods = {name: {"values": list(values)} for name, values in medians.items()}
    return {"problem": problem, "budget": budget, "uniform_value": 1.0, "methods": methods}


def test_the_verdict_flags_each_kind_of_miss():
    row = _row(**{"defaults": [0.30, 0.31, 0.32], "lr=0.1, cosine": [0.10, 0.11, 0.12],
                  "start=uniform": [0.20, 0.21, 0.22], "start=best": [0.30, 0.33, 0.36],
                  "nevergrad:NGOpt": [0.05, 0.05, 0.05], "optuna:tpe": [0.9, 0.9, 0.9]})
    v = defaults.verdict(row)
    assert v["oracle"]["method"] == "lr=0.1, cosine" and v["oracle"]["excess"] == pytest.approx(0.2 / 0.89)
    assert v["misses"] == ["oracle +0.22", "> start=uniform", ">= nevergrad:NGOpt"]  # best is within its spread
    good = defaults.verdict(_row(budget=1000, **{"defaults": [0.1, 0.1, 0.1], "lr=0.1, cosine": [0.12, 0.12, 0.12],
                                                 "start=uniform": [0.1, 0.2, 0.3]}))
    assert good["oracle"]["method"] == "defaults" and good["misses"] == []


def test_a_tiny_suite_writes_its_table_and_json(tmp_path, capsys):
    out = tmp_path / "suite.json"
    assert defaults.main(["suite", "--output", str(out), "--k", "2", "--budgets", "100", "--seeds", "2",
                          "--noise", "0", "--optimum", "boundary", "--network-k", "--merge", "--no-pretrained",
                          "--methods", "defaults", "start=uniform", "start=best", "lr=0.3, cosine"]) == 0
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and len(doc["rows"]) == 1
    row = doc["rows"][0]
    assert set(row["methods"]) == {"defaults", "start=uniform", "start=best", "lr=0.3, cosine"}
    assert all(len(m["values"]) == 2 for m in row["methods"].values())
    assert row["medians"]["defaults"] <= row["medians"]["start=uniform"]  # k=2 on a face: the vertex wins
    text = out.with_suffix(".md").read_text()
    assert "| quadratic k=2 boundary | 100 |" in text and "The verdict:" in text
    assert "| quadratic, boundary | 1 |" in text  # the misses by problem family


def test_resume_keeps_the_rows_and_counts_every_earlier_run(tmp_path, capsys):
    out = tmp_path / "suite.json"
    tiny = ["suite", "--output", str(out), "--k", "2", "--seeds", "2", "--noise", "0", "--optimum", "interior",
            "--network-k", "--merge", "--no-pretrained", "--methods", "defaults", "start=uniform"]
    assert defaults.main([*tiny, "--budgets", "100"]) == 0
    runs = [json.loads(out.read_text())]
    for budgets in (["100", "400"], ["100", "400", "1000"]):  # each resume adds a budget, keeps the rest
        assert defaults.main([*tiny, "--budgets", *budgets, "--resume"]) == 0
        runs.append(json.loads(out.read_text()))
        assert [r["budget"] for r in runs[-1]["rows"]] == [int(b) for b in budgets]
        assert runs[-1]["rows"][:-1] == runs[-2]["rows"]  # kept as they were, not run again
        assert runs[-1]["resumed"]["rows_kept"] == len(budgets) - 1
    assert runs[-1]["resumed"]["commands_before"] == [r["command"] for r in runs[:-1]]
    assert runs[-1]["resumed"]["seconds_before"] == pytest.approx(sum(r["seconds"] for r in runs[:-1]))
    assert "2 rows kept from" in out.with_suffix(".md").read_text()


def test_drop_runs_keeps_the_other_rows(tmp_path):
    path = tmp_path / "results.json"
    runs = [{"config": c, "seed": s, "key": f"{c}{s}"} for c in ("spsa", "spsa-defaults", "uniform") for s in (0, 1)]
    path.write_text(json.dumps({"runs": runs, "previous_runs": [{"config": "spsa-defaults", "key": "old"}]}))
    assert drop_runs.main([str(path), "spsa-defaults"]) == 0
    kept = json.loads(path.read_text())
    assert [r["config"] for r in kept["runs"]] == ["spsa", "spsa", "uniform", "uniform"] and kept["previous_runs"] == []
    assert drop_runs.main([str(path), "sail"]) == 2  # no such rows: a clear error, nothing written
    assert drop_runs.main([str(tmp_path / "missing.json"), "spsa"]) == 2
