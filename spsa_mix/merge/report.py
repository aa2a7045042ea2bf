"""What a merge tells its user: which point and which blend it kept and why, the figure, the
model card, the last line.

* :func:`kept_line`: which point of the search :func:`spsa_mix.minimize` returned (the
  best on the validation data of those it checked: the start, every ``validate_every``
  steps and the last iterate), or the start candidate that beat it;
* :func:`choose_blend`: with ``select: best``, the learned blend, the uniform blend or the
  best single expert, whichever scores lowest; a difference within ``rtol`` is a tie,
  and a tie keeps the learned blend;
* :func:`loss_figure`: ``loss.png``: the loss on the scoring data at each check (or a
  moving average of the minibatch losses when there are few checks) as the main curve,
  the raw minibatch losses faint, the uniform blend and the best single expert as
  horizontal lines, and the learned scale on its own axis;
* :func:`model_card`: ``README.md`` beside the weights, as ``save_pretrained`` users
  expect: base, experts and weights, method and budget, the scores, how to load it, the
  command;
* :func:`wrote_line`: the command's last line, naming the files inside the output.

Example
-------
>>> choose_blend({"learned": 2.7447, "uniform": 3.1, "best single": 2.7447}, "best")[0]
'learned'
>>> pair(2.74469, 2.74471)
('2.74469', '2.74471')
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TIE_RTOL", "pair", "choose_blend", "kept_line", "loss_figure", "save_figure", "model_card", "wrote_line"]

# ours: losses closer than this (relative) are a tie: a start vertex (VERTEX_EPS = 1e-6 off) scores as the vertex
TIE_RTOL = 1e-5


def pair(a: float, b: float, *, decimals: int = 4) -> tuple[str, str]:
    """``a`` and ``b`` with ``decimals`` decimals, or as many more (up to 8) as they need to differ."""
    d = decimals
    while d < 8 and f"{a:.{d}f}" == f"{b:.{d}f}" and a != b:
        d += 1
    return f"{a:.{d}f}", f"{b:.{d}f}"


def choose_blend(losses: Mapping[str, float], select: str, *, where: str = "validation",
                 rtol: float = TIE_RTOL) -> tuple[str, str]:
    """The blend to write, of ``losses`` (``"learned"`` and the others), and why.

    ``select="learned"``: the learned blend. ``"best"``: the lowest loss; another blend
    replaces the learned one only when it is lower by more than ``rtol`` of the loss, and a
    blend whose loss is not finite is never chosen over one whose loss is.

    >>> choose_blend({"learned": float("nan"), "uniform": 3.1, "best single": float("inf")}, "best")[0]
    'uniform'
    """
    learned = losses["learned"]
    if select == "learned":
        return "learned", "select: learned writes the learned blend whatever its score"
    others = {k: v for k, v in losses.items() if k != "learned" and math.isfinite(v)}
    if not math.isfinite(learned):
        if not others:
            return "learned", f"no blend has a finite {where} loss: the learned blend is written as asked"
        rival = min(others, key=lambda k: others[k])
        return rival, (f"the learned blend's {where} loss is not finite ({learned}); the {rival} blend has the lowest "
                       f"({others[rival]:.4f})")
    if not others:
        return "learned", f"the only finite {where} loss ({learned:.4f}) is the learned blend's"
    rival = min(others, key=lambda k: others[k])
    margin = rtol * max(abs(learned), 1e-12)
    if others[rival] < learned - margin:
        theirs, ours = pair(others[rival], learned)
        return rival, (f"the {rival} blend scores better on the {where} data than the learned one ({theirs} against "
                       f"{ours}; select: learned writes the learned blend)")
    ties = [k for k, v in others.items() if abs(v - learned) <= margin]
    if ties:
        return "learned", (f"it ties with the {ties[0]} blend on the {where} data ({learned:.4f}, within "
                           f"{rtol:.0e} relative): a tie keeps the learned blend")
    return "learned", f"the lowest {where} loss ({learned:.4f}) of the learned, uniform and best single blends"


def kept_line(res: Mapping[str, Any], where: str, *, validate_every: int) -> str:
    """Which point of the search ``res`` holds, and why (see the module docstring)."""
    nit = int(res.get("nit", 0))
    start = res.get("start") or {}
    if start.get("returned") not in (None, "learned"):
        ours, theirs = start.get("final_losses") or [math.nan, math.nan]
        a, b = pair(theirs, ours)
        return (f"kept from the search: its start candidate {start['returned']} ({where} loss {a}), which beat "
                f"the best point of the {nit} steps ({b})")
    val = np.asarray(res.get("history", {}).get("val_loss", []), dtype=float)
    fun = float(res.get("val_fun", math.nan))
    checked = "checked every {} steps and at the last".format(validate_every)
    if val.size and np.isfinite(val).any() and np.nanmin(val) <= fun:
        step = int(np.nanargmin(val)) + 1
        return f"kept from the search: the point after step {step} of {nit} ({where} loss {fun:.4f}; {checked})"
    return (f"kept from the search: the start point ({where} loss {fun:.4f}): no point of the {nit} steps "
            f"scored lower ({checked})")


def _moving_average(y: np.ndarray, width: int) -> np.ndarray:
    kernel = np.ones(width) / width
    return np.convolve(y, kernel, mode="valid")


def loss_figure(history: Mapping[str, Any], *, title: str, references: Mapping[str, float], where: str,
                scale_column: int | None = None) -> Any:
    """The figure of ``loss.png`` (a matplotlib ``Figure``; see the module docstring).

    ``references``: a loss per label (the uniform blend, the best single expert), drawn as
    horizontal lines; ``scale_column``: the column of the history's ``x`` that holds a
    learned scale (drawn on a second axis).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    cost = np.asarray(history.get("cost", []), dtype=float)
    loss = np.asarray(history.get("loss", []), dtype=float)
    val = np.asarray(history.get("val_loss", []), dtype=float)
    if cost.size:
        ax.plot(cost, loss, lw=0.7, alpha=0.35, color="tab:blue", label="training minibatch loss (per step)")
        width = max(1, min(len(loss) // 5, 20))
        if width > 1:
            ax.plot(cost[width - 1:], _moving_average(loss, width), lw=1.6, color="tab:blue",
                    label=f"training loss, moving average of {width} steps")
    if val.size == cost.size and np.isfinite(val).any():
        keep = np.isfinite(val)
        ax.plot(cost[keep], val[keep], "o-", ms=4, lw=1.8, color="tab:red", label=f"{where} loss at each check")
    colors = iter(("tab:gray", "tab:green", "tab:purple"))
    for label, value in references.items():
        ax.axhline(value, ls="--", lw=1.2, color=next(colors, "black"), label=f"{label} ({value:.4f})")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel(f"loss (references on the {where} data)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    x = history.get("x")
    if scale_column is not None and x is not None and np.asarray(x).ndim == 2 and cost.size:
        ax2 = ax.twinx()
        ax2.plot(cost, np.asarray(x, dtype=float)[:, scale_column], lw=1.2, color="tab:orange", label="learned scale")
        ax2.set_ylabel("learned scale")
        handles, labels = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(handles + h2, labels + l2, fontsize=7)
    else:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG (atomically) and close it."""
    import matplotlib.pyplot as plt

    from spsa_mix.io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def model_card(*, name: str, model: str | None, experts: Sequence[str], base: str | None, alpha: Sequence[Any],
               scale: float | None, space: str, method: str, budget: int, table: str, written: str, reason: str,
               command: str, scored_on: str, loader: str, warnings: Sequence[str] = ()) -> str:
    """The model card (``README.md``) of a merge (see the module docstring)."""
    weights = np.asarray(alpha, dtype=float)
    lines = [f"# {name}", "",
             f"A merge of {len(experts)} experts written by `spsa-mix merge` (spsa_mix): the {written} blend, "
             f"{space} space, weights learned by `{method}` with a budget of {budget} evaluations "
             f"on the target data.", ""]
    if model:
        lines += [f"- architecture: `{model}`"]
    if base:
        lines += [f"- base: `{base}`"]
    if weights.ndim == 1:
        lines += ["- experts and weights (written):"]
        lines += [f"  - `{e}`: {w:.4f}" for e, w in zip(experts, weights, strict=True)]
    else:
        lines += ["- experts: " + ", ".join(f"`{e}`" for e in experts),
                  f"- weights: one row per layer group ({weights.shape[0]} groups), in `recipe.json` (`alpha`)"]
    if scale is not None:
        lines += [f"- task vectors' scale: {scale:.4f}"]
    lines += [f"- written: {written} ({reason})", "",
              f"## Scores on the {scored_on} data", "", table, ""]
    if warnings:
        lines += ["## Warnings", "", *[f"- {w}" for w in warnings], ""]
    lines += ["## Load it", "", "```python", loader, "```", "",
              "## Reproduce it", "", "```bash", command, "```", "",
              "The whole config, the history of the search and the library versions are in `recipe.json`; "
              "the loss curve in `loss.png`.", ""]
    return "\n".join(lines)


def wrote_line(folder: Path, files: Sequence[Path]) -> str:
    """``Wrote <folder>/: a, b, c``: the files written, named inside ``folder``."""
    names = [str(f.relative_to(folder)) if f.is_relative_to(folder) else str(f) for f in files]
    return f"Wrote {folder}/: {', '.join(names)}"
