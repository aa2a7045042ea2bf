"""The cost of a merge: each phase predicted by the model of ``docs/merge_cost.md`` and measured.

For each case (the README's three examples, ``examples/merge/{lm,lora,vision}.yaml``, and,
when ``../shared/data`` holds it, stories260K: three perturbed copies of the pretrained
260K-parameter Llama merged on 160 training and 40 validation lines of stories it wrote
itself, batch size 8, ``budget: 100``, ``device: cpu``) and each condition (``quiet``: what
else runs on the machine is left as it is; ``busy``: ``--busy`` more processes each spinning
a core, started here and stopped after), in this order:

1. **unit costs, measured on the spot**, just before and just after the merge (their mean:
   the load of a shared machine drifts), each time in a fresh interpreter (``--calibrate``): the
   imports, the checks, reading the data and the experts, one evaluation (the median over
   three short searches of the merge's method, ``--reps`` evaluations each, at the thread
   count the merge chooses), one pass over the validation data, a save of the state, the
   writes; and the start of the command (``spsa-mix merge --help``);
2. **the prediction**: :func:`spsa_mix.merge.cost.predict_phases` of those unit costs and
   the counts the config fixes (:func:`spsa_mix.merge.cost.planned_counts`);
3. **the merge**, ``python -m spsa_mix merge <config> --output <tmp>`` (between the two
   measurements of 1.): its phases as its log and ``recipe.json`` record them, and the
   command's wall time.

Reported per case and condition: predicted and measured seconds of each phase, their
ratio, the thread count, the load average. ``--against-threads N`` also runs each merge
with ``--threads N`` (PyTorch's default on this machine is one per core): what the
thread choice saves. The experts and data are built once under ``--work`` (kept).

Usage::

    python benchmarks/merge_cost.py                       # every case, quiet and busy
    python benchmarks/merge_cost.py --cases lm vision --conditions quiet --against-threads 2

Writes ``benchmarks/results/merge_cost.json`` and ``.md`` (``--output``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = ("lm", "lora", "vision", "stories260K")
STORIES = {"experts": 3, "noise": 0.02, "train": 160, "validation": 40, "batch_size": 8, "budget": 100}
RATIO_LIMIT = 1.5  # the model holds when measured / predicted is within [1 / 1.5, 1.5]
SIGNIFICANT = 0.05  # phases below this share of the predicted total are shown, not held to the limit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--conditions", nargs="+", choices=("quiet", "busy"), default=["quiet", "busy"])
    p.add_argument("--busy", type=int, default=2, help="spinning processes beside the merge when busy (default 2)")
    p.add_argument("--reps", type=int, default=21, help="evaluations of each of the 3 short searches that time one "
                                                        "evaluation (default 21)")
    p.add_argument("--against-threads", type=int, default=None, metavar="N",
                   help="also run each merge with --threads N (e.g. the number of cores: PyTorch's default)")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "spsa_mix_merge_cost",
                   help="where the experts and data are built (kept between runs)")
    p.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "merge_cost.json")
    p.add_argument("--note", default="", help="free text stored with the results")
    p.add_argument("--calibrate", type=Path, default=None, help=argparse.SUPPRESS)  # internal: one config's unit costs
    args = p.parse_args(argv)
    if args.reps < 5 or args.busy < 0:
        p.error(f"--reps must be >= 5 and --busy >= 0, but got {args.reps} and {args.busy}")
    return args


# ---------------------------------------------------------------------- the cases
def build_case(case: str, work: Path) -> Path | None:
    """The case's experts and data under ``work`` and its config; ``None`` when its files are missing."""
    if case == "stories260K":
        return _build_stories(work / "stories260K")
    from spsa_mix.merge.demo import build_demo

    build_demo(case, work / "build" / case)
    config = work / f"{case}.yaml"
    shutil.copy(ROOT / "examples" / "merge" / f"{case}.yaml", config)  # its paths are relative to work/
    return config


