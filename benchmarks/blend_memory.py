"""Peak memory of a blended Hugging Face model, measured against the formula in docs/blend.md.

A Llama of about 23.5 M parameters (hidden 512, 6 layers, vocabulary 8192, tied
embeddings) is saved as a base and K = 4 perturbed experts, in float32 and in bf16, with
K LoRA adapters (rank 8 on every attention and MLP projection). Each configuration runs in
a fresh process, on the CPU: ``BlendedObjective.from_pretrained`` (load), three calls of
two probes each on a 4 x 128-token batch (step, as SPSA calls it), and ``save_pretrained``
with 50 MB shards (save). The resident anonymous memory (``RssAnon`` in
``/proc/self/status``, sampled every 0.5 ms by a thread; file-backed pages are not counted,
and this package reads safetensors with plain reads, not memory maps) is reported above
the process's own baseline, taken after the imports, the batch and a warm-up blend of a
tiny model (transformers' one-time imports and kernel set-up, about 140 MiB, are not the
blend's).

The formula (docs/blend.md): held = stack ``R P b_s`` + probe buffer ``P b_c`` + constants;
a looped step adds, when the stack is narrower than float32, the float32 upcast of one block
of the stack (``R min(CHUNK, P) 4`` bytes; on the CPU, where the rows are upcast one at a
time as they are added, ``2 min(CHUNK, P) 4``) and the activations ``A`` of one forward and its
loss (measured alone, on a plain model); saving adds about two shards (safetensors
serialises a shard in memory) and a blended tensor in float32.

``--baseline-repo /work/main`` also runs the "module" configuration (``BlendedObjective(model,
files)``, float32 state-dict files) with that checkout's ``spsa_mix``: the design before
this one (a float32 stack, plus a full copy of the architecture's weights, plus the probe
buffer, both tied names blended separately).

Usage::

    python benchmarks/blend_memory.py                       # about a minute on 2 cores
    python benchmarks/blend_memory.py --baseline-repo /work/main

Writes ``benchmarks/results/blend_memory.json`` and ``blend_memory.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
MiB = 2**20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--tokens", type=int, default=128, help="sequence length of the 4-sequence batch")
    p.add_argument("--baseline-repo", type=Path, default=None, help="a checkout whose spsa_mix to compare with")
    p.add_argument("--output", type=Path, default=RESULTS / "blend_memory.json")
    p.add_argument("--worker", type=str, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- measuring
def rss_anon() -> int:
    """Resident anonymous bytes of this process (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status (this benchmark needs Linux)")


class Peak:
    """The highest ``rss_anon()`` seen while the context is open (a 0.5 ms sampling thread)."""

    def __enter__(self) -> Peak:
        self.peak = rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.0005)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def batch_small(vocab: int) -> dict[str, Any]:
    import torch

    ids = torch.randint(1, vocab, (1, 4))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import gc

    import numpy as np
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1, spec["vocab"], (4, spec["tokens"]), generator=gen)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    points = np.random.default_rng(0).dirichlet(np.ones(spec["k"]), size=2)
    out: dict[str, Any] = {"name": spec["name"]}
    if spec["mode"] == "activations":
        import transformers

        model = transformers.AutoModelForCausalLM.from_pretrained(spec["base"], dtype=getattr(torch, spec["dtype"]))
        model.eval()
        gc.collect()
        base = rss_anon()
        from spsa_mix.blend.losses import CausalLM

        with Peak() as p, torch.inference_mode():
            CausalLM()(model(**batch), ids)  # the forward and the loss, as a probe
        out["activations"] = p.peak - base
        return out
    import transformers

    from spsa_mix.blend import BlendedObjective
    from spsa_mix.blend.losses import CausalLM

    model = None
    if spec["mode"] == "module":
        cfg = transformers.AutoConfig.from_pretrained(spec["base"])
        model = transformers.AutoModelForCausalLM.from_config(cfg)  # the user's architecture, held by the user
    else:  # the one-time imports and kernel set-up of transformers, outside the measurement
        warm = Path(tempfile.mkdtemp())
        tiny = transformers.LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                        num_attention_heads=1, num_key_value_heads=1, tie_word_embeddings=True)
        transformers.LlamaForCausalLM(tiny).save_pretrained(warm / "a")
        transformers.LlamaForCausalLM(tiny).save_pretrained(warm / "b")
        BlendedObjective.from_pretrained([warm / "a", warm / "b"], device="cpu", data=batch_small(16))(points[:, :2] * 0 + 0.5)
    gc.collect()
    base = rss_anon()
    t0 = time.perf_counter()
    with Peak() as load:
        if spec["mode"] == "module":
            obj = BlendedObjective(model, spec["experts"], loss_fn=CausalLM(), data=(batch, ids), device="cpu")
        else:
            kw = dict(spec.get("kw", {}))
            for key in ("dtype", "stack_dtype"):
                if key in kw:
                    kw[key] = getattr(torch, kw[key])
            obj = BlendedObjective.from_pretrained(spec["experts"], data=batch, device="cpu", **kw)
    out["load_s"] = time.perf_counter() - t0
    gc.collect()
    out["held"] = rss_anon() - base
    if hasattr(obj, "memory"):
        out["components"] = obj.memory()
        x = obj.domain.join(points) if obj.domain.positive else points
    else:  # the design before: the stack, the architecture's own copy, the probe buffer
        st = obj._stack
        nbytes = st.weights.numel() * st.weights.element_size()
        out["components"] = {"stack": nbytes, "blended": obj._theta.numel() * obj._theta.element_size(),
                             "constants": sum(t.numel() * t.element_size() for t in st.constants.values()),
                             "architecture copy": sum(t.numel() * t.element_size() for t in obj._arch.state_dict().values())}
        x = points
    with Peak() as step:
        for _ in range(3):
            obj(x)
    out["step_peak"] = step.peak - base
    if hasattr(obj, "save_pretrained"):
        with tempfile.TemporaryDirectory() as d, Peak() as save:
            obj.save_pretrained(x[0], Path(d) / "merged", max_shard_size="50MB")
        out["save_peak"] = save.peak - base
    out["load_peak"] = load.peak - base
    out["stack_dtype"] = str(obj._stack.weights.dtype).removeprefix("torch.")
    out["dtype"] = str(obj.dtype).removeprefix("torch.")
    out["rows"] = int(obj._stack.weights.shape[0])
    out["P"] = int(obj._stack.weights.shape[1])
    return out


