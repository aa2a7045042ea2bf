"""Models of the size practitioners merge: memory and time of streamed experts at 100M, 300M and 1B.

Llama-architecture models are built from a config with random weights (this measures memory
and time, not quality): a base, and K experts that are the base plus Gaussian noise, saved
as Hugging Face directories in bf16, sharded (``--shard-size``), with a word-level
tokenizer, and target text (random words) as JSONL. For each size and each K:

* **merge** -- ``spsa-mix merge`` end to end (budget 40, SPSA, batches of 4 x 64 tokens,
  ``memory: streamed``, and ``resident`` where ``--resident`` asks for it) in a child process
  whose memory is sampled every 20 ms from ``/proc/<pid>/status``: the peak of its
  anonymous resident memory (``RssAnon``: what the process itself holds) and, apart, of its
  file-backed resident memory (``RssFile``: the experts' pages it has mapped, which live in
  the page cache); the stage times come from ``recipe.json`` (``phases``).
* **step** -- one SPSA step (two probes, streamed) against two plain forwards of one expert
  loaded by transformers (``AutoModelForCausalLM``, bf16) on the same batch, with its loss,
  timed in interleaved rounds (the order drawn anew each round) with a fixed thread count,
  after a warm-up that puts the experts in the page cache; the ratio is formed within a
  round and reported as its median and range.
* **save** -- ``save_pretrained`` of a streamed objective against a one-shot linear merge a
  user would script (load each expert whole with ``safetensors.torch.load_file``,
  accumulate ``alpha_i * theta_i`` in float32, cast to bf16, ``save_file``), interleaved
  rounds, with each one's peak ``RssAnon``.

The goals (issue 21): peak resident memory at most one model's bytes plus activations,
whatever K; a step at most 1.3 times two plain forwards once the experts are in the page
cache; the save no slower than the one-shot merge.

Usage::

    python benchmarks/scale.py --sizes 100M --k 4 8                  # minutes on 2 cores
    python benchmarks/scale.py --sizes 300M 1B --k 4 8 --parts merge step save

Model files go under ``--root`` (default ``build/scale``, ignored by git); results are
merged into ``benchmarks/results/scale.json`` and ``scale.md`` (a row per size, K, part).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
GB = 1e9
SIZES: dict[str, dict[str, int]] = {  # Llama configurations of about 100 M, 300 M and 1.1 B parameters
    "100M": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=10, num_attention_heads=12,
                 num_key_value_heads=4),
    "300M": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=20, num_attention_heads=16,
                 num_key_value_heads=4),
    "1B": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4),  # TinyLlama-1.1B's shape
}
VOCAB = 32000
BATCH, LENGTH = 4, 64  # a merge's batches: 4 texts of 64 tokens
FORMULA_SIZES = {"1B": SIZES["1B"],  # the README's table: TinyLlama-1.1B's and Llama-2-7B's shapes
                 "7B": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                            num_key_value_heads=32)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["100M"], choices=list(SIZES))
    p.add_argument("--k", type=int, nargs="+", default=[4, 8])
    p.add_argument("--parts", nargs="+", default=["merge", "step", "save"], choices=["merge", "step", "save"])
    p.add_argument("--formula", action="store_true",
                   help="only write the memory formula's table for 1B and 7B models (scale_formula.json/.md)")
    p.add_argument("--resident", action="store_true",
                   help="also merge, and time the step, with memory: resident (where it fits)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every measured process (on a busy "
                   "machine more than one makes every small op wait for descheduled threads)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds of the step and save comparisons")
    p.add_argument("--step-batches", type=int, nargs="+", default=[BATCH],
                   help="texts of 64 tokens per batch in the step comparison (32: the 2048 tokens of spsa-mix "
                        "merge's default 16 x 128)")
    p.add_argument("--budget", type=int, default=40)
    p.add_argument("--shard-size", default="500MB", help="the experts' shards")
    p.add_argument("--root", type=Path, default=REPO / "build" / "scale")
    p.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- memory of a process
def status(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS``, ``VmHWM``, ``RssAnon`` and ``RssFile`` of a process, in bytes (Linux)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) * 1024
    return out


class Sampler:
    """The peaks of ``status(pid)`` while the context is open (a thread sampling every ``period`` s)."""

    def __init__(self, pid: int | str = "self", period: float = 0.02) -> None:
        self.pid, self.period = pid, period
        self.peak: dict[str, int] = {}

    def _sample(self) -> None:
        try:
            for k, v in status(self.pid).items():
                self.peak[k] = max(self.peak.get(k, 0), v)
        except (OSError, ValueError):  # the process has ended
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._sample()

    def __enter__(self) -> Sampler:
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def free_memory() -> dict[str, float]:
    """``MemAvailable`` and ``Cached`` of ``/proc/meminfo`` (GB): what other processes leave."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("MemAvailable", "Cached", "MemTotal"):
                out[key] = int(line.split()[1]) * 1024 / GB
    return out


