"""Which defaults make ``spsa_mix.minimize(objective, k)`` work without tuning, measured.

Three parts, each writing one JSON file (``--output``) with the command that made it:

``spsa``
    SPSA's step-size rules and start rules across budgets, K and noise, on quadratics of the
    simplex whose centre moves by fresh noise at every call (shared by the probes of one
    call, as a minibatch is shared), ``f(alpha) = 0.5 (alpha - c_t)^T A (alpha - c_t)``
    with ``c_t = c + noise / k * N(0, I)`` (``Quadratic.random``, condition 10, optimum
    inside the simplex or beyond a face). Scored by the exact relative gap
    ``(f(x) - f*) / (f(1/k) - f*)`` of the returned point.
``network``
    the same rules on blended networks: ``spsa_mix.compare.network_problem(k)`` (K small
    CNNs trained on Dirichlet partitions of digits, minibatches of 64 target images, the
    cross-entropy of bench compare), scored by the cross-entropy of theta(x) on the whole
    target split.
``peers``
    Nevergrad's NGOpt and CMA and Optuna's CMA-ES and TPE on both problem kinds, each as its
    documentation recommends (see ``PEERS``), beside SPSA's old and new defaults.

Rules (``RULES``): ``lr`` is Adam's step in logit space; ``T`` the steps the budget allows.
Starts (``--starts``): ``uniform`` (GLUE's 1/K), or ``best`` (``minimize(start="best")``,
:mod:`spsa_mix.core.start`): score the uniform point and the K vertices (5 % of the budget,
at least one call), start from the best, and at the end score the result and that candidate
(5 % of the budget, at least one pair) and return the better; every evaluation counted.

Usage (the recorded files)::

    python benchmarks/defaults.py spsa --output benchmarks/results/defaults_spsa.json
    python benchmarks/defaults.py network --output benchmarks/results/defaults_network.json
    python benchmarks/defaults.py peers --output benchmarks/results/defaults_peers.json
    python benchmarks/defaults.py render benchmarks/results/defaults_spsa.json   # the tables again
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import platform
import shlex
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

import spsa_mix  # noqa: E402
from spsa_mix.io import write_json  # noqa: E402
from spsa_mix.problems import Quadratic  # noqa: E402

RULES: dict[str, Callable[[int], dict[str, Any]]] = {
    "lr=0.01 (GLUE)": lambda t: {"lr": 0.01},
    "lr=0.03": lambda t: {"lr": 0.03},
    "lr=0.1, cosine": lambda t: {"lr": 0.1, "lr_schedule": "cosine"},
    "lr=0.5/sqrt(T), cosine": lambda t: {"lr": 0.5 / math.sqrt(t), "lr_schedule": "cosine"},
    "auto: lr=1/sqrt(T), cosine": lambda t: {},  # minimize's default (lr="auto")
    "lr=2/sqrt(T), cosine": lambda t: {"lr": 2.0 / math.sqrt(t), "lr_schedule": "cosine"},
    "lr=4/sqrt(T), cosine": lambda t: {"lr": 4.0 / math.sqrt(t), "lr_schedule": "cosine"},
}


class MinibatchQuadratic:
    """A quadratic whose centre moves by fresh noise at every call, shared by the call's points."""

    def __init__(self, q: Quadratic, noise: float, seed: int) -> None:
        self.q, self.noise, self.rng = q, noise, np.random.default_rng(seed)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        c = self.q.c + self.noise / self.q.k * self.rng.standard_normal(self.q.k) if self.noise else self.q.c
        d = np.asarray(points) - c
        return 0.5 * np.einsum("ni,ij,nj->n", d, self.q.A, d)


