"""Experts of real pretrained models, and the blend learned for a new target domain at equal budget.

Needs the real files of ``../shared/data`` (or ``$SPSA_MIX_DATA``): stories260K, SST-2,
``cifar10-jpeg.zip`` and ``resnet_cifar10/``; without them it says which is missing and
stops. Experts are built as a user builds them (:mod:`spsa_mix.experiment.finetuned`: Hugging
Face ``save_pretrained`` directories, PEFT adapter directories, a state-dict file) and
cached (``$SPSA_MIX_CACHE/real``, or ``--cache-dir``), keyed by what determined them, so a
rerun only blends. Blends go through the public API only
(``BlendedObjective.from_pretrained`` and ``BlendedObjective(model, [paths])``).

Tasks (``--tasks``):

``stories-full``
    stories260K (a 260K-parameter Llama pretrained on TinyStories) fully fine-tuned on four
    text domains: SST-2 positive reviews, SST-2 negative reviews, stories sampled from
    stories260K itself (temperature 1), and arithmetic word problems from templates.
    Target: SST-2 dev sentences of both sentiments (a held-out domain related to the two
    review experts): 256 of 372 dev sentences (drawn by the seed) to learn alpha, the other
    500 held out. Loss: next-token cross-entropy (nats per token).
``stories-lora``
    the same domains, target and loss, with LoRA adapters (rank 8 on the seven
    projections) instead of full fine-tunes.
``resnet20``
    akamaster's pretrained CIFAR-10 ResNet-20 fine-tuned on four corruptions of 3000
    CIFAR-10 training images each (Gaussian noise 0.08, Gaussian blur 1.0, contrast 0.2,
    JPEG quality 10; disjoint images per expert). Target: blur 0.7 then noise 0.06, a
    composition of two of the experts' shifts: 520 training images to learn alpha (drawn by
    the seed), 1000 test images held out. Metric: accuracy.

Methods, each with at most ``--budget`` objective evaluations (one evaluation is one
minibatch forward: 32 sentences or 64 images): ``uniform`` (0), ``best-single`` (each
expert scored on the whole target-train set, K passes), ``spsa`` (this package, convex
blend), ``backprop`` (the same blend and optimiser with exact gradients, a backward pass
counted as two evaluations), ``ngopt-simplex`` (``method="nevergrad:NGOpt"``, the
simplex), ``lorahub`` (NGOpt over unconstrained weights in [-1.5, 1.5] from 0 with
LoraHub's L1 penalty, :func:`spsa_mix.baselines.lorahub.lorahub_search`, in the LoRA space
or on task vectors with scale 1) at the same budget and at LoraHub's own 40 evaluations;
for task vectors ``tv-grid`` (uniform alpha, the scale s of ``--scales`` with the lowest
target-train loss, each s scored on the whole target-train set) and ``tv-grid+spsa``
(SPSA on alpha at that s with the rest of the budget); and ``tv-learned`` (SPSA on alpha
and s together) once ``spsa_mix.Domain`` exists (``minimize(obj, k=obj.shape)``), else
skipped and said so. Every returned point is scored on the held-out data.

Usage::

    python benchmarks/real_models.py                          # all tasks, 3 seeds, budget 200
    python benchmarks/real_models.py --tasks stories-lora --seeds 1 --budget 60   # a quick look

Writes ``benchmarks/results/real_experts.{json,md}`` (each expert's metric on every
domain) and ``benchmarks/results/real_quality.{json,md}`` (every run, and the table).
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's spsa_mix, whatever is installed

import torch  # noqa: E402

import spsa_mix  # noqa: E402
from spsa_mix.baselines.lorahub import LORAHUB_BUDGET, lorahub_search  # noqa: E402
from spsa_mix.blend import BlendedObjective, evaluate_blend  # noqa: E402
from spsa_mix.data.corruptions import corrupt  # noqa: E402
from spsa_mix.data.real import (  # noqa: E402
    CIFAR10_ZIP,
    IMAGENET_MEAN,
    IMAGENET_STD,
    arithmetic_texts,
    as_batches,
    causal_lm_examples,
    find_shared,
    read_cifar10_zip,
    read_sst2,
    sample_texts,
)
from spsa_mix.experiment.finetuned import FinetuneSpec, finetune_expert  # noqa: E402
from spsa_mix.io import atomic_write_text, write_json  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
TASKS = ("stories-full", "stories-lora", "resnet20")
NEEDS = {"stories-full": ("stories260K", "sst2"), "stories-lora": ("stories260K", "sst2"),
         "resnet20": (CIFAR10_ZIP, "resnet_cifar10/resnet20-12fca82f.th")}
SPSA_LR = 0.05  # Adam on the logits, for SPSA and backprop alike (GLUE's 1e-2 is slow at 100 steps): --lr

# Text: 2000 training sentences per domain, 256 held out, 48 tokens, batch 32.
TEXT = {"n_train": 2000, "n_test": 256, "max_length": 48, "batch": 32, "target_train": 256, "target_pool": 372}
TEXT_SPECS = {"full": FinetuneSpec(kind="full", epochs=2, lr=5e-4, batch_size=32),
              "lora": FinetuneSpec(kind="lora", epochs=2, lr=2e-3, batch_size=32, lora_r=8, lora_alpha=16)}
# Images: 300 per class per expert (3000 images), 100 per class held out, batch 64.
IMAGE = {"per_class": 300, "test_per_class": 100, "target_per_class": 52, "batch": 64}
IMAGE_SPEC = FinetuneSpec(kind="full", epochs=2, lr=3e-4, batch_size=64)
SHIFTS = ("gaussian-noise=0.08", "gaussian-blur=1.0", "contrast=0.2", "jpeg=10")
IMAGE_TARGET = "gaussian-blur=0.7+gaussian-noise=0.06"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--budget", type=int, default=200, help="objective evaluations per method (default 200)")
    p.add_argument("--scales", type=float, nargs="+", default=[0.5, 1.0, 1.5, 2.0, 3.0],
                   help="task-vector scales of the grid (default 0.5 1 1.5 2 3)")
    p.add_argument("--lr", type=float, default=SPSA_LR, help=f"Adam's step on the logits, SPSA and backprop (default {SPSA_LR})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", type=Path, default=None, help="default $SPSA_MIX_CACHE/real or ~/.cache/spsa_mix/real")
    p.add_argument("--output-dir", type=Path, default=RESULTS)
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. 'machine shared')")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- tasks
@dataclass
class Task:
    """Experts, how to blend them, and the target data of one task."""

    name: str
    metric: str  # "loss" (text) or "accuracy" (images): what the tables compare
    domains: list[str]
    experts: list[Path]
    expert_meta: list[dict[str, Any]]
    objective: Callable[..., BlendedObjective]  # objective(space, scale, data, simplex_atol)
    target_train: Callable[[int], list[Any]]  # seed -> batches
    target_test: list[Any]
    domain_tests: dict[str, list[Any]]
    spaces: tuple[str, ...]  # "convex", "task-vectors" or "lora"
    notes: dict[str, Any] = field(default_factory=dict)


def _built(e: Any) -> str:
    return "cached" if e.cached else f"trained in {e.meta['seconds']:.0f} s"


def _stories_base(cache: Path) -> Path:
    base = cache / "stories260K"
    if not (base / "model.safetensors").is_file():
        shutil.copytree(find_shared("stories260K"), base, dirs_exist_ok=True)  # the shared folder is read-only
    return base


def _stories(base: Path, tok: Any, n: int, cache: Path) -> list[str]:
    """Stories sampled from the base (seed 0), kept in the cache: sampling depends on the PyTorch build."""
    import transformers

    file = cache / f"stories260K_samples_seed0_{n}.json"
    if file.is_file():
        return list(json.loads(file.read_text()))
    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    texts = sample_texts(model, tok, n, seed=0, max_new_tokens=TEXT["max_length"])
    atomic_write_text(file, json.dumps(texts))
    return texts


def text_task(kind: str, cache: Path) -> Task:
    from spsa_mix.data.files import load_tokenizer

    base = _stories_base(cache)
    tok = load_tokenizer(base)
    n, h, ml = TEXT["n_train"], TEXT["n_test"], TEXT["max_length"]
    texts, labels = read_sst2(find_shared("sst2"), "train")
    pos = [t for t, y in zip(texts, labels, strict=True) if y == 1]
    neg = [t for t, y in zip(texts, labels, strict=True) if y == 0]
    stories, arith = _stories(base, tok, n + h, cache), arithmetic_texts(n + h, seed=0)
    domains = {"reviews-positive": (pos[:n], pos[-h:]), "reviews-negative": (neg[:n], neg[-h:]),
               "stories": (stories[:n], stories[n:]), "arithmetic": (arith[:n], arith[n:])}
    spec = TEXT_SPECS[kind]
    experts, metas = [], []
    for name, (train, _) in domains.items():
        e = finetune_expert(base, causal_lm_examples(tok, train, max_length=ml), spec=spec,
                            cache_dir=cache / "experts", name=f"stories260K/{name}")
        print(f"  expert {name}: {_built(e)} ({e.path.name})")
        experts.append(e.path)
        metas.append({**e.meta, "cached": e.cached})

    def batches(t: list[str], seed: int | None = None) -> list[Any]:
        return as_batches(causal_lm_examples(tok, t, max_length=ml), TEXT["batch"], seed=seed)

    dev, _ = read_sst2(find_shared("sst2"), "dev")
    order = np.random.default_rng(0).permutation(len(dev))
    pool = [dev[i] for i in order[: TEXT["target_pool"]]]
    test = [dev[i] for i in order[TEXT["target_pool"]:]]

    def target_train(seed: int) -> list[Any]:
        pick = np.random.default_rng(1000 + seed).choice(len(pool), size=TEXT["target_train"], replace=False)
        return batches([pool[i] for i in pick], seed=seed)

    space0 = "lora" if kind == "lora" else "convex"

    def objective(space: str, scale: Any = 1.0, data: Any = None, simplex_atol: Any = 1e-6) -> BlendedObjective:
        kw: dict[str, Any] = {"base": base} if space in ("task-vectors", "lora") else {}
        if space == "task-vectors":
            kw["scale"] = scale
        return BlendedObjective.from_pretrained(experts, space=space, data=data, device="cpu",
                                                simplex_atol=simplex_atol, **kw)

    return Task(name=f"stories-{kind}", metric="loss", domains=list(domains), experts=experts, expert_meta=metas,
                objective=objective, target_train=target_train, target_test=batches(test),
                domain_tests={d: batches(ho) for d, (_, ho) in domains.items()},
                spaces=(space0,) if kind == "lora" else ("convex", "task-vectors"),
                notes={"base": "stories260K", "target": "SST-2 dev (both sentiments)", "spec": spec.__dict__,
                       "text": TEXT})


def image_task(cache: Path) -> Task:
    from safetensors.torch import save_file

    from spsa_mix.models import load_cifar_resnet

    ckpt = find_shared("resnet_cifar10/resnet20-12fca82f.th")
    zip_path = find_shared(CIFAR10_ZIP)
    base_file = cache / "resnet20-12fca82f.safetensors"
    if not base_file.is_file():
        save_file({k: v.contiguous() for k, v in load_cifar_resnet(ckpt).state_dict().items()}, str(base_file))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def shifted(x: torch.Tensor, shift: str, seed: int) -> torch.Tensor:
        return (corrupt(x.float() / 255, shift, generator=torch.Generator().manual_seed(seed)) - mean) / std

    per = IMAGE["per_class"]
    experts, metas = [], []
    for i, shift in enumerate(SHIFTS):
        x, y = read_cifar10_zip(zip_path, "train", per_class=per, offset=i * per)
        e = finetune_expert(lambda: load_cifar_resnet(ckpt), (shifted(x, shift, i), y), spec=IMAGE_SPEC,
                            cache_dir=cache / "experts", name=f"resnet20/{shift}")
        print(f"  expert {shift}: {_built(e)}")
        experts.append(e.path)
        metas.append({**e.meta, "cached": e.cached})
    xt, yt = read_cifar10_zip(zip_path, "test", per_class=IMAGE["test_per_class"])
    tests = {s: as_batches((shifted(xt, s, 1000 + j), yt), 250) for j, s in enumerate(("clean", *SHIFTS))}
    offset = len(SHIFTS) * per

    def target_train(seed: int) -> list[Any]:
        k = IMAGE["target_per_class"]
        x, y = read_cifar10_zip(zip_path, "train", per_class=k, offset=offset + k * seed)
        return as_batches((shifted(x, IMAGE_TARGET, 2000 + seed), y), IMAGE["batch"], seed=seed)

    def objective(space: str, scale: Any = 1.0, data: Any = None, simplex_atol: Any = 1e-6) -> BlendedObjective:
        kw: dict[str, Any] = {"base": base_file, "scale": scale} if space == "task-vectors" else {}
        return BlendedObjective(load_cifar_resnet(ckpt), experts, space=space, data=data, device="cpu",
                                simplex_atol=simplex_atol, **kw)  # type: ignore[arg-type]

    return Task(name="resnet20", metric="accuracy", domains=["clean", *SHIFTS], experts=experts, expert_meta=metas,
                objective=objective, target_train=target_train,
                target_test=as_batches((shifted(xt, IMAGE_TARGET, 3000), yt), 250), domain_tests=tests,
                spaces=("convex", "task-vectors"),
                notes={"base": "resnet20-12fca82f.th", "target": IMAGE_TARGET, "spec": IMAGE_SPEC.__dict__,
                       "image": IMAGE})


# ---------------------------------------------------------------------------- the experts' table
def expert_table(task: Task) -> dict[str, Any]:
    """Each expert's (and the base's) metric on every domain's held-out data and on the target's."""
    obj = task.objective(task.spaces[-1] if task.spaces[-1] != "convex" else "convex", simplex_atol=None)
    k = len(task.experts)
    points = np.vstack([np.eye(k), np.full((1, k), 1.0 / k)])
    names = [f"expert: {d}" for d in task.domains[-k:]] + ["uniform"]
    if obj.space in ("task-vectors", "lora"):
        points = np.vstack([np.zeros((1, k)), points])  # all weights 0: the base itself
        names = ["base", *names]
    columns = {**task.domain_tests, "target": task.target_test}
    rows = {n: {} for n in names}
    for col, data in columns.items():
        out = evaluate_blend(obj, points, data)
        for n, m in zip(names, out, strict=True):
            rows[n][col] = {"loss": m["loss"], "accuracy": m["accuracy"]}
    return {"task": task.name, "metric": task.metric, "columns": list(columns), "rows": rows,
            "experts": task.expert_meta, "notes": task.notes}


# ---------------------------------------------------------------------------- the methods
def _score(obj: BlendedObjective, x: np.ndarray, task: Task) -> dict[str, float]:
    m = evaluate_blend(obj, x, task.target_test)
    assert isinstance(m, dict)
    return {"loss": m["loss"], "accuracy": m["accuracy"]}


def _mean_loss(obj: BlendedObjective, points: np.ndarray, batches: list[Any]) -> np.ndarray:
    """Mean loss of each point over the batches (one pass: len(batches) evaluations per point)."""
    out = evaluate_blend(obj, points, batches)
    return np.array([m["loss"] for m in (out if isinstance(out, list) else [out])])


def run_seed(task: Task, seed: int, budget: int, scales: list[float], lr: float) -> list[dict[str, Any]]:
    train = task.target_train(seed)
    nb, k = len(train), len(task.experts)
    base_space = task.spaces[0]
    rows: list[dict[str, Any]] = []

    def record(method: str, space: str, x: np.ndarray, evals: int, t0: float, obj: BlendedObjective,
               **extra: Any) -> None:
        held = _score(obj, x, task)
        rows.append({"task": task.name, "seed": seed, "method": method, "space": space, "x": np.asarray(x).tolist(),
                     "evals": int(round(evals)), "seconds": time.perf_counter() - t0, **held, **extra})
        print(f"    seed {seed} {method:14s} {task.metric} {held[task.metric]:.4f}  evals {int(round(evals)):4d}  "
              f"x {np.array2string(np.asarray(x), precision=3)}")

    t0 = time.perf_counter()
    obj = task.objective(base_space)
    record("uniform", base_space, np.full(k, 1.0 / k), 0, t0, obj)
    t0 = time.perf_counter()
    losses = _mean_loss(obj, np.eye(k), train)
    record("best-single", base_space, np.eye(k)[int(np.argmin(losses))], k * nb, t0, obj)

    for method in ("spsa", "backprop", "nevergrad:NGOpt"):
        t0 = time.perf_counter()
        obj = task.objective(base_space, data=train)
        kw: dict[str, Any] = {"lr": lr} if method in ("spsa", "backprop") else {}
        res = spsa_mix.minimize(obj, k=k, method=method, vectorized=True, max_evals=budget, seed=seed, **kw)
        name = {"nevergrad:NGOpt": "ngopt-simplex"}.get(method, method)
        record(name, base_space, res.x, res.cost, t0, obj, status=res.message)

    lorahub_space = "lora" if base_space == "lora" else "task-vectors"
    for evals, name in ((budget, "lorahub"), (LORAHUB_BUDGET, "lorahub-40")):
        t0 = time.perf_counter()
        obj = task.objective(lorahub_space, data=train, simplex_atol=None)
        res = lorahub_search(obj, k, max_evals=evals, seed=seed)
        record(name, lorahub_space, res.x, res.nfev, t0, obj, nonfinite=res.nonfinite)

    if "task-vectors" in task.spaces:
        t0 = time.perf_counter()
        grid = []
        for s in scales:
            grid.append(float(_mean_loss(task.objective("task-vectors", scale=s), np.full((1, k), 1.0 / k), train)[0]))
        finite = np.where(np.isfinite(grid), grid, np.inf)  # s > 1 can make a blended BatchNorm variance negative
        best = float(scales[int(np.argmin(finite))])
        grid_evals = len(scales) * nb
        record("tv-grid", "task-vectors", np.full(k, 1.0 / k), grid_evals, t0, task.objective("task-vectors", best),
               scale=best, grid=dict(zip(map(str, scales), grid, strict=True)))
        t0 = time.perf_counter()
        obj = task.objective("task-vectors", scale=best, data=train)
        res = spsa_mix.minimize(obj, k=k, vectorized=True, max_evals=budget - grid_evals, seed=seed, lr=lr)
        record("tv-grid+spsa", "task-vectors", res.x, grid_evals + res.cost, t0, obj, scale=best, status=res.message)
        if hasattr(spsa_mix, "Domain"):  # minimize accepts a Domain (k=obj.shape): learn alpha and s together
            t0 = time.perf_counter()
            obj = task.objective("task-vectors", scale="learned", data=train)
            res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, max_evals=budget, seed=seed, lr=lr)
            record("tv-learned", "task-vectors", res.x, res.cost, t0, obj, scale=float(np.asarray(res.x)[-1]),
                   status=res.message)
    return rows


# ---------------------------------------------------------------------------- tables
def _fmt(metric: str, v: float) -> str:
    return f"{100 * v:.2f}" if metric == "accuracy" else f"{v:.4f}"


def experts_markdown(tables: list[dict[str, Any]]) -> str:
    out = []
    for t in tables:
        unit = "accuracy (%)" if t["metric"] == "accuracy" else "loss (nats per token)"
        out.append(f"### {t['task']}: held-out {unit} of each expert on each domain")
        out.append("")
        out.append("| model | " + " | ".join(t["columns"]) + " |")
        out.append("|---|" + "---:|" * len(t["columns"]))
        for name, row in t["rows"].items():
            out.append(f"| {name} | " + " | ".join(_fmt(t["metric"], row[c][t["metric"]]) for c in t["columns"]) + " |")
        out.append("")
    return "\n".join(out)


def summarise(rows: list[dict[str, Any]], metric_of: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        metric = metric_of[task]
        for method in dict.fromkeys(r["method"] for r in rows if r["task"] == task):
            sel = [r for r in rows if r["task"] == task and r["method"] == method]
            vals = np.array([r[metric] for r in sel])
            out.append({"task": task, "method": method, "space": sel[0]["space"], "metric": metric,
                        "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                        "seeds": len(sel), "evals": int(max(r["evals"] for r in sel)),
                        "seconds": float(np.mean([r["seconds"] for r in sel])),
                        "x_mean": np.mean([r["x"] for r in sel], axis=0).tolist(),
                        "values": vals.tolist()})
    return out


def quality_markdown(summary: list[dict[str, Any]], rows: list[dict[str, Any]]) -> str:
    lines = []
    for task in dict.fromkeys(s["task"] for s in summary):
        sel = [s for s in summary if s["task"] == task]
        metric = sel[0]["metric"]
        unit = "accuracy (%), higher is better" if metric == "accuracy" else "loss (nats per token), lower is better"
        lines += [f"### {task}: held-out {unit}", "",
                  "| method | space | held-out | per seed | evaluations | seconds | mean weights |",
                  "|---|---|---:|---|---:|---:|---|"]
        for s in sel:
            scale = 100 if metric == "accuracy" else 1
            per_seed = ", ".join(_fmt(metric, v) for v in s["values"])
            lines.append(f"| {s['method']} | {s['space']} | {s['mean'] * scale:.{2 if scale == 100 else 4}f} ± "
                         f"{s['std'] * scale:.{2 if scale == 100 else 4}f} | {per_seed} | {s['evals']} | "
                         f"{s['seconds']:.1f} | {np.array2string(np.array(s['x_mean']), precision=2)} |")
        lines.append("")
        lines += comparisons(task, metric, rows)
        lines.append("")
    return "\n".join(lines)


def comparisons(task: str, metric: str, rows: list[dict[str, Any]]) -> list[str]:
    """SPSA against uniform, the best single expert and each other method, paired by seed."""
    sign = 1.0 if metric == "accuracy" else -1.0  # positive: SPSA better
    by = {(r["method"], r["seed"]): r[metric] for r in rows if r["task"] == task}
    seeds = sorted({s for (m, s) in by if m == "spsa"})
    out = []
    for other in dict.fromkeys(m for (m, _) in by):
        if other == "spsa" or not all((other, s) in by for s in seeds):
            continue
        gaps = np.array([sign * (by[("spsa", s)] - by[(other, s)]) for s in seeds]) * (100 if metric == "accuracy" else 1)
        wins = int((gaps > 0).sum())
        word = "better" if gaps.mean() > 0 else "worse"
        unit = " points" if metric == "accuracy" else " nats"
        out.append(f"- spsa vs {other}: {word} by {abs(gaps.mean()):.{2 if metric == 'accuracy' else 4}f}{unit} on "
                   f"average (better on {wins} of {len(seeds)} seeds)")
    return out


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    missing = sorted({need for t in args.tasks for need in NEEDS[t] if find_shared(need) is None})
    if missing:
        print(f"real_models.py needs the real files of ../shared/data (or $SPSA_MIX_DATA): missing {missing}; "
              "see ../shared/data/README.md. Nothing was run.")
        return 2
    from spsa_mix.experiment.config import default_cache_dir

    cache = args.cache_dir or default_cache_dir() / "real"
    cache.mkdir(parents=True, exist_ok=True)
    print(f"cache: {cache}; spsa_mix.Domain {'present: tv-learned runs' if hasattr(spsa_mix, 'Domain') else 'absent: tv-learned skipped'}")
    tables, rows, metric_of = [], [], {}
    t_start = time.perf_counter()
    for name in args.tasks:
        print(f"task {name}: experts")
        task = image_task(cache) if name == "resnet20" else text_task(name.split("-")[1], cache)
        metric_of[task.name] = task.metric
        tables.append(expert_table(task))
        print(experts_markdown(tables[-1:]))
        for seed in range(args.seeds):
            rows += run_seed(task, seed, args.budget, args.scales, args.lr)
    summary = summarise(rows, metric_of)
    meta = {"command": "python benchmarks/real_models.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
            "budget": args.budget, "seeds": args.seeds, "scales": args.scales, "threads": args.threads,
            "lr": args.lr, "tv_learned": hasattr(spsa_mix, "Domain"), "note": args.note,
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "seconds": time.perf_counter() - t_start}
    out = args.output_dir
    write_json({"meta": meta, "tables": tables}, out / "real_experts.json")
    write_json({"meta": meta, "summary": summary, "rows": rows}, out / "real_quality.json")
    head = (f"Command: `{meta['command']}`; {args.seeds} seeds, budget {args.budget} evaluations, "
            f"{args.threads} thread(s) on a shared CPU, {meta['seconds'] / 60:.1f} min in all.")
    atomic_write_text(out / "real_experts.md", head + "\n\n" + experts_markdown(tables))
    qmd = quality_markdown(summary, rows)
    atomic_write_text(out / "real_quality.md", head + "\n\n" + qmd)
    print(qmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