# ---------------------------------------------------------------------------- the models
def model_dir(root: Path, size: str) -> Path:
    return root / size


def build(root: Path, size: str, k: int, shard_size: str) -> dict[str, Any]:
    """The base, ``k`` experts and the target text of ``size`` under ``root/size`` (kept if there)."""
    import torch
    import transformers

    from spsa_mix.blend.saving import write_safetensors_shards
    from spsa_mix.merge.demo import word_tokenizer

    folder = model_dir(root, size)
    base = folder / "base"
    config = transformers.LlamaConfig(vocab_size=VOCAB, max_position_embeddings=256, tie_word_embeddings=False,
                                      pad_token_id=0, architectures=["LlamaForCausalLM"], dtype="bfloat16",
                                      **SIZES[size])
    tok = word_tokenizer(VOCAB - 1)
    state: dict[str, torch.Tensor] | None = None

    def base_state() -> dict[str, torch.Tensor]:
        nonlocal state
        if state is None:
            torch.manual_seed(0)
            with torch.device("cpu"):
                model = transformers.LlamaForCausalLM._from_config(config, dtype=torch.bfloat16)
            state = {n: t.detach().contiguous() for n, t in model.state_dict().items()}
        return state

    def write(folder: Path, tensors: dict[str, torch.Tensor]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        entries = [(n, t.dtype, tuple(t.shape)) for n, t in tensors.items()]
        write_safetensors_shards(iter(tensors.items()), folder, max_shard_size=shard_size, entries=entries)
        config.save_pretrained(folder)
        tok.save_pretrained(folder)

    if not (base / "config.json").is_file():
        write(base, base_state())
    experts = []
    for i in range(k):
        out = folder / "experts" / f"e{i}"
        experts.append(out)
        if (out / "config.json").is_file():
            continue
        gen = torch.Generator().manual_seed(1000 + i)

        def noisy() -> Any:
            for n, t in base_state().items():
                noise = torch.randn(t.shape, generator=gen, dtype=torch.float32).mul_(0.002)
                yield n, (t.float() + noise).to(t.dtype)

        out.mkdir(parents=True, exist_ok=True)
        entries = [(n, t.dtype, tuple(t.shape)) for n, t in base_state().items()]
        write_safetensors_shards(noisy(), out, max_shard_size=shard_size, entries=entries)
        config.save_pretrained(out)
        tok.save_pretrained(out)
    target = folder / "target"
    if not (target / "train.jsonl").is_file():
        target.mkdir(parents=True, exist_ok=True)
        rng = random.Random(0)
        for name, n in (("train", 64), ("validation", 8)):
            lines = [json.dumps({"text": " ".join(f"w{rng.randrange(1, VOCAB - 1)}" for _ in range(LENGTH))})
                     for _ in range(n)]
            (target / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    params = sum(t.numel() for t in base_state().values()) if state is not None else None
    if params is None:
        from spsa_mix.blend.sources.checkpoints import open_checkpoint

        params = sum(i.numel for i in open_checkpoint(base, label="base").infos.values())
    return {"base": str(base), "experts": [str(e) for e in experts], "target": str(target), "params": params}


# ---------------------------------------------------------------------------- the merge, end to end
def merge(paths: dict[str, Any], k: int, memory: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "spsa_mix", "merge", "--model", paths["base"], "--experts", *paths["experts"][:k],
           "--data", f"{paths['target']}/train.jsonl", "--validation", f"{paths['target']}/validation.jsonl",
           "--batch-size", str(BATCH), "--max-length", str(LENGTH), "--budget", str(args.budget),
           "--device", "cpu", "--memory", memory, "--output", str(out), "--overwrite", "--no-progress",
           "--out-shard-size", "1GB"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Sampler(proc.pid) as sampler:
        stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"spsa-mix merge failed ({proc.returncode}):\n{stderr[-3000:]}")
    recipe = json.loads((out / "recipe.json").read_text())
    choice = next((line for line in stderr.splitlines() if line.startswith("experts ")), "")
    phases = recipe["phases"]  # spsa_mix.merge.cost.PhaseClock's names, in this table's words
    stages = {"checks and data": phases["checks"] + phases["imports"] + phases["data"], "load": phases["experts"],
              "reference scores": phases["references"], "search": phases["search"], "final scores": phases["final"],
              "save": phases["write"]}
    return {"wall_s": wall, "stage_seconds": stages, "memory_choice": choice,
            "peak_rss_anon": sampler.peak.get("RssAnon", 0), "peak_rss_file": sampler.peak.get("RssFile", 0),
            "peak_rss": sampler.peak.get("VmHWM", sampler.peak.get("VmRSS", 0)), "alpha": recipe["alpha"]}


# ---------------------------------------------------------------------------- the formula, for 1B and 7B
def shape_of(layers: dict[str, int]) -> tuple[int, int]:
    """``(P, L)``: the parameters of a Llama of this shape and those of its largest module,
    counted on the meta device (no memory)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(vocab_size=VOCAB, tie_word_embeddings=False, **layers)
    with torch.device("meta"):
        model = transformers.LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return params, largest


def formula_table(output: Path) -> str:
    """The memory of each mode for 1B and 7B models at K = 4 and 8 (bf16 experts and
    forward), by :func:`spsa_mix.blend.held.memory.memory_estimate`, written beside ``output``."""
    from spsa_mix.blend.held.memory import memory_estimate

    rows = []
    lines = ["| model | params | largest module | K | resident (device) | streamed, CPU | streamed, GPU (device) | "
             "streamed, GPU (pinned host) | experts' files (page cache) |", "|" + "---|" * 9]
    for name, layers in FORMULA_SIZES.items():
        params, largest = shape_of(layers)
        for k in (4, 8):
            res = memory_estimate(params, largest, k, mode="resident")
            cpu = memory_estimate(params, largest, k, mode="streamed")
            gpu = memory_estimate(params, largest, k, mode="streamed", device="cuda")
            rows.append({"model": name, "params": params, "largest": largest, "k": k, "resident": res,
                         "streamed_cpu": cpu, "streamed_gpu": gpu})
            lines.append(f"| {name} | {params / 1e9:.2f} B | {largest / 1e6:.1f} M | {k} | {res['device'] / GB:.1f} GB | "
                         f"{cpu['device'] / GB:.2f} GB | {gpu['device'] / GB:.2f} GB | {gpu['pinned'] / GB:.2f} GB | "
                         f"{cpu['page cache'] / GB:.1f} GB |")
    table_md = "\n".join(lines)
    output.with_name("scale_formula.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    output.with_name("scale_formula.md").write_text(
        "Memory of a blend of bf16 Llama experts (bf16 forward), beyond the activations and the runtime, by "
        "spsa_mix.blend.held.memory.memory_estimate (benchmarks/scale.py --formula); streamed: two probes at "
        "once, the experts' files in the page cache:\n\n" + table_md + "\n")
    return table_md


def worker_baseline(spec: dict[str, Any]) -> dict[str, Any]:
    """What a merge's process holds before any expert is read (torch, transformers, the
    config, the architecture's class, the tokenizer, matplotlib for the figure: ``runtime``),
    and the activations ``A`` of one forward with its loss on the merge's largest batch (the
    validation data in one batch), measured on a plain model loaded by transformers."""
    import matplotlib.pyplot  # noqa: F401  # the merge draws loss.png
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import spsa_mix.merge.run  # noqa: F401
    from spsa_mix.blend.losses import CausalLM
    from spsa_mix.blend.sources.hub import architecture_class, read_config

    torch.set_num_threads(spec["threads"])
    architecture_class(read_config(spec["base"], "base"))
    AutoTokenizer.from_pretrained(spec["base"], local_files_only=True)
    runtime = status()["RssAnon"]
    batch = _batch(spec["target"], spec["base"], split="validation", size=64)
    model = AutoModelForCausalLM.from_pretrained(spec["base"], dtype=torch.bfloat16, local_files_only=True).eval()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = CausalLM()
    with torch.inference_mode():
        float(loss(model(**batch), labels))  # warm-up: the allocator's first blocks
        before = status()["RssAnon"]
        with Sampler(period=0.002) as s:
            float(loss(model(**batch), labels))
    return {"runtime": runtime, "activations": s.peak["RssAnon"] - before, "tokens": int(batch["input_ids"].numel())}


# ---------------------------------------------------------------------------- workers (fresh processes)
def run_worker(spec: dict[str, Any], threads: int) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {spec['part']} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _batch(target: str, tokenizer_dir: str, split: str = "train", size: int = BATCH) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    texts = [json.loads(line)["text"] for line in Path(target, f"{split}.jsonl").read_text().splitlines()[:size]]
    return dict(tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=LENGTH))


def worker_step(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from step_cost import interleaved_times  # benchmarks/ is on sys.path: this file runs as a script
    from transformers import AutoModelForCausalLM

    from spsa_mix.blend import BlendedObjective
    from spsa_mix.blend.losses import CausalLM

    torch.set_num_threads(spec["threads"])
    batch = _batch(spec["target"], spec["base"], size=spec.get("batch", BATCH))
    k = spec["k"]
    obj = BlendedObjective.from_pretrained(spec["experts"], data=batch, device="cpu", memory="streamed")
    model = AutoModelForCausalLM.from_pretrained(spec["experts"][0], dtype=torch.bfloat16, local_files_only=True)
    model.eval()
    loss = CausalLM()
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    rng = np.random.default_rng(0)

    def step() -> None:  # SPSA's two probes
        obj(rng.dirichlet(np.ones(k), size=2))

    def two_forwards() -> None:
        with torch.inference_mode():
            for _ in range(2):
                float(loss(model(**batch), labels))

    fns = {"step": step, "two_forwards": two_forwards}
    if spec.get("resident"):  # the same step with the experts stacked in memory
        resident = BlendedObjective.from_pretrained(spec["experts"], data=batch, device="cpu", memory="resident")
        fns["resident_step"] = lambda: resident(rng.dirichlet(np.ones(k), size=2))
    for fn in fns.values():  # warm-up: the experts' pages into the page cache, the allocator's first blocks
        fn()
    times = interleaved_times(fns, rounds=spec["rounds"])
    ratios = [s / f for s, f in zip(times["step"], times["two_forwards"], strict=True)]
    out = {"step_s": times["step"], "two_forwards_s": times["two_forwards"], "ratio": ratios,
           "memory_choice": obj.memory_choice}
    if "resident_step" in times:
        out["resident_step_s"] = times["resident_step"]
        out["resident_ratio"] = [s / f for s, f in zip(times["resident_step"], times["two_forwards"], strict=True)]
    return out


def worker_save(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file
    from step_cost import interleaved_times  # benchmarks/ is on sys.path: this file runs as a script

    from spsa_mix.blend import BlendedObjective

    torch.set_num_threads(spec["threads"])
    out = Path(spec["out"])
    k = spec["k"]
    alpha = np.random.default_rng(1).dirichlet(np.ones(k))
    obj = BlendedObjective.from_pretrained(spec["experts"], device="cpu", memory="streamed")
    peaks: dict[str, int] = {}

    def ours() -> None:
        before = status()["RssAnon"]
        with Sampler() as s:
            obj.save_pretrained(alpha, out / "ours", overwrite=True, max_shard_size="1GB")
        peaks["streamed save"] = max(peaks.get("streamed save", 0), s.peak["RssAnon"] - before)

    def one_shot() -> None:  # what a user would script
        before = status()["RssAnon"]
        with Sampler() as s:
            acc: dict[str, torch.Tensor] = {}
            for a, folder in zip(alpha, spec["experts"], strict=True):
                state: dict[str, torch.Tensor] = {}
                for f in sorted(Path(folder).glob("*.safetensors")):
                    state.update(load_file(f))
                for name, t in state.items():
                    if name in acc:
                        acc[name].add_(t.float(), alpha=float(a))
                    else:
                        acc[name] = t.float().mul_(float(a))
                del state
            (out / "one_shot").mkdir(parents=True, exist_ok=True)
            save_file({n: t.to(torch.bfloat16) for n, t in acc.items()}, str(out / "one_shot" / "model.safetensors"),
                      metadata={"format": "pt"})
            del acc
        peaks["one-shot merge"] = max(peaks.get("one-shot merge", 0), s.peak["RssAnon"] - before)

    ours()  # warm-up (pages in the page cache for both)
    one_shot()
    times = interleaved_times({"streamed save": ours, "one-shot merge": one_shot}, rounds=spec["rounds"])
    mine = load_file(str(next((out / "ours").glob("*.safetensors"))))
    theirs = load_file(str(out / "one_shot" / "model.safetensors"))
    worst = max(float((mine[n].float() - theirs[n].float()).abs().max()) for n in mine)
    return {"times": times, "peak_rss_anon": peaks, "max_abs_diff": worst}


# ---------------------------------------------------------------------------- report
def _fmt_range(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def table(rows: list[dict[str, Any]]) -> str:
    """Three tables: the merges' memory and stage times, the step against two forwards, the save."""
    order = sorted(rows, key=lambda r: (r["params"], r["k"], r.get("memory", "")))
    out = ["Merge, end to end (budget 40), memory in GB: the peak anonymous memory of the process, what it held "
           "before any expert was read (runtime), the difference against one model's bytes plus the "
           "activations of the two probes in progress (2 A, A measured on a plain model's forward and loss over the "
           "largest batch), and the experts' pages mapped (page cache):", "",
           "| size | params | K | memory | peak RssAnon | runtime | above runtime | one model + 2 A | within | "
           "peak RssFile | load s | reference s | search s | save s | total s |", "|" + "---|" * 15]
    for r in (r for r in order if r["part"] == "merge"):
        model = r["params"] * 2
        above = r["peak_rss_anon"] - r.get("runtime_rss_anon", 0)
        allowed = model + 2 * r.get("activations", 0)
        within = "yes" if above <= allowed else "no"
        if r["memory"] != "streamed" or "runtime_rss_anon" not in r:
            within = "-"
        st = r["stage_seconds"]
        out.append(f"| {r['size']} | {r['params'] / 1e6:.0f} M | {r['k']} | {r['memory']} | "
                   f"{r['peak_rss_anon'] / GB:.2f} | {r.get('runtime_rss_anon', float('nan')) / GB:.2f} | "
                   f"{above / GB:.2f} | {allowed / GB:.2f} | {within} | {r['peak_rss_file'] / GB:.2f} | "
                   f"{st['load']:.0f} | {st['reference scores']:.0f} | {st['search']:.0f} | {st['save']:.0f} | "
                   f"{r['wall_s']:.0f} |")
    out += ["", "One step (two probes, streamed) against two plain forwards of one expert with its loss, seconds, "
            "interleaved rounds:", "",
            "| size | K | tokens | step | two forwards | step / two forwards, median [range] | within 1.3 | "
            "resident step / two forwards |", "|" + "---|" * 8]
    for r in sorted((r for r in order if r["part"] == "step"), key=lambda r: (r["params"], r["k"], r.get("batch", 4))):
        med = statistics.median(r["ratio"])
        resident = _fmt_range(r["resident_ratio"]) if "resident_ratio" in r else "-"
        out.append(f"| {r['size']} | {r['k']} | {r.get('batch', BATCH) * LENGTH} | {statistics.median(r['step_s']):.2f} | "
                   f"{statistics.median(r['two_forwards_s']):.2f} | {_fmt_range(r['ratio'])} | "
                   f"{'yes' if med <= 1.3 else 'no'} | {resident} |")
    out += ["", "The save (streamed, tensor by tensor) against a one-shot linear merge script (each expert loaded "
            "whole, float32 accumulator), seconds and peak RssAnon above the worker's in GB, interleaved rounds:", "",
            "| size | K | save | one-shot merge | save / one-shot, median [range] | save peak | one-shot peak | "
            "largest difference |", "|" + "---|" * 8]
    for r in (r for r in order if r["part"] == "save"):
        t = r["times"]
        ratio = [a / b for a, b in zip(t["streamed save"], t["one-shot merge"], strict=True)]
        out.append(f"| {r['size']} | {r['k']} | {statistics.median(t['streamed save']):.1f} | "
                   f"{statistics.median(t['one-shot merge']):.1f} | {_fmt_range(ratio)} | "
                   f"{r['peak_rss_anon']['streamed save'] / GB:.2f} | {r['peak_rss_anon']['one-shot merge'] / GB:.2f} "
                   f"| {r['max_abs_diff']:.1e} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps({"step": worker_step, "save": worker_save, "baseline": worker_baseline}[spec["part"]](spec)))
        return
    if args.formula:
        print(formula_table(args.output))
        return
    sys.path.insert(0, str(REPO))
    results: list[dict[str, Any]] = []
    if args.output.is_file():  # earlier sizes and parts are kept; the ones run now replace theirs
        results = json.loads(args.output.read_text())["results"]
    meta = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
            "threads": args.threads, "batch": [BATCH, LENGTH], "vocab": VOCAB, "budget": args.budget,
            "note": "shared machine: other processes ran beside these measurements"}

    def key(row: dict[str, Any]) -> tuple[Any, ...]:
        return row["size"], row["k"], row["part"], row.get("memory"), row.get("batch", BATCH)

    def keep(row: dict[str, Any]) -> None:
        results[:] = [r for r in results if key(r) != key(row)] + [row]
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
        args.output.with_suffix(".md").write_text(
            f"Llama models with random weights, bf16, on {os.cpu_count()} CPU cores ({args.threads} torch thread(s) "
            f"in every measured process), a machine shared with other sessions' jobs; batches of {BATCH} x {LENGTH} "
            f"tokens, vocabulary {VOCAB}.\n\n" + table(results) + "\n")

    for size in args.sizes:
        t0 = time.perf_counter()
        paths = build(args.root, size, max(args.k), args.shard_size)
        print(f"{size}: {paths['params'] / 1e6:.0f} M parameters, {max(args.k)} experts ready in "
              f"{time.perf_counter() - t0:.0f} s; free memory {free_memory()}", flush=True)
        for k in args.k:
            common = {"size": size, "k": k, "params": paths["params"], "free_before_gb": free_memory()}
            if "merge" in args.parts:
                base = run_worker({"part": "baseline", "base": paths["base"], "target": paths["target"],
                                   "threads": args.threads}, args.threads)
                common.update(runtime_rss_anon=base["runtime"], activations=base["activations"])
                for memory in ["streamed"] + (["resident"] if args.resident else []):
                    r = merge(paths, k, memory, args, args.root / size / f"merged_k{k}_{memory}")
                    keep({**common, "part": "merge", "memory": memory, **r})
                    print(f"  merge K={k} {memory}: peak RssAnon {r['peak_rss_anon'] / GB:.2f} GB, RssFile "
                          f"{r['peak_rss_file'] / GB:.2f} GB, {r['stage_seconds']}", flush=True)
            spec = {"experts": paths["experts"][:k], "base": paths["base"], "target": paths["target"], "k": k,
                    "threads": args.threads, "rounds": args.rounds, "out": str(args.root / size / f"save_k{k}"),
                    "resident": args.resident}
            if "step" in args.parts:
                for batch in args.step_batches:
                    r = run_worker({**spec, "part": "step", "batch": batch}, args.threads)
                    keep({**common, "part": "step", "batch": batch, **r})
                    print(f"  step K={k}, batch {batch} x {LENGTH}: step / two forwards {_fmt_range(r['ratio'])}",
                          flush=True)
            if "save" in args.parts:
                r = run_worker({**spec, "part": "save"}, args.threads)
                keep({**common, "part": "save", **r})
                print(f"  save K={k}: {r['times']}, peaks {r['peak_rss_anon']}", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
