"""Cost of one step of learning alpha: SPSA, forward-grad and backprop, side by side.

For each architecture and batch size, K experts (random initialisations; the values do
not change the cost) are stacked in one :class:`spsa_mix.blend.BlendedObjective` and one
optimiser step is timed for

* ``forward``           -- one bare forward pass of a plain module holding fixed weights
                           (inference mode, eval): the unit of the paper's cost model;
* ``spsa_m1_loop`` / ``spsa_m1_batched`` -- SPSA with m=1 (two probes), looped or batched
                           (``torch.func.vmap``) forwards; ``spsa_m4_loop`` /
                           ``spsa_m4_batched`` with m=4 (eight probes);
* ``forward_grad_m1``   -- one forward-mode (``torch.func.jvp``) pass with one tangent;
* ``backprop``          -- one forward and one backward pass (autograd).

A step is the whole ``ask`` / objective / ``tell`` cycle of the core optimiser (the
blend, the minibatch fetch, the forward passes, the update), timed with
``time.perf_counter`` (CUDA synchronised) after warm-up steps; the median over
``--repeats`` steps is reported. The table prints ``T_backprop / T_spsa`` and
``T_spsa / (2 T_forward)`` (the paper's cost model: an SPSA step is two forwards plus two
blends), with the SPSA time that of m=1 under the default ``batched="auto"`` policy (the
loop on the CPU, batched elsewhere); the same SPSA step gives the memory ratio.

Peak memory of a step is the most memory allocated *during* the step beyond what was
allocated before it (the stacked experts, the model and the data are excluded and
the stacked experts reported once as ``stacked_experts_mb``). On CUDA: ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats``. On the CPU: the allocation and free events that PyTorch's
CPU allocator reports to ``torch.profiler`` with ``profile_memory=True``, replayed in time
order; the running sum's maximum is the peak. This sees every tensor the step allocates
(activations, the blended parameters, gradients), which ``tracemalloc`` cannot, and
unlike the process's resident set size it is not blurred by memory the C allocator keeps
after a free; it does not see scratch memory that a library (oneDNN) allocates outside
PyTorch's allocator. It runs in separate steps from the timing, as the profiler slows
the step.

Probes are scored as :class:`~spsa_mix.blend.BlendedObjective` scores them: the loop
writes theta into the buffer the probe module's tensors are views of (one matrix-vector
product) and calls the module; the batched variant forms all thetas with one matrix
product and vmaps a functional call.

Writes the JSON (``--output``) and a markdown table beside it (same name, ``.md``).

Usage::

    python benchmarks/step_cost.py                       # CPU, small-cnn and resnet20, batch 128 and 256
    python benchmarks/step_cost.py --device cuda --models small-cnn resnet20 mobilenet_v2 vit \\
        --output benchmarks/results/step_cost_cuda.json

Dependencies: torch, torchvision, numpy (and this package).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spsa_mix.blend import BlendedObjective
from spsa_mix.core.optimizer import SimplexForwardGradient, SimplexGradient, SimplexSPSA
from spsa_mix.io import atomic_write_text, write_json
from spsa_mix.models import available_models, build_model

DEFAULT_SPSA_M = (1, 4)  # GLUE's m=1, and m=4 where batching the probes can pay


def method_names(spsa_m: list[int]) -> list[str]:
    spsa = [f"spsa_m{m}_{mode}" for m in spsa_m for mode in ("loop", "batched")]
    return ["forward", *spsa, "forward_grad_m1", "backprop"]


METHODS = tuple(method_names(list(DEFAULT_SPSA_M)))
TARGET_SPSA_OVER_2FWD = 1.15  # goal: an SPSA step within 15 % of two bare forwards
TARGET_MEMORY_RATIO = 0.5  # goal: SPSA's peak memory at most half of backprop's at batch 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--models", nargs="+", default=["small-cnn", "resnet20"], choices=available_models())
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[128, 256])
    p.add_argument("--k", type=int, default=10, help="number of experts (default 10)")
    p.add_argument("--repeats", type=int, default=5, help="timed steps per method (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    p.add_argument("--spsa-m", nargs="+", type=int, default=list(DEFAULT_SPSA_M),
                   help="numbers of SPSA directions to time, each looped and batched (default 1 4)")
    p.add_argument("--methods", nargs="+", default=None,
                   help=f"subset of the methods to time (default all: {' '.join(METHODS)} for the default --spsa-m)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'machine loaded')")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON path (default benchmarks/results/step_cost_<device>.json)")
    return p.parse_args(argv)


# ---------------------------------------------------------------------- measurement
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], Any], *, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Wall time of ``repeats`` calls of ``step`` (seconds each), after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return times


def _cpu_allocation_peak(step: Callable[[], Any]) -> float:
    """Peak bytes allocated by PyTorch's CPU allocator during ``step``, above the start."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and str(node.extra_fields.device).startswith("cpu"):
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    events.sort()
    running = np.cumsum([size for _, size in events]) if events else np.zeros(1)
    return float(max(running.max(), 0))


