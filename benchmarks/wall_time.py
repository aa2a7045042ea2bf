"""Wall time of a ``spsa-mix experiment`` command, this code against another checkout, side by side.

The same command runs under two checkouts of the package, ``new`` (this repository) and
``old`` (``--baseline``: e.g. a ``git worktree`` of the code before a change), alternately:
each of ``--rounds`` rounds runs both, in an order that alternates from round to round, so
that a change of the machine's load falls on both alike. Each run is
``python -m spsa_mix <command> --output <run>.json`` with the checkout as the working
directory (its package is imported first) and a fresh output; give the command a
``--cache-dir`` that already holds the experts to time the runs with the experts cached, or
pass ``--fresh-cache`` to give every run an empty cache of its own (the experts trained in
each run, as on a first run).

Reported: the wall time and the CPU time (user + system, of the child process) of each run;
per round the ratio new / old of both, and their median and range over rounds; and how the
results differ: every run's accuracies (prior and after each fine-tuning epoch), test
losses, training losses and alpha, as the largest absolute difference between the two
codes, whether they are equal bit for bit, and whether they are within the tolerances that
``tests/experiment/test_reproduce.py`` (and the README) state for a change of numerics.

``--extra LABEL=JSON`` compares another results file of the same command with the old code's
as well (e.g. the old code run with its kernels held to AVX2, ``ATEN_CPU_CAPABILITY=avx2``:
how far a change of rounding alone moves the results); ``--reuse`` takes the rounds from an
existing ``--output`` instead of running them again (to add an ``--extra``).

Writes the JSON (``--output``) and a markdown summary beside it (same name, ``.md``).

Usage::

    git worktree add --detach ../spsa_mix-old <commit>
    python benchmarks/wall_time.py --baseline ../spsa_mix-old --rounds 3 \\
        --output benchmarks/results/wall_time_digits.json -- experiment --no-progress --cache-dir /tmp/cache

Dependencies: this package and its test-suite's reproduction checks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="checkout of the code to compare with ('old')")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running both codes once (default 3)")
    p.add_argument("--python", default=sys.executable, help="interpreter (default: this one)")
    p.add_argument("--fresh-cache", action="store_true",
                   help="give every run an empty --cache-dir of its own (experts trained in each run)")
    p.add_argument("--work", type=Path, default=None, help="folder for the runs' outputs (default: a temporary one)")
    p.add_argument("--extra", action="append", default=[], metavar="LABEL=JSON",
                   help="another results file of the command, compared with the old code's too (repeatable)")
    p.add_argument("--reuse", action="store_true", help="take the rounds from the existing --output, run nothing")
    p.add_argument("--note", default="", help="free text stored in the JSON (e.g. the machine's load)")
    p.add_argument("--output", type=Path, required=True, help="JSON path; the markdown goes beside it")
    p.add_argument("command", nargs=argparse.REMAINDER, help="after --: the spsa-mix command and its arguments")
    args = p.parse_args(argv)
    args.command = [a for a in args.command if a != "--"] or ["experiment", "--no-progress"]
    if args.rounds < 1:
        p.error(f"--rounds must be at least 1, but got {args.rounds}")
    return args


# ---------------------------------------------------------------------- running
def run_once(python: str, checkout: Path, command: list[str], output: Path) -> dict[str, Any]:
    """Run ``python -m spsa_mix <command> --output <output>`` in ``checkout``; wall and CPU seconds."""
    argv = [python, "-m", "spsa_mix", *command, "--output", str(output)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=checkout, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} in {checkout} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "output": str(output), "load_average": os.getloadavg()}


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


# ---------------------------------------------------------------------- results
def _runs(res: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(r["config"], r["seed"]): r for r in res["runs"]}


def _max_abs(a: Any, b: Any) -> float:
    import numpy as np

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(x - y))) if x.size else 0.0


def differences(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The largest absolute differences between two results files of one configuration."""
    out: dict[str, Any] = {
        "expert_test_accuracy": _max_abs([e["test_accuracy"] for e in new["experts"]],
                                         [e["test_accuracy"] for e in old["experts"]]),
        "expert_holdout_accuracy": _max_abs([e["holdout_accuracy"] for e in new["experts"]],
                                            [e["holdout_accuracy"] for e in old["experts"]]),
    }
    mine, theirs = _runs(new), _runs(old)
    if mine.keys() != theirs.keys():
        raise ValueError(f"the two runs hold different (configuration, seed) pairs: {sorted(mine.keys() ^ theirs.keys())}")
    per_config: dict[str, dict[str, float]] = {}
    for key, run in mine.items():
        other = theirs[key]
        row = per_config.setdefault(key[0], {f: 0.0 for f in ("test_accuracy", "test_loss", "train_loss", "alpha")})
        for field in row:
            row[field] = max(row[field], _max_abs(run[field], other[field]))
    out["per_config"] = per_config
    for field in ("test_accuracy", "test_loss", "train_loss", "alpha"):
        out[field] = max(row[field] for row in per_config.values())
    out["bit_identical_runs"] = sum(
        all(run[f] == theirs[k][f] for f in ("alpha", "test_accuracy", "test_loss", "train_loss"))
        for k, run in mine.items())
    out["runs"] = len(mine)
    return out


