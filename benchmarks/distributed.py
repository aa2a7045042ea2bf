"""Scaling out: steps per second on 1 and 2 processes, bytes on the wire, all-reduce latency.

Runs itself under ``torchrun`` (``python -m torch.distributed.run --standalone``) with 1 and
then 2 CPU processes (gloo, one thread each) on a blended small CNN (``K`` experts of
random weights, ``build_model("small-cnn")``; the values do not change the cost) and a
fixed global minibatch of ``B`` random 28x28 images, and measures

* steps per second of SPSA (``m=1`` and ``m=4``) with data parallelism (each rank every
  probe on ``B / N`` images), SPSA ``m=4`` with probe parallelism (each rank ``2 m / N``
  probes on all ``B`` images), backprop through the blend (the K-float alpha gradient
  all-reduced), and, for comparison, a DDP step that fine-tunes every weight of the
  blended network (``torch.nn.parallel.DistributedDataParallel``);
* the payload bytes each rank puts on the wire per step, counted from the tensors sent
  (``DistributedObjective.bytes_sent``; DDP: every gradient, ``4 P`` bytes);
* the latency of an all-reduce of a few float64 numbers on gloo (the wrapper's call, and a
  bare ``torch.distributed.all_reduce``), over 2 processes on this machine;
* the inputs of the scaling model (:class:`spsa_mix.distributed.scaling.StepModel`): one
  probe's time at ``B`` and ``B / 2`` images in one process, whence ``t_example`` and the
  per-probe constant; the model's prediction for 2 processes is printed beside the
  measurement, and its predictions for 8 to 512 GPUs and a 7B model are in
  ``docs/distributed.md`` (from the numbers stated there).

A step is the whole ask / score / tell cycle; each configuration is timed over
``--repeats`` steps after ``--warmup``, and the median is reported (rank 0's clock; every
rank waits for the others at the all-reduce). Writes ``--output`` (JSON) and a markdown
report beside it.

Usage::

    python benchmarks/distributed.py                 # about a minute on a 2-core CPU
    python benchmarks/distributed.py --batch 256 --repeats 30

Dependencies: torch (and this package).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from spsa_mix.blend import BlendedObjective
from spsa_mix.core.optimizer import SimplexGradient, SimplexSPSA
from spsa_mix.distributed import DistributedContext, DistributedObjective, init_distributed, rank_zero_only
from spsa_mix.distributed.scaling import StepModel
from spsa_mix.io import atomic_write_text, write_json
from spsa_mix.models import build_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUTPUT = ROOT / "benchmarks" / "results" / "distributed.json"
LATENCY_FLOATS = (1, 3, 5, 9, 17, 65)  # 2m + 3 for m = 1, 3, 7, 31 (and 1, 3: a scalar, a pair)
WORLD_SIZES = (1, 2)

# The 7B prediction: inputs assumed, not measured here (docs/distributed.md says why each).
LLM = {
    "params": 7e9, "bytes_per_param": 2,  # bf16 weights
    "experts": 4,  # K: 4 x 14 GB of experts + 14 GB of blend fit an 80 GB H100
    "peak_flops": 989e12, "mfu": 0.4,  # H100 SXM dense bf16 peak; forward at 40 % of it
    "hbm_bytes_per_s": 3.35e12,  # H100 SXM HBM3
    "tokens_per_sequence": 512, "batch_sequences": 256,  # a global minibatch of 131k tokens
    "nccl_hop_s": 10e-6,  # one round of a small NCCL all-reduce (NVLink / InfiniBand, launch included)
}
GPUS = (1, 8, 16, 32, 64, 128, 256, 512)


def llm_model(t_hop: float) -> StepModel:
    """The 7B model's step: forward 2 P FLOP a token at ``mfu`` of peak; a forward reads
    every weight at least once; a blend reads the K experts and writes theta."""
    size = LLM["params"] * LLM["bytes_per_param"]
    t_token = 2 * LLM["params"] / (LLM["mfu"] * LLM["peak_flops"])
    return StepModel(t_example=LLM["tokens_per_sequence"] * t_token, t_weights=size / LLM["hbm_bytes_per_s"],
                     t_blend=(LLM["experts"] + 1) * size / LLM["hbm_bytes_per_s"], t_hop=t_hop)


def predictions(t_hop_measured: float) -> list[dict[str, Any]]:
    """Step time of SPSA (m = 1 and m = 8) on 1 to 512 GPUs, the best layout for each."""
    rows = []
    for m in (1, 8):
        base = None
        for gpus in GPUS:
            model = llm_model(LLM["nccl_hop_s"])
            groups, t = model.best_layout(probes=2 * m, batch=LLM["batch_sequences"], world=gpus)
            base = t if base is None else base
            gloo = llm_model(t_hop_measured).step_s(probes=2 * m, batch=LLM["batch_sequences"], world=gpus,
                                                  probe_groups=groups)
            data_only = (model.step_s(probes=2 * m, batch=LLM["batch_sequences"], world=gpus)
                         if gpus <= LLM["batch_sequences"] else None)
            rows.append({"m": m, "gpus": gpus, "probe_groups": groups, "data_ranks": gpus // groups, "step_s": t,
                         "step_s_data_parallel_only": data_only,
                         "speedup": base / t, "efficiency": base / t / gpus,
                         "allreduce_s": model.allreduce_s(gpus), "step_s_gloo_latency": gloo,
                         "blend_share": math.ceil(2 * m / groups) * model.t_blend / t})
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=10, help="number of experts (default 10)")
    p.add_argument("--batch", type=int, default=128, help="global minibatch (default 128 images)")
    p.add_argument("--repeats", type=int, default=15, help="timed steps per configuration (median reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--latency-repeats", type=int, default=300, help="all-reduces timed per message size")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # a rank, under torchrun
    return p.parse_args(argv)


# ---------------------------------------------------------------------- one rank
def _objective(args: argparse.Namespace, ctx: DistributedContext, *, sharded: bool, batch: int | None = None
               ) -> BlendedObjective:
    experts = [build_model("small-cnn", num_classes=10, in_channels=1, image_size=28, seed=i) for i in range(args.k)]
    gen = torch.Generator().manual_seed(0)
    b = args.batch if batch is None else batch
    data = (torch.randn(b, 1, 28, 28, generator=gen), torch.randint(0, 10, (b,), generator=gen))
    if sharded:
        data = ctx.shard(data)
    return BlendedObjective(experts[0], experts, data=data, device="cpu", batched=False)


def _time(step: Callable[[], Any], args: argparse.Namespace, ctx: DistributedContext) -> dict[str, float]:
    """Median and best step (wall seconds) over ``args.repeats`` steps after ``args.warmup``,
    and the median CPU time this rank spent in a step (``time.process_time``: what the
    step costs the rank, whatever else runs on the machine)."""
    for _ in range(args.warmup):
        step()
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"step_s": statistics.median(times), "best_step_s": min(times), "cpu_step_s": statistics.median(cpu)}


def _spsa(args: argparse.Namespace, ctx: DistributedContext, *, m: int, probe_parallel: bool) -> dict[str, Any]:
    local = _objective(args, ctx, sharded=not probe_parallel)
    obj = DistributedObjective(local, probe_groups="all" if probe_parallel else 1, group=ctx.communicator)
    opt = SimplexSPSA(args.k, m=m, seed=0)

    def step() -> None:
        opt.tell(obj(opt.ask()))

    timing = _time(step, args, ctx)
    return {**timing, "bytes_per_step": obj.bytes_sent // obj.calls, "floats_per_step": obj.bytes_sent // obj.calls // 8}


def _backprop(args: argparse.Namespace, ctx: DistributedContext) -> dict[str, Any]:
    obj = ctx.wrap(_objective(args, ctx, sharded=True))
    opt = SimplexGradient(args.k)

    def step() -> None:
        opt.tell(*obj.value_and_grad(opt.ask()))

    timing = _time(step, args, ctx)
    return {**timing, "bytes_per_step": obj.bytes_sent // obj.calls, "floats_per_step": obj.bytes_sent // obj.calls // 8}


def _ddp(args: argparse.Namespace, ctx: DistributedContext) -> dict[str, Any]:
    """One DDP step fine-tuning every weight of the blended network on this rank's shard."""
    local = _objective(args, ctx, sharded=True)
    model = local.blended_model(np.full(args.k, 1.0 / args.k))
    n_params = sum(p.numel() for p in model.parameters())
    local(np.full((1, args.k), 1.0 / args.k))
    assert local.last_batch is not None
    x, y = local.last_batch.args[0], local.last_batch.targets  # this rank's shard
    net: torch.nn.Module = torch.nn.parallel.DistributedDataParallel(model) if ctx.world_size > 1 else model
    opt = torch.optim.SGD(net.parameters(), lr=1e-3)

    def step() -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()  # DDP all-reduces every gradient here
        opt.step()

    timing = _time(step, args, ctx)
    return {**timing, "bytes_per_step": 4 * n_params, "floats_per_step": n_params, "params": n_params}


