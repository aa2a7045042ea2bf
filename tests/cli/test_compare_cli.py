import argparse
import csv
import json

import numpy as np
import pytest

from spsa_mix import compare as library
from spsa_mix.cli import compare

from .signal_helpers import interrupt_once_saved


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    return parser.parse_args(list(argv))


def strict_json(path):
    def no_constant(name):
        raise AssertionError(f"invalid JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=no_constant)


def test_quadratic_writes_valid_json_csv_and_plot(tmp_path, capsys):
    out, table, fig = tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "c.png"
    args = parse("--k", "4", "--budget", "30", "--seeds", "2", "--methods", "uniform", "spsa@lr=0.05",
                 "nevergrad:OnePlusOne", "optuna:random@parametrization=stick", "--output", str(out),
                 "--csv", str(table), "--plot", str(fig), "--no-progress")
    assert compare.run(args) == 0
    printed = capsys.readouterr().out
    assert "final loss f(x)-f* (exact, noise-free)" in printed and "`optuna:random@parametrization=stick`" in printed
    data = strict_json(out)
    labels = ["uniform", "spsa@lr=0.05", "nevergrad:OnePlusOne", "optuna:random@parametrization=stick"]
    assert [s["method"] for s in data["summary"]] == labels
    assert len(data["runs"]) == 8
    for r in data["runs"]:
        assert r["cost"] <= 30 and r["final_loss"] >= -1e-12
        x = np.asarray(r["x"])
        assert np.all(x > 0) and x.sum() == pytest.approx(1.0)
        if r["method"] != "uniform":
            assert r["overhead_per_eval_s"] > 0 and r["objective_s"] >= 0
            assert len(r["curve"]["evals"]) == len(r["curve"]["loss"]) == r["nit"]
    uni = [r for r in data["runs"] if r["method"] == "uniform"]
    assert [r["rel"] for r in uni] == [1.0, 1.0] and data["runs"][0]["overhead_per_eval_s"] is None
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 8 and rows[0]["method"] == "uniform"
    assert fig.stat().st_size > 1000 and fig.read_bytes()[:4] == b"\x89PNG"


def test_final_loss_is_the_exact_gap_of_res_x(tmp_path):
    out = tmp_path / "r.json"
    assert compare.run(parse("--k", "3", "--budget", "20", "--seeds", "1", "--noise", "0.1", "--methods", "spsa",
                             "--output", str(out), "--no-progress", "--quiet")) == 0
    run = strict_json(out)["runs"][0]
    p = library.quadratic_problem(3, 0, noise=0.1)
    expected = p.objective.value(np.asarray(run["x"])) - p.info["f_star"]
    assert run["final_loss"] == pytest.approx(expected, rel=1e-12)


def test_nan_values_become_null(tmp_path):
    out = tmp_path / "r.json"
    assert compare.run(parse("--k", "3", "--budget", "5", "--seeds", "1", "--methods", "uniform",
                             "--output", str(out), "--no-progress", "--quiet")) == 0
    data = strict_json(out)
    assert data["summary"][0]["overhead_per_eval_s_mean"] is None  # NaN in Python, null in JSON


@pytest.mark.parametrize("argv,message", [
    (["--k", "1"], "--k must be >= 2, but got 1"),
    (["--seeds", "0"], "--seeds must be >= 1, but got 0"),
    (["--methods", "nevergrad:Nope"], "unknown Nevergrad optimizer 'Nope'"),
    (["--methods", "sgd"], "unknown method 'sgd'"),
    (["--methods", "spsa@lrr=0.1"], "method 'spsa' does not use options="),
    (["--noise", "-1"], "--noise must be a number >= 0, but got -1.0"),
    (["--noise", "nan"], "--noise must be a number >= 0, but got nan"),
    (["--condition", "0.5"], "--condition must be a number >= 1, but got 0.5"),
    (["--condition", "inf"], "--condition must be a number >= 1, but got inf"),
    (["--batch-size", "0"], "--batch-size must be >= 1, but got 0"),
    (["--expert-epochs", "0"], "--expert-epochs must be >= 1, but got 0"),
    (["--target-size", "-3"], "--target-size must be >= 1, but got -3"),
])
def test_bad_arguments_return_2(argv, message, capsys):
    assert compare.run(parse(*argv, "--budget", "10", "--seeds", "1", "--no-progress", "--quiet")
                       if "--seeds" not in argv else parse(*argv, "--budget", "10", "--no-progress", "--quiet")) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_help_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, argparse; from spsa_mix.cli import compare; compare.add_arguments(argparse.ArgumentParser()); "
            "print(sorted(m for m in ('torch', 'optuna', 'nevergrad', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_network_problem_end_to_end(tmp_path):
    out = tmp_path / "net.json"
    args = parse("--problem", "network", "--k", "3", "--budget", "10", "--seeds", "1", "--expert-epochs", "2",
                 "--methods", "uniform", "spsa", "optuna:random", "--output", str(out), "--no-progress", "--quiet")
    assert compare.run(args) == 0
    data = strict_json(out)
    assert data["problem_info"]["k"] == 3 and len(data["problem_info"]["expert_accuracy"]) == 3
    for r in data["runs"]:
        assert 0.0 <= r["heldout_accuracy"] <= 1.0 and r["final_loss"] > 0 and r["cost"] <= 10


def test_a_failing_run_loses_nothing_and_the_others_still_run(tmp_path, monkeypatch, capsys):
    """A method that raises mid-benchmark: its error is recorded, every other run is kept."""
    real = library.run_one

    def flaky(label, method, kwargs, problem, seed, budget, vectorized):
        if label == "spsa@lr=0.05" and seed == 1:
            raise RuntimeError("boom")
        return real(label, method, kwargs, problem, seed, budget, vectorized)

    monkeypatch.setattr(library, "run_one", flaky)
    out = tmp_path / "r.json"
    rc = compare.run(parse("--k", "4", "--budget", "40", "--seeds", "2", "--methods", "spsa", "spsa@lr=0.05",
                           "--no-progress", "--quiet", "--output", str(out)))
    assert rc == 1
    data = json.loads(out.read_text())
    assert data["status"] == "complete with errors"
    assert data["errors"] == [{"method": "spsa@lr=0.05", "seed": 1, "error": "RuntimeError: boom"}]
    assert sorted((r["method"], r["seed"]) for r in data["runs"]) == [("spsa", 0), ("spsa", 1), ("spsa@lr=0.05", 0)]
    assert "boom" in capsys.readouterr().err


def test_ctrl_c_keeps_the_runs_so_far(tmp_path, monkeypatch):
    real = library.run_one
    calls = []

    def interrupted(*args):
        calls.append(args[0])
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(library, "run_one", interrupted)
    out = tmp_path / "r.json"
    rc = compare.run(parse("--k", "4", "--budget", "40", "--seeds", "3", "--methods", "spsa",
                           "--no-progress", "--quiet", "--output", str(out)))
    assert rc == 130
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted" and len(data["runs"]) == 2


def test_a_real_sigint_stops_the_comparison_exits_130_and_keeps_the_finished_runs(tmp_path):
    """End to end: ``python -m spsa_mix bench compare`` in a subprocess, SIGINT once the
    JSON holds a finished run; the process exits 130, the file says "interrupted" and keeps
    the runs that had finished."""
    out = tmp_path / "r.json"
    code, err, runs_seen = interrupt_once_saved(
        ["bench", "compare", "--k", "10", "--budget", "20000", "--seeds", "500", "--methods", "spsa", "--no-progress",
         "--quiet", "--output", str(out), "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "r.png")],
        out, "runs", what="bench compare",
        settle=lambda runs: runs[0]["wall_s"] / 2)  # so that the signal lands inside minimize, most likely
    assert code == 130, err
    data = strict_json(out)
    assert data["status"] == "interrupted"
    assert len(data["runs"]) >= runs_seen and len(data["runs"]) < 500
    assert all(r["status"] != "INTERRUPTED" for r in data["runs"])  # an interrupted run is not recorded as a result
    assert "interrupted after" in err and str(out) in err
    assert not (tmp_path / "r.csv").exists() and not (tmp_path / "r.png").exists()  # written at the end only


def test_the_quadratic_problem_refuses_what_it_cannot_build():
    with pytest.raises(ValueError, match="noise_std must be a number >= 0, but got -1.0"):
        library.quadratic_problem(3, 0, noise=-1.0)
    with pytest.raises(ValueError, match="condition must be a number >= 1, but got 0.5"):
        library.quadratic_problem(3, 0, condition=0.5)


def _help(*words):
    import re
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "spsa_mix", *words, "--help"], capture_output=True, text=True,
                         check=True).stdout
    return re.sub(r"\s+", " ", out)  # argparse wraps lines


