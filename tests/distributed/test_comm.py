"""The wire: which backend and device, the single-process and thread communicators."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.distributed import (
    LocalCommunicator,
    RankFailureError,
    ThreadWorld,
    TorchCommunicator,
    backend_for_device,
    resolve_communicator,
    wire_device,
)
from spsa_mix.distributed.comm import Communicator


@pytest.mark.parametrize("device,backend", [("cuda", "nccl"), ("cuda:3", "nccl"), (torch.device("cuda", 1), "nccl"),
                                            ("cpu", "gloo"), ("mps", "gloo")])
def test_nccl_is_chosen_for_cuda_devices_and_gloo_for_the_rest(device, backend):
    assert backend_for_device(device) == backend


@pytest.mark.parametrize("backend,device", [("nccl", "cuda:2"), ("NCCL", "cuda:2"), ("gloo", "cpu"), ("mpi", "cpu"),
                                            ("cpu:gloo,cuda:nccl", "cpu")])
def test_the_vectors_travel_on_the_device_the_backend_needs(backend, device):
    assert wire_device(backend, cuda_index=2) == torch.device(device)


def test_one_process_needs_no_wire():
    comm = resolve_communicator(None)
    assert isinstance(comm, LocalCommunicator) and isinstance(comm, Communicator)
    values = np.array([1.0, 2.0])
    out = comm.all_reduce_sum(values, what="x")
    out[0] = 5.0
    assert values[0] == 1.0 and comm.all_gather_object("a", what="x") == ["a"]


def test_a_process_group_needs_torch_distributed_initialised():
    with pytest.raises(ValueError, match=r"needs an initialised torch.distributed process group"):
        TorchCommunicator()
    with pytest.raises(ValueError, match=r"group=.* needs an initialised torch.distributed"):
        resolve_communicator(object())


def test_threads_sum_in_rank_order_and_gather_everything():
    world = ThreadWorld(3)

    def rank_main(comm):
        total = comm.all_reduce_sum(np.array([[1e16, 1.0, -1e16][comm.rank]]), what="x")[0]
        return float(total), comm.all_gather(np.array([comm.rank]), what="y")[:, 0].tolist(), \
            comm.all_gather_object({"r": comm.rank}, what="z")

    results = world.run(rank_main)
    assert results[0] == (0.0, [0.0, 1.0, 2.0], [{"r": 0}, {"r": 1}, {"r": 2}])  # (1e16 + 1) - 1e16 == 0
    assert results[0] == results[1] == results[2]


def test_a_thread_rank_that_does_not_come_is_named_after_the_timeout():
    def rank_main(comm):
        if comm.rank == 0:
            return comm.all_reduce_sum(np.zeros(1), what="the losses")
        import time

        time.sleep(1.0)
        return None

    e0, _ = ThreadWorld(2, timeout=0.2).run(rank_main, return_exceptions=True)
    assert isinstance(e0, RankFailureError) and e0.ranks == [1]
    assert "rank 1 did not answer within 0.2 s; the exchange of the losses failed on rank 0" in str(e0)
