"""Peak memory of each merge method on the README's ``lm`` experts, one fresh process per merge.

``benchmarks/methods.py`` records one process peak per row of experts (every merge of the row
ran in that process); this script separates the methods. For the ``lm`` row as
``methods.py`` prepares it (:func:`methods.prepare_row`: the example's experts, built once
into ``--cache``), each merge runs in a **fresh child process**:

* every mergekit method at its defaults, run by mergekit itself as ``methods.py`` runs it
  (:func:`methods.run_mergekit`: its ``run_merge`` on a config, weight 1 per model, float32);
* every spsa_mix learned space (``convex``, ``task-vectors`` and the sparsified spaces at
  density 0.5, learned scale, ``consensus: fixed``) at ``--budget`` evaluations, as
  ``methods.py`` runs it (:func:`methods.run_learned`: spsa_mix's ``run_merge``);
* for reference, one scoring of the base on the validation half with ``spsa-mix eval``'s
  code (:func:`methods.score`): what reading the data and one forward per batch hold, without
  a merge.

The child first imports what either tool needs (PyTorch, transformers, matplotlib, mergekit,
``spsa_mix.merge.run``) and reads the base's config and tokenizer, so that every child starts
from the same runtime; its ``RssAnon`` and ``RssFile`` then are the *baseline* (before any
expert is read). The merge runs while a thread samples ``/proc/self/status`` every 2 ms
(``scale.Sampler``): the peak of ``RssAnon`` (what the process holds) and, apart, of
``RssFile`` (file pages it has mapped: libraries, the experts' files). The table shows the
median over ``--repeats`` runs (seeds 0, 1, ...; the runs of a round in an order drawn anew
each round) and the range of the peak above the baseline. One thread (``OMP_NUM_THREADS=1``,
``torch.set_num_threads(1)``). Writes ``--output`` (JSON, after every run) and its ``.md``::

    python benchmarks/methods_memory.py --output benchmarks/results/methods_memory.json
    python benchmarks/methods_memory.py --render     # only rewrite the .md from the JSON

A merge that fails is recorded with its error and the others go on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from methods import SPARSE, mergekit_grid, prepare_row, run_learned, run_mergekit, score  # benchmarks/ is on sys.path
from scale import Sampler, status

REPO = Path(__file__).resolve().parents[1]
LEARNED = ("convex", "task-vectors", *SPARSE)
MIB = 2**20


def jobs(k: int, budget: int) -> list[dict[str, Any]]:
    """The runs to measure: one scoring of the base without a merge (``spsa-mix eval``'s code
    on the validation half, as :func:`methods.score`: what reading the data and a forward per
    batch hold), mergekit's methods at their defaults (``methods.py``'s grid, the entries it
    lists as defaults), then the learned spaces at ``budget``.

    >>> [j["label"] for j in jobs(3, 100)][:3]
    ['spsa-mix eval of the base (no merge)', 'mergekit linear', 'mergekit model_stock']
    >>> jobs(3, 100)[-1]["label"]
    'spsa_mix della_linear, budget 100'
    """
    out: list[dict[str, Any]] = [{"tool": "eval", "label": "spsa-mix eval of the base (no merge)"}]
    for label, method, shared, per in mergekit_grid(k):
        if "(defaults)" in label or label in ("linear", "model_stock"):
            out.append({"tool": "mergekit", "label": f"mergekit {label}", "method": method, "shared": shared,
                        "per": per})
    for space in LEARNED:
        out.append({"tool": "spsa_mix", "label": f"spsa_mix {space}, budget {budget}", "space": space,
                    "budget": budget})
    return out


# ---------------------------------------------------------------------------- the child
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one merge in this (fresh) process; its baseline after the imports, the sampled
    peaks during the merge and its seconds."""
    import gc

    import torch

    torch.set_num_threads(1)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  # spsa_mix's merge draws loss.png
    import mergekit.config  # noqa: F401
    import mergekit.merge  # noqa: F401
    import mergekit.options  # noqa: F401
    from transformers import AutoTokenizer

    import spsa_mix.blend  # noqa: F401
    import spsa_mix.data.files  # noqa: F401
    import spsa_mix.merge.run  # noqa: F401
    from spsa_mix.blend.sources.hub import architecture_class, read_config

    row, job, out = spec["row"], spec["job"], Path(spec["out"])
    architecture_class(read_config(row["base"], "base"))
    AutoTokenizer.from_pretrained(row["base"], local_files_only=True)
    gc.collect()
    baseline = status()
    start = time.perf_counter()
    with Sampler(period=0.002) as sampler:
        if job["tool"] == "mergekit":
            run_mergekit(row, job["method"], job["shared"], job["per"], out, seed=spec["seed"])
        elif job["tool"] == "eval":
            score(row, Path(row["base"]), "val")
        else:
            run_learned(row, job["space"], job["budget"], spec["seed"], "fixed", out)
    return {"seconds": time.perf_counter() - start, "baseline": baseline, "peak": sampler.peak}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """:func:`worker` in a fresh interpreter (one thread); its record, or ``{"error": ...}``."""
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(spec)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with Sampler(proc.pid) as whole:  # the child's whole life, imports included: a cross-check
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        tail = [line for line in stderr.strip().splitlines() if line.strip()][-1:] or [f"exit {proc.returncode}"]
        return {"error": tail[0][:300]}
    record = json.loads(stdout.strip().splitlines()[-1])
    record["process_peak"] = whole.peak
    return record


