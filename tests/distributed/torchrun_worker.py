"""One rank of the torchrun tests: run the scenarios named on the command line, write
``<outdir>/rank<R>.json``.

    torchrun --nproc-per-node 2 tests/distributed/torchrun_worker.py OUTDIR spsa-data spsa-probe ...

``kill-at-2`` instead makes the last rank kill itself (SIGKILL) at its second call.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch

from spsa_mix.distributed import init_distributed
from spsa_mix.io import write_json
from tests.distributed.problems import SCENARIOS, run_scenario


def kill_at_second_call(ctx) -> None:
    last = ctx.rank == ctx.world_size - 1
    calls = {"n": 0}

    def objective(points: np.ndarray) -> np.ndarray:
        calls["n"] += 1
        if last and calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return (points ** 2).sum(axis=1)

    obj = ctx.wrap(objective, weight=1.0)
    for _ in range(5):
        obj(np.full((2, 3), 1 / 3))


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    outdir, names = Path(argv[0]), argv[1:]
    timeout = float(os.environ.get("SPSA_MIX_TEST_TIMEOUT", "60"))
    ctx = init_distributed("cpu", timeout=timeout)
    if names == ["kill-at-2"]:
        ctx.communicator.grace = 1.0  # the dead rank never reports: wait one second for it, not five
        kill_at_second_call(ctx)
        return 0
    results = {}
    for name in names:
        if SCENARIOS[name].get("world", ctx.world_size) != ctx.world_size:
            continue
        results[name] = run_scenario(name, ctx.communicator, world_size=ctx.world_size, rank=ctx.rank, workdir=outdir)
    write_json(results, outdir / f"rank{ctx.rank}.json")
    if "hang" in names:  # the group is broken: no closing barrier, just tear it down
        torch.distributed.destroy_process_group()
    else:
        ctx.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