def _build_stories(root: Path) -> Path | None:
    from spsa_mix.data.real import find_shared

    src = find_shared("stories260K")
    if src is None:
        return None
    config = root / "merge.yaml"
    if config.is_file():
        return config
    import torch
    import transformers

    from spsa_mix.data.real import sample_texts
    from spsa_mix.io import atomic_write_text

    base = root / "base"
    shutil.copytree(src, base, dirs_exist_ok=True)  # the shared folder is read-only
    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    tok = transformers.AutoTokenizer.from_pretrained(base)
    for i in range(STORIES["experts"]):
        copy = transformers.AutoModelForCausalLM.from_pretrained(base)
        gen = torch.Generator().manual_seed(1 + i)
        with torch.no_grad():
            for p in copy.parameters():
                p.add_(STORIES["noise"] * torch.randn(p.shape, generator=gen))
        copy.save_pretrained(root / "experts" / f"copy{i}")
    texts = sample_texts(model, tok, STORIES["train"] + STORIES["validation"], seed=0)
    lines = [json.dumps({"text": t}) + "\n" for t in texts]
    atomic_write_text(root / "train.jsonl", "".join(lines[: STORIES["train"]]))
    atomic_write_text(root / "validation.jsonl", "".join(lines[STORIES["train"]:]))
    atomic_write_text(config, "\n".join([
        "model: base", "experts: [experts/*]", "data:", "  train: train.jsonl", "  validation: validation.jsonl",
        f"  batch_size: {STORIES['batch_size']}", f"budget: {STORIES['budget']}", "device: cpu", "output: merged", ""]))
    return config


# ---------------------------------------------------------------------- unit costs (in a fresh interpreter)
def calibrate(config: Path, reps: int) -> dict[str, Any]:
    """The unit costs of :class:`spsa_mix.merge.cost.UnitCosts` for ``config``, measured now."""
    from spsa_mix.merge import run as merge_run
    from spsa_mix.merge.config import load_config

    out_dir = Path(tempfile.mkdtemp(prefix="merge_cost_"))
    cfg = load_config(config, {"output": str(out_dir / "merged"), "overwrite": True})
    t = time.perf_counter()
    plan = merge_run.plan_merge(cfg)
    checks = time.perf_counter() - t
    t = time.perf_counter()
    merge_run._import_heavy(plan)
    imports = time.perf_counter() - t  # as the merge's phase: what the command has not imported to parse
    import numpy as np
    import torch

    import spsa_mix
    from spsa_mix.cpu_threads import torch_threads
    from spsa_mix.io import atomic_write_text, write_json
    from spsa_mix.merge.report import loss_figure, save_figure

    t = time.perf_counter()
    source, train, val = merge_run._load_data(plan)
    data = time.perf_counter() - t
    t = time.perf_counter()
    obj = merge_run._objective(plan, train, source)
    uniform = obj.domain.center() if not obj.domain.simplex_only else np.full(obj.shape, 1.0 / obj.k)
    threads, _ = merge_run._threads(cfg, obj, source, uniform, 1)
    experts = time.perf_counter() - t
    with torch_threads(threads):
        obj(np.stack([uniform, uniform]))  # warm-up (first batch, caches)
        evals = []
        for seed in range(3):  # short searches of the merge's method: its evaluations and its own overhead
            t = time.perf_counter()
            res = spsa_mix.minimize(obj, k=obj.shape, method=cfg.method, max_evals=reps, seed=seed, vectorized=True,
                                    start="uniform", **cfg.options)
            evals.append((time.perf_counter() - t) / res.nfev)
        scoring = val if val is not None else train
        passes = []
        for _ in range(3):
            t = time.perf_counter()
            merge_run._score(obj, uniform, scoring)
            passes.append(time.perf_counter() - t)
        t = time.perf_counter()
        write_json({"x": np.zeros((cfg.budget, *np.shape(uniform))).tolist()}, out_dir / "state.json")
        state = time.perf_counter() - t
        t = time.perf_counter()
        obj.save_pretrained(uniform, plan.output, overwrite=True)
        steps = cfg.budget // 2
        history = {"cost": np.arange(steps) * 2.0, "loss": np.ones(steps), "val_loss": np.full(steps, np.nan)}
        write_json({"history": {k: v.tolist() for k, v in history.items()}}, out_dir / "recipe.json", indent=1)
        save_figure(loss_figure(history, title="calibration", references={"uniform": 1.0, "best single": 1.0},
                                where="validation"), out_dir / "loss.png")
        atomic_write_text(out_dir / "README.md", "x" * 4000)  # the model card
        write = time.perf_counter() - t
    shutil.rmtree(out_dir, ignore_errors=True)
    return {"checks": checks, "imports": imports, "data": data, "experts": experts,
            "evaluation": float(np.median(evals)), "validation": float(np.median(passes)), "state": state,
            "write": write, "threads": threads, "k": obj.k, "torch_threads_default": torch.get_num_threads(),
            "validated": val is not None, "evaluations": evals, "passes": passes}


