"""Why Nevergrad's NGOpt did not move on the blended network, and cost more through ``minimize``.

On ``bench compare --problem network`` (K=10 digits experts, minibatches of 64 target
images, 400 evaluations) NGOpt and CMA stayed at the uniform start, and NGOpt's overhead per
evaluation through ``minimize`` was 7.5x that of its own ask/tell in
``benchmarks/overhead.py``. NGOpt is a selector: it picks an optimizer from the
parametrisation (bounded or not), the budget and whether the function is declared noisy. This
script runs Nevergrad's own ask/tell on the same objective under each parametrisation, prints
which optimizer it picked, its own seconds per evaluation (the objective's time excluded), how
far the asked points go from the uniform point (L1), and the target loss of the
recommendation:

* the adapter's old default, ``"normalize"``: ``z`` in the box ``[1e-6, 2]^K``, start 1,
  ``alpha = z / sum(z)``;
* the softmax logits unbounded, start 0: Nevergrad's documented prior ("all optimizers
  assume a centered and reduced prior", sigma 1);
* each with ``parametrization.function.deterministic = False`` (the objective is noisy:
  each call draws a new minibatch).

Usage::

    python benchmarks/nevergrad_choice.py --output benchmarks/results/nevergrad_choice.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402


def leaf(opt: Any) -> str:
    """The chain of optimizers NGOpt delegated to."""
    chain, o = [], opt
    while o is not None:
        chain.append(getattr(o, "name", type(o).__name__))
        nxt = getattr(o, "optim", None)
        if nxt is o:
            break
        o = nxt
    return " > ".join(chain)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/nevergrad_choice.json"))
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    import nevergrad as ng
    import torch

    from spsa_mix.adapters import nevergrad as adapter
    from spsa_mix.compare import network_problem
    from spsa_mix.io import atomic_write_text, write_json

    torch.set_num_threads(1)
    prob = network_problem(10)
    k = 10
    u = np.full(k, 1.0 / k)

    def normalize(z: np.ndarray) -> np.ndarray:
        z = np.maximum(z, 1e-300)
        return z / z.sum()

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max())
        return e / e.sum()

    spaces = {
        "normalize box [1e-6, 2], start 1 (adapter before)": (lambda: ng.p.Array(init=np.ones(k), lower=1e-6, upper=2.0),
                                                              normalize),
        "softmax logits, unbounded, start 0 (Nevergrad's prior)": (lambda: ng.p.Array(init=np.zeros(k)), softmax),
    }
    rows = []
    t_all = time.perf_counter()
    for (space, (make, to_alpha)), noisy, name in [(sp, n, o) for sp in spaces.items() for n in (False, True)
                                                    for o in ("NGOpt", "CMA")]:
        picks, own, dist, losses = [], [], [], []
        for seed in range(args.seeds):
            p = make()
            p.random_state = np.random.RandomState(seed)
            if noisy:
                p.function.deterministic = False
            objective = prob.make_objective(seed)
            with adapter._quiet():
                opt = ng.optimizers.registry[name](parametrization=p, budget=args.budget, num_workers=1)
                t_opt, asked = 0.0, []
                for _ in range(args.budget - 1):
                    t0 = time.perf_counter()
                    cand = opt.ask()
                    t_opt += time.perf_counter() - t0
                    a = to_alpha(np.asarray(cand.value, dtype=np.float64))
                    loss = float(objective(a[None])[0])
                    t0 = time.perf_counter()
                    opt.tell(cand, loss)
                    t_opt += time.perf_counter() - t0
                    asked.append(float(np.abs(a - u).sum()))
                rec = to_alpha(np.asarray(opt.provide_recommendation().value, dtype=np.float64))
                picks.append(leaf(opt))
                adapter._NevergradBackend.close(type("Backend", (), {"opt": opt})())  # stop recast threads
            own.append(t_opt / (args.budget - 1))
            dist.append(float(np.median(asked)))
            losses.append(prob.target_loss(rec))
        rows.append(dict(optimizer=name, space=space, noisy=noisy, picks=sorted(set(picks)),
                         ms_per_eval=1e3 * float(np.mean(own)), median_l1_from_uniform=float(np.median(dist)),
                         target_loss=losses, target_loss_median=float(np.median(losses))))
        print(f"{name:5s} | {space} | noisy={noisy} | {rows[-1]['picks']} | {rows[-1]['ms_per_eval']:.2f} ms/eval | "
              f"L1 {rows[-1]['median_l1_from_uniform']:.3f} | loss {rows[-1]['target_loss_median']:.4f}", flush=True)
    doc = {"benchmark": "nevergrad_choice", "command": "python benchmarks/nevergrad_choice.py "
           + " ".join(argv if argv is not None else sys.argv[1:]), "budget": args.budget, "seeds": args.seeds,
           "uniform_loss": prob.target_loss(u),
           "best_vertex_loss": min(prob.target_loss(np.eye(k)[i]) for i in range(k)),
           "nevergrad": ng.__version__, "seconds": time.perf_counter() - t_all, "rows": rows}
    write_json(doc, args.output, indent=1)
    lines = [f"NGOpt and CMA through Nevergrad's own ask/tell on the blended digits network (K=10, {args.budget} "
             f"evaluations, {args.seeds} seeds); target cross-entropy of the uniform blend {doc['uniform_loss']:.4f}, "
             f"of the best single expert {doc['best_vertex_loss']:.4f}:", "",
             "| optimizer | parametrisation | noise declared | NGOpt's choice | own ms/eval | median L1 of asked "
             "points from uniform | target loss (median) |", "|---|---|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['optimizer']} | {r['space']} | {'yes' if r['noisy'] else 'no'} | "
                     f"{'; '.join(r['picks'])} | {r['ms_per_eval']:.2f} | {r['median_l1_from_uniform']:.3f} | "
                     f"{r['target_loss_median']:.4f} |")
    atomic_write_text(args.output.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
