"""Table, CSV and figure of the benchmark rows."""

from __future__ import annotations

import csv

import pytest

from spsa_mix.variance.bench import run_grid
from spsa_mix.variance.report import (
    config_key,
    config_label,
    plot_rows,
    render_proposition1,
    render_table,
    write_csv,
)


@pytest.fixture(scope="module")
def rows():
    return run_grid(problem="linear", ks=[2, 4], ms=[1, 2], kinds=["normalized-gaussian"], sum_zero=[True, False],
                    scales=["paper"], n_samples=300, seed=0)["rows"]


def test_table_has_one_line_per_row_and_the_marks(rows):
    text = render_table(rows)
    lines = text.splitlines()
    assert len(lines) == 1 + len(rows)
    assert lines[0].split()[:8] == ["space", "scale", "directions", "sz", "orth", "mu", "K", "m"]
    assert all((" ok" in line or " NO" in line) for line in lines[1:])
    assert "th" in lines[1]


def test_csv_round_trip(rows, tmp_path):
    path = tmp_path / "rows.csv"
    write_csv(rows, path)
    with open(path, newline="") as fh:
        back = list(csv.DictReader(fh))
    assert len(back) == len(rows)
    assert float(back[0]["variance_value"]) == pytest.approx(rows[0]["empirical"]["variance"]["value"])
    assert back[0]["theory_limit"] == "exact"
    assert {"bias_norm_low", "mse_theory", "cosine_agree", "paper_prop1"} <= set(back[0])


def test_plot_writes_a_png(rows, tmp_path):
    path = tmp_path / "fig.png"
    plot_rows(rows, path, title="test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_config_label_and_key(rows):
    assert len({config_key(r) for r in rows}) == 2
    assert config_label(rows[0]).startswith("linear, alpha, normalized-gaussian")


def test_proposition1_table():
    rows = run_grid(problem="quadratic", ks=[3, 6], ms=[1, 4], kinds=["normalized-gaussian"], sum_zero=[False],
                    scales=["paper", "unbiased"], n_samples=4000, seed=0)["rows"]
    text = render_proposition1(rows)
    lines = text.splitlines()
    assert len(lines) == 2 + 4  # header, rule, one line per (K, m) with c = 1
    assert lines[0].startswith("| space | K | m |")
    cells = {(line.split("|")[2].strip(), line.split("|")[3].strip()): line.split("|")[11].strip() for line in lines[2:]}
    assert cells == {("3", "1"): "yes", ("3", "4"): "no", ("6", "1"): "yes", ("6", "4"): "no"}
    assert render_proposition1([r for r in rows if r["scale_kind"] == "unbiased"]) == ""
