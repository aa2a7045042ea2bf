"""When does refreshing the BatchNorm statistics of a blended network help?

K small-CNN experts are trained on non-IID splits of scikit-learn's digits (8x8 images,
1797 examples, shipped with scikit-learn): expert i sees 500 training examples drawn
mostly (weight 1 against 0.05) from 4 of the 10 classes, {2i, ..., 2i+3} mod 10. The
target domain is all 10 classes: a target set of 256 training examples (used to learn
alpha and to refresh the statistics) and a held-out test split (30 % of digits, never
trained on). For each alpha -- uniform, the best single expert on the target set, and
alpha learned by GLUE's SPSA on the target set -- the test accuracy of theta(alpha) is
measured with the blended running statistics (the default) and with statistics
recomputed on the target set (:func:`spsa_mix.blend.refresh_batchnorm`).

Two kinds of experts: trained from one shared initialisation (as when experts are
fine-tuned from one pretrained network) and from independent initialisations.

Usage::

    python benchmarks/bn_refresh.py                 # K=5, 3 seeds, a few minutes on one core
    python benchmarks/bn_refresh.py --seeds 0 1 2 3 4 --output /tmp/bn.json

Writes ``benchmarks/results/bn_refresh.json`` and ``bn_refresh.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import spsa_mix
from spsa_mix.blend import BlendedObjective, evaluate, evaluate_blend, evaluate_experts, refresh_batchnorm
from spsa_mix.io import atomic_write_text, write_json
from spsa_mix.models import build_model

RESULTS = Path(__file__).parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=8, help="expert training epochs (Adam, lr 1e-2, batch 50)")
    p.add_argument("--target-size", type=int, default=256)
    p.add_argument("--spsa-steps", type=int, default=150)
    p.add_argument("--output", type=Path, default=RESULTS / "bn_refresh.json")
    return p.parse_args(argv)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    return x, torch.tensor(d.target, dtype=torch.long)


def train_expert(x: torch.Tensor, y: torch.Tensor, *, init_seed: int, data_seed: int, epochs: int) -> torch.nn.Module:
    net = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=init_seed)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(data_seed)
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for b in range(0, len(y), 50):
            j = perm[b : b + 50]
            opt.zero_grad()
            F.cross_entropy(net(x[j]), y[j]).backward()
            opt.step()
    return net.eval()


def run_seed(args: argparse.Namespace, seed: int, shared_init: bool) -> dict[str, Any]:
    x, y = digits()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = int(0.3 * len(y))
    test_idx, pool_idx = perm[:n_test], perm[n_test:]
    target_idx = rng.choice(pool_idx, size=args.target_size, replace=False)
    experts = []
    for i in range(args.k):
        favoured = [(2 * i + j) % 10 for j in range(4)]
        w = np.where(np.isin(y[pool_idx].numpy(), favoured), 1.0, 0.05)
        idx = rng.choice(pool_idx, size=500, replace=False, p=w / w.sum())
        init = 1000 * seed if shared_init else 1000 * seed + i
        experts.append(train_expert(x[idx], y[idx], init_seed=init, data_seed=1000 * seed + i, epochs=args.epochs))
    target, test = (x[target_idx], y[target_idx]), (x[test_idx], y[test_idx])
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*target), batch_size=64, shuffle=True,
                                         generator=gen)
    arch = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    obj = BlendedObjective(arch, experts, data=loader, device="cpu")
    target_acc = [m["accuracy"] for m in evaluate_experts(obj, target)]
    res = spsa_mix.minimize(obj, k=obj.k, vectorized=True, maxiter=args.spsa_steps, seed=seed)
    alphas = {
        "uniform": np.full(args.k, 1.0 / args.k),
        "best expert": np.eye(args.k)[int(np.argmax(target_acc))],
        "GLUE (SPSA)": res.x,
    }
    out: dict[str, Any] = {"seed": seed, "shared_init": shared_init,
                           "expert_test_accuracy": [m["accuracy"] for m in evaluate_experts(obj, test)]}
    for name, alpha in alphas.items():
        blended = evaluate_blend(obj, alpha, test)["accuracy"]
        model = refresh_batchnorm(obj.blended_model(alpha), [target])
        refreshed = evaluate(model, test)["accuracy"]
        out[name] = {"alpha": np.round(alpha, 4).tolist(), "blended": blended, "refreshed": refreshed}
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t0 = time.time()
    runs = [run_seed(args, s, shared) for shared in (True, False) for s in args.seeds]
    lines = [
        f"# BatchNorm statistics of blended networks: blended vs refreshed (test accuracy, %; mean ± std over seeds "
        f"{args.seeds})",
        "",
        f"K={args.k} small-CNN experts on non-IID digits splits, {args.epochs} epochs; refresh on the "
        f"{args.target_size}-example target set; test on the held-out 30 %. Command: "
        f"`python benchmarks/bn_refresh.py{''.join(' ' + a for a in (sys.argv[1:] if argv is None else argv))}`.",
        "",
        "| experts | alpha | blended statistics | refreshed statistics | gain |",
        "|---|---|---|---|---|",
    ]
    summary: dict[str, Any] = {}
    for shared in (True, False):
        kind = "shared init" if shared else "independent inits"
        rows = [r for r in runs if r["shared_init"] == shared]
        for name in ("uniform", "best expert", "GLUE (SPSA)"):
            b = 100 * np.array([r[name]["blended"] for r in rows])
            f = 100 * np.array([r[name]["refreshed"] for r in rows])
            summary[f"{kind} / {name}"] = {"blended_mean": b.mean(), "blended_std": b.std(),
                                          "refreshed_mean": f.mean(), "refreshed_std": f.std(),
                                          "gain_mean": (f - b).mean(), "gain_min": (f - b).min()}
            lines.append(f"| {kind} | {name} | {b.mean():.1f} ± {b.std():.1f} | {f.mean():.1f} ± {f.std():.1f} | "
                         f"{(f - b).mean():+.1f} (min {(f - b).min():+.1f}) |")
    table = "\n".join(lines)
    print(table)
    meta = {"benchmark": "bn_refresh", "torch": torch.__version__, "python": platform.python_version(),
            "args": vars(args),
            "wall_s": time.time() - t0, "summary": summary, "runs": runs}
    write_json(meta, args.output, indent=2)
    atomic_write_text(args.output.with_suffix(".md"), table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
