"""The optimiser's own time per evaluation: ask plus tell, the objective excluded.

For spsa_mix (``SimplexSPSA``), Optuna (TPE, CMA-ES) and Nevergrad (NGOpt, CMA), at
``k=10`` and ``k=100``, over ``--evals`` evaluations (default 1000), in one run. The
objective is trivial (a sum of squares); the time spent inside it is measured around
each call and subtracted, so what remains is the optimiser's own cost. Two ways:

``raw``
    the library's own ask/tell loop with nothing of this package in it
    (``SimplexSPSA.ask/tell``; ``study.ask()`` + ``trial.suggest_float`` for each of the
    ``k`` coordinates + ``study.tell``; ``optimizer.ask/tell`` on ``ng.p.Array``): the
    most favourable measurement for each library;
``minimize``
    ``spsa_mix.minimize(method=...)`` with ``vectorized=False`` (one call per point):
    what a user pays, including this package's run loop, history and, for the adapters,
    the parametrisation of the simplex.

Each configuration first runs 20 evaluations that are discarded (imports, first calls). A
configuration slower than ``--max-seconds`` (default 30) stops early; its per-evaluation cost is
then over the evaluations it completed, and the count is reported (TPE's cost per trial
grows with the number of trials, so stopping early favours it). Ratios divide by spsa_mix
in the same mode.

BLAS runs on one thread (``OMP_NUM_THREADS`` etc. default to 1; set them to override):
every optimiser then runs on one core, and on a shared machine the matrix algebra of
CMA-ES at ``k=100`` does not oversubscribe the cores (two runs with multithreaded BLAS
differed by up to 25x on such configurations).

Usage::

    python benchmarks/overhead.py --output benchmarks/results/overhead.json \\
        --markdown benchmarks/results/overhead.md
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before NumPy is imported (see the module docstring)

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import spsa_mix  # noqa: E402
from spsa_mix.io import atomic_write_text, write_json  # noqa: E402

METHODS = ("spsa", "optuna:tpe", "optuna:cmaes", "nevergrad:NGOpt", "nevergrad:CMA")


class Clock:
    """A trivial objective that adds up the time spent inside it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, x: Any) -> float:
        t0 = time.perf_counter()
        value = float(np.square(x).sum())
        self.seconds += time.perf_counter() - t0
        self.calls += 1
        return value


def _raw_spsa(k: int, evals: int, seed: int, deadline: float) -> tuple[int, Clock]:
    clock = Clock()
    opt = spsa_mix.SimplexSPSA(k, seed=seed)
    n = 0
    while n + 2 <= evals and time.perf_counter() < deadline:
        probes = opt.ask()
        opt.tell(np.array([clock(p) for p in probes]))
        n += 2
    return n, clock


def _raw_optuna(sampler: str, k: int, evals: int, seed: int, deadline: float) -> tuple[int, Clock]:
    import optuna

    from spsa_mix.adapters.optuna import make_sampler

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    clock = Clock()
    study = optuna.create_study(sampler=make_sampler(sampler, seed=seed))
    n = 0
    while n < evals and time.perf_counter() < deadline:
        trial = study.ask()
        x = np.array([trial.suggest_float(f"z{i:03d}", -5.0, 5.0) for i in range(k)])
        study.tell(trial, clock(x))
        n += 1
    return n, clock


def _raw_nevergrad(name: str, k: int, evals: int, seed: int, deadline: float) -> tuple[int, Clock]:
    import nevergrad as ng

    from spsa_mix.adapters.nevergrad import _quiet

    clock = Clock()
    param = ng.p.Array(init=np.zeros(k))
    param.random_state = np.random.RandomState(seed)
    n = 0
    with _quiet():  # the NumPy >= 2.4 shim NGOpt's meta-model needs, and its warnings
        opt = ng.optimizers.registry[name](parametrization=param, budget=evals)
        while n < evals and time.perf_counter() < deadline:
            cand = opt.ask()
            opt.tell(cand, clock(cand.value))
            n += 1
    return n, clock


def _raw(method: str, k: int, evals: int, seed: int, deadline: float) -> tuple[int, Clock]:
    if method == "spsa":
        return _raw_spsa(k, evals, seed, deadline)
    lib, _, name = method.partition(":")
    return (_raw_optuna if lib == "optuna" else _raw_nevergrad)(name, k, evals, seed, deadline)