def peak_memory(step: Callable[[], Any], *, device: torch.device) -> float:
    """Peak memory (bytes) a step allocates beyond what is allocated before it."""
    step()  # warm: lazily built state (e.g. the gradient model) is not part of a step
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device) - before)
    return _cpu_allocation_peak(step)


# ---------------------------------------------------------------------- problem
def build_problem(args: argparse.Namespace, name: str, batch_size: int, device: torch.device
                  ) -> tuple[dict[str, BlendedObjective], torch.nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    kw = dict(num_classes=args.num_classes, in_channels=args.in_channels, image_size=args.image_size)
    arch = build_model(name, seed=0, **kw)
    experts = [build_model(name, seed=i + 1, **kw) for i in range(args.k)]
    gen = torch.Generator().manual_seed(0)
    shape = (batch_size, args.in_channels, args.image_size, args.image_size)
    batches = [(torch.randn(shape, generator=gen).to(device),
                torch.randint(0, args.num_classes, (batch_size,), generator=gen).to(device)) for _ in range(3)]
    objectives = {mode: BlendedObjective(arch, experts, data=batches, device=device, batched=flag)
                  for mode, flag in (("loop", False), ("batched", True), ("auto", "auto"))}
    bare = objectives["loop"].blended_model(np.full(args.k, 1.0 / args.k)).eval().requires_grad_(False)
    del experts
    return objectives, bare, batches


def make_steps(objectives: dict[str, BlendedObjective], bare: torch.nn.Module,
               batches: list[tuple[torch.Tensor, torch.Tensor]], k: int, spsa_m: list[int]
               ) -> dict[str, Callable[[], Any]]:
    counter = {"i": 0}

    def forward() -> None:
        x, _ = batches[counter["i"] % len(batches)]
        counter["i"] += 1
        with torch.inference_mode():
            bare(x)

    def spsa(mode: str, m: int) -> Callable[[], Any]:
        opt, obj = SimplexSPSA(k, m=m, seed=0), objectives[mode]
        return lambda: opt.tell(obj(opt.ask()))

    def forward_grad() -> Any:
        alpha, tangents = fg.ask()
        return fg.tell(*objectives["auto"].jvp(alpha, tangents))

    def backprop() -> Any:
        return bp.tell(*objectives["auto"].value_and_grad(bp.ask()))

    fg, bp = SimplexForwardGradient(k, m=1, seed=0), SimplexGradient(k, seed=0)
    steps: dict[str, Callable[[], Any]] = {"forward": forward}
    for m in spsa_m:
        steps[f"spsa_m{m}_loop"], steps[f"spsa_m{m}_batched"] = spsa("loop", m), spsa("batched", m)
    steps.update({"forward_grad_m1": forward_grad, "backprop": backprop})
    return steps


def run_config(args: argparse.Namespace, name: str, batch_size: int, device: torch.device) -> dict[str, Any]:
    objectives, bare, batches = build_problem(args, name, batch_size, device)
    obj = objectives["auto"]
    steps = make_steps(objectives, bare, batches, args.k, args.spsa_m)
    auto = "spsa_m1_batched" if obj.uses_vmap(2) else "spsa_m1_loop"  # the default policy's choice for m=1
    row: dict[str, Any] = {
        "model": name, "batch_size": batch_size, "k": args.k, "num_blended": obj.num_blended,
        "stacked_experts_mb": obj._stack.weights.numel() * obj._stack.weights.element_size() / 2**20,
        "time_s": {}, "time_all_s": {}, "peak_mb": {}, "errors": {},
    }
    for method in args.methods:
        if method not in steps:
            raise ValueError(f"unknown method {method!r}; available: {list(steps)}")
        try:
            times = time_steps(steps[method], device=device, warmup=args.warmup, repeats=args.repeats)
            row["time_s"][method] = statistics.median(times)
            row["time_all_s"][method] = times
            if not args.no_memory:
                row["peak_mb"][method] = peak_memory(steps[method], device=device) / 2**20
        except Exception as e:  # record and go on: one architecture's failure must not lose the others
            row["errors"][method] = f"{type(e).__name__}: {str(e)[:300]}"
            print(f"  {name} b={batch_size} {method}: {row['errors'][method]}", file=sys.stderr)
    row["spsa_m1_auto_batched"] = obj.uses_vmap(2)
    row["auto_batched_from_probes"] = [n for n in (2, 4, 8) if obj.uses_vmap(n)][:1]
    t = row["time_s"]
    spsa_t = t.get(auto)
    row["backprop_over_spsa"] = t["backprop"] / spsa_t if spsa_t and "backprop" in t else math.nan
    row["spsa_over_2fwd"] = spsa_t / (2 * t["forward"]) if spsa_t and "forward" in t else math.nan
    pm = row["peak_mb"]
    row["spsa_over_backprop_memory"] = pm[auto] / pm["backprop"] if auto in pm and pm.get("backprop") else math.nan
    return row


# ---------------------------------------------------------------------- report
def format_table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    head = ["model", "batch"] + [f"{m} ms" for m in methods] + ["Tbp/Tspsa", "Tspsa/2Tfwd"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["batch_size"])]
        cells += [f"{1e3 * r['time_s'][m]:.1f}" if m in r["time_s"] else "err" for m in methods]
        cells += [f"{r['backprop_over_spsa']:.2f}", f"{r['spsa_over_2fwd']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if any(r["peak_mb"] for r in rows):
        lines += ["", "Peak memory of one step beyond what is allocated before it, and the size of the "
                  "stacked experts (MiB):", ""]
        head = ["model", "batch", "experts"] + methods + ["spsa/backprop"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            cells = [r["model"], str(r["batch_size"]), f"{r['stacked_experts_mb']:.1f}"]
            cells += [f"{r['peak_mb'][m]:.1f}" if m in r["peak_mb"] else "-" for m in methods]
            cells.append(f"{r['spsa_over_backprop_memory']:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.methods is None:
        args.methods = method_names(args.spsa_m)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    output = args.output or Path(__file__).parent / "results" / f"step_cost_{args.device}.json"
    rows = []
    t_start = time.time()
    for name in args.models:
        for b in args.batch_sizes:
            print(f"{name} batch {b} ...", file=sys.stderr, flush=True)
            try:
                rows.append(run_config(args, name, b, device))
            except Exception as e:
                print(f"  {name} b={b} failed: {type(e).__name__}: {e}", file=sys.stderr)
                rows.append({"model": name, "batch_size": b, "failed": f"{type(e).__name__}: {e}"})
    good = [r for r in rows if "failed" not in r]
    table = format_table(good, list(args.methods))
    verdicts = []
    for r in good:
        ok_t = r["spsa_over_2fwd"] <= TARGET_SPSA_OVER_2FWD
        line = (f"{r['model']} b={r['batch_size']}: T_spsa/(2 T_fwd) = {r['spsa_over_2fwd']:.2f} "
                f"({'meets' if ok_t else 'misses'} the 1.15 target); T_backprop/T_spsa = {r['backprop_over_spsa']:.2f}")
        if r["batch_size"] == 256 and not math.isnan(r["spsa_over_backprop_memory"]):
            ok_m = r["spsa_over_backprop_memory"] <= TARGET_MEMORY_RATIO
            line += (f"; peak memory SPSA/backprop = {r['spsa_over_backprop_memory']:.2f} "
                     f"({'meets' if ok_m else 'misses'} the 0.5 target)")
        verdicts.append(line)
    print(table)
    print("\n".join(verdicts))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else (platform.processor() or platform.machine())
    command = "python benchmarks/step_cost.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = [
        f"# Cost of one step of learning alpha ({args.device}: {device_name}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads)",
        "",
        f"Command: `{command.strip()}`. Median of {args.repeats} steps after {args.warmup} warm-up steps, K={args.k}, "
        f"{args.image_size}x{args.image_size}x{args.in_channels} inputs, {args.num_classes} classes; torch "
        f"{torch.__version__}. Load average at the end: {tuple(round(v, 2) for v in load) if load else 'n/a'}."
        + (f" Note: {args.note}" if args.note else ""),
        "",
        "SPSA's time in the ratios is m=1 under the default `batched=\"auto\"` policy; peak memory is what a step "
        "allocates beyond what was allocated before it (" + ("torch.cuda.max_memory_allocated" if args.device == "cuda"
        else "torch.profiler allocation events") + ").",
        "",
    ]
    md = "\n".join(header) + "\n" + table + "\n\n" + "\n".join(f"- {v}" for v in verdicts) + "\n"
    result = {
        "benchmark": "step_cost", "device": args.device,
        "device_name": device_name, "command": command.strip(),
        "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_average": load,
        "args": vars(args),
        "memory_method": ("torch.cuda.max_memory_allocated" if args.device == "cuda"
                          else "torch.profiler allocation events (profile_memory=True), running-sum peak"),
        "wall_s": time.time() - t_start, "note": args.note, "rows": rows,
    }
    write_json(result, output, indent=2)
    atomic_write_text(output.with_suffix(".md"), md)
    print(f"wrote {output} and {output.with_suffix('.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