def test_help_shows_every_default_once_and_the_method_names():
    text = _help("bench", "compare").split("options:", 1)[1]  # past the usage lines
    for option, default in [("--k K", "10"), ("--budget BUDGET", "200"), ("--seeds SEEDS", "3"),
                            ("--problem {quadratic,network}", "quadratic"), ("--condition CONDITION", "10.0"),
                            ("--noise NOISE", "0.0"), ("--batch-size BATCH_SIZE", "64"), ("--device DEVICE", "cpu"),
                            ("--expert-epochs EXPERT_EPOCHS", "30"), ("--target-size TARGET_SIZE", "300")]:
        assert option in text and f"(default: {default})" in text.split(option, 1)[1].split(" --", 1)[0], option
    methods = text.split("--methods", 1)[1].split(" --", 1)[0]
    for name in ("spsa", "forward-grad", "backprop", "nevergrad:<name>", "optuna:<name>", "uniform",
                 "(default: spsa nevergrad:NGOpt optuna:tpe)"):
        assert name in methods, name
    assert "(default: None)" not in text and "(default: False)" not in text
    for option in text.split(" --")[1:]:
        assert option.count("default") <= 1, option


def test_the_json_says_running_after_every_run_and_a_rerun_replaces_it(tmp_path, monkeypatch):
    real = library.run_one
    out = tmp_path / "r.json"
    seen = []

    def watching(*args):
        seen.append(json.loads(out.read_text()) if out.exists() else None)
        return real(*args)

    monkeypatch.setattr(library, "run_one", watching)
    argv = ["--k", "3", "--budget", "20", "--methods", "spsa", "--no-progress", "--quiet", "--output", str(out)]
    assert compare.run(parse(*argv, "--seeds", "2")) == 0
    assert seen[0] is None and (seen[1]["status"], len(seen[1]["runs"])) == ("running", 1)
    assert strict_json(out)["status"] == "complete"
    assert compare.run(parse(*argv, "--seeds", "1")) == 0  # no reuse: the file is the new comparison's
    assert len(strict_json(out)["runs"]) == 1
