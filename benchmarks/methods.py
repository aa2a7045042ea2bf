"""Every mergekit method against spsa_mix's learned spaces, on the README's experts: validation and test.

For each row of experts (the ``lm``, ``lora`` and ``vision`` examples of ``spsa-mix merge``,
built by ``spsa_mix.merge.demo``), the target's held-out data (the example's validation file)
is cut in two halves, *validation* and *test*:

* **mergekit**: every method at its defaults (weight 1 per model, mergekit's density,
  gamma, epsilon, lambda) and on a small grid (density 0.3 / 0.5 / 0.7 for the sparsified
  methods, lambda 0.5 / 1 for the task-vector family), run by mergekit itself (its
  ``run_merge`` on a config for Hugging Face experts, ``base+adapter`` models for LoRA; its
  ``merge_state_dicts`` for the plain state dicts of ``vision``), DARE and DELLA seeded; the
  grid's best on validation is its answer, its wall time the whole grid's (merges and
  validation scores: what a user runs to choose);
* **spsa_mix**: the learned spaces (``convex``, ``task-vectors`` with a learned scale, and
  TIES, DARE-TIES, DELLA-linear at density 0.5 with a learned scale; LoRA: ``lora``) at
  budgets of 100, 200 and 400 evaluations, 3 seeds each, ``select: learned``; TIES and
  DARE-TIES also with ``consensus: per-probe``, to measure what fixing the sign election
  costs;

``resnet``: the experts of ``benchmarks/pretrained_experts.py`` (a pretrained CIFAR-10
ResNet-20 fine-tuned on four shifted domains; needs ``../shared/data``, skipped without it),
its target's held-out images as validation and its test images as test, the fixed consensus
only; every output scored by ``spsa-mix eval``'s code (:mod:`spsa_mix.merge.evaluation`) on both
halves. Writes ``--output`` (JSON, every run, the command, the machine) after each run and
its ``.md`` (the tables) at the end::

    python benchmarks/methods.py --output benchmarks/results/methods.json

Timings are wall-clock on whatever machine runs it, one thread (``torch.set_num_threads(1)``),
runs one after another; they are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROWS = ("lm", "lora", "vision", "resnet")
BUDGETS = (100, 200, 400)
SPACES = {"lm": ("convex", "task-vectors", "ties", "dare_ties", "della_linear"),
          "lora": ("lora",),
          "vision": ("convex", "task-vectors", "ties", "dare_ties", "della_linear"),
          "resnet": ("convex", "task-vectors", "ties", "dare_ties")}
PER_PROBE = ("ties", "dare_ties")  # the consensus methods also searched with the consensus recomputed per probe
PER_PROBE_ROWS = ("lm", "lora", "vision")  # resnet: the fixed consensus only (its runs are the long ones)
SPARSE = ("ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------------------- rows
def prepare_resnet(cache: Path) -> dict[str, Any] | None:
    """``benchmarks/pretrained_experts.py``'s experts (CIFAR-10 ResNet-20 fine-tuned on four
    shifted domains) as state dicts, its target's training images, held-out images
    (validation) and test images as tensors; ``None`` without ``../shared/data``."""
    import torch
    from pretrained_experts import build_setting  # benchmarks/ is on sys.path: this file runs as a script
    from safetensors.torch import save_file

    from spsa_mix.data.batches import Batches

    root = cache / "resnet"
    try:
        built = build_setting()
    except FileNotFoundError as e:
        print(f"methods.py: the resnet row is skipped: {e}", file=sys.stderr)
        return None
    root.mkdir(parents=True, exist_ok=True)

    def save(net: Any, name: str) -> str:
        path = root / f"{name}.safetensors"
        save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(path))
        return str(path)

    def tensors(batches: Any, name: str) -> str:
        xs, ys = zip(*((b[0], b[1]) for b in batches), strict=True)
        path = root / f"{name}.pt"
        torch.save({"inputs": torch.cat(xs), "targets": torch.cat(ys)}, path)
        return str(path)

    task = built.target_task
    return {"kind": "resnet", "experts": [save(e, f"expert{i}") for i, e in enumerate(built.experts)],
            "base": save(built.base, "base"), "model": "resnet20", "loss": "cross-entropy", "batch_size": 64,
            "max_length": 128,
            "train": tensors(Batches(task, built.target_ix, batch_size=500), "train"),
            "val": tensors(Batches(task, built.holdout_ix, batch_size=500), "val"),
            "test": tensors(Batches(task, split="test", batch_size=500), "test")}


def prepare_row(kind: str, cache: Path) -> dict[str, Any] | None:
    """The example's experts (built once into ``cache``) and its held-out data cut into
    validation and test halves (``resnet``: :func:`prepare_resnet`)."""
    import torch

    from spsa_mix.merge.demo import build_demo

    if kind == "resnet":
        return prepare_resnet(cache)

    root = cache / kind
    paths = build_demo(kind, root)
    target = Path(paths["target"])
    row: dict[str, Any] = {"kind": kind, "experts": paths["experts"], "base": paths["base"],
                           "train": str(target / ("train.pt" if kind == "vision" else "train.jsonl"))}
    if kind == "vision":
        held = torch.load(target / "validation.pt", weights_only=True)
        n = len(held["targets"]) // 2
        for name, part in (("val", slice(0, n)), ("test", slice(n, None))):
            torch.save({"inputs": held["inputs"][part], "targets": held["targets"][part]}, target / f"{name}.pt")
            row[name] = str(target / f"{name}.pt")
        row.update(model="small-cnn", loss="cross-entropy", batch_size=64, max_length=128)
    else:
        lines = (target / "validation.jsonl").read_text().splitlines()
        n = len(lines) // 2
        for name, part in (("val", lines[:n]), ("test", lines[n:])):
            (target / f"{name}.jsonl").write_text("\n".join(part) + "\n")
            row[name] = str(target / f"{name}.jsonl")
        row.update(model=paths["base"], loss="causal-lm", batch_size=32, max_length=32)
    return row


def score(row: dict[str, Any], checkpoint: Path, split: str) -> dict[str, float]:
    """``spsa-mix eval``'s figures of one checkpoint on one half."""
    from spsa_mix.merge.config import DataConfig
    from spsa_mix.merge.evaluation import evaluate_checkpoints

    data = DataConfig(train=row[split], batch_size=row["batch_size"], max_length=row["max_length"])
    model = row["model"] if row["kind"] in ("vision", "resnet") else None
    base = row["base"] if row["kind"] == "lora" else None
    rows, _ = evaluate_checkpoints([checkpoint], data, loss=row["loss"], model=model, base=base)
    return {"loss": rows[0]["loss"], "accuracy": rows[0]["accuracy"]}


