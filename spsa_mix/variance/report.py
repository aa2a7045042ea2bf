"""Table, CSV and figure of the variance benchmark's rows (:func:`spsa_mix.variance.bench.run_grid`).

Example
-------
>>> from spsa_mix.variance.bench import run_grid
>>> out = run_grid(problem="linear", ks=[3], ms=[1], kinds=["gaussian"], sum_zero=[False],
...                scales=["paper"], n_samples=500, seed=0)
>>> print(render_table(out["rows"]).splitlines()[0].split()[:4])
['space', 'scale', 'directions', 'sz']
"""

from __future__ import annotations

import csv
import io
import os
import textwrap
from collections.abc import Sequence
from typing import Any

__all__ = ["render_table", "render_proposition1", "write_csv", "plot_rows", "config_key", "config_label"]

_METRICS = ("bias_norm", "variance", "mse", "cosine")
_CONFIG_FIELDS = ("problem", "space", "directions", "sum_zero", "orthogonal", "scale_kind", "mu", "derivative")


def config_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """The fields that define one line family (everything but K and m).

    >>> config_key({"problem": "linear", "space": "alpha", "directions": "gaussian", "sum_zero": True,
    ...             "orthogonal": False, "scale_kind": "unbiased", "mu": 0.05, "derivative": "exact", "k": 3})
    ('linear', 'alpha', 'gaussian', True, False, 'unbiased', 0.05, 'exact')
    """
    return tuple(row[f] for f in _CONFIG_FIELDS)


