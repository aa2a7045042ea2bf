"""Channels-last against channels-first: the layout each architecture runs in, measured.

For each architecture of :mod:`spsa_mix.models` and input shape, three workloads are timed
in both layouts:

* ``objective`` -- one call of :class:`spsa_mix.blend.BlendedObjective` with two probes
  (an SPSA step's forward passes; K experts, the loop, as on the CPU);
* ``train``     -- one training step of the architecture (forward, backward, Adam), as
  expert training and fine-tuning run it;
* ``eval``      -- one forward pass in inference mode at the evaluation batch size.

``channels_first`` runs the architecture on its input as it is (contiguous NCHW), with
:data:`spsa_mix.models.CHANNELS_LAST_DEVICES` emptied; ``channels_last`` is the package's
default (:func:`spsa_mix.models.preferred_layout`). Both layouts of one workload are timed
side by side: after warm-up calls, each of ``--rounds`` rounds times ``--steps`` calls of
each layout, in an order shuffled anew each round, with a fixed number of intra-op threads
(``--threads``, default 1). Reported: per workload the median time of each layout, the
ratio channels-last / channels-first formed within each round (median and min-max over
rounds), and the largest difference between the two layouts' outputs (objective: the
losses; train: the loss after the step; eval: the logits).

Writes the JSON (``--output``) and a markdown table beside it (same name, ``.md``).

Usage::

    python benchmarks/memory_format.py                   # CPU, the four architectures, one thread

Dependencies: torch, torchvision, numpy (and this package).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import spsa_mix.models as models
from spsa_mix.blend import BlendedObjective
from spsa_mix.io import atomic_write_text, write_json

LAYOUTS = ("channels_first", "channels_last")
# (architecture, input channels, image size): Fashion-MNIST's 28x28x1 and CIFAR's 32x32x3
SHAPES = [("small-cnn", 1, 28), ("small-cnn", 3, 32), ("resnet20", 1, 28), ("resnet20", 3, 32),
          ("mobilenet_v2", 3, 32), ("vit", 3, 32)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--models", nargs="+", default=sorted({s[0] for s in SHAPES}), choices=models.available_models())
    p.add_argument("--batch-size", type=int, default=64, help="objective and training batch (default 64, GLUE's)")
    p.add_argument("--eval-batch-size", type=int, default=1000, help="evaluation batch (default 1000, the experiment's)")
    p.add_argument("--k", type=int, default=10, help="experts in the objective (default 10)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=1, help="calls per layout and round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders")
    p.add_argument("--note", default="")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON path (default benchmarks/results/memory_format_<device>.json)")
    return p.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Layout:
    """Run the architectures channels-first (nothing converted) or channels-last (the default)."""

    default = models.CHANNELS_LAST_DEVICES

    def __init__(self, layout: str) -> None:
        self.devices = frozenset() if layout == "channels_first" else frozenset({"cpu", "cuda"})

    def __enter__(self) -> None:
        models.CHANNELS_LAST_DEVICES = self.devices  # read by preferred_layout at every forward

    def __exit__(self, *exc: Any) -> None:
        models.CHANNELS_LAST_DEVICES = self.default


def workloads(name: str, c: int, s: int, args: argparse.Namespace, device: torch.device
              ) -> dict[str, dict[str, Callable[[], Any]]]:
    """``{workload: {layout: call}}``; each call returns what is compared between layouts."""
    gen = torch.Generator().manual_seed(0)
    kw = dict(num_classes=10, in_channels=c, image_size=s)
    x = torch.randn(args.batch_size, c, s, s, generator=gen).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=gen).to(device)
    x_eval = torch.randn(args.eval_batch_size, c, s, s, generator=gen).to(device)
    experts = [models.build_model(name, seed=i + 1, **kw) for i in range(args.k)]
    points = np.random.default_rng(0).dirichlet(np.ones(args.k), size=2)
    out: dict[str, dict[str, Callable[[], Any]]] = {"objective": {}, "train": {}, "eval": {}}
    for layout in LAYOUTS:
        obj = BlendedObjective(models.build_model(name, seed=0, **kw), experts, data=(x, y), device=device,
                               batched=False)
        net = models.build_model(name, seed=0, **kw).to(device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        probe = models.build_model(name, seed=0, **kw).to(device).eval()

        def objective(obj: BlendedObjective = obj) -> Any:
            return obj(points)

        def train(net: torch.nn.Module = net, opt: torch.optim.Optimizer = opt) -> Any:
            net.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            return float(loss.detach())

        def evaluate(probe: torch.nn.Module = probe) -> Any:
            with torch.inference_mode():
                return probe(x_eval)

        out["objective"][layout], out["train"][layout], out["eval"][layout] = objective, train, evaluate
    return out


def measure(calls: dict[str, Callable[[], Any]], args: argparse.Namespace, device: torch.device,
            rng: random.Random) -> dict[str, Any]:
    first = {}
    for layout in LAYOUTS:
        with _Layout(layout):
            first[layout] = calls[layout]()  # the first call of each (same weights, same data): compared
            for _ in range(args.warmup - 1):
                calls[layout]()
    times: dict[str, list[float]] = {layout: [] for layout in LAYOUTS}
    for _ in range(args.rounds):
        order = list(LAYOUTS)
        rng.shuffle(order)
        for layout in order:
            with _Layout(layout):
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    calls[layout]()
                _sync(device)
                times[layout].append((time.perf_counter() - t0) / args.steps)
    ratios = [a / b for a, b in zip(times["channels_last"], times["channels_first"], strict=True)]
    a, b = (torch.as_tensor(np.asarray(first[k], dtype=np.float64)) if not isinstance(first[k], torch.Tensor)
            else first[k].double().cpu() for k in LAYOUTS)
    return {"time_s": {k: statistics.median(v) for k, v in times.items()}, "time_rounds_s": times,
            "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
            "ratio_rounds": ratios, "max_abs_diff": float((a - b).abs().max())}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = random.Random(args.seed)
    output = args.output or Path(__file__).parent / "results" / f"memory_format_{args.device}.json"
    rows = []
    t_start = time.time()
    for name, c, s in [shape for shape in SHAPES if shape[0] in args.models]:
        print(f"{name} {c}x{s}x{s} ...", file=sys.stderr, flush=True)
        for workload, calls in workloads(name, c, s, args, device).items():
            row = {"model": name, "in_channels": c, "image_size": s, "workload": workload,
                   "batch_size": args.eval_batch_size if workload == "eval" else args.batch_size,
                   **measure(calls, args, device, rng)}
            rows.append(row)
            print(f"  {workload}: channels-last / channels-first = {row['ratio']['median']:.2f} "
                  f"[{row['ratio']['min']:.2f}-{row['ratio']['max']:.2f}]", file=sys.stderr, flush=True)
    lines = ["| model | input | workload | batch | channels-first ms | channels-last ms | last/first | "
             "max abs diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t, q = r["time_s"], r["ratio"]
        lines.append(f"| {r['model']} | {r['in_channels']}x{r['image_size']}x{r['image_size']} | {r['workload']} | "
                     f"{r['batch_size']} | {1e3 * t['channels_first']:.1f} | {1e3 * t['channels_last']:.1f} | "
                     f"{q['median']:.2f} [{q['min']:.2f}-{q['max']:.2f}] | {r['max_abs_diff']:.1e} |")
    table = "\n".join(lines)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    command = "python benchmarks/memory_format.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    md = "\n".join([
        f"# Channels-last against channels-first ({args.device}, {os.cpu_count()} cores, {args.threads} torch "
        f"thread{'s' if args.threads > 1 else ''})", "",
        f"Command: `{command.strip()}`. {args.rounds} rounds after {args.warmup} warm-up calls; each round times "
        f"{args.steps} call(s) of both layouts in a shuffled order. Times are medians over rounds; the ratio is "
        f"formed within each round (median [min-max]). objective: a two-probe call of BlendedObjective (K={args.k}, "
        f"loop); train: one Adam step; eval: one inference forward. Max abs diff: losses (objective, train) or "
        f"logits (eval) of the two layouts. torch {torch.__version__}; load average at the end: "
        f"{tuple(round(v, 2) for v in load) if load else 'n/a'}." + (f" Note: {args.note}" if args.note else ""),
        "", table, ""])
    write_json({"benchmark": "memory_format", "device": args.device, "command": command.strip(),
                "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
                "cpu_count": os.cpu_count(), "load_average": load, "args": vars(args), "note": args.note,
                "wall_s": time.time() - t_start, "rows": rows}, output, indent=2)
    atomic_write_text(output.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