def _probe_times(args: argparse.Namespace, ctx: DistributedContext) -> dict[str, float]:
    """One probe on ``B`` and on ``B / 2`` images, the two calls interleaved so that a change
    of the machine's load hits both alike; medians (seconds)."""
    full, half = (_objective(args, ctx, sharded=False, batch=b) for b in (args.batch, args.batch // 2))
    point = np.full((1, args.k), 1.0 / args.k)
    times: dict[str, list[float]] = {"full": [], "half": []}
    for i in range(args.warmup + 4 * args.repeats):
        for name, obj in (("full", full), ("half", half)):
            t0 = time.perf_counter()
            obj(point)
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _latency(args: argparse.Namespace, ctx: DistributedContext) -> list[dict[str, Any]]:
    rows = []
    for n in LATENCY_FLOATS:
        values = np.zeros(n)
        bare = torch.zeros(n, dtype=torch.float64)
        wrapped, raw = [], []
        for i in range(args.latency_repeats + 20):
            t0 = time.perf_counter()
            ctx.communicator.all_reduce_sum(values, what="a latency probe")
            t1 = time.perf_counter()
            dist.all_reduce(bare)
            t2 = time.perf_counter()
            if i >= 20:
                wrapped.append(t1 - t0)
                raw.append(t2 - t1)
        rows.append({"floats": n, "bytes": 8 * n, "median_us": 1e6 * statistics.median(wrapped),
                     "p90_us": 1e6 * float(np.quantile(wrapped, 0.9)), "bare_median_us": 1e6 * statistics.median(raw)})
    return rows


def worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", timeout=300)
    out: dict[str, Any] = {"world_size": ctx.world_size, "configs": {}}
    out["configs"]["spsa m=1, data parallel"] = _spsa(args, ctx, m=1, probe_parallel=False)
    out["configs"]["spsa m=4, data parallel"] = _spsa(args, ctx, m=4, probe_parallel=False)
    out["configs"]["spsa m=4, probe parallel"] = _spsa(args, ctx, m=4, probe_parallel=True)
    out["configs"]["backprop (alpha), data parallel"] = _backprop(args, ctx)
    out["configs"]["DDP fine-tuning (every weight)"] = _ddp(args, ctx)
    if ctx.world_size == 1:
        out["probe_s"] = _probe_times(args, ctx)
    else:
        out["latency"] = _latency(args, ctx)
    rank_zero_only(write_json)(out, args.worker)
    ctx.close()


# ---------------------------------------------------------------------- the report
def run_jobs(args: argparse.Namespace, argv: list[str]) -> dict[int, dict[str, Any]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    jobs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for world in WORLD_SIZES:
            part = Path(tmp) / f"world{world}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(world),
                   str(Path(__file__).resolve()), *argv, "--worker", str(part)]
            print(f"+ {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                raise SystemExit(f"the {world}-process job failed:\n{done.stderr[-4000:]}")
            jobs[world] = json.loads(part.read_text())
    return jobs


def summarise(args: argparse.Namespace, jobs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    one, two = jobs[1], jobs[2]
    full, half = one["probe_s"]["full"], one["probe_s"]["half"]
    t_example = (full - half) / (args.batch - args.batch // 2)
    constant = full - args.batch * t_example  # the blend and the fixed cost of a call
    hop = next(r for r in two["latency"] if r["floats"] == 5)["median_us"] * 1e-6  # 2m + 3 floats at m = 1
    model = StepModel(t_example=t_example, t_blend=constant, t_hop=hop)
    rows = []
    for name in one["configs"]:
        c1, c2 = one["configs"][name], two["configs"][name]
        row = {"config": name, "steps_per_s_1": 1 / c1["step_s"], "steps_per_s_2": 1 / c2["step_s"],
               "speedup": c1["step_s"] / c2["step_s"], "best_speedup": c1["best_step_s"] / c2["best_step_s"],
               "cpu_ms_1": 1e3 * c1["cpu_step_s"], "cpu_ms_2": 1e3 * c2["cpu_step_s"],
               "bytes_per_step": c2["bytes_per_step"],
               "floats_per_step": c2["floats_per_step"]}
        if name.startswith("spsa"):
            m = int(name.split("m=")[1].split(",")[0])
            groups = 2 if "probe" in name else 1
            row["model_step_s_1"] = model.step_s(probes=2 * m, batch=args.batch, world=1)
            row["model_step_s_2"] = model.step_s(probes=2 * m, batch=args.batch, world=2, probe_groups=groups)
        rows.append(row)
    return {"rows": rows, "latency": two["latency"], "predictions": predictions(hop), "llm": LLM, "model_inputs": {
        "t_example_s": t_example, "t_probe_constant_s": constant, "t_hop_s": hop,
        "probe_s_full_batch": full, "probe_s_half_batch": half}, "params": one["configs"][
        "DDP fine-tuning (every weight)"]["params"]}


def markdown(summary: dict[str, Any], args: argparse.Namespace, command: str) -> str:
    lines = ["# Distributed scoring: 1 and 2 CPU processes (gloo)", "",
             f"`{command}`; small CNN, K={args.k} experts, global batch {args.batch} images of 28x28, "
             "one thread per process.", "",
             "Steps per second (median step), payload bytes each rank sends per step, and the scaling model's "
             "step time from the 1-process inputs and the measured latency:", "",
             "| configuration | steps/s, 1 process | steps/s, 2 processes | speedup | speedup of best steps | "
             "CPU ms/step of a rank, 1 / 2 processes | bytes/step | floats/step | model step, 1 (ms) | "
             "model step, 2 (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["rows"]:
        m1 = f"{1e3 * r['model_step_s_1']:.1f}" if "model_step_s_1" in r else "-"
        m2 = f"{1e3 * r['model_step_s_2']:.1f}" if "model_step_s_2" in r else "-"
        lines.append(f"| {r['config']} | {r['steps_per_s_1']:.2f} | {r['steps_per_s_2']:.2f} | {r['speedup']:.2f} | "
                     f"{r['best_speedup']:.2f} | {r['cpu_ms_1']:.1f} / {r['cpu_ms_2']:.1f} | {r['bytes_per_step']:,} | "
                     f"{r['floats_per_step']:,} | {m1} | {m2} |")
    lines += ["", "All-reduce of float64 numbers over 2 gloo processes on this machine (microseconds; the "
              "wrapper's call includes the NumPy-to-tensor copies):", "",
              "| floats | bytes | wrapper median | wrapper p90 | bare all_reduce median |", "|---:|---:|---:|---:|---:|"]
    for r in summary["latency"]:
        lines.append(f"| {r['floats']} | {r['bytes']} | {r['median_us']:.0f} | {r['p90_us']:.0f} | "
                     f"{r['bare_median_us']:.0f} |")
    mi = summary["model_inputs"]
    lines += ["", f"- model inputs measured here: t_example = {1e6 * mi['t_example_s']:.1f} us per image, per-probe "
              f"constant (blend and call) = {1e3 * mi['t_probe_constant_s']:.2f} ms, t_hop = {1e6 * mi['t_hop_s']:.0f} us "
              "(the 5-float all-reduce)",
              f"- DDP fine-tuning sends every gradient: {summary['params']:,} float32 = {4 * summary['params']:,} bytes a "
              "step; learning alpha needs only the losses (SPSA) or the K-float alpha gradient (backprop)"]
    llm = summary["llm"]
    lines += ["", f"Predicted step of SPSA on a {llm['params'] / 1e9:g}B model (K={llm['experts']}, global batch "
              f"{llm['batch_sequences']} x {llm['tokens_per_sequence']} tokens; inputs in docs/distributed.md), the "
              "fastest P x D layout at each size; all-reduce at "
              f"{1e6 * llm['nccl_hop_s']:g} us a round (NCCL, assumed) and, last column, at the gloo latency measured "
              "here:", "",
              "| m | GPUs | layout P x D | step (s) | speedup | efficiency | all-reduce (us) | blend share | "
              "step, data parallel only (s) | step with gloo latency (s) |", "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in summary["predictions"]:
        only = "-" if r["step_s_data_parallel_only"] is None else f"{r['step_s_data_parallel_only']:.3f}"
        lines.append(f"| {r['m']} | {r['gpus']} | {r['probe_groups']} x {r['data_ranks']} | {r['step_s']:.3f} | "
                     f"{r['speedup']:.1f} | {100 * r['efficiency']:.0f}% | {1e6 * r['allreduce_s']:.0f} | "
                     f"{100 * r['blend_share']:.0f}% | {only} | {r['step_s_gloo_latency']:.3f} |")
    size = llm["params"] * llm["bytes_per_param"]
    lines += ["", f"- bytes a step on the wire for the 7B blend: SPSA m=1 {8 * 5} B (2m + 3 float64), backprop of "
              f"alpha {8 * (llm['experts'] + 4)} B, DDP fine-tuning of every weight {size / 1e9:g} GB of bf16 "
              "gradients"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker is not None:
        worker(args)
        return 0
    load_before = os.getloadavg()  # the machine is shared: the load says how much the figures may swing
    jobs = run_jobs(args, list(argv))
    summary = summarise(args, jobs)
    command = "python benchmarks/distributed.py" + "".join(f" {shlex.quote(a)}" for a in argv)
    result = {"command": command, "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                          "load_average_before": load_before, "load_average_after": os.getloadavg()},
              "jobs": jobs, **summary}
    write_json(result, args.output)
    report = markdown(summary, args, command)
    atomic_write_text(args.output.with_suffix(".md"), report)
    print(report)
    print(f"wrote {args.output} and {args.output.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
