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
``time.perf_counter`` (CUDA synchronised). The methods are timed side by side, in rounds:
after ``--warmup`` untimed steps of every method, each of ``--rounds`` rounds times
``--steps`` consecutive steps of every method once, in an order shuffled anew each round
(``random.Random(--seed)``), so that a change of the machine's load during the run falls on
all methods alike instead of on whichever was timed in its own block. The intra-op thread
count is fixed (``--threads``, default 1; a loaded machine shares its cores with other
processes, and a thread that waits for a core stalls every op split over it).

Reported per method: the median over rounds of the time of one step, and its spread (the
minimum and maximum over rounds). The ratios are formed within each round, from steps
timed seconds apart, then summarised the same way: ``T_spsa / (2 T_forward)`` (the paper's
cost model: an SPSA step is two forwards plus two blends), ``T_backprop / T_spsa`` and
``T_batched / T_loop`` for m=1 (the batched-versus-loop verdict, with the number of rounds
in which batching was faster), with the SPSA time that of m=1 under the default
``batched="auto"`` policy (the loop on the CPU, batched elsewhere); the same SPSA step gives
the memory ratio.

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

Writes the JSON (``--output``) and a markdown table beside it (same name, ``.md``). The
results recorded before the rounds (``step_cost_cuda.*``, ``step_cost_cuda_m1248.*``,
``step_cost_cpu_quiet16.*``) timed each method in its own block of 5 steps, with torch's
default thread count, and report the median of that block; their JSON has no ``rounds``.

Usage::

    python benchmarks/step_cost.py                       # CPU, small-cnn and resnet20, batch 128 and 256, one thread
    python benchmarks/step_cost.py --device cuda --models small-cnn resnet20 mobilenet_v2 vit \\
        --output benchmarks/results/step_cost_cuda.json

Dependencies: torch, torchvision, numpy (and this package).
"""

from __future__ import annotations

import argparse
import math
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
    p.add_argument("--rounds", type=int, default=9,
                   help="rounds; each times every method once, in a shuffled order (default 9)")
    p.add_argument("--steps", type=int, default=1, help="consecutive steps per method and round (default 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps of every method before the rounds")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffled orders (default 0)")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--in-channels", type=int, default=3)
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads for the whole run (default 1: fixed, whatever the machine's load)")
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


def time_once(step: Callable[[], Any], *, device: torch.device, steps: int) -> float:
    """Wall time of ``steps`` consecutive calls of ``step``, per call (seconds)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def time_rounds(steps: dict[str, Callable[[], Any]], *, device: torch.device, rounds: int, steps_per_round: int,
                warmup: int, rng: random.Random) -> tuple[dict[str, list[float]], dict[str, str], list[list[str]]]:
    """Time every method once per round, in a shuffled order, after ``warmup`` steps of each.

    Returns the per-step seconds of each method in each round (``times[method][r]``), the
    errors of methods that raised (dropped from the later rounds) and the order of each round.
    """
    errors: dict[str, str] = {}
    live = list(steps)
    for name in list(live):
        try:
            for _ in range(warmup):
                steps[name]()
        except Exception as e:  # record and go on: one method's failure must not lose the others
            errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
            live.remove(name)
    times: dict[str, list[float]] = {name: [] for name in live}
    orders = []
    for _ in range(rounds):
        order = list(live)
        rng.shuffle(order)
        orders.append(order)
        for name in order:
            if name in errors:
                continue
            try:
                times[name].append(time_once(steps[name], device=device, steps=steps_per_round))
            except Exception as e:
                errors[name] = f"{type(e).__name__}: {str(e)[:300]}"
                times.pop(name, None)
    return times, errors, orders


def interleaved_times(steps: dict[str, Callable[[], Any]], *, rounds: int, warmup: int = 0, seed: int = 0,
                      device: torch.device | None = None) -> dict[str, list[float]]:
    """:func:`time_rounds` with one call of each step per round, for comparisons that need
    every step: the first failure is raised, not recorded.

    >>> sorted(interleaved_times({"a": lambda: None, "b": lambda: None}, rounds=2))
    ['a', 'b']
    """
    times, errors, _ = time_rounds(steps, device=device if device is not None else torch.device("cpu"),
                                   rounds=rounds, steps_per_round=1, warmup=warmup, rng=random.Random(seed))
    if errors:
        raise RuntimeError(f"timing failed: {errors}")
    return times


