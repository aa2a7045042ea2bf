"""When is learning alpha worth it? Gains against the number of target examples and epochs.

One expert pool (``--dataset``, K experts on Dirichlet splits, cached), one target set of
``--target-size`` images drawn once; for each N of ``--sizes`` the experiment
(:func:`spsa_mix.experiment.run_experiment`) learns alpha and fine-tunes on a random N of
them (``target_used``: nested, so the experts, the held-out and the test sets are the same for
every N). For every way to set alpha, the gain in test accuracy over the uniform blend and over
the best single expert (paired by seed), before fine-tuning (the prior) and after each epoch.

Writes ``--output`` (JSON: every run of every N, the command), its ``.md`` (the table behind the
figure) and ``.png`` (the figure)::

    python benchmarks/target_size.py --output benchmarks/results/target_size_fashion_mnist.json

Needs Fashion-MNIST's idx files (``../shared/data/FashionMNIST/raw``; the run says so without them).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS = ("uniform", "best-single", "greedy-soup", "spsa", "spsa-defaults", "backprop")
REFERENCES = ("uniform", "best-single")


def gains(runs: list[dict[str, Any]], row: str, ref: str) -> np.ndarray | None:
    """(seeds, epochs + 1) accuracy points of ``row`` minus ``ref``, paired by seed."""
    a = {r["seed"]: r["test_accuracy"] for r in runs if r["config"] == row}
    b = {r["seed"]: r["test_accuracy"] for r in runs if r["config"] == ref}
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    n = min(min(len(a[s]), len(b[s])) for s in seeds)
    return 100.0 * np.array([[a[s][e] - b[s][e] for e in range(n)] for s in seeds])


def table(doc: dict[str, Any]) -> str:
    sizes = [p["n"] for p in doc["points"]]
    rows = [r for r in (*ROWS, "from-scratch") if any(r in p["summary"] for p in doc["points"])]
    out = [f"Command: `{doc['command']}` ({doc['seconds']:.0f} s).", "",
           "Test accuracy (%, mean over seeds) of each prior and after the last fine-tuning epoch, per number of "
           "target examples N:", "",
           "| row | " + " | ".join(f"N={n} prior / fine-tuned" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
    for row in rows:
        cells = []
        for p in doc["points"]:
            s = p["summary"].get(row)
            cells.append("-" if s is None else f"{100 * s['prior']['mean']:.1f} / {100 * s['final']['mean']:.1f}")
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    for ref in REFERENCES:
        out += ["", f"Gain over {ref} (accuracy points, mean ± sd over seeds, paired): prior / after the last epoch / "
                    "mean over the fine-tuning epochs:", "",
                "| row | " + " | ".join(f"N={n}" for n in sizes) + " |", "|---|" + "---:|" * len(sizes)]
        for row in rows:
            if row == ref:
                continue
            cells = []
            for p in doc["points"]:
                g = gains(p["runs"], row, ref)
                if g is None:
                    cells.append("-")
                    continue
                ft = g[:, 1:].mean(axis=1) if g.shape[1] > 1 else g[:, 0]
                cells.append(f"{g[:, 0].mean():+.1f} / {g[:, -1].mean():+.1f} / {ft.mean():+.1f}")
            out.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def figure(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sizes = np.array([p["n"] for p in doc["points"]], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), dpi=110)
    colours = {"spsa-defaults": "C3", "spsa": "C1", "backprop": "C2", "greedy-soup": "C4", "best-single": "C0",
               "uniform": "C7", "from-scratch": "black"}
    for ax, ref in zip(axes[:2], REFERENCES, strict=True):
        for row in (*ROWS, "from-scratch"):
            if row == ref:
                continue
            pts = [gains(p["runs"], row, ref) for p in doc["points"]]
            if any(g is None for g in pts):
                continue
            prior = [g[:, 0].mean() for g in pts]
            final = [g[:, -1].mean() for g in pts]
            ax.plot(sizes, final, marker="o", color=colours.get(row), label=f"{row}, fine-tuned")
            if row != "from-scratch":
                ax.plot(sizes, prior, marker="x", ls="--", color=colours.get(row), alpha=0.7, label=f"{row}, prior")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("target examples N (alpha and fine-tuning)")
        ax.set_ylabel(f"test accuracy minus {ref}'s (points)")
        ax.set_title(f"gain over {ref}: prior (dashed), after {doc['finetune_epochs']} epochs (solid)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6, ncol=2)
    ax = axes[2]
    for i, p in enumerate(doc["points"]):
        g = gains(p["runs"], "spsa-defaults", "uniform")
        if g is not None:
            ax.plot(np.arange(g.shape[1]), g.mean(axis=0), marker="o", color=plt.cm.viridis(i / max(len(sizes) - 1, 1)),
                    label=f"N={p['n']}")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("fine-tuning epoch (0 = prior)")
    ax.set_ylabel("spsa-defaults minus uniform (points)")
    ax.set_title("the learned prior's lead over the epochs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle(doc["title"], fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/target_size_fashion_mnist.json"))
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000, 3000, 10000])
    ap.add_argument("--target-size", type=int, default=10_000)
    ap.add_argument("--per-expert", type=int, default=500)
    ap.add_argument("--expert-epochs", type=int, default=10)
    ap.add_argument("--holdout-size", type=int, default=1000)
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--finetune-epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--target-concentration", default="0.5", help="'iid' or a Dirichlet concentration")
    ap.add_argument("--alpha-loss", default="calibrated")
    ap.add_argument("--render", action="store_true", help="only rewrite the table and the figure from --output")
    ap.add_argument("--resume", action="store_true",
                    help="keep the sizes already in --output (same settings) and run the others")
    args = ap.parse_args(argv)
    from spsa_mix.io import atomic_write_text, write_json

    if args.render:
        import json

        doc = json.loads(args.output.read_text())
    else:
        from spsa_mix.experiment import ExperimentConfig, run_experiment

        conc = None if args.target_concentration == "iid" else float(args.target_concentration)
        base = ExperimentConfig.paper(args.dataset, per_expert=args.per_expert, expert_epochs=args.expert_epochs,
                                      target_size=args.target_size, holdout_size=args.holdout_size,
                                      budget=args.budget, finetune_epochs=args.finetune_epochs,
                                      seeds=tuple(range(args.seeds)), target_concentration=conc,
                                      alpha_loss=None if args.alpha_loss == "task" else args.alpha_loss,
                                      configs=ROWS, threads=1, device="cpu")
        t0 = time.perf_counter()
        previous: dict[str, Any] | None = None
        if args.resume and args.output.is_file():
            import json

            previous = json.loads(args.output.read_text())
            if previous["config"] != json.loads(json.dumps(base.to_dict())):
                print(f"target_size.py: {args.output} was written with other settings; --resume needs the same "
                      "(or leave --resume out to start over)", file=sys.stderr)
                return 2
        doc = {"command": "python benchmarks/target_size.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "config": base.to_dict(), "finetune_epochs": args.finetune_epochs, "points": [],
               "title": (f"K={base.k} experts on {args.dataset} ({base.per_expert} images each, {base.expert_epochs} "
                         f"epochs), target {'IID' if conc is None else f'label-shifted, Dirichlet({conc})'}, "
                         f"alpha budget {base.budget}, {args.seeds} seeds")}
        done = {p["n"]: p for p in previous["points"]} if previous is not None else {}
        if previous is not None:
            doc["command"], t0 = previous["command"], t0 - previous.get("seconds", 0.0)
        for n in args.sizes:
            if n in done:  # kept from the file being resumed
                doc["points"].append(done[n])
                continue
            try:
                res = run_experiment(base.replace(target_used=n), progress=False,
                                     log=lambda line: print(line, file=sys.stderr, flush=True))
            except ValueError as e:
                print(f"target_size.py: {e}", file=sys.stderr)
                return 2
            doc["points"].append({"n": n, "summary": res["summary"], "runs": res["runs"], "split": res["split"],
                                  "experts": res["experts"], "errors": res["errors"]})
            doc["seconds"] = time.perf_counter() - t0
            write_json(doc, args.output, indent=1)  # after every N: a partial curve survives
        doc["seconds"] = time.perf_counter() - t0
        write_json(doc, args.output, indent=1)
    atomic_write_text(args.output.with_suffix(".md"), table(doc))
    figure(doc, args.output.with_suffix(".png"))
    print(table(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
