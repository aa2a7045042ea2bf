"""Why did backprop's prior lose to uniform's and SPSA's on the former default digits run?

Builds the experts of the former default run (``spsa-mix experiment`` before the default
became a label-shifted target: digits, small CNN, K=10, an IID target, alpha learned on the
raw cross-entropy; ``--target-concentration iid --alpha-loss task`` today; cached) and, for the alphas the run's learned rows reach and for points along
their trajectories, measures on the target set, the held-out split and the test split:

* cross-entropy and accuracy (what the optimisers minimise, what the table reports);
* the same cross-entropy after the best temperature (logits / T with T fitted on the
  target set): what is left of the loss once the confidence of the blend is taken out;
* the mean top-class probability (confidence) and the effective number of experts.

Runs, 3 seeds each (the experiment's minibatch schedule and seeds):

* ``backprop`` and ``spsa`` exactly as the experiment runs them (GLUE's lr 1e-2, 199 steps);
* ``backprop-fullbatch``: the same steps on the whole target set (no minibatch noise);
* ``backprop-long``: 2000 full-batch steps, the minimiser of the target cross-entropy;
* ``spsa-long``: SPSA with 4000 evaluations (where SPSA goes when it can);
* ``backprop-calibrated``: backprop on the temperature-profiled cross-entropy
  (min over T of CE(logits / T), forward only);
* ``spsa-calibrated``: SPSA as the experiment runs it, on that loss;
* ``backprop-val-error`` / ``backprop-val-ce``: backprop with early stopping on the
  held-out split's error rate / cross-entropy (``val_objective``, patience 5).

Writes ``benchmarks/results/diagnose_default.json`` and ``.md``::

    python benchmarks/diagnose_default.py --output benchmarks/results/diagnose_default.json

About a minute of CPU after the experts (cached in ``$SPSA_MIX_CACHE``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import spsa_mix
from spsa_mix.blend import BlendedObjective
from spsa_mix.experiment import ExperimentConfig
from spsa_mix.experiment.alpha import spsa_steps
from spsa_mix.experiment.pipeline import Experiment
from spsa_mix.io import atomic_write_text, write_json


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, iters: int = 30) -> float:
    """argmin_T CE(logits / T, labels) by Newton's method on b = 1/T: CE(b z) is convex in b,
    with f'(b) = mean(E_p[z] - z_y) and f''(b) = mean(Var_p[z]), p = softmax(b z)."""
    z = logits.detach().to(torch.float64)
    zy = z.gather(1, labels[:, None]).squeeze(1)
    b = 1.0
    for _ in range(iters):
        p = (b * z).softmax(1)
        mean = (p * z).sum(1)
        g = float((mean - zy).mean())
        h = float((p * (z - mean[:, None]) ** 2).sum(1).mean())
        step = g / h if h > 1e-12 else g
        b = float(np.clip(b - step, b / 4, b * 4))
        if abs(step) < 1e-10 * b:
            break
    return 1.0 / b


