"""Results of an experiment: summary over seeds, markdown tables, the figure, JSON.

All functions take the results dict the pipeline builds (:mod:`spsa_mix.experiment.pipeline`):
``results["runs"]`` holds one row per (configuration, seed) with ``prior_accuracy`` and
``test_accuracy`` (the accuracy after each fine-tuning epoch, epoch 0 being the prior),
``evaluations``, ``images`` and ``alpha_seconds``; ``results["experts"]`` one row per
expert. Accuracies are fractions in the JSON and percentages in the tables. The spread
over seeds is the sample standard deviation (``ddof=1``; 0 for a single seed) and the
range (min, max) is kept in the JSON.

Example
-------
>>> runs = [{"config": "spsa", "seed": s, "alpha": [0.5, 0.5], "prior_accuracy": p, "test_accuracy": [p, p + 0.1],
...          "evaluations": 10, "images": 640, "alpha_seconds": 0.1} for s, p in enumerate([0.5, 0.7])]
>>> s = summarize({"runs": runs})
>>> s["spsa"]["prior"]["mean"], s["spsa"]["final"]["mean"], s["spsa"]["n_seeds"]
(0.6, 0.7, 2)
>>> print(markdown_table(s).splitlines()[2])
| SPSA (GLUE Config 4) | 60.00 ± 14.14 | 70.00 ± 14.14 | 70.00 ± 14.14 | 10 | 640 | 0.10 | 2.00 |
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spsa_mix.io import atomic_path, atomic_write_text, check_outputs, check_writable, write_json

__all__ = [
    "refresh",
    "summarize",
    "baseline_check",
    "scale_lines",
    "compare",
    "markdown_table",
    "experts_table",
    "comparison_lines",
    "render_markdown",
    "plot_curves",
    "curves_figure",
    "identical_groups",
    "figure_title",
    "render_results",
    "render_paths",
    "runs_phrase",
    "LABELS",
]

# Labels in the table and the figure (GLUE's names for Configs 1-4).
LABELS = {
    "data-size": "data-size (Config 1)",
    "proxy-accuracy": "proxy-accuracy (Config 2)",
    "backprop": "backprop (Config 3)",
    "spsa": "SPSA (GLUE Config 4)",
    "spsa-defaults": "SPSA, library defaults",
    "task-arithmetic": "task arithmetic (scale on held-out)",
    "task-vectors": "task vectors, learned scale",
    "from-scratch": "from scratch (no prior)",
}
# The rows a learned blend must not lose to (each costs at most K + K - 1 held-out passes).
CHECKABLE = ("uniform", "best-single", "greedy-soup")
LEARNED = ("spsa-defaults", "spsa", "backprop", "forward-grad", "nevergrad", "optuna", "task-vectors")


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
            "min": float(arr.min()), "max": float(arr.max()), "n": int(arr.size)}


def _effective_experts(alpha: Sequence[float]) -> float | None:
    a = np.asarray(alpha, dtype=np.float64).ravel()
    return float(1.0 / np.sum(a**2)) if a.size else None  # None: no blend (the from-scratch row)


def summarize(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Mean, spread and range over seeds of every configuration, in run order.

    ``prior`` and ``final`` are the test accuracy before and after fine-tuning;
    ``finetune_mean`` the accuracy averaged over fine-tuning epochs 1..E (per seed, then
    over seeds); ``curve`` holds the per-epoch statistics; ``effective_experts`` is ``1 / sum(alpha**2)``
    (1 for one expert, K for the uniform blend), averaged over seeds.
    """
    by_config: dict[str, list[Mapping[str, Any]]] = {}
    for run in results.get("runs", []):
        by_config.setdefault(run["config"], []).append(run)
    out: dict[str, dict[str, Any]] = {}
    for name, runs in by_config.items():
        curves = [r["test_accuracy"] for r in runs]
        n_epochs = min(len(c) for c in curves)
        out[name] = {
            "n_seeds": len(runs),
            "seeds": [r["seed"] for r in runs],
            "prior": _stats([r["prior_accuracy"] for r in runs]),
            "final": _stats([c[n_epochs - 1] for c in curves]),
            "curve": [_stats([c[e] for c in curves]) for e in range(n_epochs)],
            "finetune_mean": _stats([float(np.mean(c[1:n_epochs])) for c in curves]) if n_epochs > 1 else
            _stats([]),
            "evaluations": _stats([r["evaluations"] for r in runs])["mean"],
            "images": _stats([r["images"] for r in runs])["mean"],
            "alpha_seconds": _stats([r["alpha_seconds"] for r in runs])["mean"],
            "effective_experts": _stats([_effective_experts(r["alpha"]) for r in runs])["mean"],
        }
        if any(r.get("scale") is not None for r in runs):
            out[name]["scale"] = _stats([r.get("scale") for r in runs])
    return out


