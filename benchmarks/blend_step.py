"""One step of learning alpha on a blended transformer: time and peak memory, every space, K = 4, 8, 16.

A Llama of about 4.2 M parameters (hidden 256, 4 layers, 4 heads, MLP 688, vocabulary 4096,
tied embeddings) is saved as a base and 16 experts (the base plus 0.01 Gaussian noise per
weight; the values do not change the cost) in float32 and bf16, and 16 LoRA adapters
(rank 8 on the seven projections, random factors). For each space

* ``dense-fp32``  -- ``from_pretrained(fp32 experts)``, the convex blend, float32 forward;
* ``dense-bf16``  -- ``from_pretrained(bf16 experts)``, bf16 stack and forward;
* ``task-vectors`` -- ``from_pretrained(fp32 experts, base=, space="task-vectors", scale=2.0)``;
* ``lora``        -- ``from_pretrained(adapters, base=, space="lora")``;

and each K, these steps are measured on one 4 x 128-token batch (causal-LM loss):

* ``spsa``     -- one SPSA step, ``SimplexSPSA.ask`` / the objective (2 probes, looped) / ``tell``;
* ``backprop`` -- one step of ``SimplexGradient`` through ``obj.value_and_grad`` (the
                  same blend, autograd);
* ``ngopt``    -- two ask/tell rounds of Nevergrad's NGOpt under LoraHub's parametrisation
                  (weights in [-1.5, 1.5]^K from 0, budget 40, L1 penalty 0.05; the
                  objective with ``simplex_atol=None``): two evaluations, as an SPSA step;
* ``forward2`` -- two forwards and losses of a plain model under ``torch.inference_mode``:
                  the base (float32, or bf16 for ``dense-bf16``), and for ``lora`` the
                  base with one adapter (``PeftModel.from_pretrained``, unmerged): the
                  reference of the LoRA target.

Time: all four in one process per (space, K), in interleaved rounds (spsa, backprop,
ngopt, forward2, spsa, ...) after warm-up, ``--threads`` threads (default 1); the median
of the rounds. Memory: each (space, K, method) in a fresh process, as
``benchmarks/blend_memory.py``: the resident anonymous memory (``RssAnon``, sampled every
0.5 ms) above the process's baseline (after the imports, the batch and a warm-up on a tiny
model), after loading (``held``: the stack and the probe buffer, or the plain model) and at
the peak of three steps (``peak``); ``step = peak - held`` is what the step itself adds.
The objectives of every process are built with ``simplex_atol=None`` (NGOpt's points leave
the simplex; the check costs microseconds).

Targets: SPSA's peak memory at most 0.5x backprop's (compared on ``step`` and on ``peak``),
and for LoRA an SPSA step within 1.2x of two forwards of the base with one adapter.

Usage::

    python benchmarks/blend_step.py                      # about 15 minutes on a shared 2-core CPU
    python benchmarks/blend_step.py --k 4 --spaces lora --rounds 3

Writes ``benchmarks/results/blend_step.json`` and ``blend_step.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from blend_memory import (  # one RSS sampler and one LoRA maker for both benchmarks (benchmarks/ is on sys.path)
    MiB,
    Peak,
    rss_anon,
    save_lora_adapters,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
SPACES = ("dense-fp32", "dense-bf16", "task-vectors", "lora")
METHODS = ("spsa", "backprop", "ngopt", "forward2")
TARGET_MEMORY = 0.5  # SPSA's peak memory at most half of backprop's
TARGET_LORA = 1.2  # a LoRA SPSA step within 1.2x of two forwards of the base with one adapter
TV_SCALE = 2.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--rank", type=int, default=8, help="LoRA rank of each adapter")
    p.add_argument("--batch", type=int, nargs=2, default=[4, 128], metavar=("SEQUENCES", "TOKENS"))
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--note", default="")
    p.add_argument("--output", type=Path, default=RESULTS / "blend_step.json")
    p.add_argument("--render", type=Path, default=None, metavar="JSON",
                   help="only write the markdown of an earlier run's JSON (beside it)")
    p.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- measuring
def _objective(spec: dict[str, Any]) -> Any:
    import torch

    from spsa_mix.blend import BlendedObjective

    space, k, paths = spec["space"], spec["k"], spec["paths"]
    batch = spec["_batch"]
    if space == "dense-fp32":
        return BlendedObjective.from_pretrained(paths["fp32"][:k], data=batch, device="cpu", simplex_atol=None)
    if space == "dense-bf16":
        return BlendedObjective.from_pretrained(paths["bf16"][:k], data=batch, device="cpu", simplex_atol=None,
                                                dtype=torch.bfloat16)
    if space == "task-vectors":
        return BlendedObjective.from_pretrained(paths["fp32"][:k], base=paths["fp32_base"], space="task-vectors",
                                                scale=TV_SCALE, data=batch, device="cpu", simplex_atol=None)
    return BlendedObjective.from_pretrained(paths["lora"][:k], base=paths["fp32_base"], space="lora", data=batch,
                                            device="cpu", simplex_atol=None)


def _plain(spec: dict[str, Any]) -> Any:
    """The reference model of ``forward2``: the base, or the base with one adapter."""
    import torch
    import transformers

    paths = spec["paths"]
    if spec["space"] == "dense-bf16":
        model = transformers.AutoModelForCausalLM.from_pretrained(paths["bf16_base"], dtype=torch.bfloat16)
    else:
        model = transformers.AutoModelForCausalLM.from_pretrained(paths["fp32_base"])
    if spec["space"] == "lora":
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, paths["lora"][0])
    return model.eval()


def make_step(method: str, spec: dict[str, Any], obj: Any, model: Any) -> Any:
    import numpy as np
    import torch

    from spsa_mix.blend.losses import CausalLM
    from spsa_mix.core.optimizer import SimplexGradient, SimplexSPSA

    k, batch = spec["k"], spec["_batch"]
    if method == "spsa":
        opt = SimplexSPSA(k, seed=0, lr=0.05)
        return lambda: opt.tell(obj(opt.ask()))
    if method == "backprop":
        gd = SimplexGradient(k, seed=0, lr=0.05)

        def backprop() -> None:
            x = gd.ask()
            gd.tell(*obj.value_and_grad(x))

        return backprop
    if method == "ngopt":
        import nevergrad as ng

        from spsa_mix.adapters.nevergrad import _quiet
        from spsa_mix.baselines.lorahub import LORAHUB_BOUND, LORAHUB_BUDGET, LORAHUB_L1

        array = ng.p.Array(init=np.zeros(k), lower=-LORAHUB_BOUND, upper=LORAHUB_BOUND)
        array.random_state = np.random.RandomState(0)
        with _quiet():
            ngo = ng.optimizers.NGOpt(parametrization=array, budget=LORAHUB_BUDGET)

        def ngopt() -> None:
            with _quiet():
                for _ in range(2):
                    cand = ngo.ask()
                    w = np.asarray(cand.value, dtype=np.float64)
                    ngo.tell(cand, float(obj(w[None])[0]) + LORAHUB_L1 * float(np.abs(w).mean()))

        return ngopt
    loss = CausalLM()
    labels = batch["input_ids"]

    def forward2() -> None:
        with torch.inference_mode():
            for _ in range(2):
                loss(model(**batch), labels)

    return forward2


def _warm_transformers(batch_vocab: int) -> None:
    """transformers' one-time imports and kernel set-up, outside every measurement."""
    import torch
    import transformers

    from spsa_mix.blend import BlendedObjective

    d = Path(tempfile.mkdtemp())
    tiny = transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                    num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=True)
    for name in ("a", "b"):
        transformers.LlamaForCausalLM(tiny).save_pretrained(d / name)
    ids = torch.randint(1, 16, (1, 4))
    obj = BlendedObjective.from_pretrained([d / "a", d / "b"], device="cpu",
                                           data={"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    obj([[0.5, 0.5]])
    obj.value_and_grad([0.5, 0.5])


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    import torch

    torch.set_num_threads(spec["threads"])
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, spec["vocab"], tuple(spec["batch"]), generator=gen)
    spec["_batch"] = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    _warm_transformers(spec["vocab"])
    if spec.get("method", "ngopt") == "ngopt":
        import nevergrad  # noqa: F401  (its import is not the step's memory)
    gc.collect()
    out: dict[str, Any] = {"space": spec["space"], "k": spec["k"]}
    if spec["mode"] == "memory":
        base = rss_anon()
        with Peak() as load:
            obj = _objective(spec) if spec["method"] != "forward2" else None
            model = _plain(spec) if spec["method"] == "forward2" else None
        gc.collect()
        held = rss_anon() - base
        step = make_step(spec["method"], spec, obj, model)
        with Peak() as peak:
            for _ in range(3):
                step()
        out.update(method=spec["method"], held=held, load_peak=load.peak - base, peak=peak.peak - base)
        out["step"] = out["peak"] - held
        if obj is not None:
            out["components"] = obj.memory()
        return out
    obj = _objective(spec)
    model = _plain(spec)
    steps = {m: make_step(m, spec, obj, model) for m in METHODS}
    for _ in range(spec["warmup"]):
        for m in METHODS:
            steps[m]()
    times: dict[str, list[float]] = {m: [] for m in METHODS}
    for _ in range(spec["rounds"]):
        for m in METHODS:
            t0 = time.perf_counter()
            steps[m]()
            times[m].append(time.perf_counter() - t0)
    out["times"] = times
    out["median"] = {m: statistics.median(v) for m, v in times.items()}
    return out


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['space']} K={spec['k']} {spec.get('method', '')} failed:\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the models
def make_models(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers

    cfg = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                                   intermediate_size=int(2.6875 * args.hidden), num_hidden_layers=args.layers,
                                   num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
                                   tie_word_embeddings=True)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(cfg).eval()
    kmax = max(args.k)
    paths: dict[str, Any] = {"params": base.num_parameters(), "fp32": [], "bf16": [], "lora": []}
    base.save_pretrained(root / "fp32_base")
    base.to(torch.bfloat16).save_pretrained(root / "bf16_base")
    base.float()
    paths["fp32_base"], paths["bf16_base"] = str(root / "fp32_base"), str(root / "bf16_base")
    reference = {n: p.detach().clone() for n, p in base.named_parameters()}
    for i in range(kmax):
        gen = torch.Generator().manual_seed(i + 1)
        with torch.no_grad():
            for n, p in base.named_parameters():
                p.copy_(reference[n] + 0.01 * torch.randn(p.shape, generator=gen))
        base.save_pretrained(root / f"fp32_{i}")
        base.to(torch.bfloat16).save_pretrained(root / f"bf16_{i}")
        base.float()
        paths["fp32"].append(str(root / f"fp32_{i}"))
        paths["bf16"].append(str(root / f"bf16_{i}"))
    paths["lora"] = save_lora_adapters(paths["fp32_base"], [root / f"lora_{i}" for i in range(kmax)], rank=args.rank)
    return paths


