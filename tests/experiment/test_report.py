"""Summary over seeds, tables, JSON without NaN, the figure."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from spsa_mix.experiment.report import (
    compare,
    experts_table,
    markdown_table,
    plot_curves,
    render_markdown,
    summarize,
)
from spsa_mix.io import to_jsonable, write_json


def _runs() -> list[dict]:
    rows = []
    for config, base in (("spsa", 0.6), ("data-size", 0.5), ("backprop", 0.62)):
        for seed in range(3):
            curve = [base + 0.01 * seed, base + 0.1 + 0.01 * seed, base + 0.2 + 0.01 * seed]
            rows.append({"config": config, "seed": seed, "alpha": [0.25, 0.75], "prior_accuracy": curve[0],
                         "test_accuracy": curve, "evaluations": 100, "images": 6400, "alpha_seconds": 1.0})
    return rows


def test_summary_statistics() -> None:
    s = summarize({"runs": _runs()})
    assert list(s) == ["spsa", "data-size", "backprop"]
    assert s["spsa"]["prior"]["mean"] == pytest.approx(0.61)
    assert s["spsa"]["prior"]["std"] == pytest.approx(0.01)  # sample sd of 0.60, 0.61, 0.62
    assert s["spsa"]["final"]["min"] == pytest.approx(0.8) and s["spsa"]["final"]["max"] == pytest.approx(0.82)
    assert len(s["spsa"]["curve"]) == 3
    assert s["spsa"]["effective_experts"] == pytest.approx(1 / (0.25**2 + 0.75**2))


def test_compare_in_points_paired_by_seed() -> None:
    runs = _runs()
    gaps = compare({"runs": runs})
    assert gaps["data-size"]["final"]["mean"] == pytest.approx(10.0) and gaps["data-size"]["final"]["std"] == 0
    assert gaps["backprop"]["prior"]["mean"] == pytest.approx(-2.0)
    assert gaps["backprop"]["finetune_mean"]["mean"] == pytest.approx(-2.0) and gaps["backprop"]["n_seeds"] == 3
    assert "proxy-accuracy" not in gaps
    # a seed run by one configuration only is left out of the pairing
    runs.append({**runs[0], "seed": 9})
    assert compare({"runs": runs})["data-size"]["n_seeds"] == 3


def test_tables() -> None:
    table = markdown_table(summarize({"runs": _runs()}))
    assert table.splitlines()[2].startswith("| SPSA (GLUE Config 4) | 61.00 ± 1.00 | 81.00 ± 1.00 | 76.00 ± 1.00 | 100 | 6400 |")
    rows = experts_table([{"index": 3, "size": 80, "test_accuracy": 0.5, "holdout_accuracy": None,
                           "class_counts": [0, 70, 10], "cached": False}], ["a", "b", "c"])
    assert rows.splitlines()[2] == "| 3 | 80 | 50.00 | n/a | b:70, c:10 | no |"


def test_render_markdown_mentions_errors_and_paper_claims() -> None:
    text = render_markdown({"runs": _runs(), "config": {"dataset": "digits", "k": 2},
                            "errors": [{"config": "optuna", "seed": 0, "error": "boom"}]})
    assert "paper: GLUE beats it by up to 8.5 points" in text and "- optuna seed 0: boom" in text
    assert "SPSA minus data-size (paired by seed, 3 seeds): prior +10.00 ± 0.00" in text


def test_render_markdown_describes_experts_of_their_own_domains() -> None:
    cfg = {"k": 2, "per_expert": 10, "dirichlet_alpha": 0.5, "target_size": 20}
    assert "(Dirichlet(0.5) classes)" in render_markdown({"runs": _runs(), "config": cfg})
    text = render_markdown({"runs": _runs(), "config": {**cfg, "expert_domains": ["noise", "blur"],
                                                         "target_domain": "noise+blur"}})
    assert "10 images each (each of its own domain: noise, blur)" in text and "Dirichlet" not in text
    assert "Target: 20 images of a new domain, noise+blur" in text


def test_json_is_strict(tmp_path: Path) -> None:
    data = {"a": float("nan"), "b": np.array([1.0, np.inf]), "c": np.int64(3), "d": (1, 2)}
    path = write_json(data, tmp_path / "x" / "r.json")
    parsed = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert parsed == {"a": None, "b": [1.0, None], "c": 3, "d": [1, 2]}
    assert to_jsonable(math.inf) is None


def test_plot_writes_a_png(tmp_path: Path) -> None:
    path = plot_curves(summarize({"runs": _runs()}), tmp_path / "f.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_the_figure_shows_identical_curves_once_says_what_the_bars_are_and_zooms_on_fine_tuning() -> None:
    import matplotlib.pyplot as plt

    from spsa_mix.experiment.report import curves_figure

    runs = _runs()
    runs += [{**r, "config": "uniform"} for r in runs if r["config"] == "data-size"]  # an identical curve
    for r in runs:  # priors far below the fine-tuned accuracies, as after blending non-IID experts
        r["test_accuracy"] = [r["test_accuracy"][0] - 0.3, *r["test_accuracy"][1:]]
        r["prior_accuracy"] = r["test_accuracy"][0]
    summary = summarize({"runs": runs})
    fig = curves_figure(summary, title="t")
    try:
        prior_ax, ft_ax = fig.axes
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend == ["SPSA (GLUE Config 4)", "data-size (Config 1) = uniform", "backprop (Config 3)"]
        assert [t.get_text() for t in prior_ax.get_yticklabels()] == legend
        caption = " ".join(t.get_text() for t in fig.texts)
        assert "bars: min to max over seeds" in caption and "mean over 3 seeds" in caption
        finetuned = [100 * c[k] for s in summary.values() for c in s["curve"][1:] for k in ("min", "max")]
        low, high = ft_ax.get_ylim()
        assert low <= min(finetuned) and high >= max(finetuned)
        assert high - low < 1.5 * (max(finetuned) - min(finetuned))  # the priors (30 points lower) are not in range
        xs = [line.get_xdata() for line in ft_ax.get_lines() if len(line.get_xdata()) == 2]
        assert len({tuple(np.round(x, 6)) for x in xs}) == 3  # each curve at its own offset: none hides another
    finally:
        plt.close(fig)