def spread(values: list[float]) -> dict[str, Any]:
    """Median, minimum, maximum and quartiles of values measured over rounds.

    >>> spread([3.0, 1.0, 2.0])["median"], spread([3.0, 1.0, 2.0])["min"]
    (2.0, 1.0)
    """
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "q1": math.nan, "q3": math.nan, "n": 0}
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else (values[0],) * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3,
            "n": len(values)}


def round_ratios(times: dict[str, list[float]], num: str | None, den: str, scale: float = 1.0) -> list[float]:
    """``times[num][r] / (scale * times[den][r])`` for every round ``r`` (both timed in each).

    >>> round_ratios({"a": [2.0, 6.0], "b": [1.0, 2.0]}, "a", "b", 2.0)
    [1.0, 1.5]
    """
    if num not in times or den not in times:
        return []
    return [a / (scale * b) for a, b in zip(times[num], times[den], strict=True)]


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


def run_config(args: argparse.Namespace, name: str, batch_size: int, device: torch.device,
               rng: random.Random) -> dict[str, Any]:
    objectives, bare, batches = build_problem(args, name, batch_size, device)
    obj = objectives["auto"]
    steps = make_steps(objectives, bare, batches, args.k, args.spsa_m)
    unknown = [m for m in args.methods if m not in steps]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; available: {list(steps)}")
    auto = "spsa_m1_batched" if obj.uses_vmap(2) else "spsa_m1_loop"  # the default policy's choice for m=1
    row: dict[str, Any] = {
        "model": name, "batch_size": batch_size, "k": args.k, "num_blended": obj.num_blended,
        "stacked_experts_mb": obj._stack.weights.numel() * obj._stack.weights.element_size() / 2**20,
        "time_s": {}, "time_spread_s": {}, "time_rounds_s": {}, "peak_mb": {}, "errors": {},
    }
    times, errors, orders = time_rounds({m: steps[m] for m in args.methods}, device=device, rounds=args.rounds,
                                        steps_per_round=args.steps, warmup=args.warmup, rng=rng)
    row["errors"].update(errors)
    for method, values in times.items():
        row["time_rounds_s"][method] = values
        row["time_spread_s"][method] = spread(values)
        row["time_s"][method] = row["time_spread_s"][method]["median"]
    row["round_orders"] = orders
    for method, err in errors.items():
        print(f"  {name} b={batch_size} {method}: {err}", file=sys.stderr)
    if not args.no_memory:
        for method in args.methods:
            if method in errors:
                continue
            try:
                row["peak_mb"][method] = peak_memory(steps[method], device=device) / 2**20
            except Exception as e:
                row["errors"][method] = f"{type(e).__name__}: {str(e)[:300]}"
    row["spsa_m1_auto_batched"] = obj.uses_vmap(2)
    row["auto_batched_from_probes"] = [n for n in (2, 4, 8) if obj.uses_vmap(n)][:1]
    ratios = {
        "spsa_over_2fwd": round_ratios(times, auto, "forward", 2.0),
        "backprop_over_spsa": round_ratios(times, "backprop", auto),
        "batched_over_loop_m1": round_ratios(times, "spsa_m1_batched", "spsa_m1_loop"),
    }
    row["ratio_rounds"] = ratios
    row["ratios"] = {key: spread(values) for key, values in ratios.items()}
    for key in ("spsa_over_2fwd", "backprop_over_spsa"):
        row[key] = row["ratios"][key]["median"]  # the headline figures, as before
    row["batched_faster_rounds"] = sum(r < 1 for r in ratios["batched_over_loop_m1"])
    pm = row["peak_mb"]
    row["spsa_over_backprop_memory"] = pm[auto] / pm["backprop"] if auto in pm and pm.get("backprop") else math.nan
    return row


# ---------------------------------------------------------------------- report
def _ms(r: dict[str, Any], method: str) -> str:
    if method not in r["time_s"]:
        return "err"
    sp = r["time_spread_s"][method]
    return f"{1e3 * sp['median']:.1f} [{1e3 * sp['min']:.1f}-{1e3 * sp['max']:.1f}]"