# ---------------------------------------------------------------------------- mergekit
def mergekit_grid(k: int) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """``(label, method, shared parameters, per-model parameters)`` of the defaults and the grid."""
    grid: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
        ("linear", "linear", {}, {"weight": 1.0}), ("model_stock", "model_stock", {}, {})]
    for method in ("task_arithmetic", *SPARSE):
        grid.append((f"{method} (defaults)", method, {}, {"weight": 1.0}))
        for lam in (0.5, 1.0):
            for density in ((0.3, 0.5, 0.7) if method in SPARSE else (None,)):
                per: dict[str, Any] = {"weight": 1.0}
                if density is not None:
                    per["density"] = density
                label = f"{method} (lambda {lam}" + (f", density {density})" if density is not None else ")")
                grid.append((label, method, {"lambda": lam}, per))
    return grid


def run_mergekit(row: dict[str, Any], method: str, shared: dict[str, Any], per: dict[str, Any], out: Path,
                 seed: int) -> float:
    """mergekit merges the row's experts into ``out``; returns the seconds it took."""
    import torch

    start = time.perf_counter()
    if row["kind"] in ("vision", "resnet"):  # plain state dicts: mergekit's own Python API
        from mergekit.merge_methods.api import merge_state_dicts
        from safetensors.torch import load_file, save_file

        models = {f"e{i}": load_file(p) for i, p in enumerate(row["experts"])}
        base_needed = method != "linear"
        if base_needed:
            models["base"] = load_file(row["base"])
        first = models["e0"]
        for sd in models.values():  # integer buffers (BatchNorm's counters) must agree: eval mode never reads them
            sd.update({n: t for n, t in first.items() if not t.is_floating_point()})
        params = dict(shared)
        for key, value in per.items():
            params[key] = {name: value for name in models if name != "base"}
        torch.manual_seed(seed)
        with torch.no_grad():
            merged = merge_state_dicts(models, method, parameters=params, base="base" if base_needed else None)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in merged.items()}, str(out / "model.safetensors"))
        return time.perf_counter() - start
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    lora = row["kind"] == "lora"
    refs = [f"{row['base']}+{p}" if lora else p for p in row["experts"]]
    cfg: dict[str, Any] = {"merge_method": method, "models": [{"model": r, "parameters": dict(per)} for r in refs],
                           "dtype": "float32"}
    if method != "linear":
        cfg["base_model"] = row["base"]
    if shared:
        cfg["parameters"] = dict(shared)
    if method == "model_stock":
        for m in cfg["models"]:
            m.pop("parameters")
    run_merge(MergeConfiguration.model_validate(cfg), str(out),
              options=MergeOptions(random_seed=seed, quiet=True, write_model_card=False,
                                   lora_merge_cache=str(out.parent / "lora_cache")))
    return time.perf_counter() - start


