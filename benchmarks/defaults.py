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
import json
import math
import os
import platform
import shlex
import sys
import time
import warnings
from collections import Counter
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


# ---------------------------------------------------------------------- the suite
# Every column of the suite's table: minimize's keyword arguments (``noisy``: the objective is
# stochastic, which Nevergrad's documentation asks to declare).
def suite_methods(noisy: bool) -> dict[str, dict[str, Any]]:
    """The suite's methods: the new defaults, the fixed starts, GLUE's SPSA, the oracle's lr
    grid (``ORACLE_LRS``, each with a cosine decay and the default start) and the peers at
    their defaults (Nevergrad's NGOpt told when the objective is noisy; Optuna's default
    sampler, TPE)."""
    methods: dict[str, dict[str, Any]] = {
        "defaults": {}, "start=uniform": {"start": "uniform"}, "start=best": {"start": "best"},
        "GLUE": {"lr": 0.01, "start": "uniform", "directions": "normalized-gaussian"},
    }
    for lr in ORACLE_LRS:
        methods[f"lr={lr:g}, cosine"] = {"lr": lr, "lr_schedule": "cosine"}
    methods["nevergrad:NGOpt"] = {"method": "nevergrad:NGOpt", **({"options": {"noisy": True}} if noisy else {})}
    methods["optuna:tpe"] = {"method": "optuna:tpe"}
    return methods


ORACLE_LRS = (0.01, 0.03, 0.1, 0.3)  # the oracle: the best of these (cosine decay) and the defaults' lr="auto"
NGOPT_MAX_BUDGET = 1000  # NGOpt: 8-14 s per run of 4000 evaluations here (its own time), capped
TPE_MAX_BUDGET = 400  # TPE's time per trial grows with the trials and k: 48 s for 400 trials at k = 100
TPE_MAX_WORK = 12_000  # ... so TPE runs where budget * k is at most this (k = 30 at 400, k = 100 at 100)
SPREAD_NOTE = "a row misses when the defaults' median exceeds the other's by more than the larger seed sd of the two"


def _capped(method: str, budget: int, k: int) -> bool:
    if method == "nevergrad:NGOpt":
        return budget > NGOPT_MAX_BUDGET
    if method == "optuna:tpe":
        return budget > TPE_MAX_BUDGET or budget * k > TPE_MAX_WORK
    return False


def _suite_run(make_objective: Callable[[int], Any], k: Any, budget: int, seed: int, kwargs: dict[str, Any],
               extra: dict[str, Any] | None = None) -> tuple[np.ndarray, str]:
    """One ``minimize`` run; returns the point and what the start rule did (``"-"`` for none,
    the race's winner, or the fixed start's choice)."""
    res = spsa_mix.minimize(make_objective(seed), k=k, max_evals=budget, seed=seed, vectorized=True,
                            **kwargs, **(extra or {}))
    record = res.get("start") or {}
    race = record.get("race") or {}
    tag = race.get("winner") or record.get("chosen") or "-"
    if record.get("returned") not in (None, "learned"):
        tag += " (candidate returned)"
    return np.asarray(res.x, dtype=np.float64), str(tag)


def _row_key(row: dict[str, Any]) -> str:
    """What identifies a row of the suite (for ``--resume``)."""
    return json.dumps({k: row.get(k) for k in ("problem", "k", "kind", "noise", "budget", "seeds")}, sort_keys=True)


