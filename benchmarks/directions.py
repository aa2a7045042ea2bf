"""Which direction distribution, subspace and radius should ``SimplexSPSA`` use by default?

Runs ``spsa_mix.minimize`` (SPSA, Adam, the paper's lr=1e-2 and a cosine step-size decay
from 5e-2) on random quadratics over the simplex, for every direction distribution, with
and without the restriction to the sum-zero subspace, with i.i.d. and orthogonal directions
(m > 1), and several radii ``mu``, at a fixed budget of evaluations. Two objectives:

* ``exact``: f(alpha) = 0.5 (alpha - c)^T A (alpha - c), condition number 10;
* ``minibatch``: the same with ``c`` replaced by ``c + noise / k * z``, ``z`` standard normal
  drawn once per call and shared by every probe of the call, as a minibatch is shared by
  GLUE's probes (the probes of one step are scored by one vectorized call).

Reported metric: relative suboptimality (f(x) - f*) / (f(1/k) - f*) of the returned point
under the exact objective, median and 90th percentile over seeds.

Beside it, the shape of each estimator's distribution (``tails``): for a fixed gradient g in
the sum-zero subspace, 200,000 draws of the scaled estimate ``c (g.u) u``, and per coordinate
the kurtosis ``E[e_i^4] / E[e_i^2]^2`` and ``E|e_i| / sqrt(E[e_i^2])`` (averaged over
coordinates), and the mean squared error ``E|e - g|^2``. Adam divides each coordinate by the
root of a running mean of its square, so at equal mean squared error a heavier-tailed
estimate gets smaller steps.

Usage::

    python benchmarks/directions.py --output benchmarks/results/directions.json

``--small-k`` measures instead what redrawing the rows of equal signs does to the default
Rademacher directions at small k (issue 13, item 7: centred signs vanish in such a row, with
probability 2^(1-k)): SPSA with the default directions, m = 1 and mu = 0.05, against the same
runs with the sampler before the fix (rows of equal signs kept, zero directions included),
for each k, objective and budget::

    python benchmarks/directions.py --small-k --k 2 3 4 --budget 200 1000 --seeds 20 \
        --output benchmarks/results/directions_small_k.json
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

import spsa_mix
from spsa_mix.io import write_json
from spsa_mix.problems import Quadratic


class MinibatchQuadratic:
    """Quadratic whose centre moves by fresh noise at every call (shared by its probes)."""

    def __init__(self, q: Quadratic, noise: float, seed: int) -> None:
        self.q, self.noise, self.rng = q, noise, np.random.default_rng(seed)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        c = self.q.c + self.noise / self.q.k * self.rng.standard_normal(self.q.k)
        d = points - c
        return 0.5 * np.einsum("ni,ij,nj->n", d, self.q.A, d)


def tails(ks: list[int], draws: int = 200_000) -> list[dict]:
    """Kurtosis, mean-absolute-over-rms and MSE of each estimator (see module docstring)."""
    from spsa_mix.core.directions import estimator_scale, sample_directions

    out = []
    for k in ks:
        rng = np.random.default_rng(k)
        g = rng.standard_normal(k)
        g -= g.mean()
        for kind, sum_zero in itertools.product(["normalized-gaussian", "gaussian", "rademacher"], [True, False]):
            u = sample_directions(rng, draws, (k,), kind=kind, sum_zero=sum_zero)
            e = estimator_scale(kind, (k,), sum_zero) * (u @ g)[:, None] * u
            m2, m4 = (e**2).mean(axis=0), (e**4).mean(axis=0)
            out.append(dict(k=k, directions=kind, sum_zero=sum_zero, kurtosis=float(np.mean(m4 / m2**2)),
                            abs_over_rms=float(np.mean(np.abs(e).mean(axis=0) / np.sqrt(m2))),
                            mse=float(((e - g) ** 2).sum(axis=1).mean()), grad_norm_sq=float(g @ g)))
            print(f"tails k={k:3d} {kind:19s} sum_zero={sum_zero!s:5s} kurtosis={out[-1]['kurtosis']:.2f} "
                  f"E|e|/rms={out[-1]['abs_over_rms']:.3f} mse/|g|^2={out[-1]['mse'] / out[-1]['grad_norm_sq']:.2f}",
                  flush=True)
    return out


@contextlib.contextmanager
def zero_rows_kept() -> Iterator[None]:
    """The optimisers draw Rademacher directions as before issue 13's item 7: centred signs,
    a row of equal signs left at zero (the other kinds as they are)."""
    from spsa_mix.core import optimizer
    from spsa_mix.core.domain import Domain
    from spsa_mix.core.simplex import project_sum_zero

    current = optimizer.sample_directions

    def before(rng, m, shape, *, kind, sum_zero, orthogonal):  # type: ignore[no-untyped-def]
        simplex = shape.simplex if isinstance(shape, Domain) and shape.simplex_only else shape
        if kind != "rademacher" or not sum_zero or not isinstance(simplex, tuple):
            return current(rng, m, shape, kind=kind, sum_zero=sum_zero, orthogonal=orthogonal)
        return project_sum_zero(np.where(rng.random((m, *simplex)) < 0.5, -1.0, 1.0))

    optimizer.sample_directions = before
    try:
        yield
    finally:
        optimizer.sample_directions = current


def small_k(args: argparse.Namespace) -> dict:
    """Default SPSA at small k with the zero rows redrawn (the library) and kept (before)."""
    rows = []
    t0 = time.perf_counter()
    for problem, k, budget, sampler in itertools.product(args.problems, args.k, args.budget, ["kept", "redrawn"]):
        subopt = []
        for seed in range(args.seeds):
            q = Quadratic.random(k, rng=1000 + seed, optimum=args.optimum)
            f = q if problem == "exact" else MinibatchQuadratic(q, args.noise, seed)
            with zero_rows_kept() if sampler == "kept" else contextlib.nullcontext():
                res = spsa_mix.minimize(f, k=k, vectorized=True, max_evals=budget, lr=args.lr,
                                        lr_schedule="cosine", seed=seed, final_eval=False, start="uniform")
            f_star, f_0 = q.minimum(), q.value(np.full(k, 1.0 / k))
            subopt.append((q.value(res.x) - f_star) / (f_0 - f_star))
        s = np.asarray(subopt)
        rows.append(dict(problem=problem, k=k, budget=budget, sampler=sampler, median=float(np.median(s)),
                         p90=float(np.quantile(s, 0.9)), values=s.tolist()))
        print(f"{problem:9s} k={k} budget={budget:5d} zero rows {sampler:7s} median={rows[-1]['median']:.2e} "
              f"p90={rows[-1]['p90']:.2e}", flush=True)
    return dict(benchmark="directions-small-k", argv={k: str(v) if isinstance(v, Path) else v
                                                      for k, v in vars(args).items()},
                seconds=time.perf_counter() - t0,
                machine=dict(python=platform.python_version(), processor=platform.processor() or platform.machine()),
                rows=rows)


def run(args: argparse.Namespace) -> dict:
    rows = []
    configs = []
    for kind, sum_zero, mu, m in itertools.product(args.directions, [True, False], args.mu, args.m):
        configs.append(dict(directions=kind, sum_zero=sum_zero, mu=mu, m=m, orthogonal=False))
        if m > 1 and kind != "rademacher":
            configs.append(dict(directions=kind, sum_zero=sum_zero, mu=mu, m=m, orthogonal=True))
    t0 = time.perf_counter()
    for problem, k, cfg in itertools.product(args.problems, args.k, configs):
        subopt = []
        for seed in range(args.seeds):
            q = Quadratic.random(k, rng=1000 + seed, optimum=args.optimum)
            f = q if problem == "exact" else MinibatchQuadratic(q, args.noise, seed)
            res = spsa_mix.minimize(
                f, k=k, vectorized=True, max_evals=args.budget[0], lr=args.lr, lr_schedule="cosine",
                seed=seed, final_eval=False, start="uniform", **cfg,  # from GLUE's start: directions alone
            )
            f_star, f_0 = q.minimum(), q.value(np.full(k, 1.0 / k))
            subopt.append((q.value(res.x) - f_star) / (f_0 - f_star))
        s = np.asarray(subopt)
        rows.append(dict(problem=problem, k=k, **cfg, median=float(np.median(s)),
                         p90=float(np.quantile(s, 0.9)), values=s.tolist()))
        print(f"{problem:9s} k={k:3d} {cfg['directions']:19s} sum_zero={cfg['sum_zero']!s:5s} "
              f"orth={cfg['orthogonal']!s:5s} m={cfg['m']} mu={cfg['mu']:<5g} "
              f"median={rows[-1]['median']:.2e} p90={rows[-1]['p90']:.2e}", flush=True)
    return dict(
        benchmark="directions", argv=vars(args),
        seconds=time.perf_counter() - t0,
        machine=dict(python=platform.python_version(), processor=platform.processor() or platform.machine()),
        rows=rows,
        tails=tails(args.k),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--problems", nargs="+", default=["exact", "minibatch"], choices=["exact", "minibatch"])
    p.add_argument("--k", nargs="+", type=int, default=[10, 50])
    p.add_argument("--m", nargs="+", type=int, default=[1, 4])
    p.add_argument("--mu", nargs="+", type=float, default=[0.01, 0.05, 0.2])
    p.add_argument("--directions", nargs="+", default=["normalized-gaussian", "gaussian", "rademacher"])
    p.add_argument("--budget", nargs="+", type=int, default=[1000], help="evaluations (several with --small-k)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--noise", type=float, default=0.5, help="std of the minibatch shift of c, in units of 1/k")
    p.add_argument("--optimum", default="interior", choices=["interior", "boundary"])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--small-k", action="store_true", help="redrawn against kept zero rows (module docstring)")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/directions.json"))
    args = p.parse_args()
    out = small_k(args) if args.small_k else run(args)
    write_json(out, args.output, indent=1)
    print(f"wrote {args.output} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
