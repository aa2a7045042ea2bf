"""What fetching a minibatch costs a step: a DataLoader's per-example collation against indexing.

Two objectives of ``spsa-mix bench compare --problem network`` (K experts of the small CNN on
scikit-learn's digits, :func:`spsa_mix.compare.network_problem`) are timed side by side:
one step is a two-probe call (an SPSA step's forward passes). ``dataloader`` draws its
minibatches from ``torch.utils.data.DataLoader(TensorDataset(x, y), batch_size, shuffle=True,
generator)`` (what the comparison used before); ``tensor_batches`` from
:class:`spsa_mix.data.batches.TensorBatches` (the same batches in the same order, by
indexing the tensors). A fetch alone (``next`` on each, no forward) is timed as well, and the
two objectives' losses are compared over every step timed (they must be equal, bit for bit).

Rounds: after warm-up, each of ``--rounds`` rounds times ``--steps`` steps of each variant
in a shuffled order, one intra-op thread (``--threads``). Reported: the median time per
step of each, and the ratio formed within each round (median [min-max]).

Writes the JSON (``--output``) and a markdown table beside it (same name, ``.md``).

Usage::

    python benchmarks/batch_fetch.py
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spsa_mix.blend.batches import BatchStream
from spsa_mix.compare import network_problem
from spsa_mix.data.batches import TensorBatches
from spsa_mix.io import atomic_write_text, write_json


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64, help="the comparison's default (64)")
    p.add_argument("--expert-epochs", type=int, default=30, help="the comparison's default (30)")
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--steps", type=int, default=20, help="steps per variant and round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders and of the minibatch order")
    p.add_argument("--note", default="")
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "batch_fetch_cpu.json")
    return p.parse_args(argv)


def _cycle(data: Any) -> Iterator[Any]:
    while True:
        yield from data


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    problem = network_problem(args.k, batch_size=args.batch_size, expert_epochs=args.expert_epochs)
    fast = problem.make_objective(args.seed)  # TensorBatches
    x, y = fast._stream._data.tensors
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=args.batch_size,
                                         shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    slow = problem.make_objective(args.seed)
    slow._stream = BatchStream(loader, device=slow.device, dtype=slow.dtype)  # the same objective, over the loader
    points = np.random.default_rng(0).dirichlet(np.ones(args.k), size=2)
    losses: dict[str, list[np.ndarray]] = {"dataloader": [], "tensor_batches": []}
    fetch_iters = {"dataloader": _cycle(torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=args.batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(1))),
        "tensor_batches": _cycle(TensorBatches(x, y, batch_size=args.batch_size, shuffle=True,
                                               generator=torch.Generator().manual_seed(1)))}
    calls: dict[str, Callable[[], Any]] = {
        "step/dataloader": lambda: losses["dataloader"].append(slow(points)),
        "step/tensor_batches": lambda: losses["tensor_batches"].append(fast(points)),
        "fetch/dataloader": lambda: next(fetch_iters["dataloader"]),
        "fetch/tensor_batches": lambda: next(fetch_iters["tensor_batches"]),
    }
    for call in calls.values():
        for _ in range(5):
            call()
    rng = random.Random(args.seed)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        order = list(calls)
        rng.shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                calls[name]()
            times[name].append((time.perf_counter() - t0) / args.steps)
    equal = all(np.array_equal(a, b) for a, b in zip(losses["dataloader"], losses["tensor_batches"], strict=True))
    rows = []
    for what in ("step", "fetch"):
        ratios = [a / b for a, b in zip(times[f"{what}/tensor_batches"], times[f"{what}/dataloader"], strict=True)]
        rows.append({"what": what, "dataloader_s": statistics.median(times[f"{what}/dataloader"]),
                     "tensor_batches_s": statistics.median(times[f"{what}/tensor_batches"]),
                     "ratio": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
                     "ratio_rounds": ratios})
    command = "python benchmarks/batch_fetch.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    lines = [f"# Fetching a minibatch: DataLoader against TensorBatches (cpu, {os.cpu_count()} cores, {args.threads} "
             f"torch thread{'s' if args.threads > 1 else ''})", "",
             f"Command: `{command.strip()}`. The objective of `spsa-mix bench compare --problem network` (K={args.k}, "
             f"batch {args.batch_size}); a step is a two-probe call. {args.rounds} rounds of {args.steps} steps of each "
             f"variant, in a shuffled order; medians over rounds, the ratio formed within each round. Losses of the two "
             f"objectives over all {len(losses['dataloader'])} steps: {'equal bit for bit' if equal else 'DIFFERENT'}. "
             f"torch {torch.__version__}; load average at the end: {tuple(round(v, 2) for v in load) if load else 'n/a'}."
             + (f" Note: {args.note}" if args.note else ""), "",
             "| what | DataLoader µs | TensorBatches µs | TensorBatches / DataLoader |", "|---|---|---|---|"]
    for r in rows:
        q = r["ratio"]
        lines.append(f"| {r['what']} | {1e6 * r['dataloader_s']:.0f} | {1e6 * r['tensor_batches_s']:.0f} | "
                     f"{q['median']:.2f} [{q['min']:.2f}-{q['max']:.2f}] |")
    md = "\n".join(lines) + "\n"
    write_json({"benchmark": "batch_fetch", "command": command.strip(), "torch": torch.__version__,
                "python": platform.python_version(), "threads": args.threads, "cpu_count": os.cpu_count(),
                "load_average": load, "args": vars(args), "note": args.note, "losses_equal": equal,
                "wall_s": time.time() - t_start, "rows": rows, "times_s": times}, args.output, indent=2)
    atomic_write_text(args.output.with_suffix(".md"), md)
    print(md)
    return 0 if equal else 1


if __name__ == "__main__":
    raise SystemExit(main())