def _via_minimize(method: str, k: int, evals: int, seed: int, deadline: float) -> tuple[int, Clock]:
    clock = Clock()

    def stop_at_deadline(_: Any) -> None:
        if time.perf_counter() > deadline:
            raise StopIteration

    res = spsa_mix.minimize(clock, k, method=method, max_evals=evals, seed=seed, vectorized=False,
                            final_eval=False, callback=stop_at_deadline)
    return int(res.nfev), clock


def measure(mode: str, method: str, k: int, evals: int, seed: int, max_seconds: float) -> dict[str, Any]:
    """One configuration, after a short warm-up run (imports, first-call costs) that is discarded."""
    fn: Callable[..., tuple[int, Clock]] = _raw if mode == "raw" else _via_minimize
    fn(method, k, min(evals, 20), seed + 1, time.perf_counter() + max_seconds)
    t0 = time.perf_counter()
    n, clock = fn(method, k, evals, seed, t0 + max_seconds)
    wall = time.perf_counter() - t0
    return dict(mode=mode, method=method, k=k, evals=n, requested=evals, complete=n >= evals - 1,
                wall_s=wall, objective_s=clock.seconds, overhead_per_eval_s=(wall - clock.seconds) / max(n, 1))


def markdown(rows: list[dict[str, Any]], ks: list[int], note: str) -> str:
    lines = [note, ""]
    for mode in ("raw", "minimize"):
        lines += [f"### {mode}", "", "| method | " + " | ".join(f"k={k}: µs/eval (evals) | ratio to spsa_mix" for k in ks)
                  + " |", "|---|" + "---|---|" * len(ks)]
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = []
            for k in ks:
                r = next(r for r in rows if r["mode"] == mode and r["method"] == method and r["k"] == k)
                base = next(b for b in rows if b["mode"] == mode and b["method"] == "spsa" and b["k"] == k)
                star = "" if r["complete"] else "*"
                cells += [f"{r['overhead_per_eval_s'] * 1e6:,.1f} ({r['evals']}{star})",
                          f"{r['overhead_per_eval_s'] / base['overhead_per_eval_s']:,.0f}x"]
            lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("`*`: stopped at the time limit; the cost is over the evaluations completed.")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--evals", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time limit of one configuration")
    parser.add_argument("--modes", nargs="+", default=["raw", "minimize"], choices=["raw", "minimize"])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--markdown", type=Path, default=None)
    args = parser.parse_args()
    logging.getLogger("spsa_mix").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*experimental.*")
    rows = []
    t_start = time.perf_counter()
    for mode in args.modes:
        for k in args.k:
            for method in args.methods:
                r = measure(mode, method, k, args.evals, args.seed, args.max_seconds)
                rows.append(r)
                print(f"{mode:8s} k={k:3d} {method:16s} {r['overhead_per_eval_s'] * 1e6:10.1f} µs/eval over "
                      f"{r['evals']} evals (wall {r['wall_s']:.1f} s)", flush=True)
    total = time.perf_counter() - t_start
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else None
    note = (f"Measured in one run of {total:.0f} s on {platform.processor() or platform.machine()}, Python "
            f"{platform.python_version()}, load average {load} at the end: a machine shared with other jobs, so "
            "absolute times are indicative; the ratios are what to read.")
    print()
    text = markdown(rows, args.k, note)
    print(text)
    if args.output is not None:
        write_json(dict(
            benchmark="overhead", argv=vars(args),
            seconds=total, load_average=load, note=note,
            blas_threads={v: os.environ.get(v) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
            versions={"spsa_mix": spsa_mix.__version__, **_versions()}, rows=rows), args.output, indent=1)
    if args.markdown is not None:
        atomic_write_text(args.markdown, "# Optimiser overhead per evaluation (objective excluded)\n\n"
                                         "Command: `python benchmarks/overhead.py --output benchmarks/results/overhead.json "
                                         "--markdown benchmarks/results/overhead.md`\n\n" + text)


def _versions() -> dict[str, str]:
    out = {"numpy": np.__version__}
    for name in ("optuna", "nevergrad"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = "missing"
    return out


if __name__ == "__main__":
    main()