def _python(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # the merge chooses its threads; the variable would cap them
    t = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done, wall


def measure(case: str, config: Path, condition: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Calibrate, predict and run the merge of ``config`` (and again at ``--against-threads``)."""
    from spsa_mix.merge.config import load_config
    from spsa_mix.merge.cost import UnitCosts, planned_counts, predict_phases

    load_before = os.getloadavg()[0]

    def units_now() -> tuple[dict[str, Any], float]:
        _, startup = _python("-m", "spsa_mix", "merge", "--help", cwd=config.parent)
        done, _ = _python(str(Path(__file__).resolve()), "--calibrate", str(config), "--reps", str(args.reps),
                          cwd=config.parent)
        return json.loads(done.stdout.strip().splitlines()[-1]), startup

    before, startup_before = units_now()
    out = Path(tempfile.mkdtemp(prefix=f"merge_cost_{case}_")) / "merged"
    done, wall = _python("-m", "spsa_mix", "merge", str(config), "--output", str(out), "--no-progress", cwd=config.parent)
    after, startup_after = units_now()  # the load of a shared machine drifts: the unit costs bracket the merge
    unit = {k: (v + after[k]) / 2 if isinstance(v, float) else v for k, v in before.items()}
    startup = (startup_before + startup_after) / 2
    cfg = load_config(config)
    counts = planned_counts(budget=cfg.budget, k=unit["k"], validate_every=cfg.validate_every,
                            validated=unit["validated"])
    units = UnitCosts(**{f: unit[f] for f in ("imports", "data", "experts", "evaluation", "validation", "write",
                                              "checks")})
    predicted = predict_phases(units, counts, k=unit["k"])
    checkpoints = counts["steps"] // cfg.checkpoint_every + 1
    predicted["search"] += checkpoints * unit["state"]
    predicted["total"] += checkpoints * unit["state"]
    predicted["command"] = predicted["total"] + startup
    rows = []
    for threads in ([None] if args.against_threads is None else [None, args.against_threads]):
        if threads is not None:
            out = Path(tempfile.mkdtemp(prefix=f"merge_cost_{case}_")) / "merged"
            done, wall = _python("-m", "spsa_mix", "merge", str(config), "--output", str(out), "--no-progress",
                                 "--threads", str(threads), cwd=config.parent)
        recipe = json.loads(((out if out.is_dir() else out.parent) / "recipe.json").read_text())
        measured = {**recipe["phases"], "command": wall}
        rows.append({"case": case, "condition": condition, "threads": recipe["threads"],
                     "threads_set": threads, "predicted": predicted if threads is None else None,
                     "measured": measured, "units": unit, "units_before": before, "units_after": after,
                     "counts": counts, "startup": startup,
                     "nfev": recipe["learned"]["nfev"], "load_average": [load_before, os.getloadavg()[0]],
                     "log": [line for line in done.stderr.splitlines() if ": " in line][:20]})
        shutil.rmtree(out.parent, ignore_errors=True)
    return rows


class Busy:
    """``n`` processes spinning a core each (started on enter, stopped by pid on exit)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Busy:
        self.procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.n)]
        time.sleep(2.0)  # let the scheduler see them
        return self

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


# ---------------------------------------------------------------------- report
def held(row: dict[str, Any]) -> tuple[bool, list[str]]:
    """Whether every significant phase and the total are within the ratio limit; the ones that are not."""
    from spsa_mix.merge.cost import PHASES

    pred, meas = row["predicted"], row["measured"]
    bad = []
    for p in (*PHASES, "total", "command"):
        significant = p in ("total", "command") or pred[p] >= SIGNIFICANT * pred["total"]
        ratio = meas[p] / pred[p] if pred[p] > 0 else float("inf")
        if significant and not (1 / RATIO_LIMIT <= ratio <= RATIO_LIMIT):
            bad.append(f"{p} {ratio:.2f}")
    return not bad, bad