def compare(results: Mapping[str, Any], *, ours: str = "spsa",
            others: Sequence[str] = ("data-size", "proxy-accuracy", "backprop")) -> dict[str, dict[str, Any]]:
    """SPSA (``ours``) minus each other configuration, in accuracy points (percent), paired by seed.

    For each seed run by both, the difference of the test-accuracy curves; then, over
    seeds: ``prior`` and ``final`` (mean and sd of the difference at epoch 0 and at the
    last epoch), ``finetune_mean`` (the difference of the accuracy averaged over epochs
    1..E, less noisy than one epoch), and ``max_over_epochs`` / ``min_over_epochs`` of the
    seed-averaged difference (the paper's "up to" is the largest). Only configurations
    present in ``results["runs"]``.

    >>> runs = [{"config": c, "seed": 0, "test_accuracy": t} for c, t in
    ...         (("spsa", [0.6, 0.8, 0.9]), ("backprop", [0.5, 0.85, 0.8]))]
    >>> g = compare({"runs": runs})["backprop"]
    >>> round(g["prior"]["mean"], 2), round(g["final"]["mean"], 2), round(g["finetune_mean"]["mean"], 2)
    (10.0, 10.0, 2.5)
    >>> round(g["max_over_epochs"], 2), round(g["min_over_epochs"], 2), g["n_seeds"]
    (10.0, -5.0, 1)
    """
    curves: dict[str, dict[int, list[float]]] = {}
    for run in results.get("runs", []):
        curves.setdefault(run["config"], {})[run["seed"]] = list(run["test_accuracy"])
    if ours not in curves:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for other in others:
        if other not in curves or other == ours:
            continue
        seeds = sorted(set(curves[ours]) & set(curves[other]))
        if not seeds:
            continue
        n_epochs = min(min(len(curves[c][s]) for s in seeds) for c in (ours, other))
        diffs = np.array([[100.0 * (curves[ours][s][e] - curves[other][s][e]) for e in range(n_epochs)]
                          for s in seeds])  # (seeds, epochs)
        mean_curve = diffs.mean(axis=0)
        out[other] = {
            "n_seeds": len(seeds),
            "prior": _stats(diffs[:, 0].tolist()),
            "final": _stats(diffs[:, -1].tolist()),
            "finetune_mean": _stats(diffs[:, 1:].mean(axis=1).tolist()) if n_epochs > 1 else _stats([]),
            "max_over_epochs": float(mean_curve.max()),
            "min_over_epochs": float(mean_curve.min()),
        }
    return out


def refresh(results: dict[str, Any]) -> dict[str, Any]:
    """Recompute ``summary`` and ``comparison`` from ``runs`` (e.g. of a saved, partial or
    older results file), in place; returns ``results``.

    >>> refresh({"runs": []})["summary"]
    {}
    """
    results["summary"] = summarize(results)
    results["comparison"] = compare(results)
    return results


def _pct(stats: Mapping[str, Any]) -> str:
    if stats.get("mean") is None:
        return "n/a"
    return f"{100 * stats['mean']:.2f} ± {100 * (stats.get('std') or 0.0):.2f}"