def spsa_run(objective: Callable[..., Any], k: int, budget: int, rule: str, start: str, seed: int) -> dict[str, Any]:
    """One ``minimize`` run (SPSA) with a step-size rule and a start rule
    (:mod:`spsa_mix.core.start`); the budget counts every evaluation."""
    from spsa_mix.core.start import check_repeats

    repeats, pairs = check_repeats(k + 1, budget) if start == "best" else (0, 0)
    steps = max((budget - (k + 1) * repeats - 2 * pairs - (0 if start == "best" else 1)) // 2, 1)
    kwargs = RULES[rule](steps)
    res = spsa_mix.minimize(objective, k=k, vectorized=True, max_evals=budget, seed=seed, start=start, **kwargs)
    picked = res.get("start", {}).get("returned", "learned")
    return {"x": res.x, "picked": "learned" if picked == "learned" else "candidate", "lr": float(res.history["lr"][0])
            if len(res.history.get("lr", [])) else None, "nfev": int(res.nfev)}


def part_spsa(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for k, noise, optimum, budget, rule, start in itertools.product(args.k, args.noise, args.optimum, args.budgets,
                                                                    args.rules, args.starts):
        gaps, picks = [], []
        for seed in range(args.seeds):
            q = Quadratic.random(k, rng=1000 + seed, optimum=optimum)
            out = spsa_run(MinibatchQuadratic(q, noise, seed), k, budget, rule, start, seed)
            f_star, f_u = q.minimum(), q.value(np.full(k, 1.0 / k))
            gaps.append((q.value(out["x"]) - f_star) / (f_u - f_star))
            picks.append(out["picked"])
        rows.append(dict(problem="quadratic", k=k, noise=noise, optimum=optimum, budget=budget, rule=rule, start=start,
                         median=float(np.median(gaps)), p90=float(np.quantile(gaps, 0.9)), values=gaps,
                         candidate_returned=picks.count("candidate")))
        print(f"k={k:2d} noise={noise:<4g} {optimum:8s} B={budget:5d} {rule:24s} {start:7s} "
              f"median={rows[-1]['median']:.3g}", flush=True)
    return rows


def part_network(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from spsa_mix.compare import network_problem

    torch.set_num_threads(1)
    rows = []
    for k in args.k:
        prob = network_problem(k)
        uniform = prob.target_loss(np.full(k, 1.0 / k))
        best_vertex = min(prob.target_loss(np.eye(k)[i]) for i in range(k))
        for budget, rule, start in itertools.product(args.budgets, args.rules, args.starts):
            losses, accs, picks = [], [], []
            for seed in range(args.seeds):
                out = spsa_run(prob.make_objective(seed), k, budget, rule, start, seed)
                losses.append(prob.target_loss(out["x"]))
                accs.append(prob.heldout_accuracy(out["x"]))
                picks.append(out["picked"])
            rows.append(dict(problem="network", k=k, budget=budget, rule=rule, start=start, uniform_loss=uniform,
                             best_vertex_loss=best_vertex, median=float(np.median(losses)),
                             mean=float(np.mean(losses)), values=losses, heldout_accuracy=accs,
                             candidate_returned=picks.count("candidate")))
            print(f"network k={k:2d} B={budget:5d} {rule:24s} {start:7s} loss median={rows[-1]['median']:.4f} "
                  f"(uniform {uniform:.4f}, best vertex {best_vertex:.4f})", flush=True)
    return rows


# Each peer as its documentation recommends, and as the adapters ran it before (for the record).
PEERS: dict[str, dict[str, Any]] = {
    # Nevergrad: "all optimizers assume a centered and reduced prior" (docs, How to perform
    # optimization): the softmax logits, unbounded, start 0, sigma 1; a noisy objective is
    # declared as such (parametrization.function.deterministic = False), which NGOpt reads.
    "nevergrad:NGOpt (adapter before: normalize box)": dict(method="nevergrad:NGOpt",
                                                            options={"parametrization": "normalize"}),
    "nevergrad:NGOpt (softmax, noise declared)": dict(method="nevergrad:NGOpt",
                                                      options={"parametrization": "softmax", "noisy": True}),
    "nevergrad:CMA (softmax, noise declared)": dict(method="nevergrad:CMA",
                                                    options={"parametrization": "softmax", "noisy": True}),
    # Optuna: bounded boxes only; CmaEsSampler(lr_adapt=True) is its documented setting for
    # noisy or multimodal problems; TPE as shipped.
    "optuna:cmaes (lr_adapt)": dict(method="optuna:cmaes", options={"sampler_kwargs": {"lr_adapt": True}}),
    "optuna:tpe": dict(method="optuna:tpe"),
}


def part_peers(args: argparse.Namespace) -> list[dict[str, Any]]:
    import torch

    from spsa_mix.compare import network_problem

    torch.set_num_threads(1)
    rows = []

    def record(problem: str, k: int, budget: int, label: str, scores: list[float], seconds: float,
               extra: dict[str, Any]) -> None:
        rows.append(dict(problem=problem, k=k, budget=budget, method=label, median=float(np.median(scores)),
                         values=scores, seconds=seconds, **extra))
        print(f"{problem} k={k:2d} B={budget:5d} {label:50s} median={rows[-1]['median']:.4g} ({seconds:.1f} s)",
              flush=True)

    spsa_labels = {"spsa (old default: lr=0.01, uniform start)": ("lr=0.01 (GLUE)", "uniform"),
                   "spsa (new default: lr auto, start auto)": (args.new_rule, args.new_start)}
    for k, noise, budget in itertools.product(args.k, args.noise, args.budgets):
        for label, (rule, start) in spsa_labels.items():
            t0, gaps = time.perf_counter(), []
            for seed in range(args.seeds):
                q = Quadratic.random(k, rng=1000 + seed, optimum="interior")
                out = spsa_run(MinibatchQuadratic(q, noise, seed), k, budget, rule, start, seed)
                gaps.append((q.value(out["x"]) - q.minimum()) / (q.value(np.full(k, 1.0 / k)) - q.minimum()))
            record("quadratic", k, budget, label, gaps, time.perf_counter() - t0, {"noise": noise})
        for label, spec in PEERS.items():
            if "tpe" in label and budget > args.tpe_max_budget:
                continue
            t0, gaps, failed = time.perf_counter(), [], []
            for seed in range(args.seeds):
                q = Quadratic.random(k, rng=1000 + seed, optimum="interior")
                opts = dict(spec.get("options", {}))
                try:
                    res = spsa_mix.minimize(MinibatchQuadratic(q, noise, seed), k=k, method=spec["method"],
                                            max_evals=budget, seed=seed, vectorized=True,
                                            **({"options": opts} if opts else {}))
                except Exception as e:  # a peer that fails is recorded, not the end of the benchmark
                    failed.append(f"seed {seed}: {type(e).__name__}: {e}")
                    continue
                gaps.append((q.value(res.x) - q.minimum()) / (q.value(np.full(k, 1.0 / k)) - q.minimum()))
            record("quadratic", k, budget, label, gaps or [float("nan")], time.perf_counter() - t0,
                   {"noise": noise, "failed": failed})
    for k in args.network_k:
        prob = network_problem(k)
        info = {"uniform_loss": prob.target_loss(np.full(k, 1.0 / k)),
                "best_vertex_loss": min(prob.target_loss(np.eye(k)[i]) for i in range(k))}
        for budget in args.network_budgets:
            for label, (rule, start) in spsa_labels.items():
                t0 = time.perf_counter()
                xs = [spsa_run(prob.make_objective(s), k, budget, rule, start, s)["x"] for s in range(args.seeds)]
                record("network", k, budget, label, [prob.target_loss(x) for x in xs], time.perf_counter() - t0,
                       {**info, "heldout_accuracy": [prob.heldout_accuracy(x) for x in xs]})
            for label, spec in PEERS.items():
                if "tpe" in label and budget > args.tpe_max_budget:
                    continue
                t0, xs, failed = time.perf_counter(), [], []
                for seed in range(args.seeds):
                    opts = dict(spec.get("options", {}))
                    try:
                        res = spsa_mix.minimize(prob.make_objective(seed), k=k, method=spec["method"],
                                                max_evals=budget, seed=seed, vectorized=True,
                                                **({"options": opts} if opts else {}))
                    except Exception as e:
                        failed.append(f"seed {seed}: {type(e).__name__}: {e}")
                        continue
                    xs.append(res.x)
                record("network", k, budget, label, [prob.target_loss(x) for x in xs] or [float("nan")],
                       time.perf_counter() - t0,
                       {**info, "heldout_accuracy": [prob.heldout_accuracy(x) for x in xs], "failed": failed})
    return rows


# ---------------------------------------------------------------------- tables
def _log_ratio_table(rows: list[dict[str, Any]], keys: tuple[str, ...], label: Callable[[dict[str, Any]], str],
                     floor: float) -> list[str]:
    """Per variant: mean and 90th percentile over settings of log10(median / best variant's median)."""
    by: dict[tuple[Any, ...], dict[str, float]] = {}
    for r in rows:
        by.setdefault(tuple(r[k] for k in keys), {})[label(r)] = r["median"]
    ratios: dict[str, list[float]] = {}
    for cells in by.values():
        best = min(cells.values())
        for name, v in cells.items():
            ratios.setdefault(name, []).append(math.log10((v + floor) / (best + floor)))
    lines = ["| variant | mean log10(gap / best variant's gap) | 90th percentile | worst | settings |",
             "|---|---:|---:|---:|---:|"]
    for name, vals in sorted(ratios.items(), key=lambda t: float(np.mean(t[1]))):
        lines.append(f"| {name} | {np.mean(vals):.3f} | {np.quantile(vals, 0.9):.3f} | {np.max(vals):.3f} | "
                     f"{len(vals)} |")
    return lines


NEW_SPSA = "spsa (new default: lr auto, start auto)"


def _peer_wins(rows: list[dict[str, Any]]) -> list[str]:
    """Per problem and peer: in how many settings (K, noise, budget) SPSA's new default ends
    lower (median over seeds) than the peer at the same budget, and the smallest budget at
    which each reaches the loss the other reaches with its largest (the evaluations a given
    loss costs)."""
    out = ["SPSA's new default against each method, setting by setting (K, noise, budget): the settings "
           "where SPSA's median is lower, and the evaluations each needs, over the budgets measured, to reach "
           "the median the other reaches at its largest budget (summed over settings, a budget not reaching it "
           "counted as the next one, '>'):", "",
           "| problem | method | SPSA lower in | SPSA's evaluations to the method's final | the method's to SPSA's final |",
           "|---|---|---:|---:|---:|"]
    for problem in ("quadratic", "network"):
        sub = [r for r in rows if r["problem"] == problem]
        groups = sorted({(r["k"], r.get("noise")) for r in sub}, key=lambda t: (t[0], t[1] or 0))
        for name in dict.fromkeys(r["method"] for r in sub):
            if name == NEW_SPSA:
                continue
            wins = total = 0
            ours_to_theirs: list[str] = []
            theirs_to_ours: list[str] = []
            for k, noise in groups:
                mine = {r["budget"]: r["median"] for r in sub if r["k"] == k and r.get("noise") == noise
                        and r["method"] == NEW_SPSA}
                other = {r["budget"]: r["median"] for r in sub if r["k"] == k and r.get("noise") == noise
                         and r["method"] == name and np.isfinite(r["median"])}
                common = sorted(set(mine) & set(other))
                wins += sum(mine[b] < other[b] for b in common)
                total += len(common)
                if common:
                    ours_to_theirs.append(_to_reach(mine, other[max(other)]))
                    theirs_to_ours.append(_to_reach(other, mine[max(common)]))
            out.append(f"| {problem} | {name} | {wins} of {total} | {_join(ours_to_theirs)} | {_join(theirs_to_ours)} |")
    return out + [""]


def _to_reach(curve: dict[int, float], target: float) -> str:
    """The smallest budget of ``curve`` whose median is at most ``target``, or ``'>B'``."""
    hit = [b for b in sorted(curve) if curve[b] <= target]
    return str(hit[0]) if hit else f">{max(curve)}"


def _join(cells: list[str]) -> str:
    """Budgets of several settings: their sum, with '>' when one never reached its target."""
    total = sum(int(c.lstrip(">")) for c in cells)
    return (">" if any(c.startswith(">") for c in cells) else "") + f"{total:,}"


def render(doc: dict[str, Any]) -> str:
    """The markdown tables of one results file (``spsa``, ``network`` or ``peers``)."""
    rows, part = doc["rows"], doc["benchmark"].split()[-1]
    out = [f"Command: `{doc['command']}` ({doc['seconds']:.0f} s on {doc['machine']['cpu_count']} cores, shared).", ""]
    if part in ("spsa", "network"):
        variant = lambda r: f"{r['rule']}, start {r['start']}"  # noqa: E731
        keys = ("k", "noise", "optimum", "budget") if part == "spsa" else ("k", "budget")
        what = "relative gap (f(x) - f*) / (f(1/k) - f*)" if part == "spsa" else "target cross-entropy"
        out += [f"Every variant against the best one per setting ({what}, median over seeds):", ""]
        out += _log_ratio_table(rows, keys, variant, 1e-6 if part == "spsa" else 0.0)
        budgets = sorted({r["budget"] for r in rows})
        out += ["", f"Median over settings of the median {what} at each budget:", "",
                "| variant | " + " | ".join(f"{b} evals" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
        for name in sorted({variant(r) for r in rows}):
            cells = [np.median([r["median"] for r in rows if variant(r) == name and r["budget"] == b]) for b in budgets]
            out.append(f"| {name} | " + " | ".join(f"{c:.3g}" for c in cells) + " |")
        if part == "network":
            out += ["", "Per K (target cross-entropy, median over seeds; uniform blend and best single expert beside):",
                    ""]
            for k in sorted({r["k"] for r in rows}):
                sub = [r for r in rows if r["k"] == k]
                out += [f"K = {k}: uniform {sub[0]['uniform_loss']:.4f}, best single expert "
                        f"{sub[0]['best_vertex_loss']:.4f}", "",
                        "| variant | " + " | ".join(f"{b}" for b in budgets) + " |", "|---|" + "---:|" * len(budgets)]
                for name in sorted({variant(r) for r in sub}):
                    cells = [next((r["median"] for r in sub if variant(r) == name and r["budget"] == b),
                                  float("nan")) for b in budgets]
                    out.append(f"| {name} | " + " | ".join(f"{c:.4f}" for c in cells) + " |")
                out.append("")
    else:
        out += _peer_wins(rows)
        for problem in ("quadratic", "network"):
            sub = [r for r in rows if r["problem"] == problem]
            if not sub:
                continue
            budgets = sorted({r["budget"] for r in sub})
            groups = sorted({(r["k"], r.get("noise")) for r in sub}, key=lambda t: (t[0], t[1] or 0))
            what = "relative gap" if problem == "quadratic" else "target cross-entropy"
            for k, noise in groups:
                cells = [r for r in sub if r["k"] == k and r.get("noise") == noise]
                head = f"{problem}, K = {k}" + (f", noise {noise}" if noise is not None else
                                                  f" (uniform {cells[0]['uniform_loss']:.4f}, best single "
                                                  f"{cells[0]['best_vertex_loss']:.4f})")
                out += [f"{head}: median {what} over seeds, and seconds per run:", "",
                        "| method | " + " | ".join(f"{b} evals" for b in budgets) + " |",
                        "|---|" + "---:|" * len(budgets)]
                for name in dict.fromkeys(r["method"] for r in cells):
                    vals = []
                    for b in budgets:
                        hit = [r for r in cells if r["method"] == name and r["budget"] == b]
                        bad = f", {len(hit[0]['failed'])} failed" if hit and hit[0].get("failed") else ""
                        vals.append(f"{hit[0]['median']:.3g} ({hit[0]['seconds'] / len(hit[0]['values']):.1f} s{bad})"
                                    if hit else "-")
                    out.append(f"| {name} | " + " | ".join(vals) + " |")
                out.append("")
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=["spsa", "network", "peers", "render"])
    ap.add_argument("results", nargs="?", type=Path, help="render: the JSON file whose tables to write beside it")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--k", type=int, nargs="+", default=None)
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.5, 2.0],
                    help="sd of the centre's shift per call, in units of 1/k (quadratics)")
    ap.add_argument("--optimum", nargs="+", default=["interior", "boundary"])
    ap.add_argument("--budgets", type=int, nargs="+", default=None)
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--starts", nargs="+", default=["uniform", "best"], choices=["uniform", "best"])
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--new-rule", default="auto: lr=1/sqrt(T), cosine", choices=list(RULES))
    ap.add_argument("--new-start", default="best", choices=["uniform", "best"])
    ap.add_argument("--network-k", type=int, nargs="+", default=[10])
    ap.add_argument("--network-budgets", type=int, nargs="+", default=[100, 400, 1000])
    ap.add_argument("--tpe-max-budget", type=int, default=1000, help="TPE's cost per trial grows with the trials")
    args = ap.parse_args(argv)
    if args.part == "render":
        import json

        doc = json.loads(args.results.read_text())
        from spsa_mix.io import atomic_write_text

        atomic_write_text(args.results.with_suffix(".md"), render(doc))
        print(render(doc))
        return 0
    if args.output is None:
        ap.error("--output is required")
    defaults = {"spsa": ([2, 10, 50], [100, 300, 1000, 5000], 5), "network": ([3, 10, 30], [100, 400, 1000, 3000], 3),
                "peers": ([2, 10, 50], [100, 300, 1000, 5000], 3)}[args.part]
    args.k = args.k or defaults[0]
    args.budgets = args.budgets or defaults[1]
    args.seeds = args.seeds or defaults[2]
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    rows = {"spsa": part_spsa, "network": part_network, "peers": part_peers}[args.part](args)
    out = {"benchmark": f"defaults {args.part}",
           "command": "python benchmarks/defaults.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "argv": {k: v for k, v in vars(args).items() if k != "output"}, "seconds": time.perf_counter() - t0,
           "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()}, "rows": rows}
    write_json(out, args.output, indent=1)
    from spsa_mix.io import atomic_write_text

    atomic_write_text(args.output.with_suffix(".md"), render(out))
    print(f"wrote {args.output} and its tables ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
