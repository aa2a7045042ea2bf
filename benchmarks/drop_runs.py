"""Drop the runs of some configurations from an experiment's results file, so that running its
command again recomputes them and reuses the others.

A rerun of ``spsa-mix experiment`` into the same file reuses every finished run whose settings
are unchanged (:mod:`spsa_mix.experiment.pipeline`); a change of the library that moves only
some rows (the default start rule moves ``spsa-defaults`` and ``task-vectors``) is recorded
by dropping those rows and running the file's command again::

    python benchmarks/drop_runs.py benchmarks/results/glue_digits_small_cnn.json spsa-defaults task-vectors
    bash benchmarks/glue_fashion_mnist.sh digits      # the file's command: the dropped rows run again

The file is rewritten atomically; its report and figure are rewritten by the rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from spsa_mix.io import write_json


def drop_runs(path: Path, configs: list[str]) -> int:
    """Remove the runs (and the kept previous runs) of ``configs`` from the results file at
    ``path``; returns how many were removed."""
    results = json.loads(path.read_text())
    if not isinstance(results, dict) or "runs" not in results:
        raise ValueError(f"{path} is not a results file of spsa-mix experiment (no 'runs')")
    known = {r.get("config") for r in results["runs"]}
    unknown = sorted(set(configs) - known)
    if unknown:
        raise ValueError(f"{path} has no runs of {unknown}; its configurations are {sorted(known)}")
    removed = 0
    for key in ("runs", "previous_runs"):
        kept = [r for r in results.get(key) or [] if r.get("config") not in configs]
        removed += len(results.get(key) or []) - len(kept)
        if key in results:
            results[key] = kept
    results["reused_runs"] = []
    write_json(results, path, indent=1)
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="an experiment's JSON results file")
    ap.add_argument("configs", nargs="+", help="the configurations whose runs to drop")
    args = ap.parse_args(argv)
    if not args.results.is_file():
        print(f"drop_runs.py: no such file {str(args.results)!r}", file=sys.stderr)
        return 2
    try:
        n = drop_runs(args.results, args.configs)
    except ValueError as e:
        print(f"drop_runs.py: {e}", file=sys.stderr)
        return 2
    print(f"dropped {n} runs of {', '.join(args.configs)} from {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