def _num(value: Any, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def markdown_table(summary: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per configuration: prior and fine-tuned test accuracy (%, mean ± sd over
    seeds; after the last epoch and averaged over epochs 1..E), evaluations and images
    forwarded to set alpha, seconds, effective experts (``1 / sum(alpha**2)``)."""
    lines = [
        "| configuration | prior test acc. (%) | fine-tuned test acc. (%) | mean over fine-tuning epochs (%) "
        "| alpha evaluations | images forwarded | alpha time (s) | effective experts |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, s in summary.items():
        lines.append(
            f"| {LABELS.get(name, name)} | {_pct(s['prior'])} | {_pct(s['final'])} | {_pct(s.get('finetune_mean', {}))} "
            f"| {_num(s['evaluations'], '.0f')} | {_num(s['images'], '.0f')} | {_num(s['alpha_seconds'], '.2f')} "
            f"| {_num(s['effective_experts'], '.2f')} |"
        )
    return "\n".join(lines)


def experts_table(experts: Sequence[Mapping[str, Any]], class_names: Sequence[str] | None = None) -> str:
    """The experts' own accuracies (GLUE's Table 1) with their split sizes and top classes.

    >>> print(experts_table([{"index": 0, "size": 10, "test_accuracy": 0.5, "holdout_accuracy": 0.4,
    ...                       "class_counts": [7, 3], "cached": True}]).splitlines()[2])
    | 0 | 10 | 50.00 | 40.00 | 0:7, 1:3 | yes |
    """
    lines = ["| expert | images | test acc. (%) | held-out acc. (%) | largest classes (class:count) | from cache |",
             "| ---: | ---: | ---: | ---: | --- | --- |"]
    for e in experts:
        counts = np.asarray(e.get("class_counts", []))
        top: list[int] = np.argsort(-counts, kind="stable")[:3].tolist() if counts.size else []
        names = [class_names[i] if class_names else str(i) for i in top]
        shown = ", ".join(f"{n}:{int(counts[i])}" for n, i in zip(names, top, strict=True) if counts[i] > 0)
        held = e.get("holdout_accuracy")
        lines.append(f"| {e['index']} | {e['size']} | {100 * e['test_accuracy']:.2f} | "
                     f"{'n/a' if held is None else f'{100 * held:.2f}'} | {shown} | {'yes' if e.get('cached') else 'no'} |")
    return "\n".join(lines)


def comparison_lines(gaps: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Sentences for the gaps of :func:`compare`, with the paper's claims beside them."""
    claims = {"data-size": "paper: GLUE beats it by up to 8.5 points after fine-tuning",
              "proxy-accuracy": "paper: GLUE beats it by up to 9.1 points after fine-tuning",
              "backprop": "paper: GLUE within 1.4 points of it, or better"}
    out = []
    for other, g in gaps.items():
        ft = g["finetune_mean"]
        mean_ft = "n/a" if ft["mean"] is None else f"{ft['mean']:+.2f} ± {ft['std']:.2f}"
        out.append(
            f"- SPSA minus {other} (paired by seed, {g['n_seeds']} seeds): prior {g['prior']['mean']:+.2f} ± "
            f"{g['prior']['std']:.2f}; last epoch {g['final']['mean']:+.2f} ± {g['final']['std']:.2f}; "
            f"mean over fine-tuning epochs {mean_ft}; seed-averaged gap from {g['min_over_epochs']:+.2f} to "
            f"{g['max_over_epochs']:+.2f} over epochs ({claims.get(other, '')})"
        )
    return out


def baseline_check(summary: Mapping[str, Mapping[str, Any]], *, key: str = "prior") -> list[str]:
    """For each learned row present, its mean test accuracy (``key``: ``"prior"``, ``"final"``
    or ``"finetune_mean"``) minus the best of :data:`CHECKABLE` present: a learned blend should
    not lose to a candidate it could have checked. Empty without those rows.

    >>> s = {"uniform": {"prior": {"mean": 0.8}}, "best-single": {"prior": {"mean": 0.7}},
    ...      "spsa": {"prior": {"mean": 0.78}}}
    >>> baseline_check(s)
    ['- SPSA (GLUE Config 4): -2.00 points against uniform (80.00 %): below it']
    """
    refs = {n: summary[n][key]["mean"] for n in CHECKABLE if n in summary and summary[n][key].get("mean") is not None}
    if not refs:
        return []
    best = max(refs, key=lambda n: refs[n])
    out = []
    for name in LEARNED:
        if name not in summary or summary[name][key].get("mean") is None:
            continue
        gap = 100 * (summary[name][key]["mean"] - refs[best])
        verdict = "at least as good" if gap >= -1e-9 else "below it"
        out.append(f"- {LABELS.get(name, name)}: {gap:+.2f} points against {best} ({100 * refs[best]:.2f} %): {verdict}")
    return out


def scale_lines(summary: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The task-vector scales of the rows that have one (mean ± sd over seeds).

    >>> scale_lines({"task-vectors": {"scale": {"mean": 1.5, "std": 0.1}}})
    ['- task vectors, learned scale: s = 1.50 ± 0.10']
    """
    return [f"- {LABELS.get(n, n)}: s = {s['scale']['mean']:.2f} ± {s['scale']['std'] or 0.0:.2f}"
            for n, s in summary.items() if s.get("scale") and s["scale"].get("mean") is not None]


def _target_phrase(cfg: Mapping[str, Any], split: Mapping[str, Any]) -> str:
    conc = cfg.get("target_concentration")
    n = split.get("target_size", cfg.get("target_size", "?"))
    if cfg.get("target_used") is not None:
        n = f"{n} (of {cfg.get('target_size')} drawn)"
    if cfg.get("target_domain"):  # experts of their own domains (benchmarks/pretrained_experts.py)
        return f"Target: {n} images of a new domain, {cfg['target_domain']}"
    if conc is None:
        return f"Target: {n} IID images"
    return (f"Target: {n} images of a label-shifted domain (class proportions ~ Dirichlet({conc}); held-out and "
            "test drawn with them)")


def render_markdown(results: Mapping[str, Any]) -> str:
    """The whole markdown report: setup, experts table, configurations table, gaps."""
    summary = results.get("summary") or summarize(results)
    cfg = results.get("config", {})
    data = results.get("dataset", {})
    split = results.get("split", {})
    n_epochs = cfg.get("finetune_epochs", "?")
    head = [
        f"## Blending experts on {data.get('name', cfg.get('dataset', '?'))} ({cfg.get('arch', '?')}, K={cfg.get('k', '?')})",
        "",
        f"Experts: {cfg.get('per_expert', '?')} images each "
        + (f"(each of its own domain: {', '.join(cfg['expert_domains'])}), " if cfg.get("expert_domains") else
           f"(Dirichlet({cfg.get('dirichlet_alpha', '?')}) classes), ") +
        f"{cfg.get('expert_epochs', '?')} epochs. {_target_phrase(cfg, split)} (learn alpha, "
        f"fine-tune), held-out: {cfg.get('holdout_size', '?')}, test: {split.get('test_size', data.get('n_test', '?'))}. "
        f"Alpha budget: {cfg.get('budget', '?')} evaluations (m={cfg.get('m', '?')})"
        + (f", loss {cfg['alpha_loss']}" if cfg.get("alpha_loss") else "")
        + f"; fine-tuning: {n_epochs} epochs; seeds: {cfg.get('seeds', '?')}. Status: {results.get('status', '?')}.",
        *([f"Task: {results['task']['kind']} (loss {results['task']['loss']}); accuracy below is "
           f"{results['task']['metric']}."] if results.get("task") else []),
        "",
        "### Experts (GLUE Table 1)",
        "",
        experts_table(results.get("experts", []), data.get("classes")),
        "",
        f"### Every way to set alpha (test accuracy, mean ± sd over seeds; fine-tuned = after {n_epochs} epochs)",
        "",
        markdown_table(summary),
    ]
    if scale_lines(summary):
        head += ["", "Task-vector scales (theta = base + s sum_i alpha_i (theta_i - base)):", "", *scale_lines(summary)]
    checks = baseline_check(summary)
    if checks:
        head += ["", "### Learned blends against the best candidate they could have checked (prior test accuracy)", "",
                 *checks]
    if results.get("reused_runs"):
        head += ["", f"Reused from the results file this run replaced (same settings, not run again): "
                     f"{runs_phrase(results['reused_runs'])}."]
    if results.get("previous_runs"):
        head += ["", f"The file also keeps {len(results['previous_runs'])} finished runs of other settings, or not "
                     "reached again yet, under `previous_runs` (not in the tables)."]
    gaps = results.get("comparison") or compare(results)
    if gaps:
        head += ["", "### SPSA against the GLUE paper's comparisons (accuracy points)", "", *comparison_lines(gaps)]
    if results.get("errors"):
        head += ["", "### Errors", ""] + [f"- {e['config']} seed {e.get('seed')}: {e['error']}" for e in results["errors"]]
    return "\n".join(head) + "\n"


def runs_phrase(runs: Sequence[Mapping[str, Any]]) -> str:
    """``config`` and ``seed`` of each run, grouped by configuration in order.

    >>> runs_phrase([{"config": "spsa", "seed": 0}, {"config": "uniform", "seed": 0}, {"config": "spsa", "seed": 1}])
    'spsa seeds 0, 1; uniform seed 0'
    """
    seeds: dict[str, list[str]] = {}
    for run in runs:
        seeds.setdefault(str(run["config"]), []).append(str(run["seed"]))
    return "; ".join(f"{c} seed{'s' if len(v) > 1 else ''} {', '.join(v)}" for c, v in seeds.items())


_STYLES: dict[str, dict[str, Any]] = {  # GLUE's four configurations stand out
    "spsa": dict(color="C3", lw=2.4, ls="-", marker="o"),
    "backprop": dict(color="C2", lw=1.8, ls="--", marker="s"),
    "data-size": dict(color="C0", lw=1.6, ls="-", marker="D"),
    "proxy-accuracy": dict(color="C1", lw=1.6, ls="-", marker="^"),
}
_OTHER_COLORS = ("C4", "C5", "C6", "C7", "C8", "C9", "black", "darkgoldenrod", "navy")
_OTHER_MARKERS = ("v", "P", "X", "<", ">", "*", "h", "p", "d")


def identical_groups(summary: Mapping[str, Mapping[str, Any]]) -> list[list[str]]:
    """The configurations with a complete curve, grouped where their curves are identical
    (mean, min and max at every epoch), in summary order: a figure draws each group once.

    >>> c = lambda *m: {"curve": [{"mean": v, "min": v, "max": v} for v in m]}
    >>> identical_groups({"data-size": c(0.5, 0.7), "spsa": c(0.6, 0.7), "uniform": c(0.5, 0.7)})
    [['data-size', 'uniform'], ['spsa']]
    """
    groups: list[tuple[list[str], list[tuple[Any, ...]]]] = []
    for name, s in summary.items():
        curve = [(c["mean"], c["min"], c["max"]) for c in s["curve"]]
        if not curve or any(m is None for m, _, _ in curve):
            continue
        for names, other in groups:
            if other == curve:
                names.append(name)
                break
        else:
            groups.append(([name], curve))
    return [names for names, _ in groups]


def curves_figure(summary: Mapping[str, Mapping[str, Any]], *, title: str = "") -> Any:
    """The figure of :func:`plot_curves` (a matplotlib ``Figure``, Agg backend).

    Left: the prior (epoch 0, before fine-tuning) of each configuration; right: test
    accuracy after each fine-tuning epoch, on a y-range of its own (the priors would squash
    it). Markers are means over seeds and bars span min to max over seeds; the points of
    one epoch are spread sideways so that none hides another, and identical curves
    (:func:`identical_groups`) are drawn once, labelled with every name.
    """
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    groups = identical_groups(summary)
    n_seeds = max((int(summary[g[0]]["n_seeds"]) for g in groups), default=0)
    epochs = max((len(summary[g[0]]["curve"]) - 1 for g in groups), default=0)
    fig, (prior_ax, ft_ax) = plt.subplots(1, 2, figsize=(12, 6.2), dpi=120,
                                          gridspec_kw={"width_ratios": [1.0, 1.7]})
    offsets = np.linspace(-0.3, 0.3, len(groups)) if len(groups) > 1 else np.zeros(1)
    others = iter(range(len(_OTHER_COLORS) * 3))
    labels = []
    for row, names in enumerate(groups):
        s = summary[names[0]]
        if names[0] in _STYLES:
            style = _STYLES[names[0]]
        else:
            j = next(others)
            style = dict(color=_OTHER_COLORS[j % len(_OTHER_COLORS)], lw=1.2, ls=(":", "-.")[j % 2],
                         marker=_OTHER_MARKERS[j % len(_OTHER_MARKERS)])
        label = " = ".join(LABELS.get(n, n) for n in names)
        labels.append(label)
        mean = 100 * np.array([c["mean"] for c in s["curve"]])
        lo = 100 * np.array([c["min"] for c in s["curve"]])
        hi = 100 * np.array([c["max"] for c in s["curve"]])
        bars = np.clip(np.vstack([mean - lo, hi - mean]), 0.0, None)  # (2, epochs + 1); rounding may cross 0
        prior_ax.errorbar(mean[:1], [row], xerr=bars[:, :1], color=style["color"], marker=style["marker"], ms=6,
                          ls="none", capsize=3, elinewidth=1.0)
        if len(mean) > 1:
            ft_ax.errorbar(np.arange(1, len(mean)) + offsets[row], mean[1:], yerr=bars[:, 1:], label=label,
                           color=style["color"], ls=style["ls"], lw=style["lw"], marker=style["marker"], ms=5,
                           capsize=2, elinewidth=0.8)
    prior_ax.set_yticks(range(len(groups)), labels, fontsize=8)
    prior_ax.set_ylim(len(groups) - 0.5, -0.5)  # the first configuration on top
    prior_ax.set_xlabel("test accuracy (%) of the prior, before fine-tuning")
    prior_ax.set_title("prior theta(alpha) (epoch 0)", fontsize=10)
    prior_ax.grid(axis="x", alpha=0.3)
    if epochs > 0:
        ft_ax.set_xticks(range(1, epochs + 1))
        ft_ax.set_xlim(0.5, epochs + 0.5)
        handles, names = ft_ax.get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=4, fontsize=7.5, frameon=False,
                   bbox_to_anchor=(0.5, 0.045))
    else:
        ft_ax.text(0.5, 0.5, "no fine-tuning epochs", ha="center", va="center", transform=ft_ax.transAxes)
    ft_ax.set_xlabel("fine-tuning epoch")
    ft_ax.set_ylabel("test accuracy (%)")
    ft_ax.set_title("during fine-tuning, alpha fixed (its own y-range)", fontsize=10)
    ft_ax.grid(alpha=0.3)
    fig.suptitle(title or "Test accuracy of the prior and during fine-tuning")
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    fig.text(0.5, 0.012, f"Markers: mean over {seeds}; bars: min to max over seeds. The points of one epoch are "
                         "spread sideways so that none hides another; identical curves are drawn once, labelled "
                         "'a = b'.", ha="center", va="bottom", fontsize=8)
    legend_rows = -(-len(groups) // 4)
    fig.tight_layout(rect=(0, 0.07 + 0.03 * legend_rows if epochs > 0 else 0.04, 1, 1))
    return fig


def plot_curves(summary: Mapping[str, Mapping[str, Any]], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Write :func:`curves_figure` as PNG to ``path`` (atomically); return the path."""
    import matplotlib.pyplot as plt

    path = check_writable(path, "path")
    fig = curves_figure(summary, title=title)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return path


def figure_title(config: Mapping[str, Any]) -> str:
    """The title of an experiment's figure, from its configuration.

    >>> figure_title({"dataset": "digits", "arch": "small-cnn", "k": 10, "seeds": [0, 1, 2]})
    'K=10 experts on digits (small-cnn, 3 seeds)'
    """
    return (f"K={config.get('k')} experts on {config.get('dataset')} ({config.get('arch')}, "
            f"{len(config.get('seeds', []))} seeds)")


def render_paths(path: str | os.PathLike[str], *, markdown: str | os.PathLike[str] | None = None,
                 plot: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Where :func:`render_results` writes the report and the figure: as given, else beside
    the results file (``.md`` and ``.png``).

    >>> [p.as_posix() for p in render_paths("runs/r.json", plot="fig.png")]
    ['runs/r.md', 'fig.png']
    """
    path = Path(path)
    return (Path(markdown) if markdown else path.with_suffix(".md"),
            Path(plot) if plot else path.with_suffix(".png"))


def render_results(path: str | os.PathLike[str], *, markdown: str | os.PathLike[str] | None = None,
                   plot: str | os.PathLike[str] | None = None) -> tuple[str, list[Path]]:
    """Re-render a results file (complete or partial): recompute its summary and gaps,
    rewrite it, write the markdown report and the figure (beside it unless given).

    Returns the report's text and the paths written.

    Raises
    ------
    ValueError
        If the file cannot be read as an experiment's results.
    """
    path = Path(path)
    md, png = render_paths(path, markdown=markdown, plot=plot)
    check_outputs({"path": path, "markdown": md, "plot": png})
    try:
        results = refresh(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot read results file {str(path)!r}: {e}") from None
    write_json(results, path, indent=2)
    text = render_markdown(results)
    atomic_write_text(md, text)
    plot_curves(results["summary"], png, title=figure_title(results.get("config", {})))
    return text, [path, md, png]
