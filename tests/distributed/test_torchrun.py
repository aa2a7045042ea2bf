"""Real ranks: ``torchrun`` with 2 and 3 CPU processes on gloo.

Each world size is one ``torchrun`` job that runs every scenario of
``tests/distributed/problems.py`` (a few steps each, tiny networks, one thread per
process; about ten seconds a job here); the tests compare what the ranks returned with
each other and with one process on the same global minibatches. Two more jobs kill a rank.
Every subprocess has a timeout, so nothing here can hang the suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .problems import SCENARIOS, reference

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "distributed" / "torchrun_worker.py"
JOB_TIMEOUT_S = 300  # a bound on a job that should take seconds; a hang fails the test instead
WORLD_SIZES = (2, 3)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    return env


def torchrun(nproc: int, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node nproc WORKER args``."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
           "--max-restarts", "0", str(WORKER), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env or _env(), capture_output=True, text=True, timeout=JOB_TIMEOUT_S)


@pytest.fixture(scope="module")
def jobs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[dict[str, Any]]]:
    """Every scenario on 2 and 3 ranks: ``jobs[world_size][rank][scenario]``."""
    out: dict[int, list[dict[str, Any]]] = {}
    for world in WORLD_SIZES:
        outdir = tmp_path_factory.mktemp(f"torchrun{world}")
        done = torchrun(world, str(outdir), *SCENARIOS)
        assert done.returncode == 0, done.stderr[-3000:]
        out[world] = [json.loads((outdir / f"rank{r}.json").read_text()) for r in range(world)]
        out[world][0]["__files__"] = sorted(p.name for p in outdir.iterdir())
    return out


def _same_on_every_rank(ranks: list[dict[str, Any]], name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    first = ranks[0][name]
    for r, result in enumerate(ranks[1:], start=1):
        for key in keys:
            assert result[name][key] == first[key], f"{name}: rank {r}'s {key} differs from rank 0's"
    return first


RUNS = ("spsa-data", "spsa-data-gather", "spsa-probe", "spsa-data-float64", "lm-data-float64", "forward-grad-data",
        "forward-grad-probe", "backprop-data", "optuna-probe")
TRAJECTORY = ("x", "fun", "nit", "nfev", "history_x", "history_loss", "bytes_sent", "collectives")


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", RUNS)
def test_every_rank_follows_the_same_trajectory_bit_for_bit(jobs, world, name):
    result = _same_on_every_rank(jobs[world], name, TRAJECTORY)
    assert "error" not in result and result["nit"] >= 3


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", ["spsa-probe", "forward-grad-probe", "optuna-probe"])
def test_probe_parallel_is_the_single_process_run_bit_for_bit(jobs, world, name):
    # each probe (or tangent, or point of a batch Optuna asks for) is scored by one rank
    # on the whole minibatch and sent as it is: the plain objective's numbers exactly
    got, ref = jobs[world][0][name], reference(name, world)
    for key in ("x", "fun", "nfev", "history_x", "history_loss"):
        assert got[key] == ref[key], key


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", ["spsa-data-gather", "forward-grad-data", "backprop-data", "lm-data-float64"])
def test_data_parallel_is_one_process_scoring_the_same_shards_bit_for_bit(jobs, world, name):
    # all-gather: the ranks' sums are added by math.fsum (correctly rounded, any order)
    got, ref = jobs[world][0][name], reference(name, world)
    for key in ("x", "fun", "history_x", "history_loss"):
        assert got[key] == ref[key], key


def test_all_reduce_over_two_ranks_is_exact_too(jobs):
    got, ref = jobs[2][0]["spsa-data"], reference("spsa-data", 2)
    assert got["history_x"] == ref["history_x"] and got["history_loss"] == ref["history_loss"]


def test_all_reduce_over_three_ranks_is_within_rounding_of_the_exact_sum(jobs):
    # gloo adds three ranks' float64 sums in its own order (not rank order): measured
    # equal here, or off by an ulp of the float64 loss at most
    got, ref = jobs[3][0]["spsa-data"], reference("spsa-data", 3)
    np.testing.assert_allclose(got["history_loss"], ref["history_loss"], rtol=1e-15, atol=0)
    np.testing.assert_allclose(got["history_x"], ref["history_x"], rtol=0, atol=1e-13)


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", ["spsa-data-float64", "lm-data-float64"])
def test_unequal_shards_are_weighted_by_what_they_hold(jobs, world, name):
    # 11 examples on 2 ranks (6, 5) and 3 ranks (4, 4, 3); 7 sequences with 1 to 5 scored
    # tokens each; float64 networks: the mean over the global minibatch to rounding
    got, ref = jobs[world][0][name], reference(name, world, plain=True)
    np.testing.assert_allclose(got["history_loss"], ref["history_loss"], rtol=1e-13, atol=0)
    np.testing.assert_allclose(got["history_x"], ref["history_x"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got["fun"], ref["fun"], rtol=1e-13)


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_a_divergent_rank_stops_every_rank_naming_it(jobs, world):
    for result in jobs[world]:
        d = result["divergence"]
        assert (d["error"], d["cause"], d["ranks"]) == ("ObjectiveError", "DivergenceError", [world - 1])
        assert f"rank {world - 1} differs from rank 0" in d["message"]


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_an_error_on_one_rank_stops_every_rank_at_the_same_call(jobs, world):
    *others, last = jobs[world]
    assert (last["peer-error"]["cause"], last["peer-error"]["message"].count("sabotaged on purpose")) == ("ValueError", 1)
    for result in others:
        e = result["peer-error"]
        assert (e["cause"], e["ranks"]) == ("PeerError", [world - 1])
        assert f"raised on rank {world - 1} at call 1" in e["message"] and "sabotaged on purpose" in e["message"]


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_a_nonfinite_loss_on_one_shard_stops_every_rank_cleanly_at_the_same_step(jobs, world):
    result = _same_on_every_rank(jobs[world], "nonfinite", ("x", "nit", "status"))
    assert (result["nit"], result["status"]) == (1, 3)  # Status.NONFINITE after the first step


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_rank_zero_alone_writes_the_checkpoint_and_every_rank_resumes_from_it(jobs, world):
    assert [r["checkpoint"]["wrote"] for r in jobs[world]] == [True] + [False] * (world - 1)
    assert "checkpoint.json" in jobs[world][0]["__files__"]
    ref = reference("checkpoint", world)["x"]
    for result in jobs[world]:
        c = result["checkpoint"]
        assert c["first_x"] + c["second_x"] == ref  # resumed = uninterrupted, bit for bit


def test_a_rank_that_stops_answering_makes_the_others_raise_within_the_timeout(jobs):
    hang = jobs[2][0]["hang"]
    assert (hang["cause"], hang["ranks"]) == ("RankFailureError", [1])
    assert "rank 1 did not answer within 1.5 s; it may have died or hung" in hang["message"]


def test_a_killed_rank_stops_the_torchrun_job_naming_it(tmp_path):
    done = torchrun(2, str(tmp_path), "kill-at-2")
    assert done.returncode != 0
    # torchrun's agent reports the dead rank (and stops the others); rank 0 may have raised first
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)\s*\n\s*exitcode\s*:\s*-9", done.stderr), done.stderr[-3000:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_killed_rank_makes_the_others_raise_naming_it_without_an_agent_to_stop_them(tmp_path):
    # as on another node: no torchrun agent here to stop rank 0, which must stop by itself
    port = _free_port()
    procs = []
    for rank in range(2):
        env = _env(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), SPSA_MIX_TEST_TIMEOUT="20")
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(tmp_path), "kill-at-2"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, err0 = procs[0].communicate(timeout=JOB_TIMEOUT_S)
        procs[1].communicate(timeout=JOB_TIMEOUT_S)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode == -signal.SIGKILL
    assert procs[0].returncode == 1
    assert "RankFailureError: spsa_mix.distributed: rank 1 did not answer" in err0, err0[-3000:]
