"""Regenerate the figures quoted in README.md and docs/*.md from the results files.

Every table of measured numbers in the documentation sits between two markers::

    <!-- generated: KIND benchmarks/results/FILE.json -->
    ...text made by render(KIND, FILE)...
    <!-- /generated -->

so a figure in the docs is always one that the code produced. ``tests/test_readme.py``
fails when a block differs from what its results file gives; run this script after a
benchmark to bring the docs up to date::

    python benchmarks/sync_docs.py           # rewrite the blocks in place
    python benchmarks/sync_docs.py --check   # exit 1 if a block is stale

Kinds: ``experiment-table`` (one row per way of setting alpha, as in the run's own report), ``experiment-experts`` (the experts'
test accuracies), ``experiment-gaps`` (GLUE's paired gaps to the paper's comparisons), ``experiment-check``
(each learned blend against the best candidate it could have checked, and the task-vector scales),
``compare-table`` (the table of ``spsa-mix bench compare``), ``directions-table`` (the
summary of ``benchmarks/directions.py``), ``directions-small-k`` (its ``--small-k``
comparison), ``md-tables`` (the tables and bullet lines of a
markdown report written by a benchmark).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/glue.md", "docs/directions.md", "docs/variance.md", "docs/blend.md",
        "docs/distributed.md", "docs/real_models.md", "docs/merge_methods.md", "docs/results.md", "docs/benchmarks.md",
        "docs/merge_cost.md", "docs/multitask.md")
BLOCK = re.compile(r"(<!-- generated: (?P<kind>[\w-]+) (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /generated -->)", re.S)


def _load(path: str) -> Any:
    return json.loads((ROOT / path).read_text())


def experiment_table(path: str) -> str:
    from spsa_mix.experiment.report import markdown_table, refresh

    return markdown_table(refresh(_load(path))["summary"])


def experiment_experts(path: str) -> str:
    results = _load(path)
    accs = [100 * e["test_accuracy"] for e in results["experts"]]
    listed = ", ".join(f"{a:.1f}" for a in accs)
    return (f"Experts' test accuracies (%): {listed} (mean {sum(accs) / len(accs):.1f}, "
            f"best {max(accs):.1f}).")


def experiment_gaps(path: str) -> str:
    from spsa_mix.experiment.report import comparison_lines, refresh

    return "\n".join(comparison_lines(refresh(_load(path))["comparison"]))


def experiment_check(path: str) -> str:
    """Each learned row's prior against the best of uniform, best single and greedy soup, then
    the task-vector scales."""
    from spsa_mix.experiment.report import baseline_check, refresh, scale_lines

    summary = refresh(_load(path))["summary"]
    lines = baseline_check(summary)
    scales = scale_lines(summary)
    return "\n".join(lines + ([""] + scales if scales else []))


def compare_table(path: str) -> str:
    return str(_load(path)["table"]).strip()


def directions_table(path: str) -> str:
    """Median relative suboptimality at mu=0.05, i.i.d. directions, per problem, k and m."""
    rows = [r for r in _load(path)["rows"] if r["mu"] == 0.05 and not r["orthogonal"]]
    cols = sorted({(r["problem"], r["k"], r["m"]) for r in rows})
    head = "| directions | sum_zero | " + " | ".join(f"{p} k={k} m={m}" for p, k, m in cols) + " |"
    lines = [head, "|---|---|" + "---:|" * len(cols)]
    for kind in ("normalized-gaussian", "gaussian", "rademacher"):
        for sz in (True, False):
            cells = []
            for p, k, m in cols:
                hit = [r for r in rows if (r["problem"], r["k"], r["m"], r["directions"], r["sum_zero"]) == (p, k, m, kind, sz)]
                cells.append(f"{hit[0]['median']:.2e}" if hit else "-")
            lines.append(f"| {kind} | {sz} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def directions_small_k(path: str) -> str:
    """``benchmarks/directions.py --small-k``: median (90th percentile) relative
    suboptimality with the rows of equal signs kept (before) and redrawn (now)."""
    rows = _load(path)["rows"]
    keys = sorted({(r["problem"], r["k"], r["budget"]) for r in rows}, key=lambda t: (t[0] != "exact", t[1], t[2]))
    lines = ["| objective | k | evaluations | zero rows kept (before) | redrawn (now) | median ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for p, k, b in keys:
        kept, new = ([r for r in rows if (r["problem"], r["k"], r["budget"], r["sampler"]) == (p, k, b, s)][0]
                     for s in ("kept", "redrawn"))
        lines.append(f"| {p} | {k} | {b} | {kept['median']:.2e} ({kept['p90']:.2e}) | "
                     f"{new['median']:.2e} ({new['p90']:.2e}) | {kept['median'] / new['median']:.1f} |")
    return "\n".join(lines)


def directions_tails(path: str) -> str:
    """Kurtosis and mean-absolute-over-rms of each estimator's coordinates."""
    rows = _load(path)["tails"]
    lines = ["| k | directions | sum_zero | kurtosis of a coordinate | mean abs(e_i) / rms(e_i) | MSE / norm(g)^2 |",
             "|---:|---|---|---:|---:|---:|"]
    lines += [f"| {r['k']} | {r['directions']} | {r['sum_zero']} | {r['kurtosis']:.2f} | {r['abs_over_rms']:.3f} | "
              f"{r['mse'] / r['grad_norm_sq']:.2f} |" for r in rows]
    return "\n".join(lines)