# ---------------------------------------------------------------------------- spsa_mix
def run_learned(row: dict[str, Any], space: str, budget: int, seed: int, consensus: str, out: Path) -> dict[str, Any]:
    """``spsa-mix merge`` of the row in ``space``; returns the seconds and the recipe."""
    from spsa_mix.merge.config import load_config
    from spsa_mix.merge.run import run_merge

    values: dict[str, Any] = {
        "experts": row["experts"], "data": {"train": row["train"], "validation": row["val"],
                                            "batch_size": row["batch_size"], "max_length": row["max_length"]},
        "loss": row["loss"], "budget": budget, "seed": seed, "output": str(out), "overwrite": True,
        "select": "learned", "baselines": "none", "space": space, "device": "cpu"}
    if row["kind"] != "lora":
        values["model"] = row["model"]
    if space != "convex":
        values["base"] = row["base"]
    if space not in ("convex", "lora"):
        values["scale"] = "learned"
    if space in SPARSE:
        values["density"] = 0.5
        values["consensus"] = consensus
    start = time.perf_counter()
    outcome = run_merge(load_config(None, values), progress=False, log=lambda line: None)
    return {"seconds": time.perf_counter() - start, "recipe": outcome.recipe}


# ---------------------------------------------------------------------------- report
def _key(loss: float) -> float:
    """A loss to rank by: a merge whose loss is not finite (it diverged) ranks last."""
    return loss if np.isfinite(loss) else float("inf")


def _mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.4f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.4f}"


def _clean(results: dict[str, Any]) -> dict[str, Any]:
    """Losses the JSON stores as null (they were not finite) back to nan."""
    for row in results["rows"].values():
        for r in row.get("mergekit", []) + row.get("learned", []):
            for split in ("val", "test"):
                if isinstance(r.get(split), dict):
                    r[split] = {k: (float("nan") if v is None else v) for k, v in r[split].items()}
    return results