# ---------------------------------------------------------------------------- tables
def tables(timing: list[dict[str, Any]], memory: list[dict[str, Any]]) -> str:
    mem = {(r["space"], r["k"], r["method"]): r for r in memory}
    lines = ["Time of one step (ms, median of the rounds) and ratios measured side by side:", "",
             "| space | K | spsa | backprop | ngopt (2 evals) | forward2 | backprop / spsa | ngopt / spsa "
             "| spsa / forward2 |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in timing:
        t = r["median"]
        lines.append(f"| {r['space']} | {r['k']} | {1e3 * t['spsa']:.1f} | {1e3 * t['backprop']:.1f} | "
                     f"{1e3 * t['ngopt']:.1f} | {1e3 * t['forward2']:.1f} | {t['backprop'] / t['spsa']:.2f} | "
                     f"{t['ngopt'] / t['spsa']:.2f} | {t['spsa'] / t['forward2']:.2f} |")
    if memory:
        lines += ["", "Memory (MiB above the process baseline, each in a fresh process): held after loading "
                  "(the stack and the probe buffer), the peak of three steps, and what the step adds (peak - held); "
                  "forward2's weights are memory-mapped by transformers and not counted, only its step:", "",
                  "| space | K | held | spsa peak | spsa step | backprop peak | backprop step | ngopt step "
                  "| forward2 step | spsa/backprop (step) | spsa/backprop (peak) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in timing:
            key = (r["space"], r["k"])
            s, b, n, f = (mem.get((*key, m)) for m in METHODS)
            if not (s and b and n and f):
                continue
            lines.append(f"| {r['space']} | {r['k']} | {s['held'] / MiB:.1f} | {s['peak'] / MiB:.1f} | "
                         f"{s['step'] / MiB:.1f} | {b['peak'] / MiB:.1f} | {b['step'] / MiB:.1f} | "
                         f"{n['step'] / MiB:.1f} | {f['step'] / MiB:.1f} | "
                         f"{s['step'] / b['step']:.2f} | {s['peak'] / b['peak']:.2f} |")
    lines += ["", "Targets:", ""]
    for r in timing:
        key = (r["space"], r["k"])
        t = r["median"]
        parts = []
        s, b = mem.get((*key, "spsa")), mem.get((*key, "backprop"))
        if s and b:
            ok = s["step"] / b["step"] <= TARGET_MEMORY
            parts.append(f"peak memory SPSA/backprop = {s['step'] / b['step']:.2f} on the step "
                         f"({'meets' if ok else 'misses'} the {TARGET_MEMORY} target), {s['peak'] / b['peak']:.2f} "
                         "with the stack")
        if r["space"] == "lora":
            ok = t["spsa"] / t["forward2"] <= TARGET_LORA
            parts.append(f"T_spsa / (2 T_fwd base+adapter) = {t['spsa'] / t['forward2']:.2f} "
                         f"({'meets' if ok else 'misses'} the {TARGET_LORA} target)")
        parts.append(f"T_backprop / T_spsa = {t['backprop'] / t['spsa']:.2f}")
        lines.append(f"- {r['space']} K={r['k']}: " + "; ".join(parts))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.render is not None:
        write_markdown(json.loads(args.render.read_text()), args.render.with_suffix(".md"))
        return
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_models(Path(tmp), args)
        print(f"models: {paths['params'] / 1e6:.2f} M parameters, K up to {max(args.k)}, saved in "
              f"{time.perf_counter() - t0:.0f} s")
        common = {"vocab": args.vocab, "batch": args.batch, "threads": args.threads, "paths": paths,
                  "rounds": args.rounds, "warmup": args.warmup}
        timing, memory = [], []
        for space in args.spaces:
            for k in args.k:
                r = run_worker({**common, "space": space, "k": k, "mode": "time"})
                timing.append(r)
                t = r["median"]
                print(f"  {space} K={k}: " + ", ".join(f"{m} {1e3 * t[m]:.1f} ms" for m in METHODS))
                if not args.no_memory:
                    for m in METHODS:
                        memory.append(run_worker({**common, "space": space, "k": k, "mode": "memory", "method": m}))
                        print(f"    {m}: held {memory[-1]['held'] / MiB:.1f} MiB, step {memory[-1]['step'] / MiB:.1f} "
                              f"MiB")
    meta = {"command": "python benchmarks/blend_step.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "params": paths["params"], "hidden": args.hidden, "layers": args.layers, "vocab": args.vocab,
            "rank": args.rank, "batch": args.batch, "threads": args.threads, "rounds": args.rounds,
            "tv_scale": TV_SCALE, "note": args.note, "platform": platform.platform(),
            "python": platform.python_version(), "seconds": time.perf_counter() - t_start}
    sys.path.insert(0, str(REPO))
    from spsa_mix.io import write_json

    results = {"meta": meta, "timing": timing, "memory": memory}
    write_json(results, args.output)
    print(write_markdown(results, args.output.with_suffix(".md")))


def write_markdown(results: dict[str, Any], path: Path) -> str:
    sys.path.insert(0, str(REPO))
    from spsa_mix.io import atomic_write_text

    meta = results["meta"]
    md = tables(results["timing"], results["memory"])
    head = (f"Llama of {meta['params'] / 1e6:.2f} M parameters, batch {meta['batch'][0]} x {meta['batch'][1]} tokens, "
            f"CPU, {meta['threads']} thread(s), a machine shared with other jobs; command: `{meta['command']}`.")
    atomic_write_text(path, head + "\n\n" + md + "\n")
    return md


if __name__ == "__main__":
    main()