def config_label(row: dict[str, Any]) -> str:
    """A short title for one configuration.

    >>> config_label({"problem": "quadratic", "space": "beta", "directions": "gaussian", "sum_zero": True,
    ...               "orthogonal": False, "scale_kind": "paper", "mu": 0.05, "derivative": "exact"})
    'quadratic, beta, gaussian, sum-zero, c=1 (paper), exact derivative'
    """
    parts = [row["problem"], row["space"], row["directions"], "sum-zero" if row["sum_zero"] else "full space"]
    if row["orthogonal"]:
        parts.append("orthogonal")
    parts.append("c=1 (paper)" if row["scale_kind"] == "paper" else "c unbiased")
    parts.append("exact derivative" if row["derivative"] == "exact" else f"mu={row['mu']:g}")
    return ", ".join(parts)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _cell(emp: dict[str, float] | None, th: float | None, ok: bool | None) -> str:
    if emp is None:
        return "-"
    mark = "" if ok is None else (" ok" if ok else " NO")
    return f"{_fmt(emp['value'])} [{_fmt(emp['low'])},{_fmt(emp['high'])}] th {_fmt(th)}{mark}"


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one line per row, empirical value ``[interval]``, closed form
    (``th``) and whether it lies inside the interval (``ok``/``NO``).

    >>> render_table([]).split()
    ['space', 'scale', 'directions', 'sz', 'orth', 'mu', 'K', 'm', 'bias_norm', 'variance', 'mse', 'cosine', 'paper_prop1']
    """
    head = ["space", "scale", "directions", "sz", "orth", "mu", "K", "m",
            "bias_norm", "variance", "mse", "cosine", "paper_prop1"]
    lines = []
    for r in rows:
        lines.append([
            r["space"], r["scale_kind"], r["directions"], "y" if r["sum_zero"] else "n",
            "y" if r["orthogonal"] else "n", "exact" if r["derivative"] == "exact" else f"{r['mu']:g}",
            str(r["k"]), str(r["m"]),
            *(_cell(r["empirical"][name], r["theory"][name], r["agree"][name]) for name in _METRICS),
            _fmt(r.get("paper_prop1")),
        ])
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(head)]
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    out += ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in lines]
    return "\n".join(out)


def _rel(emp: dict[str, float], scale: float, digits: int = 4) -> str:
    return f"{emp['value'] / scale:.{digits}f} [{emp['low'] / scale:.{digits}f}, {emp['high'] / scale:.{digits}f}]"


def render_proposition1(rows: Sequence[dict[str, Any]]) -> str:
    """GLUE's Proposition 1 beside the measurements, as a markdown table.

    Uses the rows of unit directions in the full space (the proposition's setting) with
    GLUE's ``c = 1``, and the unbiased ``c = K`` rows when present. Every quantity is
    divided by ``|g|`` or ``|g|^2``. Empty string when no row applies.

    >>> render_proposition1([])
    ''
    """
    paper = [r for r in rows if r.get("paper_prop1") is not None and r["grad_norm"] > 0]
    if not paper:
        return ""
    unbiased = {(r["space"], r["mu"], r["derivative"], r["k"], r["m"]): r for r in rows
                if r["directions"] == "normalized-gaussian" and not r["sum_zero"] and not r["orthogonal"]
                and r["scale_kind"] == "unbiased"}
    head = ("| space | K | m | bias/‖g‖ measured | (1-1/K) | Var/‖g‖² measured | (K-1)/(mK²) "
            "| MSE/‖g‖² measured | closed form | eq. (6) (K-1)/(mK) | eq. (6) in MSE interval "
            "| c=K: MSE/‖g‖² measured | (K-1)/m |")
    lines = [head, "|" + "|".join("---" for _ in range(13)) + "|"]
    for r in sorted(paper, key=lambda r: (r["space"], r["k"], r["m"])):
        g, g2 = r["grad_norm"], r["grad_norm"] ** 2
        e, t = r["empirical"], r["theory"]
        claim = r["paper_prop1"] / g2
        inside = e["mse"]["low"] <= r["paper_prop1"] <= e["mse"]["high"]
        u = unbiased.get((r["space"], r["mu"], r["derivative"], r["k"], r["m"]))
        u_cells = ["-", "-"] if u is None else [_rel(u["empirical"]["mse"], g2), f"{u['theory']['mse'] / g2:.4f}"]
        lines.append("| " + " | ".join([
            r["space"], str(r["k"]), str(r["m"]), _rel(e["bias_norm"], g), f"{t['bias_norm'] / g:.4f}",
            _rel(e["variance"], g2), f"{t['variance'] / g2:.4f}", _rel(e["mse"], g2), f"{t['mse'] / g2:.4f}",
            f"{claim:.4f}", "yes" if inside else "no", *u_cells]) + " |")
    return "\n".join(lines)


def _flat(row: dict[str, Any]) -> dict[str, Any]:
    out = {key: row[key] for key in ("problem", "space", "directions", "sum_zero", "orthogonal", "scale_kind",
                                     "scale", "mu", "derivative", "k", "m", "dim", "grad_norm", "target_norm")}
    for name in _METRICS:
        emp = row["empirical"][name]
        for part in ("value", "low", "high"):
            out[f"{name}_{part}"] = None if emp is None else emp[part]
        out[f"{name}_theory"] = row["theory"][name]
        out[f"{name}_agree"] = row["agree"][name]
    out["theory_limit"] = row["theory"]["limit"]
    out["n_samples"] = row["empirical"]["n_samples"]
    out["paper_prop1"] = row.get("paper_prop1")
    return out


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """One flat line per row (empty cells where a value does not exist).

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "empty.csv")
    >>> write_csv([], path); open(path).read()
    ''
    """
    from spsa_mix.io import atomic_write_text, check_writable

    check_writable(path, "path")
    flat = [_flat(r) for r in rows]
    buf = io.StringIO(newline="")
    if flat:
        writer = csv.DictWriter(buf, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    atomic_write_text(path, buf.getvalue())


def plot_rows(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, title: str | None = None) -> None:
    """Variance and MSE (divided by ``|h|^2``, the squared norm of the target) against K,
    log scales, one colour per m: empirical values with their intervals (solid), closed
    forms dashed, GLUE's Proposition 1 dotted where it applies. Two panels per
    configuration, two configurations per line of the figure.

    >>> import os, tempfile
    >>> from spsa_mix.variance.bench import run_grid
    >>> rows = run_grid(problem="linear", ks=[2], ms=[1], kinds=["gaussian"], sum_zero=[False],
    ...                 n_samples=50, seed=0)["rows"]
    >>> path = os.path.join(tempfile.mkdtemp(), "fig.png")
    >>> plot_rows(rows, path); open(path, "rb").read(4)
    b'\x89PNG'
    """
    from spsa_mix.io import check_writable

    check_writable(path, "path")  # before the drawing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(config_key(r), []).append(r)
    n_cfg = max(1, len(groups))
    ncols = 4 if n_cfg > 1 else 2
    nrows = -(-2 * n_cfg // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    all_ms = sorted({r["m"] for r in rows})
    cmap = plt.get_cmap("viridis")
    colour = {m: cmap(i / max(1, len(all_ms) - 1)) for i, m in enumerate(all_ms)}
    for gi, (_, grp) in enumerate(groups.items()):
        for j, metric in enumerate(("variance", "mse")):
            ax = axes[(2 * gi + j) // ncols][(2 * gi + j) % ncols]
            for m in sorted({r["m"] for r in grp}):
                sel = sorted((r for r in grp if r["m"] == m), key=lambda r: r["k"])
                ks = np.array([r["k"] for r in sel], dtype=float)
                norm = np.array([r["target_norm"] ** 2 if r["target_norm"] > 0 else 1.0 for r in sel])
                val = np.array([r["empirical"][metric]["value"] for r in sel]) / norm
                low = np.array([r["empirical"][metric]["low"] for r in sel]) / norm
                high = np.array([r["empirical"][metric]["high"] for r in sel]) / norm
                th = np.array([r["theory"][metric] for r in sel]) / norm
                pos = val > 1e-12  # exact zeros (d = 1) print as ~1e-30 after rounding
                if np.any(pos):
                    lo_err = np.clip(val - np.maximum(low, val * 1e-3), 0, None)
                    ax.errorbar(ks[pos], val[pos], yerr=[lo_err[pos], (high - val)[pos]], color=colour[m],
                                marker="o", ms=3, lw=1.2, capsize=2, label=f"m={m}")
                tpos = th > 1e-12
                if np.any(tpos):
                    ax.plot(ks[tpos], th[tpos], ls="--", color=colour[m], lw=1.0)
                if metric == "mse" and sel[0].get("paper_prop1") is not None:
                    paper = np.array([r["paper_prop1"] for r in sel]) / norm  # full space: h = g
                    ax.plot(ks, paper, ls=":", color=colour[m], lw=1.0)
            ax.set_xscale("log")
            ax.set_yscale("log")
            grid_ks = sorted({r["k"] for r in grp})
            ax.xaxis.set_major_locator(FixedLocator(grid_ks))
            ax.xaxis.set_major_formatter(FixedFormatter([str(k) for k in grid_ks]))
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xlabel("K (experts)")
            ax.set_ylabel(("variance" if metric == "variance" else "MSE") + r" / $|h|^2$")
            ax.set_title(textwrap.fill(config_label(grp[0]), 52), fontsize=7)
            ax.grid(True, which="major", alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[m], marker="o", ms=3, label=f"m={m}") for m in all_ms]
    handles += [Line2D([], [], color="k", ls="-", label="measured (interval)"),
                Line2D([], [], color="k", ls="--", label="closed form")]
    if any(r.get("paper_prop1") is not None for r in rows):
        handles.append(Line2D([], [], color="k", ls=":", label="GLUE Prop. 1 (claimed)"))
    for idx in range(2 * n_cfg, nrows * ncols):
        axes[idx // ncols][idx % ncols].set_visible(False)
    height = 3.4 * nrows + 1.0
    fig.set_size_inches(4.2 * ncols, height)
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1.0 - 0.35 / height))
    if title:
        fig.suptitle(title, fontsize=10, y=1.0 - 0.05 / height, va="top")
    # fixed margins: tight_layout measures every log-scale tick label (seconds per panel)
    fig.subplots_adjust(left=0.07, right=0.99, bottom=0.5 / height, top=1.0 - 1.0 / height, wspace=0.35,
                        hspace=0.55)
    from spsa_mix.io import atomic_path

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
