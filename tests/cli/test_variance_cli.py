"""``spsa-mix bench variance``: options, a tiny run (strict JSON, PNG, CSV, table), errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from spsa_mix.cli import main
from spsa_mix.cli import variance as variance_cli

from .signal_helpers import interrupt_once_saved


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spsa-mix bench variance")
    variance_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def _no_nan(token: str):
    raise ValueError(f"non-standard JSON constant {token}")


def test_importing_the_command_does_not_import_torch_or_matplotlib():
    code = ("import sys, argparse, spsa_mix.cli.variance as v; v.add_arguments(argparse.ArgumentParser()); "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_defaults_are_the_issue_grid():
    a = parse()
    assert a.k == [2, 5, 10, 20, 50] and a.m == [1, 2, 4, 8, 16]
    assert a.problem == "quadratic" and a.space == ["alpha"] and a.sum_zero == ["on", "off"]
    assert a.directions == ["normalized-gaussian", "gaussian", "rademacher"]
    assert a.scale == ["unbiased", "paper"] and a.mu == [0.05] and a.orthogonal == ["off"]


def test_unknown_choice_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        parse("--directions", "uniform")
    assert "invalid choice: 'uniform'" in capsys.readouterr().err


def test_tiny_run_writes_strict_json_png_csv_and_prints_the_table(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    argv = ["bench", "variance", "--k", "2", "4", "--m", "1", "3", "--samples", "400", "--space", "alpha", "beta",
            "--directions", "normalized-gaussian", "gaussian", "--sum-zero", "on", "--scale", "paper",
            "--orthogonal", "on", "off", "--output", str(out), "--plot", str(png), "--csv", "--no-progress"]
    assert main(argv) == 0
    doc = json.loads(out.read_text(), parse_constant=_no_nan)
    assert doc["benchmark"] == "variance"
    assert doc["command"].startswith("spsa-mix bench variance --problem quadratic --k 2 4 --m 1 3")
    assert {(r["orthogonal"], r["space"]) for r in doc["rows"]} == {(o, s) for o in (True, False) for s in ("alpha", "beta")}
    assert doc["settings"]["n_samples"] == 400 and doc["settings"]["spaces"] == ["alpha", "beta"]
    assert doc["summary"]["rows"] == len(doc["rows"]) > 0
    assert doc["summary"]["comparisons"] >= doc["summary"]["agree"] > 0.9 * doc["summary"]["comparisons"]
    assert set(doc["ci_methods"]) == {"bias_norm", "variance", "mse", "cosine"}
    row = doc["rows"][0]
    assert {"empirical", "theory", "agree", "paper_prop1", "k", "m", "dim", "target_norm"} <= set(row)
    assert any(r["empirical"]["cosine"] is not None and r["theory"]["cosine"] is None for r in doc["rows"])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert (tmp_path / "r.csv").read_text().count("\n") == len(doc["rows"]) + 1
    text = capsys.readouterr().out
    assert text.splitlines()[0].split()[:3] == ["space", "scale", "directions"]
    assert "closed forms inside their 0.999 intervals" in text


def test_network_problem_runs(tmp_path, capsys, one_thread_cli):
    out = tmp_path / "n.json"
    argv = ["bench", "variance", "--problem", "network", "--k", "2", "3", "--m", "1", "2", "--samples", "20",
            "--directions", "normalized-gaussian", "--sum-zero", "on", "--scale", "unbiased", "--expert-steps", "2",
            "--target-size", "16", "--threads", "1", "--output", str(out), "--plot", "", "--no-progress", "--quiet"]
    assert main(argv) == 0
    doc = json.loads(out.read_text(), parse_constant=_no_nan)
    assert {r["k"] for r in doc["rows"]} == {2, 3}
    assert all(r["theory"]["limit"] == "mu->0" for r in doc["rows"])
    assert doc["settings"]["network"] == {"target_size": 16, "steps": 2}
    assert "--threads 1" in doc["command"]


@pytest.fixture
def one_thread_cli():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--k", "1", "3"], "every K must be at least 2"),
        (["--m", "0"], "m must be an integer >= 1, but got 0"),
        (["--samples", "1"], "n_samples must be at least 2, but got 1"),
        (["--mu", "0"], "mu must be positive, but got 0.0"),
        (["--confidence", "1"], r"confidence must be a number in \(0, 1\), but got 1.0"),
        (["--seed", "-1"], "--seed must be >= 0, but got -1"),
        (["--problem", "network", "--threads", "0"], "--threads must be >= 1, but got 0"),
        (["--target-size", "0"], "--target-size must be >= 1, but got 0"),  # checked whatever the problem
        (["--expert-steps", "-2"], "--expert-steps must be >= 1, but got -2"),
    ],
)
def test_bad_input_exits_with_status_2(argv, message, tmp_path, capsys):
    code = main(["bench", "variance", *argv, "--output", str(tmp_path / "x.json"), "--plot", "", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("spsa-mix bench variance: error:")
    import re

    assert re.search(message, err)
    assert not (tmp_path / "x.json").exists()


def test_ctrl_c_writes_the_rows_already_finished(tmp_path, monkeypatch, capsys):
    import spsa_mix.variance.bench as bench

    real = bench.sample_estimates
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the second (K, configuration) cell
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "sample_estimates", interrupted)
    out = tmp_path / "v.json"
    code = main(["bench", "variance", "--k", "3", "5", "--m", "1", "2", "--directions", "gaussian", "--sum-zero", "on",
                 "--samples", "200", "--output", str(out), "--plot", "", "--no-progress", "--quiet"])
    assert code == 130
    data = json.loads(out.read_text())
    assert data["status"] == "interrupted"
    assert data["summary"]["rows"] == len(data["rows"]) > 0
    assert {r["k"] for r in data["rows"]} == {3}  # the first cell's rows, finished before Ctrl-C
    assert "finished rows are in" in capsys.readouterr().err


def test_the_json_is_rewritten_after_every_finished_cell_marked_running(tmp_path, monkeypatch):
    """A kill loses nothing already computed: the file holds the finished rows, "running"."""
    import spsa_mix.variance.bench as bench

    real = bench.sample_estimates
    out = tmp_path / "v.json"
    seen = []

    def watching(*args, **kwargs):
        seen.append(json.loads(out.read_text()) if out.exists() else None)
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "sample_estimates", watching)
    code = main(["bench", "variance", "--k", "3", "5", "--m", "1", "2", "--directions", "gaussian", "--sum-zero", "on",
                 "--samples", "200", "--output", str(out), "--plot", "", "--no-progress", "--quiet"])
    assert code == 0
    assert seen[0] is None  # nothing to write before the first cell
    assert seen[1]["status"] == "running" and {r["k"] for r in seen[1]["rows"]} == {3}
    assert seen[1]["summary"]["rows"] == len(seen[1]["rows"]) == 2
    final = json.loads(out.read_text())
    assert final["status"] == "complete" and len(final["rows"]) == 4
    monkeypatch.undo()
    assert main(["bench", "variance", "--k", "4", "--m", "1", "--directions", "gaussian", "--sum-zero", "on",
                 "--samples", "200", "--output", str(out), "--plot", "", "--no-progress", "--quiet"]) == 0
    assert [r["k"] for r in json.loads(out.read_text())["rows"]] == [4]  # a rerun starts afresh


def test_a_real_sigint_exits_130_with_the_rows_so_far(tmp_path):
    out = tmp_path / "v.json"
    code, err, rows = interrupt_once_saved(
        ["bench", "variance", "--k", *map(str, range(2, 60)), "--m", "1", "--directions", "gaussian", "--sum-zero", "on",
         "--samples", "20000", "--output", str(out), "--plot", str(tmp_path / "v.png"), "--csv", "--no-progress",
         "--quiet"], out, "rows", what="bench variance")
    assert code == 130, err
    data = json.loads(out.read_text(), parse_constant=_no_nan)
    assert data["status"] == "interrupted" and rows <= len(data["rows"]) < 58
    assert data["summary"]["rows"] == len(data["rows"])
    assert "finished rows are in" in err
    assert not (tmp_path / "v.png").exists() and not (tmp_path / "v.csv").exists()  # written at the end only


def test_help_states_each_default_once():
    import re

    out = subprocess.run([sys.executable, "-m", "spsa_mix", "bench", "variance", "--help"], capture_output=True,
                         text=True, check=True).stdout
    text = re.sub(r"\s+", " ", out).split("options:", 1)[1]  # past the usage lines
    assert "(default: 10000; 300 for network)" in text and "(default: None)" not in text
    assert "(default: False)" not in text and "['" not in text  # lists as on the command line
    assert "(default: 2 5 10 20 50)" in text and "(default: on off)" in text
    for option in text.split(" --")[1:]:
        assert option.count("default") <= 1, option
