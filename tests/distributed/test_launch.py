"""Setting up from torchrun's environment: ranks, devices, backends, the single process."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.distributed import (
    DistributedObjective,
    LocalCommunicator,
    init_distributed,
    local_device,
    torchrun_env,
)


def test_torchrun_variables_are_read_and_checked():
    assert torchrun_env({}) is None
    assert torchrun_env({"WORLD_SIZE": "8", "RANK": "5", "LOCAL_RANK": "1"}) == (5, 8, 1)
    assert torchrun_env({"WORLD_SIZE": "2", "RANK": "1"}) == (1, 2, 0)
    with pytest.raises(ValueError, match=r"the environment variable RANK must be an integer >= 0 \(torchrun sets it\), "
                                         r"but got 'one'"):
        torchrun_env({"WORLD_SIZE": "2", "RANK": "one"})
    with pytest.raises(ValueError, match=r"WORLD_SIZE must be an integer >= 1"):
        torchrun_env({"WORLD_SIZE": "0", "RANK": "0"})


@pytest.mark.parametrize("device,available,want", [
    ("auto", True, "cuda:3"), ("auto", False, "cpu"), (None, True, "cuda:3"), ("cuda", True, "cuda:3"),
    ("cuda:0", True, "cuda:0"), ("cpu", True, "cpu"),
])
def test_each_process_takes_the_cuda_device_of_its_local_rank(device, available, want):
    assert local_device(device, 3, cuda_available=available, cuda_count=4) == torch.device(want)


def test_a_device_that_is_not_there_is_an_error():
    with pytest.raises(ValueError, match=r"device='cuda' but CUDA is not available"):
        local_device("cuda", 0, cuda_available=False)
    with pytest.raises(ValueError, match=r"LOCAL_RANK=4 needs CUDA device 4, but only 4 are visible"):
        local_device("auto", 4, cuda_available=True, cuda_count=4)
    with pytest.raises(ValueError, match=r"device must be 'auto', 'cpu', 'cuda' or a torch device, but got 'gpu'"):
        local_device("gpu", 0, cuda_available=False)


def test_without_torchrun_the_context_is_one_process():
    with init_distributed("cpu", env={}, probe_groups="all") as ctx:
        assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_writer) == (0, 1, None, True)
        assert isinstance(ctx.communicator, LocalCommunicator)
        obj = ctx.wrap(lambda p: p.sum(axis=1))
        assert isinstance(obj, DistributedObjective) and obj.layout.probe_groups == 1
        data = (torch.zeros(4, 2), torch.zeros(4))
        assert ctx.shard(data) is data
    with pytest.raises(ValueError, match=r"timeout must be"):
        init_distributed("cpu", env={}, timeout=0)


def test_a_group_the_caller_made_is_joined_and_left_to_the_caller():
    import numpy as np
    import torch.distributed as dist

    from spsa_mix.distributed import TorchCommunicator

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        ctx = init_distributed("cpu", env={})
        assert isinstance(ctx.communicator, TorchCommunicator) and ctx.backend == "gloo" and not ctx.owns_group
        obj = ctx.wrap(lambda p: (p ** 2).sum(axis=1), reduction="all-gather")
        assert obj(np.array([[3.0, 4.0]])).tolist() == [25.0]
        comm = ctx.communicator
        assert comm.all_reduce_sum(np.array([1.5]), what="x").tolist() == [1.5]
        assert comm.all_gather_object("a", what="x") == ["a"] and comm.bytes_sent > 0
        ctx.close()
        assert dist.is_initialized()  # not ours to destroy
    finally:
        dist.destroy_process_group()