def tolerance_check(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """The reproduction test's checks (``tests/experiment/test_reproduce.py``): exact parts,
    bits, and the tolerances stated for other numerics."""
    sys.path.insert(0, str(ROOT))
    from tests.experiment.test_reproduce import check_bits, check_exact_parts, check_within_tolerances

    verdict: dict[str, Any] = {}
    for name, check in (("exact_parts", check_exact_parts), ("bits", check_bits),
                        ("within_tolerances", check_within_tolerances)):
        try:
            check(new, old)
            verdict[name] = True
        except AssertionError as e:
            verdict[name] = f"fails: {str(e).splitlines()[0][:200] if str(e) else 'assertion'}"
    return verdict


# ---------------------------------------------------------------------- report
def render(doc: dict[str, Any]) -> str:
    lines = [f"# Wall time of `spsa-mix {shlex.join(doc['command'])}`: this code against `{doc['baseline']}`", "",
             f"Command: `{doc['invocation']}`. {doc['rounds']} rounds, each running both codes once, in an order "
             f"that alternates by round; {doc['cpu_count']} cores; torch threads as the command sets them."
             + (f" Note: {doc['note']}" if doc["note"] else ""), "",
             "| round | order | old wall s | new wall s | new/old wall | old CPU s | new CPU s | new/old CPU |",
             "|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(doc["round_results"]):
        lines.append(f"| {i + 1} | {' then '.join(r['order'])} | {r['old']['wall_s']:.1f} | {r['new']['wall_s']:.1f} | "
                     f"{r['wall_ratio']:.2f} | {r['old']['cpu_s']:.1f} | {r['new']['cpu_s']:.1f} | {r['cpu_ratio']:.2f} |")
    w, c = doc["wall_ratio"], doc["cpu_ratio"]
    lines += ["", f"- new/old wall time: median {w['median']:.2f} (range {w['min']:.2f}-{w['max']:.2f} over rounds); "
              f"CPU time: median {c['median']:.2f} (range {c['min']:.2f}-{c['max']:.2f})"]
    d = doc["differences"]
    lines.append(f"- results, new against old (round 1): {d['bit_identical_runs']} of {d['runs']} runs bit-identical; "
                 f"largest |difference|: expert test accuracy {d['expert_test_accuracy']:.4f}, run test accuracy (any "
                 f"epoch) {d['test_accuracy']:.4f}, test loss {d['test_loss']:.2e}, training loss {d['train_loss']:.2e}, "
                 f"alpha {d['alpha']:.2e}")
    checks = doc["checks"]
    lines.append("- the reproduction test's checks: " + "; ".join(
        f"{name.replace('_', ' ')}: {'pass' if ok is True else ok}" for name, ok in checks.items()))
    for extra in doc.get("extras", []):
        d, checks = extra["differences"], extra["checks"]
        lines.append(f"- {extra['label']} against old (round 1): {d['bit_identical_runs']} of {d['runs']} runs "
                     f"bit-identical; largest |difference|: expert test accuracy {d['expert_test_accuracy']:.4f}, run "
                     f"test accuracy (any epoch) {d['test_accuracy']:.4f}, test loss {d['test_loss']:.2e}, training "
                     f"loss {d['train_loss']:.2e}, alpha {d['alpha']:.2e}; the checks: " + "; ".join(
                         f"{name.replace('_', ' ')}: {'pass' if ok is True else ok}" for name, ok in checks.items()))
    labels = ["new"] + [e["label"] for e in doc.get("extras", [])]
    tables = [doc["differences"]["per_config"]] + [e["differences"]["per_config"] for e in doc.get("extras", [])]
    lines += ["", "Largest |difference| from the old code, per configuration (test accuracy at any epoch, test loss, "
              "training loss, alpha):", "",
              "| configuration | " + " | ".join(f"{label}: {what}" for label in labels
                                              for what in ("accuracy", "test loss", "train loss", "alpha")) + " |",
              "|---|" + "---|" * (4 * len(labels))]
    for name in tables[0]:
        cells = [f"{t[name]['test_accuracy']:.4f} | {t[name]['test_loss']:.2e} | {t[name]['train_loss']:.2e} | "
                 f"{t[name]['alpha']:.2e}" for t in tables]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from spsa_mix.io import atomic_write_text, write_json

    baseline = args.baseline.resolve()
    work = args.work or Path(tempfile.mkdtemp(prefix="wall_time_"))
    work.mkdir(parents=True, exist_ok=True)
    checkouts = {"old": baseline, "new": ROOT}
    rounds = []
    previous = json.loads(args.output.read_text()) if args.reuse else None
    for r in range(args.rounds if previous is None else 0):
        order = ["old", "new"] if r % 2 == 0 else ["new", "old"]
        results: dict[str, Any] = {"order": order}
        for label in order:
            print(f"round {r + 1}: {label} ...", file=sys.stderr, flush=True)
            command = args.command + (["--cache-dir", str(work / f"{label}_{r + 1}_cache")] if args.fresh_cache else [])
            results[label] = run_once(args.python, checkouts[label], command, work / f"{label}_{r + 1}.json")
            print(f"  {results[label]['wall_s']:.1f} s wall, {results[label]['cpu_s']:.1f} s CPU", file=sys.stderr)
        results["wall_ratio"] = results["new"]["wall_s"] / results["old"]["wall_s"]
        results["cpu_ratio"] = results["new"]["cpu_s"] / results["old"]["cpu_s"]
        rounds.append(results)
    if previous is not None:
        rounds = previous["round_results"]
    new = json.loads(Path(rounds[0]["new"]["output"]).read_text())
    old = json.loads(Path(rounds[0]["old"]["output"]).read_text())
    extras = []
    for item in args.extra:
        label, sep, path = item.rpartition("=")
        if not sep:
            raise SystemExit(f"--extra must be LABEL=JSON, but got {item!r}")
        other = json.loads(Path(path).read_text())
        extras.append({"label": label, "path": path, "environment": other.get("environment"),
                       "differences": differences(other, old), "checks": tolerance_check(other, old)})
    doc = {
        "benchmark": "wall_time", "command": args.command, "baseline": str(args.baseline),
        "invocation": previous["invocation"] if previous is not None else
        "python benchmarks/wall_time.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "rounds": len(rounds), "cpu_count": os.cpu_count(), "python": platform.python_version(),
        "note": args.note or (previous["note"] if previous is not None else ""),
        "round_results": rounds,
        "wall_ratio": _spread([r["wall_ratio"] for r in rounds]), "cpu_ratio": _spread([r["cpu_ratio"] for r in rounds]),
        "differences": differences(new, old), "checks": tolerance_check(new, old), "extras": extras,
        "new_timings": new.get("timings"), "old_timings": old.get("timings"),
    }
    write_json(doc, args.output, indent=2)
    md = render(doc)
    atomic_write_text(args.output.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