def _ratio(sp: dict[str, Any]) -> str:
    return "-" if not sp["n"] else f"{sp['median']:.2f} [{sp['min']:.2f}-{sp['max']:.2f}]"


def format_table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    head = ["model", "batch"] + [f"{m} ms" for m in methods] + ["Tbp/Tspsa", "Tspsa/2Tfwd", "Tbatched/Tloop (m=1)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], str(r["batch_size"])] + [_ms(r, m) for m in methods]
        cells += [_ratio(r["ratios"][key]) for key in ("backprop_over_spsa", "spsa_over_2fwd", "batched_over_loop_m1")]
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


def verdict(r: dict[str, Any]) -> str:
    """One line per configuration: the targets met or missed, judged on the medians over rounds."""
    ratios = r["ratios"]
    sp = ratios["spsa_over_2fwd"]
    ok_t = sp["median"] <= TARGET_SPSA_OVER_2FWD
    line = (f"{r['model']} b={r['batch_size']}: T_spsa/(2 T_fwd) = {_ratio(sp)} "
            f"({'meets' if ok_t else 'misses'} the 1.15 target); T_backprop/T_spsa = {_ratio(ratios['backprop_over_spsa'])}")
    bl = ratios["batched_over_loop_m1"]
    if bl["n"]:
        line += (f"; batched/loop (m=1) = {_ratio(bl)}, batched faster in {r['batched_faster_rounds']} of "
                 f"{bl['n']} rounds")
    if r["batch_size"] == 256 and not math.isnan(r["spsa_over_backprop_memory"]):
        ok_m = r["spsa_over_backprop_memory"] <= TARGET_MEMORY_RATIO
        line += (f"; peak memory SPSA/backprop = {r['spsa_over_backprop_memory']:.2f} "
                 f"({'meets' if ok_m else 'misses'} the 0.5 target)")
    return line


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.methods is None:
        args.methods = method_names(args.spsa_m)
    for flag in ("rounds", "steps", "threads"):
        if getattr(args, flag) < 1:
            print(f"--{flag} must be at least 1, but got {getattr(args, flag)}", file=sys.stderr)
            return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    output = args.output or Path(__file__).parent / "results" / f"step_cost_{args.device}.json"
    rng = random.Random(args.seed)
    rows = []
    t_start = time.time()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    for name in args.models:
        for b in args.batch_sizes:
            print(f"{name} batch {b} ...", file=sys.stderr, flush=True)
            try:
                rows.append(run_config(args, name, b, device, rng))
            except Exception as e:
                print(f"  {name} b={b} failed: {type(e).__name__}: {e}", file=sys.stderr)
                rows.append({"model": name, "batch_size": b, "failed": f"{type(e).__name__}: {e}"})
    good = [r for r in rows if "failed" not in r]
    table = format_table(good, list(args.methods))
    verdicts = [verdict(r) for r in good]
    print(table)
    print("\n".join(verdicts))
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else (platform.processor() or platform.machine())
    command = "python benchmarks/step_cost.py " + shlex.join(sys.argv[1:] if argv is None else argv)

    def loads(values: Any) -> str:
        return str(tuple(round(v, 2) for v in values)) if values else "n/a"

    header = [
        f"# Cost of one step of learning alpha ({args.device}: {device_name}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch threads)",
        "",
        f"Command: `{command.strip()}`. {args.rounds} rounds after {args.warmup} warm-up steps of every method; each "
        f"round times {args.steps} step{'s' if args.steps > 1 else ''} of every method, in a shuffled order. Each cell is "
        f"the median over rounds [minimum-maximum]; the ratios are formed within each round. K={args.k}, "
        f"{args.image_size}x{args.image_size}x{args.in_channels} inputs, {args.num_classes} classes; torch "
        f"{torch.__version__}. Load average at the start: {loads(load_start)}, at the end: {loads(load)}."
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
        "cpu_count": os.cpu_count(), "load_average_start": load_start, "load_average": load,
        "timing": "shuffled round-robin rounds: each round times every method once, in a random order",
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