def markdown(doc: dict[str, Any]) -> str:
    from spsa_mix.merge.cost import PHASES

    lines = [f"# The cost of a merge, predicted and measured ({doc['machine']['cpu_count']} cores, shared)", "",
             f"Command: `{doc['command']}`. {doc['note']}".rstrip(), "",
             "Each cell: measured / predicted seconds (ratio). The prediction is the model of `docs/merge_cost.md` "
             "with unit costs measured in a fresh interpreter just before the merge, under the same condition. "
             f"A phase under {SIGNIFICANT:.0%} of the predicted total is shown but not held to the "
             f"{RATIO_LIMIT}x limit.", ""]
    head = ["case", "condition", "threads", "load", *PHASES, "total", "command", f"within {RATIO_LIMIT}x"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["rows"]:
        if r["predicted"] is None:
            continue
        ok, bad = held(r)
        cells = [r["case"], r["condition"], str(r["threads"]), f"{r['load_average'][0]:.1f}"]
        for p in (*PHASES, "total", "command"):
            m, q = r["measured"][p], r["predicted"][p]
            cells.append(f"{m:.2f} / {q:.2f} ({m / q:.2f})" if q > 0 else f"{m:.2f} / 0")
        cells.append("yes" if ok else "no: " + ", ".join(bad))
        lines.append("| " + " | ".join(cells) + " |")
    against = [r for r in doc["rows"] if r["threads_set"] is not None]
    if against:
        lines += ["", "The same merges with the thread count set (the command's wall time, seconds):", "",
                  "| case | condition | chosen threads | seconds | set threads | seconds | ratio |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        for r in against:
            base = next(b for b in doc["rows"] if b["case"] == r["case"] and b["condition"] == r["condition"]
                        and b["threads_set"] is None)
            lines.append(f"| {r['case']} | {r['condition']} | {base['threads']} | {base['measured']['command']:.1f} | "
                         f"{r['threads']} | {r['measured']['command']:.1f} | "
                         f"{r['measured']['command'] / base['measured']['command']:.2f} |")
    lines += ["", "Unit costs measured on the spot (seconds; evaluation: one objective evaluation on a training batch; "
              "validation: one pass over the validation data):", "",
              "| case | condition | imports | data | experts | evaluation | validation | state | write | startup |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        if r["predicted"] is None:
            continue
        u = r["units"]
        lines.append(f"| {r['case']} | {r['condition']} | {u['imports']:.2f} | {u['data']:.2f} | {u['experts']:.2f} | "
                     f"{u['evaluation'] * 1e3:.1f} ms | {u['validation'] * 1e3:.1f} ms | {u['state'] * 1e3:.1f} ms | "
                     f"{u['write']:.2f} | {r['startup']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.calibrate is not None:
        print(json.dumps(calibrate(args.calibrate, args.reps)))
        return 0
    import torch

    torch.set_num_threads(1)  # this process only builds the cases; the merges choose their own threads
    args.work.mkdir(parents=True, exist_ok=True)
    configs = {}
    for case in args.cases:
        config = build_case(case, args.work)
        if config is None:
            print(f"{case}: skipped (../shared/data/stories260K not found)")
            continue
        configs[case] = config
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for condition in args.conditions:
        with Busy(args.busy if condition == "busy" else 0):
            for case, config in configs.items():
                got = measure(case, config, condition, args)
                rows += got
                for r in got:
                    if r["predicted"] is not None:
                        ok, bad = held(r)
                        print(f"{case} {condition}: threads {r['threads']}, command {r['measured']['command']:.1f} s "
                              f"(predicted {r['predicted']['command']:.1f}), "
                              + ("within the limit" if ok else "outside: " + ", ".join(bad)))
                    else:
                        print(f"{case} {condition}: --threads {r['threads_set']}: {r['measured']['command']:.1f} s")
    doc = {"command": shlex.join(["python", "benchmarks/merge_cost.py", *(argv if argv is not None else sys.argv[1:])]),
           "note": args.note, "seconds": time.perf_counter() - start, "rows": rows,
           "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
           "ratio_limit": RATIO_LIMIT, "significant": SIGNIFICANT}
    from spsa_mix.io import atomic_write_text, write_json

    write_json(doc, args.output, indent=1)
    text = markdown(doc)
    atomic_write_text(args.output.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