def profiled_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE(logits / T*, labels) with T* fitted on this batch and then held fixed (envelope
    theorem: the gradient with respect to the logits is that of the profiled loss)."""
    t = fit_temperature(logits, labels, iters=15)
    return F.cross_entropy(logits / t, labels)


class Measure:
    """Metrics of theta(alpha) on the target, held-out and test splits (whole splits)."""

    def __init__(self, exp: Experiment) -> None:
        self.exp = exp
        self.parts = {p: exp.pool.whole(p) for p in ("target", "holdout", "test")}

    @torch.inference_mode()
    def logits(self, alpha: np.ndarray, part: str) -> torch.Tensor:
        model = self.exp.blended(alpha).eval()
        return model(self.parts[part][0])

    def __call__(self, alpha: np.ndarray) -> dict[str, Any]:
        alpha = np.asarray(alpha, dtype=np.float64)
        out: dict[str, Any] = {"effective_experts": float(1.0 / np.sum(alpha**2))}
        z = {p: self.logits(alpha, p) for p in self.parts}
        t = fit_temperature(z["target"], self.parts["target"][1])
        out["temperature"] = t
        for p, logits in z.items():
            y = self.parts[p][1]
            out[f"{p}_ce"] = float(F.cross_entropy(logits, y))
            out[f"{p}_acc"] = float((logits.argmax(1) == y).double().mean())
            out[f"{p}_ce_calibrated"] = float(F.cross_entropy(logits / t, y))
            out[f"{p}_confidence"] = float(logits.softmax(1).max(1).values.mean())
        return out


def trajectory(history_x: np.ndarray, every: int) -> list[int]:
    steps = list(range(0, len(history_x), every))
    if steps[-1] != len(history_x) - 1:
        steps.append(len(history_x) - 1)
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="benchmarks/results/diagnose_default.json")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--every", type=int, default=20, help="trajectory points every N steps")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cfg = ExperimentConfig(target_concentration=None, alpha_loss=None)  # the former default run (GLUE's protocol)
    exp = Experiment(cfg, log=lambda s: print(s, file=sys.stderr))
    exp.prepare()
    exp.train_experts()
    measure = Measure(exp)
    steps = spsa_steps(cfg.budget, cfg.m)
    k = cfg.k
    target_x, target_y = measure.parts["target"]
    holdout_x, holdout_y = measure.parts["holdout"]

    def val_error(alpha: np.ndarray) -> float:
        return 1.0 - exp.holdout_accuracy(alpha)

    holdout_obj = exp.pool.objective(data=(holdout_x, holdout_y))

    def val_ce(alpha: np.ndarray) -> float:
        return float(holdout_obj(np.asarray(alpha)[None])[0])

    def runs(seed: int) -> dict[str, Any]:
        common = dict(lr=cfg.alpha_lr, betas=cfg.alpha_betas, seed=seed, vectorized=True)
        obj = exp.objective(seed)
        full = exp.pool.objective(data=(target_x, target_y))
        calibrated = BlendedObjective(exp.pool.model_fn(), exp.pool.models, loss_fn=profiled_ce,
                                      data=exp.pool.target_batches(cfg.alpha_batch_size, seed=_alpha_seed(seed)),
                                      device=exp.device)
        return {
            "backprop": lambda: spsa_mix.minimize(obj, k=k, method="backprop", maxiter=steps, final_eval=False,
                                                  **common),
            "spsa": lambda: spsa_mix.minimize(exp.objective(seed), k=k, method="spsa", max_evals=cfg.budget,
                                              directions=cfg.directions, m=cfg.m, **common),
            "backprop-fullbatch": lambda: spsa_mix.minimize(full, k=k, method="backprop", maxiter=steps,
                                                            final_eval=False, **common),
            "backprop-long": lambda: spsa_mix.minimize(full, k=k, method="backprop", maxiter=2000,
                                                       final_eval=False, **common),
            "spsa-long": lambda: spsa_mix.minimize(exp.objective(seed), k=k, method="spsa", max_evals=4000,
                                                   directions=cfg.directions, **common),
            "backprop-calibrated": lambda: spsa_mix.minimize(calibrated, k=k, method="backprop", maxiter=steps,
                                                             final_eval=False, **common),
            "spsa-calibrated": lambda: spsa_mix.minimize(
                BlendedObjective(exp.pool.model_fn(), exp.pool.models, loss_fn=profiled_ce, device=exp.device,
                                 data=exp.pool.target_batches(cfg.alpha_batch_size, seed=_alpha_seed(seed))),
                k=k, method="spsa", max_evals=cfg.budget, directions=cfg.directions, m=cfg.m, **common),
            "backprop-val-error": lambda: spsa_mix.minimize(exp.objective(seed), k=k, method="backprop",
                                                            maxiter=steps, final_eval=False, val_objective=val_error,
                                                            val_every=5, patience=5, **common),
            "backprop-val-ce": lambda: spsa_mix.minimize(exp.objective(seed), k=k, method="backprop", maxiter=steps,
                                                         final_eval=False, val_objective=val_ce, val_every=5,
                                                         patience=5, **common),
        }

    rows: list[dict[str, Any]] = []
    reference = {"uniform": np.full(k, 1.0 / k)}
    for i in range(k):
        reference[f"expert-{i}"] = np.eye(k)[i]
    for name, alpha in reference.items():
        rows.append({"run": name, "seed": None, "step": None, "alpha": alpha.tolist(), **measure(alpha)})
    for seed in range(args.seeds):
        for name, fn in runs(seed).items():
            res = fn()
            xs = np.asarray(res.history["x"])
            for step in trajectory(xs, args.every):
                rows.append({"run": name, "seed": seed, "step": step + 1, "final": False, "alpha": xs[step].tolist(),
                             **measure(xs[step])})
            rows.append({"run": name, "seed": seed, "step": int(res.nit), "final": True, "alpha": np.asarray(res.x).tolist(),
                         "nit": int(res.nit), "cost": float(res.cost), **measure(res.x)})
            print(f"{name} seed {seed}: {rows[-1]['test_acc']:.3f} test acc, {rows[-1]['target_ce']:.3f} target CE",
                  file=sys.stderr)
    out = {"command": "python benchmarks/diagnose_default.py " + " ".join(argv or sys.argv[1:]),
           "config": cfg.to_dict(), "rows": rows, "seconds": time.perf_counter() - start,
           "environment": {"torch": torch.__version__, "threads": args.threads}}
    path = Path(args.output)
    write_json(out, path, indent=1)
    atomic_write_text(path.with_suffix(".md"), render(out))
    print(render(out))
    return 0


def _alpha_seed(seed: int) -> int:
    from spsa_mix.experiment.pipeline import derive_seed

    return derive_seed(seed, "alpha")


COLUMNS = ("target_ce", "test_ce", "target_ce_calibrated", "test_ce_calibrated", "temperature", "test_confidence",
           "holdout_acc", "test_acc", "effective_experts")


def render(out: dict[str, Any]) -> str:
    """Mean over seeds of each run's final point, then the reference points."""
    lines = ["| alpha from | steps | " + " | ".join(COLUMNS) + " |", "|---|---:|" + "---:|" * len(COLUMNS)]
    finals: dict[str, list[dict[str, Any]]] = {}
    for r in out["rows"]:
        if r["seed"] is None:
            finals.setdefault(r["run"], []).append(r)
        elif r.get("final"):
            finals.setdefault(r["run"], []).append(r)
    for name, rs in finals.items():
        if name.startswith("expert-") and name not in ("expert-2", "expert-8"):
            continue
        cells = []
        for c in COLUMNS:
            v = np.array([r[c] for r in rs], dtype=float)
            scale = 100.0 if c.endswith("_acc") else 1.0
            cells.append(f"{scale * v.mean():.3f}" + (f" ± {scale * v.std(ddof=1):.3f}" if len(v) > 1 else ""))
        steps = rs[0].get("nit", "")
        lines.append(f"| {name} | {steps} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
