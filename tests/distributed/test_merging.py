"""``spsa-mix merge`` under torchrun: the same merge as one process, written once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spsa_mix.distributed import DistributedContext, Layout, PeerError, ThreadWorld
from spsa_mix.distributed.merging import MergeRanks

ROOT = Path(__file__).resolve().parents[2]


def _ranks(comm) -> MergeRanks:
    layout = Layout(world_size=comm.world_size, rank=comm.rank)
    return MergeRanks(DistributedContext(layout, comm.rank, torch.device("cpu"), "threads", 60.0, comm))


def test_the_validation_loss_is_rank_zeros_on_every_rank():
    calls = []

    def rank_main(comm):
        ranks = _ranks(comm)
        same = ranks.same(lambda x: calls.append(comm.rank) or 10.0 * comm.rank + float(x))
        return same(1.5), ranks.is_writer

    assert ThreadWorld(3).run(rank_main) == [(1.5, True), (1.5, False), (1.5, False)]
    assert calls == [0]  # computed once


def test_a_failing_validation_on_rank_zero_stops_every_rank():
    def rank_main(comm):
        return _ranks(comm).same(lambda x: 1 / 0)(0.0)

    e0, e1 = ThreadWorld(2).run(rank_main, return_exceptions=True)
    assert isinstance(e0, ZeroDivisionError)
    assert isinstance(e1, PeerError) and "validation objective raised on rank 0: ZeroDivisionError" in str(e1)


def test_one_gpu_for_every_rank_is_refused():
    env = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    with pytest.raises(ValueError, match=r"device 'cuda:0' under torchrun puts every rank on one GPU"):
        MergeRanks.start("cuda:0", env=env)
    assert MergeRanks.start("cuda:0", env={}).world_size == 1


def test_torchrun_merge_is_the_one_process_merge_and_writes_once(tmp_path):
    pytest.importorskip("safetensors")
    from spsa_mix.merge.demo import build_demo

    build_demo("vision", tmp_path / "build" / "vision")
    shutil.copy(ROOT / "examples" / "merge" / "vision.yaml", tmp_path / "vision.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = ["merge", str(tmp_path / "vision.yaml"), "--budget", "31", "--select", "learned", "--no-progress"]
    from spsa_mix.cli import main

    assert main([*args, "--output", str(tmp_path / "one")]) == 0  # one process: this one
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "spsa_mix", *args, "--output", str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| learned (spsa)") == 1 and done.stdout.count("Wrote ") == 1  # rank 0 alone prints
    out = {name: json.loads((tmp_path / name / "recipe.json").read_text()) for name in ("one", "two")}
    one, two = out["one"], out["two"]
    assert (one["learned"]["nfev"], one["learned"]["nit"]) == (two["learned"]["nfev"], two["learned"]["nit"])
    # 64 images a batch on two ranks: the same search to float32 rounding of the shards' mean losses
    np.testing.assert_allclose(two["alpha"], one["alpha"], atol=1e-6)  # measured 5e-9
    assert two["scale"] == pytest.approx(one["scale"], abs=1e-6)


def test_ranks_that_read_other_data_are_refused_on_every_rank():
    from spsa_mix.data.files import TensorData

    def rank_main(comm):
        x = torch.zeros(4, 2) + (comm.rank == 2)  # rank 2 reads other examples
        _ranks(comm).check_same_data(TensorData("t", x, torch.arange(4)))

    errors = ThreadWorld(3).run(rank_main, return_exceptions=True)
    assert all(isinstance(e, ValueError) and "the data differs across ranks: rank 2 read other examples than rank 0"
               in str(e) for e in errors), errors

    def same(comm):
        return _ranks(comm).check_same_data(TensorData("t", torch.zeros(4, 2), torch.arange(4)))

    assert ThreadWorld(2).run(same) == [None, None]
