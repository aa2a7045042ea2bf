"""The ``lm`` example's experts merged for two target text mixes at once (README's table).

Builds what ``examples/merge/build_experts.py lm`` builds (kept if already there), runs
``spsa-mix merge examples/merge/lm_tasks.yaml`` (one target scored by the entropy of its
unlabeled text, one as a causal language model) into a temporary output, and writes its
summary table and recipe figures to ``--output`` (JSON) and its ``.md``::

    python benchmarks/multitask_lm.py    # about a minute on a CPU

Needs nothing outside the package (the data are generated).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "multitask_lm.json")
    ap.add_argument("--build", type=Path, default=ROOT / "examples" / "merge" / "build",
                    help="where the examples' experts are built (the config's build/ folder)")
    args = ap.parse_args(argv)
    import torch

    from spsa_mix.io import atomic_write_text, check_outputs, write_json
    from spsa_mix.merge.config import load_config
    from spsa_mix.merge.demo import build_demo
    from spsa_mix.merge.run import run_merge

    check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md")})
    torch.set_num_threads(1)
    build_demo("lm", args.build / "lm")
    config = ROOT / "examples" / "merge" / "lm_tasks.yaml"
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        text = config.read_text().replace("build/", f"{args.build}/")  # the config's paths, under --build
        cfg_path = Path(tmp) / "lm_tasks.yaml"
        cfg_path.write_text(text)
        cfg = load_config(cfg_path, {"output": str(Path(tmp) / "merged")})
        outcome = run_merge(cfg, progress=False, log=lambda line: print(line, file=sys.stderr))
    recipe = outcome.recipe
    results = {"command": "python benchmarks/multitask_lm.py", "config": "examples/merge/lm_tasks.yaml",
               "seconds": time.perf_counter() - t0, "table": outcome.table,
               **{k: recipe[k] for k in ("tasks", "written", "alpha", "uniform", "best_single", "learned", "metric")}}
    write_json(results, args.output, indent=1)
    atomic_write_text(args.output.with_suffix(".md"),
                      f"Command: `{results['command']}` ({results['seconds']:.0f} s): `spsa-mix merge "
                      f"examples/merge/lm_tasks.yaml`, its summary table (validation data of each target; "
                      f"mix_1_2's loss is the entropy, mix_3_4's the causal-LM loss).\n\n{outcome.table}\n")
    print(outcome.table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