def _kept(problem: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The output's rows of ``problem`` at every budget (``--resume``), or none if one is missing."""
    keys = [_row_key({**problem, "budget": b, "seeds": args.seeds}) for b in args.budgets]
    if not all(key in args.done for key in keys):
        return []
    print(f"{_suite_label({**problem, 'noise': 0})}: all {len(keys)} budgets kept from the output (--resume)", flush=True)
    return [args.done[key] for key in keys]


def _suite_row(problem: dict[str, Any], budgets: list[int], seeds: int, make_objective: Callable[[int], Any],
               k: Any, score: Callable[[int, np.ndarray], float], noisy: bool,
               extra: dict[str, Any] | None = None, kdim: int | None = None,
               only: list[str] | None = None, done: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The rows of one problem (one per budget): every method (or those of ``only``) over
    ``seeds`` seeds; a row of ``done`` (``--resume``: the output's finished rows) is kept."""
    rows = []
    for budget in budgets:
        row: dict[str, Any] = {**problem, "budget": budget, "seeds": seeds, "methods": {}}
        if done and _row_key(row) in done:
            rows.append(done[_row_key(row)])
            print(f"{_suite_label(row)} B={budget}: kept from the output (--resume)", flush=True)
            continue
        for name, kwargs in suite_methods(noisy).items():
            if only and name not in only:
                continue
            if _capped(kwargs.get("method", "spsa"), budget, kdim if kdim is not None else int(k)):
                continue
            t0, values, tags, failed = time.perf_counter(), [], [], []
            for seed in range(seeds):
                try:
                    x, tag = _suite_run(make_objective, k, budget, seed, kwargs, extra)
                except Exception as e:  # a method that fails is recorded, not the end of the suite
                    failed.append(f"seed {seed}: {type(e).__name__}: {e}")
                    continue
                values.append(float(score(seed, x)))
                tags.append(tag)
            row["methods"][name] = {"values": values, "starts": tags, "failed": failed,
                                    "seconds": time.perf_counter() - t0}
        row.update(verdict(row))
        rows.append(row)
        print(_suite_line(row), flush=True)
    return rows


def part_suite(args: argparse.Namespace, save: Callable[[list[dict[str, Any]], str], None]) -> list[dict[str, Any]]:
    """The suite of issue 19 (``--quick``: a small subset): quadratics, blended networks, the
    README's merge examples and the pretrained ResNet-20 experts (skipped without their data)."""
    if args.network_k or args.merge or args.pretrained:
        import torch

        torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    makers = {"interior": lambda k, s: Quadratic.random(k, rng=1000 + s, optimum="interior"),
              "boundary": lambda k, s: Quadratic.scattered(k, rng=2000 + s)}
    for k, kind, noise in itertools.product(args.k, args.optimum, args.noise):
        qs = [makers[kind](k, s) for s in range(args.seeds)]
        f_star = [q.minimum() for q in qs]
        f_uni = [q.value(np.full(k, 1.0 / k)) for q in qs]
        # the centre's shift per call: norm about `noise` times the distance from the uniform point to the optimum
        sd = [noise * math.sqrt(k) * float(np.linalg.norm(q.minimizer() - 1.0 / k)) for q in qs]
        rows += _suite_row({"problem": "quadratic", "k": k, "kind": kind, "noise": noise, "uniform_value": 1.0},
                           args.budgets, args.seeds, lambda s: MinibatchQuadratic(qs[s], sd[s], s), k,
                           lambda s, x: (qs[s].value(x) - f_star[s]) / (f_uni[s] - f_star[s]), noisy=noise > 0,
                           only=args.methods, done=args.done)
        save(rows, "running")
    if args.network_k:
        from spsa_mix.compare import network_problem

        for k in args.network_k:
            kept = _kept({"problem": "network", "k": k}, args)
            if kept:  # every budget's row is in the output: the experts need no training
                rows += kept
                save(rows, "running")
                continue
            prob = network_problem(k)
            rows += _suite_row({"problem": "network", "k": k, "uniform_value": prob.target_loss(np.full(k, 1.0 / k)),
                                "best_vertex_value": min(prob.target_loss(np.eye(k)[i]) for i in range(k))},
                               args.budgets, args.seeds, prob.make_objective, k, lambda s, x: prob.target_loss(x),
                               noisy=True, only=args.methods, done=args.done)
            save(rows, "running")
    for kind in args.merge:
        rows += _merge_rows(kind, args)
        save(rows, "running")
    if args.pretrained:
        rows += _pretrained_rows(args)
    return rows


def _merge_rows(kind: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """One README merge example (``examples/merge/<kind>.yaml``, its experts built by
    :func:`spsa_mix.merge.demo.build_demo` when missing): the objective ``spsa-mix merge``
    builds (its data, blend and loss, seeded per seed as the merge seeds its batches) and its
    validation (``val_objective``, as the merge searches); scored by the returned point's
    validation loss."""
    import tempfile

    from spsa_mix.blend import evaluate_experts
    from spsa_mix.merge.config import load_config
    from spsa_mix.merge.demo import build_demo
    from spsa_mix.merge.run import _load_data, _objective, _score, plan_merge

    root = Path(__file__).resolve().parents[1] / "examples" / "merge"
    build_demo(kind, root / "build" / kind)
    out = Path(tempfile.mkdtemp(prefix="defaults-suite-")) / "merged"
    plans = {s: plan_merge(load_config(root / f"{kind}.yaml", {"output": str(out), "seed": s}))
             for s in range(args.seeds)}
    source, _, val = _load_data(plans[0])
    first = _objective(plans[0], None, source)
    point = first.domain.center() if not first.domain.simplex_only else np.full(first.shape, 1.0 / first.k)
    k = first.shape if first.domain.simplex_only else first.domain
    uniform = float(_score(first, point, val)["loss"])
    singles = [float(m["loss"]) for m in evaluate_experts(first, val)]

    def make_objective(seed: int) -> Any:
        _, train, _ = _load_data(plans[seed])
        return _objective(plans[seed], train, source)

    extra = {"val_objective": lambda x: float(_score(first, x, val)["loss"]),
             "val_every": plans[0].config.validate_every}
    return _suite_row({"problem": f"merge {kind}", "k": first.k, "space": plans[0].config.space,
                       "uniform_value": uniform, "best_vertex_value": min(singles)},
                      args.merge_budgets, args.seeds, make_objective, k,
                      lambda s, x: float(_score(first, x, val)["loss"]), noisy=True, extra=extra, kdim=first.k,
                      only=args.methods, done=args.done)


def _pretrained_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The pretrained ResNet-20 experts of ``benchmarks/pretrained_experts.py`` (needs
    ``cifar10-jpeg`` and akamaster's weights under the shared data roots): skipped, with the
    reason printed and recorded, when they are missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pretrained_experts import load_problem

    try:
        prob = load_problem(per_expert=args.pretrained_per_expert)
    except FileNotFoundError as e:
        print(f"pretrained experts skipped: {e}", flush=True)
        return [{"problem": "pretrained resnet20", "skipped": str(e)}]
    return _suite_row({"problem": "pretrained resnet20", "k": prob.k, "uniform_value": prob.uniform_loss,
                       "best_vertex_value": prob.best_vertex_loss},
                      args.pretrained_budgets, args.seeds, prob.make_objective, prob.k,
                      lambda s, x: prob.target_loss(x), noisy=True, only=args.methods, done=args.done)


def verdict(row: dict[str, Any]) -> dict[str, Any]:
    """The suite's verdict on one row: the oracle (the best median of the lr grid and the
    defaults), the defaults' normalised excess over it ``(v - v_oracle) / (v_uniform - v_oracle)``
    (``v_uniform``: the uniform blend's value; for quadratics the relative gap, so the excess
    is a difference of relative gaps), and the misses: ``oracle`` (excess above 0.10), a
    fixed start the defaults lose to beyond the seeds' spread (:data:`SPREAD_NOTE`), and, at
    400 evaluations on quadratics, a peer whose median is not above the defaults'."""
    m = row["methods"]
    med = {n: float(np.median(v["values"])) if v["values"] else float("nan") for n, v in m.items()}
    sd = {n: float(np.std(v["values"], ddof=1)) if len(v["values"]) > 1 else 0.0 for n, v in m.items()}
    grid = ["defaults"] + [n for n in m if n.startswith("lr=")]
    oracle = min(grid, key=lambda n: med[n])
    span = row["uniform_value"] - med[oracle]  # what the oracle gains over the uniform blend
    excess = (med["defaults"] - med[oracle]) / (span if span > 0 else abs(row["uniform_value"]) or 1.0)
    misses = []
    if excess > 0.10:
        misses.append(f"oracle +{excess:.2f}")
    misses += [f"> {fixed}" for fixed in ("start=uniform", "start=best")
               if _beyond_spread({"medians": med, "sds": sd}, "defaults", fixed)]
    if row["problem"] == "quadratic" and row["budget"] == 400:
        misses += [f">= {peer}" for peer in ("nevergrad:NGOpt", "optuna:tpe") if peer in med
                   and med["defaults"] >= med[peer]]
    return {"oracle": {"method": oracle, "median": med[oracle], "excess": excess}, "medians": med, "sds": sd,
            "misses": misses}


def _suite_label(row: dict[str, Any]) -> str:
    if row["problem"] == "quadratic":
        return f"quadratic k={row['k']} {row['kind']}" + (f" noise {row['noise']:g}" if row["noise"] else "")
    return f"{row['problem']} K={row['k']}" if row["problem"] == "network" else row["problem"]


def _suite_line(row: dict[str, Any]) -> str:
    med = row["medians"]
    cells = " ".join(f"{n}={v:.3g}" for n, v in med.items())
    return f"{_suite_label(row)} B={row['budget']}: {cells} | misses: {', '.join(row['misses']) or '-'}"


SUITE_COLUMNS = ("defaults", "start=uniform", "start=best", "GLUE", "oracle", "nevergrad:NGOpt", "optuna:tpe")


def render_saturation(doc: dict[str, Any]) -> str:
    """The saturation table: per point, the SPSA estimate's per-coordinate RMS against the
    gradient's norm, and for the vertex's and the optimum's experts the exact logit gradient,
    the estimate's mean and their ratio to the RMS."""
    out = [f"Command: `{doc['command']}` ({doc['seconds']:.0f} s).", "",
           "| point | norm of the logit gradient | RMS of an estimate's coordinate (min-max) | expert: weight (at the "
           "optimum), gradient, mean of the estimates, gradient / RMS |", "|---|---:|---:|---|"]
    for r in doc["rows"]:
        if "coords" not in r:
            continue
        cells = "; ".join(f"{j}: {c['alpha']:.3f} ({c['optimum']:.3f}), {c['grad']:.4f}, {c['mean']:.4f}, "
                          f"{c['signal_to_rms']:.3f}" for j, c in r["coords"].items())
        out.append(f"| {r['point']} | {r['grad_norm']:.4f} | {r['rms_min']:.4f}-{r['rms_max']:.4f} | {cells} |")
    out += ["", "The runs (relative gap at 4000 evaluations, seeds 0-4 where five are given):", ""]
    for r in doc["rows"]:
        if "relative_gaps" in r:
            extra = (f"; the vertex's weight after 200 steps {r['vertex_weight_after_200_steps']:.3f}"
                     if "vertex_weight_after_200_steps" in r else "")
            out.append(f"- {r['run']}: " + ", ".join(f"{100 * g:.2f} %" for g in r["relative_gaps"]) + extra)
        elif "path" in r:
            out.append(f"- {r['run']}: " + ", ".join(f"{v:.3f}" for v in r["path"]))
    return "\n".join(out) + "\n"


def render_suite(doc: dict[str, Any]) -> str:
    """The suite's one table and its verdict (the misses counted, the skipped parts, the caps)."""
    rows = [r for r in doc["rows"] if "skipped" not in r]
    resumed = doc.get("resumed")
    took = (f"{doc['seconds']:.0f} s" if not resumed else
            f"{doc['seconds'] + resumed['seconds_before']:.0f} s in all: {resumed['rows_kept']} rows kept from "
            f"{len(resumed['commands_before'])} earlier run(s) of " + " and ".join(
                f"`{c}`" + (f" ({n} times)" if n > 1 else "")
                for c, n in Counter(resumed["commands_before"]).items()) + f", the rest in {doc['seconds']:.0f} s")
    out = [f"Command: `{doc['command']}` ({took} on {doc['machine']['cpu_count']} cores, shared; one thread).", "",
           "Median over seeds of the relative gap (f(x) - f*) / (f(1/k) - f*) on the quadratics, the target "
           "cross-entropy on the networks and the validation loss on the merge examples (the uniform blend's and the "
           "best single expert's beside); the oracle is the best of the defaults and the lr grid "
           f"{', '.join(f'{v:g}' for v in ORACLE_LRS)} (cosine decay, default start), its lr in brackets:", "",
           "| problem | budget | " + " | ".join(SUITE_COLUMNS) + " | misses |", "|---|---:|" + "---:|" * len(SUITE_COLUMNS)
           + "---|"]
    for r in rows:
        med = r["medians"]
        label = _suite_label(r)
        if r["problem"] != "quadratic":
            label += f" (uniform {r['uniform_value']:.3f}, best single {r['best_vertex_value']:.3f})"
        cells = []
        for col in SUITE_COLUMNS:
            if col == "oracle":
                o = r["oracle"]
                cells.append(f"{o['median']:.3g} ({'auto' if o['method'] == 'defaults' else o['method'].split(',')[0][3:]})")
            else:
                cells.append(f"{med[col]:.3g}" if col in med and np.isfinite(med[col]) else "-")
        out.append(f"| {label} | {r['budget']} | " + " | ".join(cells) + f" | {', '.join(r['misses'])} |")
    counts: dict[str, int] = {}
    for r in rows:
        for miss in r["misses"]:
            key = miss.split(" +")[0]
            counts[key] = counts.get(key, 0) + 1
    out += ["", "The verdict:", "",
            "- misses: `oracle +e` where the defaults' excess over the oracle, (v - v_oracle) / (v_uniform - "
            "v_oracle), is above 0.10; `> start=...` where " + SPREAD_NOTE.split("when ", 1)[1] + "; `>= peer` at "
            "400 evaluations on the quadratics; '-': not run (capped)",
            f"- rows: {len(rows)}; with no miss: {sum(not r['misses'] for r in rows)}; misses by kind: "
            + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")]
    out += [f"- skipped: {r['problem']}: {r['skipped']}" for r in doc["rows"] if "skipped" in r]
    out.append(f"- caps: NGOpt up to {NGOPT_MAX_BUDGET} evaluations; Optuna's TPE up to {TPE_MAX_BUDGET} and "
               f"budget x k <= {TPE_MAX_WORK:,} (its time per trial grows with both)")
    out += _miss_causes(rows)
    return "\n".join(out) + "\n"


def _family(row: dict[str, Any]) -> str:
    if row["problem"] == "quadratic":
        return f"quadratic, {row['kind']}" + (f", noise {row['noise']:g}" if row["noise"] else "")
    return _suite_label(row)


def _what_the_check_did(row: dict[str, Any]) -> str:
    """Whether the defaults raced in a row: the start check's choice is ``start=best``'s
    (the same candidates, scored on the same calls); ``no check`` when the budget is below K + 1."""
    chosen = [t.split(" (")[0] for t in row["methods"].get("start=best", {}).get("starts", [])]
    if not chosen or all(c == "-" for c in chosen):
        return "no check"
    return "a race" if any(c.startswith("vertex") for c in chosen) else "the start won the check"


def _miss_causes(rows: list[dict[str, Any]]) -> list[str]:
    """The misses by problem family, and each kind of miss by what the start rule did."""
    kinds = ("oracle", "> start=uniform", "> start=best", ">= nevergrad:NGOpt", ">= optuna:tpe")
    families: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        families.setdefault(_family(r), []).append(r)
    out = ["", "Misses by problem family (rows with a miss of each kind):", "",
           "| problem | rows | no miss | " + " | ".join(kinds) + " |", "|---|---:|---:|" + "---:|" * len(kinds)]
    for fam, rs in families.items():
        cells = [sum(any(m.split(" +")[0] == kind for m in r["misses"]) for r in rs) for kind in kinds]
        out.append(f"| {fam} | {len(rs)} | {sum(not r['misses'] for r in rs)} | " + " | ".join(map(str, cells)) + " |")
    out += ["", "What the start rule did in the rows that miss (in at least one seed a vertex won the start check: "
            "a race; the uniform point won it in every seed: no race, the defaults are the run of start=best; "
            "no check: a budget below K + 1, all three start rules the same run):", ""]
    for kind in kinds[:3]:
        hit = [r for r in rows if any(m.split(" +")[0] == kind for m in r["misses"])]
        if hit:
            did = [_what_the_check_did(r) for r in hit]
            out.append(f"- {kind}: {len(hit)} rows: " + ", ".join(f"{c} {did.count(c)}" for c in sorted(set(did))))
    worse = {name: sum(_beyond_spread(r, name, "defaults") for r in rows) for name in ("start=uniform", "start=best", "GLUE")}
    out.append("- the other way round, rows where the other's median exceeds the defaults' by more than the larger seed "
               "sd: " + ", ".join(f"{name} {n}" for name, n in worse.items()))
    return out


def _beyond_spread(row: dict[str, Any], worse: str, better: str) -> bool:
    """Whether ``worse``'s median exceeds ``better``'s by more than the larger seed sd of the two."""
    med, sd = row["medians"], row["sds"]
    return worse in med and better in med and med[worse] - med[better] > max(sd[worse], sd[better])


def part_saturation(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Why a start at a vertex traps SPSA: on issue 19's quadratic (``Quadratic.scattered``,
    the 8th of k in (2, 5, 10, 20) x 2 from ``default_rng(12345)``), Monte Carlo over
    ``--draws`` Rademacher directions of the SPSA estimate's mean and per-coordinate RMS in
    logit space, at the softened best vertex and at the uniform point, against the exact
    gradient ``alpha_j (g_j - <alpha, g>)`` and its norm."""
    from spsa_mix.core.directions import estimator_scale, sample_directions
    from spsa_mix.core.simplex import logits_from_simplex, softmax, softmax_vjp
    from spsa_mix.core.start import VERTEX_WEIGHT

    rng = np.random.default_rng(12345)
    q = [Quadratic.scattered(k, rng=rng) for k in (2, 5, 10, 20) for _ in range(2)][7]
    k, mu, x_star = q.k, 0.05, q.minimizer()
    vertex = int(np.argmin([q.value(np.eye(k)[i]) for i in range(k)]))
    needed = [int(i) for i in np.argsort(-x_star)[:3] if i != vertex]  # the optimum's other experts
    rows = []
    for name, w in ((f"vertex {vertex} softened to {VERTEX_WEIGHT}", VERTEX_WEIGHT), ("uniform point", 0.0)):
        alpha = np.full(k, (1 - w) / k)
        alpha[vertex] += w
        beta, grad = logits_from_simplex(alpha), softmax_vjp(alpha, q.grad(alpha))
        draws = np.random.default_rng(args.seeds or 0)
        est = np.empty((args.draws, k))
        for i in range(args.draws):
            u = sample_directions(draws, 1, (k,), kind="rademacher", sum_zero=True)[0]
            d = (q.value(softmax(beta + mu * u)) - q.value(softmax(beta - mu * u))) / (2 * mu)
            est[i] = d * u * estimator_scale("rademacher", (k,), True)
        rms = np.sqrt((est ** 2).mean(axis=0))
        rows.append({"point": name, "grad_norm": float(np.linalg.norm(grad)), "rms_min": float(rms.min()),
                     "rms_max": float(rms.max()),
                     "coords": {int(j): {"alpha": float(alpha[j]), "optimum": float(x_star[j]), "grad": float(grad[j]),
                                         "mean": float(est[:, j].mean()), "signal_to_rms": float(grad[j] / rms[j])}
                                for j in [vertex, *needed]}})
        print(rows[-1], flush=True)
    return rows + _saturation_runs(q, vertex)


def _saturation_runs(q: Quadratic, vertex: int) -> list[dict[str, Any]]:
    """The runs behind the saturation: on the quadratic, 4000 evaluations from each start
    (seeds 0-4), the vertex's weight after 200 steps from the softened vertex, and from a
    vertex softened to 0.5 instead; on the K = 10 network (1000 evaluations, seed 0), the
    target loss along the segment from the answer of a run from the best vertex to that of a
    run from the uniform point."""
    import torch

    from spsa_mix.compare import network_problem
    from spsa_mix.core.start import VERTEX_WEIGHT

    torch.set_num_threads(1)
    k, f_star, f_uni = q.k, q.minimum(), q.value(np.full(q.k, 1.0 / q.k))
    gap = lambda x: (q.value(x) - f_star) / (f_uni - f_star)  # noqa: E731
    rows: list[dict[str, Any]] = []
    for label, kw in (("start=auto (race)", {}), ("start=best", {"start": "best"}),
                      ("start=uniform", {"start": "uniform"})):
        gaps = [gap(spsa_mix.minimize(q.value, k=k, max_evals=4000, seed=s, **kw).x) for s in range(5)]
        rows.append({"run": label, "relative_gaps": gaps})
    for w in (VERTEX_WEIGHT, 0.5):
        x0 = np.full(k, (1 - w) / k)
        x0[vertex] += w
        res = spsa_mix.minimize(q.value, k=k, max_evals=4000, seed=0, start="uniform", x0=x0, final_eval=False)
        rows.append({"run": f"from vertex {vertex} softened to {w}, no final check", "relative_gaps": [gap(res.x)],
                     "vertex_weight_after_200_steps": float(res.history["x"][199][vertex])})
    prob = network_problem(10)
    ends = {s: spsa_mix.minimize(prob.make_objective(0), k=10, max_evals=1000, seed=0, vectorized=True, start=s).x
            for s in ("best", "uniform")}
    path = [prob.target_loss((1 - t) * ends["best"] + t * ends["uniform"]) for t in np.linspace(0.0, 1.0, 11)]
    rows.append({"run": "network K=10: target loss from the start=best answer (t=0) to the start=uniform one (t=1)",
                 "path": path})
    for r in rows:
        print(r, flush=True)
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
    ap.add_argument("part", choices=["spsa", "network", "peers", "suite", "saturation", "render"])
    ap.add_argument("results", nargs="?", type=Path, help="render: the JSON file whose tables to write beside it")
    ap.add_argument("--output", type=Path, default=None)
    ap.add_argument("--k", type=int, nargs="*", default=None)
    ap.add_argument("--noise", type=float, nargs="+", default=None,
                    help="sd of the centre's shift per call, in units of 1/k (quadratics; default 0 0.5 2, suite 0 0.5)")
    ap.add_argument("--optimum", nargs="+", default=["interior", "boundary"],
                    help="suite: interior (Quadratic.random) and boundary (Quadratic.scattered)")
    ap.add_argument("--budgets", type=int, nargs="+", default=None)
    ap.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    ap.add_argument("--starts", nargs="+", default=["uniform", "best"], choices=["uniform", "best"])
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--new-rule", default="auto: lr=1/sqrt(T), cosine", choices=list(RULES))
    ap.add_argument("--new-start", default="best", choices=["uniform", "best"])
    ap.add_argument("--network-k", type=int, nargs="*", default=None, help="default 10 (peers), 3 10 30 (suite)")
    ap.add_argument("--network-budgets", type=int, nargs="+", default=[100, 400, 1000])
    ap.add_argument("--tpe-max-budget", type=int, default=1000, help="TPE's cost per trial grows with the trials")
    ap.add_argument("--quick", action="store_true", help="suite: a few minutes' subset (k 2 10, budgets 100 400, "
                    "2 seeds, the K=10 network, the vision merge)")
    ap.add_argument("--merge", nargs="*", default=None, choices=["lm", "lora", "vision"],
                    help="suite: the README's merge examples (default all three)")
    ap.add_argument("--merge-budgets", type=int, nargs="+", default=None, help="suite: default 100 400 1000")
    ap.add_argument("--methods", nargs="+", default=None, choices=list(suite_methods(noisy=False)),
                    help="suite: only these columns (default all)")
    ap.add_argument("--resume", action="store_true",
                    help="suite: keep the rows --output already holds (same problem, budget and seeds)")
    ap.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                    help="suite: leave out the pretrained ResNet-20 experts")
    ap.add_argument("--pretrained-budgets", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--pretrained-per-expert", type=int, default=1000)
    ap.add_argument("--draws", type=int, default=20_000, help="saturation: Monte Carlo draws of the SPSA estimate")
    args = ap.parse_args(argv)
    from spsa_mix.io import atomic_write_text, check_outputs

    if args.part == "render":
        if args.results is None:
            ap.error("render needs the JSON file whose tables to write")
        doc = json.loads(args.results.read_text())
        text = {"defaults suite": render_suite, "defaults saturation": render_saturation}.get(doc["benchmark"],
                                                                                               render)(doc)
        atomic_write_text(args.results.with_suffix(".md"), text)
        print(text)
        return 0
    if args.output is None:
        ap.error("--output is required")
    check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md")})
    args.done = {}
    resumed = None
    if args.part == "suite" and args.resume and args.output.is_file():
        previous = json.loads(args.output.read_text())
        before = previous.get("resumed") or {}  # a resumed run's own earlier runs, counted too
        resumed = {"rows_kept": 0, "seconds_before": previous["seconds"] + before.get("seconds_before", 0.0),
                   "commands_before": [*before.get("commands_before", []), previous["command"]]}
        kept = ({**r, "seeds": r.get("seeds", previous["argv"]["seeds"])} for r in previous["rows"] if "skipped" not in r)
        args.done = {_row_key(r): r for r in kept}
    if args.part == "suite":
        quick = args.quick
        args.k = args.k if args.k is not None else ([2, 10] if quick else [2, 5, 10, 20, 50, 100])
        args.budgets = args.budgets or ([100, 400] if quick else [100, 400, 1000, 4000])
        args.seeds = args.seeds or (2 if quick else 3)
        args.noise = args.noise if args.noise is not None else [0.0, 0.5]
        args.network_k = args.network_k if args.network_k is not None else ([10] if quick else [3, 10, 30])
        args.merge = args.merge if args.merge is not None else (["vision"] if quick else ["lm", "lora", "vision"])
        args.merge_budgets = args.merge_budgets or ([100, 400] if quick else [100, 400, 1000])
        args.pretrained = args.pretrained and not quick
    elif args.part != "saturation":
        defaults = {"spsa": ([2, 10, 50], [100, 300, 1000, 5000], 5),
                    "network": ([3, 10, 30], [100, 400, 1000, 3000], 3),
                    "peers": ([2, 10, 50], [100, 300, 1000, 5000], 3)}[args.part]
        args.k = args.k or defaults[0]
        args.budgets = args.budgets or defaults[1]
        args.seeds = args.seeds or defaults[2]
        args.noise = args.noise if args.noise is not None else [0.0, 0.5, 2.0]
        args.network_k = args.network_k if args.network_k is not None else [10]
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    out = {"benchmark": f"defaults {args.part}",
           "command": "python benchmarks/defaults.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "argv": {k: v for k, v in vars(args).items() if k not in ("output", "results", "done")}, "seconds": 0.0,
           "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count()}, "rows": []}

    if resumed is not None:
        out["resumed"] = resumed

    def save(rows: list[dict[str, Any]], status: str) -> None:  # after each problem: a failure loses no rows
        out.update(rows=rows, seconds=time.perf_counter() - t0, status=status)
        if resumed is not None:
            resumed["rows_kept"] = sum(_row_key(r) in args.done for r in rows if "skipped" not in r)
        write_json(out, args.output, indent=1)

    parts = {"spsa": part_spsa, "network": part_network, "peers": part_peers, "suite": part_suite,
             "saturation": part_saturation}
    rows = parts[args.part](args, save) if args.part == "suite" else parts[args.part](args)
    save(rows, "complete")
    text = {"suite": render_suite, "saturation": render_saturation}.get(args.part, render)(out)
    atomic_write_text(args.output.with_suffix(".md"), text)
    if args.part == "suite":
        print(text)
    print(f"wrote {args.output} and its tables ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