def variance_rows(path: str) -> str:
    """Representative rows of ``spsa-mix bench variance``: alpha space, unbiased scale, K = 10,
    m = 1 and 16, every distribution; variance and MSE divided by the squared target norm."""
    rows = [r for r in _load(path)["rows"] if r["space"] == "alpha" and r["scale_kind"] == "unbiased"
            and r["k"] == 10 and r["m"] in (1, 16) and not r["orthogonal"]]
    kinds = ("normalized-gaussian", "gaussian", "rademacher")
    rows.sort(key=lambda r: (kinds.index(r["directions"]), not r["sum_zero"], r["m"]))
    lines = ["| space | directions | subspace | d | m | Var/‖h‖² measured | closed form | MSE/‖h‖² measured "
             "| closed form | cos measured | closed form |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def ci(e: dict[str, float], norm: float) -> str:
        return f"{e['value'] / norm:.3f} [{e['low'] / norm:.3f}, {e['high'] / norm:.3f}]"

    for r in rows:
        h2, emp, th = r["target_norm"] ** 2, r["empirical"], r["theory"]
        cos = "-" if th.get("cosine") is None else f"{th['cosine']:.3f}"
        lines.append(f"| {r['space']} | {r['directions']} | {'sum-zero' if r['sum_zero'] else 'full'} | {r['dim']} | "
                     f"{r['m']} | {ci(emp['variance'], h2)} | {th['variance'] / h2:.3f} | {ci(emp['mse'], h2)} | "
                     f"{th['mse'] / h2:.3f} | {ci(emp['cosine'], 1.0)} | {cos} |")
    return "\n".join(lines)


def md_tables(path: str) -> str:
    """The tables, their captions (lines ending in a colon), bullet lines and sub-headings of
    a markdown report; the title and other prose are dropped."""
    out: list[str] = []
    for line in (ROOT / path).read_text().splitlines():
        if line.startswith(("|", "- ", "### ")) or (line.endswith(":") and not line.startswith("#")):
            if line.endswith(":") and out and out[-1] != "":
                out.append("")
            out.append(line)
            if line.endswith(":"):
                out.append("")
        elif out and out[-1] != "":  # a blank line wherever prose or a blank separated blocks
            out.append("")
    return "\n".join(out).strip("\n")


RENDERERS: dict[str, Callable[[str], str]] = {
    "experiment-table": experiment_table,
    "experiment-experts": experiment_experts,
    "experiment-gaps": experiment_gaps,
    "experiment-check": experiment_check,
    "compare-table": compare_table,
    "directions-table": directions_table,
    "directions-tails": directions_tails,
    "directions-small-k": directions_small_k,
    "variance-rows": variance_rows,
    "md-tables": md_tables,
}


def render(kind: str, path: str) -> str:
    """The text of one generated block (without its markers)."""
    if kind not in RENDERERS:
        raise ValueError(f"unknown block kind {kind!r}; known: {', '.join(RENDERERS)}")
    return RENDERERS[kind](path).rstrip("\n") + "\n"


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(kind, path, body) of every generated block of a document."""
    return [(m["kind"], m["path"], m["body"]) for m in BLOCK.finditer(text)]


def sync(text: str) -> str:
    """The document with every block regenerated."""
    return BLOCK.sub(lambda m: m.group(1) + render(m["kind"], m["path"]) + m.group(5), text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="report stale blocks, change nothing")
    args = p.parse_args()
    stale = []
    for doc in DOCS:
        path = ROOT / doc
        if not path.exists():
            continue
        old = path.read_text()
        new = sync(old)
        if new != old:
            stale.append(doc)
            if not args.check:
                path.write_text(new)
    verb = "stale" if args.check else "updated"
    print(f"{verb}: {', '.join(stale)}" if stale else "every generated block is up to date")
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