# ---------------------------------------------------------------------------- the models
def make_models(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import transformers
    from safetensors.torch import save_file

    cfg = transformers.LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(2.75 * args.hidden),
                                   num_hidden_layers=args.layers, num_attention_heads=8, num_key_value_heads=8,
                                   max_position_embeddings=512, tie_word_embeddings=True)
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(cfg).eval()
    paths: dict[str, Any] = {"params": base.num_parameters()}
    for dtype in ("float32", "bfloat16"):
        d = root / dtype
        base.to(getattr(torch, dtype)).save_pretrained(d / "base")
        paths[f"{dtype}_base"] = str(d / "base")
        paths[dtype] = []
        for i in range(args.k):
            gen = torch.Generator().manual_seed(i + 1)
            expert = transformers.LlamaForCausalLM(cfg)
            with torch.no_grad():
                for (_, p), (_, q) in zip(expert.named_parameters(), base.float().named_parameters(), strict=True):
                    p.copy_(q + 0.01 * torch.randn(q.shape, generator=gen))
            expert.to(getattr(torch, dtype)).save_pretrained(d / f"expert{i}")
            paths[dtype].append(str(d / f"expert{i}"))
            if dtype == "float32":  # the same experts as plain state-dict files, both tied names stored
                file = root / f"expert{i}.safetensors"
                save_file({n: t.clone() for n, t in expert.state_dict().items()}, str(file))
                paths.setdefault("files", []).append(str(file))
        base.float()
    paths["lora"] = save_lora_adapters(paths["float32_base"], [root / f"lora{i}" for i in range(args.k)], rank=8)
    return paths