# ---------------------------------------------------------------------------- the report
def _mib(value: float) -> str:
    return f"{value / MIB:.1f}"


def render(results: dict[str, Any]) -> str:
    """The markdown report of a results file: one line per merge (the median over its runs).

    >>> runs = [{"label": "mergekit linear", "seed": s, "seconds": 0.5, "baseline": {"RssAnon": 100 * 2**20,
    ...          "RssFile": 50 * 2**20}, "peak": {"RssAnon": (110 + s) * 2**20, "RssFile": 60 * 2**20}}
    ...         for s in range(3)] + [{"label": "spsa_mix ties, budget 100", "seed": 0, "error": "boom"}]
    >>> text = render({"command": "c", "machine": "m", "expert_mib": 0.5, "k": 3, "budget": 100, "runs": runs})
    >>> [line for line in text.splitlines() if line.startswith("| mergekit")]
    ['| mergekit linear | 3 | 100.0 | 111.0 | 11.0 (10.0 to 12.0) | 60.0 | 0.50 |']
    >>> text.splitlines()[-1]
    '- spsa_mix ties, budget 100 (seed 0) failed: boom'
    """
    lines = ["# Peak memory of each merge method, a fresh process per merge", "",
             f"`{results['command']}`; {results['machine']}; every figure from the runs in the JSON beside this file.",
             "",
             f"The `lm` example's {results['k']} experts ({results['expert_mib']:.2f} MiB of weights each); one merge "
             "per fresh process, its memory sampled every 2 ms; MiB, the median over the runs (seeds), the range of "
             "the peak above the runtime in brackets; the runtime is the process after importing PyTorch, "
             "transformers, matplotlib, mergekit and spsa_mix, before any expert is read:", "",
             "| merge | runs | runtime RssAnon | peak RssAnon | peak RssAnon above the runtime | peak RssFile | "
             "merge time (s) |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by_label: dict[str, list[dict[str, Any]]] = {}
    if "budget" in results:  # the order of the jobs, whatever order they ran in
        by_label = {j["label"]: [] for j in jobs(results["k"], results["budget"])}
    for r in results["runs"]:
        by_label.setdefault(r["label"], [])
        if "error" not in r:
            by_label[r["label"]].append(r)
    for label, runs in by_label.items():
        if not runs:
            continue
        above = [r["peak"]["RssAnon"] - r["baseline"]["RssAnon"] for r in runs]
        med = statistics.median
        lines.append(f"| {label} | {len(runs)} | {_mib(med(r['baseline']['RssAnon'] for r in runs))} | "
                     f"{_mib(med(r['peak']['RssAnon'] for r in runs))} | {_mib(med(above))} "
                     f"({_mib(min(above))} to {_mib(max(above))}) | {_mib(med(r['peak']['RssFile'] for r in runs))} | "
                     f"{med(r['seconds'] for r in runs):.2f} |")
    failed = [r for r in results["runs"] if "error" in r]
    if failed:
        lines += ["", "Runs that failed (recorded, the others went on):", ""]
        lines += [f"- {r['label']} (seed {r['seed']}) failed: {r['error']}" for r in failed]
    return "\n".join(lines)


def _write_report(results: dict[str, Any], output: Path) -> None:
    output.with_suffix(".md").write_text(render(results) + "\n")


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/methods_memory.json"))
    ap.add_argument("--cache", type=Path, default=Path("spsa_mix_cache/methods"),
                    help="experts (shared with methods.py) and outputs")
    ap.add_argument("--repeats", type=int, default=3, help="runs of each merge (seeds 0, 1, ...)")
    ap.add_argument("--budget", type=int, default=100, help="evaluations of each learned space")
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from --output")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.repeats < 1:
        ap.error(f"--repeats must be at least 1, but got {args.repeats}")
    if args.budget < 1:
        ap.error(f"--budget must be at least 1, but got {args.budget}")
    if args.output.suffix != ".json":
        ap.error(f"--output must be a .json file (the .md goes beside it), but got {str(args.output)!r}")
    if args.render:
        if not args.output.is_file():
            ap.error(f"--render reads --output, which does not exist: {str(args.output)!r}")
        _write_report(json.loads(args.output.read_text()), args.output)
        return 0
    from spsa_mix.io import check_outputs, write_json

    try:
        check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md")})
    except ValueError as e:
        ap.error(str(e))
    try:
        import mergekit.merge  # noqa: F401
    except ImportError:
        print("methods_memory.py: mergekit is not installed (pip install -e '.[mergekit]')", file=sys.stderr)
        return 2
    import torch

    row = prepare_row("lm", args.cache)
    assert row is not None  # only the resnet row can be missing
    from spsa_mix.blend.sources.checkpoints import open_checkpoint

    first = open_checkpoint(row["experts"][0], label="experts[0]")
    expert_bytes = sum(i.numel * torch.empty((), dtype=i.dtype).element_size() for i in first.infos.values())
    todo = jobs(len(row["experts"]), args.budget)
    results: dict[str, Any] = {
        "command": " ".join(["python benchmarks/methods_memory.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread, "
                   "a machine shared with other work",
        "k": len(row["experts"]), "expert_mib": expert_bytes / MIB, "budget": args.budget,
        "experts": row["experts"], "base": row["base"], "runs": [], "status": "running"}
    work = args.cache / "memory"
    for repeat in range(args.repeats):
        order = list(todo)
        random.Random(repeat).shuffle(order)
        for job in order:
            out = work / job["label"].replace(" ", "_").replace(",", "").replace("(", "").replace(")", "")
            shutil.rmtree(out, ignore_errors=True)
            record = run_child({"row": row, "job": job, "out": str(out), "seed": repeat})
            results["runs"].append({"label": job["label"], "seed": repeat, **record})
            if "error" in record:
                print(f"{job['label']} seed {repeat}: FAILED {record['error']}", file=sys.stderr, flush=True)
            else:
                print(f"{job['label']} seed {repeat}: peak RssAnon {_mib(record['peak']['RssAnon'])} MiB "
                      f"(runtime {_mib(record['baseline']['RssAnon'])}), {record['seconds']:.2f} s",
                      file=sys.stderr, flush=True)
            write_json(results, args.output, indent=1)
            shutil.rmtree(out, ignore_errors=True)
    results["status"] = "complete"
    write_json(results, args.output, indent=1)
    _write_report(results, args.output)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