def render(results: dict[str, Any]) -> str:
    """The markdown report of a results file."""
    results = _clean(results)
    lines = ["# mergekit's methods against spsa_mix's learned spaces", "",
             f"`{results['command']}`; {results['machine']}; every figure from the runs in the JSON beside this file.",
             "Losses are per token (`lm`, `lora`: causal LM) or per example (`vision`: cross-entropy), on the two "
             "halves of the example's held-out data; lower is better.", ""]
    for kind, row in results["rows"].items():
        lines += [f"## {kind}", "", "| merge | validation loss | test loss | test accuracy (%) | wall time (s) |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        failed = [r for r in row.get("mergekit", []) if "error" in r]
        kit = [r for r in row.get("mergekit", []) if "error" not in r]
        for r in kit:
            if "(defaults)" in r["label"] or r["label"] in ("linear", "model_stock"):
                lines.append(f"| mergekit {r['label']} | {r['val']['loss']:.4f} | {r['test']['loss']:.4f} | "
                             f"{100 * r['test']['accuracy']:.2f} | {r['seconds']:.2f} |")
        if kit:
            best = min(kit, key=lambda r: _key(r["val"]["loss"]))
            total = sum(r["seconds"] + r["val_seconds"] for r in kit)
            lines.append(f"| **mergekit grid's best on validation** ({best['label']}, {len(kit)} merges) | "
                         f"{best['val']['loss']:.4f} | {best['test']['loss']:.4f} | "
                         f"{100 * best['test']['accuracy']:.2f} | {total:.1f} (whole grid) |")
        groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for r in row.get("learned", []):
            if "error" not in r:
                groups.setdefault((r["space"], r["consensus"], r["budget"]), []).append(r)
        for (space, consensus, budget), runs in sorted(groups.items()):
            name = space + (f", consensus {consensus}" if space in SPARSE else "")
            lines.append(f"| spsa_mix {name}, budget {budget} ({len(runs)} seed{'s' if len(runs) > 1 else ''}) | "
                         f"{_mean_sd([r['val']['loss'] for r in runs])} | {_mean_sd([r['test']['loss'] for r in runs])} | "
                         f"{100 * np.mean([r['test']['accuracy'] for r in runs]):.2f} | "
                         f"{np.mean([r['seconds'] for r in runs]):.1f} |")
        lines.append("")
        if kit and groups:
            best_learned = min(groups.items(), key=lambda kv: _key(float(np.mean([r["val"]["loss"] for r in kv[1]]))))
            (space, consensus, budget), runs = best_learned
            test = float(np.mean([r["test"]["loss"] for r in runs]))
            best = min(kit, key=lambda r: _key(r["val"]["loss"]))
            verdict = "better than" if test < best["test"]["loss"] else "not better than"
            lines += [f"Best learned space on validation: {space} at budget {budget} (test {test:.4f}), "
                      f"{verdict} mergekit's grid best ({best['label']}, test {best['test']['loss']:.4f}).", ""]
        diverged = [r["label"] for r in kit if not np.isfinite(r["val"]["loss"])]
        if diverged:
            lines += [f"Merges whose loss is not finite (their weights diverge, e.g. BatchNorm variances below 0): "
                      f"{', '.join(diverged)}.", ""]
        pairs = [(sp, b) for (sp, c, b) in groups if c == "per-probe" and (sp, "fixed", b) in groups]
        if pairs:
            lines += [f"### {kind}: TIES' consensus fixed against recomputed per probe", "",
                      "| space | budget | test loss, fixed | test loss, per probe | fixed minus per probe | "
                      "time per run, per probe / fixed |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
            for sp, b in sorted(pairs):
                f, p = groups[(sp, "fixed", b)], groups[(sp, "per-probe", b)]
                tf, tp = float(np.mean([r["test"]["loss"] for r in f])), float(np.mean([r["test"]["loss"] for r in p]))
                ratio = np.mean([r["seconds"] for r in p]) / np.mean([r["seconds"] for r in f])
                lines.append(f"| {sp} | {b} | {_mean_sd([r['test']['loss'] for r in f])} | "
                             f"{_mean_sd([r['test']['loss'] for r in p])} | {tf - tp:+.4f} | {ratio:.2f} |")
            lines.append("")
        stopped = [r for r in row.get("learned", []) if "error" in r]
        if stopped:
            lines += ["Learned runs that stopped (a non-finite loss mid-search; `spsa-mix merge` then fails): "
                      + "; ".join(f"{r['space']} budget {r['budget']} seed {r['seed']}" for r in stopped), ""]
        if failed:
            lines += ["mergekit raised for: " + "; ".join(f"{r['label']} ({r['error'][:120]})" for r in failed), ""]
        lines.append(f"Peak resident memory of the process after this row: {row.get('peak_mb', float('nan')):.0f} MB "
                     "(the interpreter and PyTorch; the models are a few hundred kB).")
        lines.append("")
    return "\n".join(lines)


def summary(results: dict[str, Any]) -> str:
    """One line per row: mergekit's best at its defaults and on the grid (chosen on
    validation), spsa_mix's best learned space (chosen on validation, mean over seeds), test
    losses and wall times."""
    results = _clean(results)
    lines = ["| experts | mergekit, best default (test loss, accuracy) | mergekit, grid's best (test loss, accuracy; "
             "grid time) | spsa_mix, best learned (test loss, accuracy; time of one run) | learned better on test loss |",
             "| --- | --- | --- | --- | --- |"]
    for kind, row in results["rows"].items():
        kit = [r for r in row.get("mergekit", []) if "error" not in r]
        groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
        for r in row.get("learned", []):
            if "error" not in r:
                groups.setdefault((r["space"], r["consensus"], r["budget"]), []).append(r)
        if not kit or not groups:
            continue
        defaults = [r for r in kit if "(defaults)" in r["label"] or r["label"] in ("linear", "model_stock")]
        d = min(defaults, key=lambda r: _key(r["val"]["loss"]))
        g = min(kit, key=lambda r: _key(r["val"]["loss"]))
        grid_time = sum(r["seconds"] + r["val_seconds"] for r in kit)
        (space, consensus, budget), runs = min(groups.items(),
                                               key=lambda kv: _key(float(np.mean([r["val"]["loss"] for r in kv[1]]))))
        test = [r["test"]["loss"] for r in runs]
        name = space + (f" ({consensus})" if space in SPARSE else "")
        better = "yes" if float(np.mean(test)) < g["test"]["loss"] else "no"
        acc = 100 * float(np.mean([r["test"]["accuracy"] for r in runs]))
        lines.append(f"| {kind} | {d['label']}: {d['test']['loss']:.4f}, {100 * d['test']['accuracy']:.1f} % | "
                     f"{g['label']}: {g['test']['loss']:.4f}, {100 * g['test']['accuracy']:.1f} %; {grid_time:.0f} s | "
                     f"{name}, budget {budget}: {_mean_sd(test)}, {acc:.1f} %; "
                     f"{np.mean([r['seconds'] for r in runs]):.0f} s | {better} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/methods.json"))
    ap.add_argument("--cache", type=Path, default=Path("spsa_mix_cache/methods"), help="experts and outputs")
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    ap.add_argument("--budgets", nargs="+", type=int, default=list(BUDGETS))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-mergekit", action="store_true", help="only the learned spaces")
    ap.add_argument("--render", action="store_true", help="only rewrite the report from --output")
    ap.add_argument("--append", action="store_true", help="keep the rows already in --output (their command too)")
    args = ap.parse_args(argv)
    from spsa_mix.io import check_outputs, write_json

    try:
        if args.render and not args.output.is_file():
            raise ValueError(f"--render: no results file {str(args.output)!r}")
        check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md"),
                       "its summary": args.output.with_name(args.output.stem + "_summary.md")})
    except ValueError as e:
        print(f"methods.py: {e}", file=sys.stderr)
        return 2
    if args.render:
        results = json.loads(args.output.read_text())
        _write_reports(results, args.output)
        return 0
    import torch

    torch.set_num_threads(1)
    if not args.no_mergekit:
        try:
            import mergekit.merge  # noqa: F401
        except ImportError:
            print("methods.py: mergekit is not installed (pip install -e '.[mergekit]'); run with --no-mergekit",
                  file=sys.stderr)
            return 2
    results: dict[str, Any] = {
        "command": "python benchmarks/methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread",
        "rows": {}, "status": "running"}
    if args.append and args.output.is_file():
        earlier = json.loads(args.output.read_text())
        results["rows"] = {k: v for k, v in earlier["rows"].items() if k not in args.rows}
        results["command"] = earlier["command"] + "; " + results["command"]
    work = args.cache / "outputs"
    for kind in args.rows:
        row = prepare_row(kind, args.cache)
        if row is None:
            results.setdefault("skipped", []).append(kind)
            continue
        entry: dict[str, Any] = {"experts": row["experts"], "base": row["base"], "mergekit": [], "learned": []}
        results["rows"][kind] = entry
        if not args.no_mergekit:
            for i, (label, method, shared, per) in enumerate(mergekit_grid(len(row["experts"]))):
                out = work / kind / f"kit{i}"
                shutil.rmtree(out, ignore_errors=True)
                try:
                    seconds = run_mergekit(row, method, shared, per, out, seed=0)
                except Exception as e:  # mergekit itself failed: recorded, the grid goes on
                    entry["mergekit"].append({"label": label, "method": method, "parameters": {**shared, **per},
                                              "error": f"{type(e).__name__}: {str(e)[:300]}"})
                    print(f"{kind} mergekit {label}: FAILED {e}", file=sys.stderr, flush=True)
                    continue
                t = time.perf_counter()
                val = score(row, out, "val")
                val_seconds = time.perf_counter() - t
                entry["mergekit"].append({"label": label, "method": method, "parameters": {**shared, **per},
                                          "seconds": seconds, "val_seconds": val_seconds, "val": val,
                                          "test": score(row, out, "test")})
                print(f"{kind} mergekit {label}: val {val['loss']:.4f}", file=sys.stderr, flush=True)
                write_json(results, args.output, indent=1)
        for space in SPACES[kind]:
            for consensus in ("fixed", "per-probe") if space in PER_PROBE and kind in PER_PROBE_ROWS else ("fixed",):
                for budget in args.budgets:
                    for seed in range(args.seeds):
                        out = work / kind / f"{space}_{consensus}_{budget}_{seed}"
                        try:
                            done = run_learned(row, space, budget, seed, consensus, out)
                        except RuntimeError as e:  # the search stopped (a non-finite loss): recorded, the rest runs
                            entry["learned"].append({"space": space, "consensus": consensus, "budget": budget,
                                                     "seed": seed, "error": str(e)[:300]})
                            print(f"{kind} {space} {consensus} budget {budget} seed {seed}: FAILED {e}",
                                  file=sys.stderr, flush=True)
                            write_json(results, args.output, indent=1)
                            continue
                        recipe = done["recipe"]
                        val, test = score(row, out, "val"), score(row, out, "test")
                        entry["learned"].append({"space": space, "consensus": consensus, "budget": budget,
                                                 "seed": seed, "seconds": done["seconds"], "val": val, "test": test,
                                                 "alpha": recipe["alpha"], "scale": recipe["scale"],
                                                 "search_loss": recipe["learned"].get("search_loss")})
                        print(f"{kind} {space} {consensus} budget {budget} seed {seed}: val {val['loss']:.4f} "
                              f"test {test['loss']:.4f} ({done['seconds']:.1f} s)", file=sys.stderr, flush=True)
                        write_json(results, args.output, indent=1)
        entry["peak_mb"] = _peak_mb()
    results["status"] = "complete"
    write_json(results, args.output, indent=1)
    _write_reports(results, args.output)
    print(render(results))
    return 0


def _write_reports(results: dict[str, Any], output: Path) -> None:
    """``<output>.md`` (every table) and ``<output>_summary.md`` (one line per row)."""
    output.with_suffix(".md").write_text(render(results) + "\n")
    output.with_name(output.stem + "_summary.md").write_text(summary(results) + "\n")


if __name__ == "__main__":
    sys.exit(main())
