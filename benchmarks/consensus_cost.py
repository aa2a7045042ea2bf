"""What a probe costs when TIES' sign consensus is fixed (one blend) or recomputed (``consensus="per-probe"``).

A model of ``P`` parameters (a stack of square linear layers, float32, or bf16 with
``--dtype bfloat16``), K experts and a base (random perturbations), one example per call so
that the forward is small beside the blend; each objective call scores ``2`` probes (one
SPSA step). The spaces are timed in interleaved rounds (fixed, per-probe, and the plain
``task-vectors`` space as the reference), the median of ``--rounds`` rounds reported, on one
thread. Writes ``--output`` (JSON) and its ``.md``::

    python benchmarks/consensus_cost.py --output benchmarks/results/consensus_cost.json
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def build(width: int, layers: int, k: int, dtype: Any, seed: int = 0) -> tuple[Any, list[Any], Any]:
    import torch

    def net() -> torch.nn.Module:
        return torch.nn.Sequential(*[torch.nn.Linear(width, width, bias=False) for _ in range(layers)]).to(dtype)

    torch.manual_seed(seed)
    base = net()
    experts = []
    for _ in range(k):
        e = net()
        e.load_state_dict({n: v + 0.01 * torch.randn_like(v) for n, v in base.state_dict().items()})
        experts.append(e)
    return net, experts, base


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/consensus_cost.json"))
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--layers", nargs="+", type=int, default=[1, 4])
    ap.add_argument("--k", nargs="+", type=int, default=[3, 8])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)
    import torch

    from spsa_mix.blend import BlendedObjective
    from spsa_mix.blend.methods.space import TaskVectorMethod
    from spsa_mix.io import check_outputs, write_json

    check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md")})
    torch.set_num_threads(1)
    dtype = getattr(torch, args.dtype)
    rows = []
    for layers in args.layers:
        for k in args.k:
            net, experts, base = build(args.width, layers, k, dtype)
            x = torch.randn(1, args.width, dtype=dtype)
            data = (x, torch.zeros(1, args.width, dtype=dtype))
            spaces = {"task-vectors": "task-vectors",
                      "ties, consensus fixed": TaskVectorMethod("ties", {"density": 0.5}),
                      "ties, consensus per probe": TaskVectorMethod("ties", {"density": 0.5}, consensus="per-probe")}
            objs = {name: BlendedObjective(net(), experts, base=base, space=space, data=data, device="cpu",
                                           loss_fn=torch.nn.functional.mse_loss, batched=False)
                    for name, space in spaces.items()}
            rng = np.random.default_rng(0)
            times: dict[str, list[float]] = {name: [] for name in objs}
            for _ in range(args.rounds):
                points = rng.dirichlet(np.ones(k) * 5, size=2)
                for name, obj in objs.items():  # interleaved: the machine's load hits every space alike
                    start = time.perf_counter()
                    obj(points)
                    times[name].append(time.perf_counter() - start)
            params = layers * args.width * args.width
            row = {"parameters": params, "k": k, "dtype": args.dtype,
                   "ms_per_step": {n: 1000 * float(np.median(t)) for n, t in times.items()}}
            row["per_probe_over_fixed"] = row["ms_per_step"]["ties, consensus per probe"] / \
                row["ms_per_step"]["ties, consensus fixed"]
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    results = {"command": "python benchmarks/consensus_cost.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread "
                          "(shared machine: medians of interleaved rounds)", "rows": rows}
    write_json(results, args.output, indent=1)
    lines = ["| parameters | K | task-vectors (ms/step) | ties, fixed (ms/step) | ties, per probe (ms/step) | "
             "per probe / fixed |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        t = r["ms_per_step"]
        lines.append(f"| {r['parameters']:,} | {r['k']} | {t['task-vectors']:.1f} | {t['ties, consensus fixed']:.1f} | "
                     f"{t['ties, consensus per probe']:.1f} | {r['per_probe_over_fixed']:.2f} |")
    text = f"`{results['command']}`; {results['machine']}; {args.dtype}; 2 probes a step.\n\n" + "\n".join(lines) + "\n"
    args.output.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