def save_lora_adapters(base: str, folders: list[Path], *, rank: int) -> list[str]:
    """PEFT LoRA adapters of the model at ``base`` on the seven projections (``lora_alpha =
    2 rank``), adapter ``i`` filled with ``0.02 N(0, 1)`` from a generator seeded ``100 + i``,
    saved in ``folders[i]``; their paths."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for i, folder in enumerate(folders):
        model = transformers.AutoModelForCausalLM.from_pretrained(base)
        pm = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, lora_dropout=0.0))
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_" in n:
                    p.copy_(0.02 * torch.randn(p.shape, generator=gen))
        pm.save_pretrained(folder)
    return [str(f) for f in folders]


def run_worker(spec: dict[str, Any], repo: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(repo), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['name']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def predicted(r: dict[str, Any], activations: int) -> dict[str, float]:
    """The formula of docs/blend.md for one measured configuration (bytes)."""
    from spsa_mix.blend.held.functional import CHUNK

    held = sum(r["components"].values())
    rows = 2 if r.get("device", "cpu") == "cpu" else r["rows"]  # the CPU adds the rows one at a time
    upcast = rows * min(CHUNK, r["P"]) * 4 if r["stack_dtype"] != "float32" else 0
    return {"held": held, "step": held + upcast + activations}


def table(results: list[dict[str, Any]], activations: dict[str, int]) -> str:
    head = ("| configuration | stack | probe buffer | constants | other | held (formula) | held (measured) "
            "| load peak | step peak (formula) | step peak (measured) | save peak (measured) |")
    lines = [head, "|" + "---|" * 11]
    for r in results:
        comp = r["components"]
        other = sum(v for k, v in comp.items() if k not in ("stack", "blended", "constants"))
        pred = predicted(r, activations[r["dtype"]])
        cells = [r["name"], comp["stack"] / MiB, comp["blended"] / MiB, comp["constants"] / MiB, other / MiB,
                 pred["held"] / MiB, r["held"] / MiB, r["load_peak"] / MiB, pred["step"] / MiB, r["step_peak"] / MiB,
                 r.get("save_peak", float("nan")) / MiB]
        lines.append("| " + " | ".join(c if isinstance(c, str) else f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:  # its spsa_mix is the one PYTHONPATH names
        print(json.dumps(worker(json.loads(args.worker))))
        return
    sys.path.insert(0, str(REPO))  # this checkout's spsa_mix, whatever is installed
    common = {"k": args.k, "vocab": args.vocab, "tokens": args.tokens}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        paths = make_models(Path(tmp), args)
        print(f"models: {paths['params'] / 1e6:.1f} M parameters, K={args.k}, saved in {time.perf_counter() - t0:.0f} s")
        specs = [
            {"name": "convex, fp32 experts", "mode": "hf", "experts": paths["float32"]},
            {"name": "convex, bf16 experts, fp32 forward", "mode": "hf", "experts": paths["bfloat16"],
             "kw": {"dtype": "float32"}},
            {"name": "convex, bf16 experts, bf16 forward", "mode": "hf", "experts": paths["bfloat16"]},
            {"name": "convex, bf16 experts kept as fp32", "mode": "hf", "experts": paths["bfloat16"],
             "kw": {"dtype": "float32", "stack_dtype": "float32"}},
            {"name": "task vectors (learned scale), bf16", "mode": "hf", "experts": paths["bfloat16"],
             "kw": {"base": paths["bfloat16_base"], "space": "task-vectors", "scale": "learned"}},
            {"name": "lora", "mode": "hf", "experts": paths["lora"],
             "kw": {"base": paths["float32_base"], "space": "lora"}},
            {"name": "module, fp32 files", "mode": "module", "experts": paths["files"],
             "base": paths["float32_base"]},
        ]
        results = []
        for spec in specs:
            results.append(run_worker({**common, **spec}, REPO))
            print(f"  {spec['name']}: held {results[-1]['held'] / MiB:.1f} MiB, step peak "
                  f"{results[-1]['step_peak'] / MiB:.1f} MiB")
        if args.baseline_repo is not None:
            spec = {**common, **specs[-1], "name": f"module, fp32 files (before: {args.baseline_repo.name})"}
            results.append(run_worker(spec, args.baseline_repo))
            print(f"  {spec['name']}: held {results[-1]['held'] / MiB:.1f} MiB")
        activations = {d: run_worker({**common, "name": f"activations {d}", "mode": "activations", "dtype": d,
                                      "base": paths[f"{d}_base"]}, REPO)["activations"]
                       for d in ("float32", "bfloat16")}
    md = table(results, activations)
    print(md)
    print(f"activations of one forward (measured alone): float32 {activations['float32'] / MiB:.1f} MiB, "
          f"bf16 {activations['bfloat16'] / MiB:.1f} MiB")
    meta = {"params": paths["params"], "k": args.k, "hidden": args.hidden, "layers": args.layers, "vocab": args.vocab,
            "batch": [4, args.tokens], "platform": platform.platform(), "python": platform.python_version(),
            "activations": activations}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    note = (f"Llama of {paths['params'] / 1e6:.1f} M parameters, K = {args.k}, batch 4 x {args.tokens} tokens, CPU; "
            f"MiB above the process baseline; activations of one forward (measured alone) "
            f"{activations['float32'] / MiB:.1f} MiB in float32, {activations['bfloat16'] / MiB:.1f} MiB in bf16.")
    args.output.with_suffix(".md").write_text(note + "\n\n" + md + "\n")


if __name__ == "__main__":
    main()
