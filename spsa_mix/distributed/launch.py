"""Start from ``torchrun``: the process group, the local device, the wrapper.

``torchrun --nproc-per-node N script.py`` (or ``python -m torch.distributed.run``) starts
``N`` processes per node with ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` set. :func:`init_distributed` reads them, picks the local device (CUDA
device ``LOCAL_RANK`` when CUDA is there, else the CPU), initialises the process group
with the backend for that device (NCCL for CUDA, gloo for the CPU) and the timeout, and
returns a :class:`DistributedContext` that wraps objectives, shards data and tells who
writes. Outside ``torchrun`` (no ``WORLD_SIZE``) it returns the context of a single
process, so the same script runs with and without the launcher::

    ctx = init_distributed(probe_groups=1)
    obj = ctx.wrap(BlendedObjective(model, experts, data=ctx.shard(loader), device=ctx.device))
    res = spsa_mix.minimize(obj, k=obj.k, vectorized=True, seed=0)   # same seed on every rank
    if ctx.is_writer:
        write_json(res, "result.json")
    ctx.close()

``examples/distributed_blend.py`` is that script, runnable on CPUs with
``torchrun --nproc-per-node 2 examples/distributed_blend.py``.

Example
-------
>>> ctx = init_distributed("cpu", env={})          # no torchrun variables: one process
>>> ctx.world_size, ctx.is_writer, ctx.backend, str(ctx.device)
(1, True, None, 'cpu')
>>> torchrun_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
(2, 4, 0)
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist

from spsa_mix.core.validation import check_positive
from spsa_mix.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    Communicator,
    LocalCommunicator,
    TorchCommunicator,
    backend_for_device,
)
from spsa_mix.distributed.layout import Layout
from spsa_mix.distributed.objective import DistributedObjective
from spsa_mix.distributed.shard import ShardedBatchSampler, shard_data

__all__ = ["DistributedContext", "init_distributed", "torchrun_env", "local_device"]

logger = logging.getLogger("spsa_mix")


def _env_int(env: Mapping[str, str], name: str, minimum: int) -> int:
    raw = env.get(name)
    try:
        value = int(raw) if raw is not None else None
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"the environment variable {name} must be an integer >= {minimum} "
                         f"(torchrun sets it), but got {raw!r}")
    return value


def torchrun_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from the variables ``torchrun`` sets, or ``None``
    when ``WORLD_SIZE`` is not set (not launched by ``torchrun``).

    >>> torchrun_env({})
    >>> torchrun_env({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0"})
    Traceback (most recent call last):
    ...
    ValueError: RANK must be in [0, 1] (WORLD_SIZE=2), but got 2
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return None
    world = _env_int(env, "WORLD_SIZE", 1)
    rank = _env_int(env, "RANK", 0)
    local_rank = _env_int(env, "LOCAL_RANK", 0) if "LOCAL_RANK" in env else 0
    if rank >= world:
        raise ValueError(f"RANK must be in [0, {world - 1}] (WORLD_SIZE={world}), but got {rank}")
    return rank, world, local_rank


def local_device(device: str | torch.device | None, local_rank: int, *, cuda_available: bool | None = None,
                 cuda_count: int | None = None) -> torch.device:
    """The device of the process with ``local_rank``: ``"auto"``/``None`` is CUDA device
    ``local_rank`` when CUDA is available, else the CPU; ``"cuda"`` is CUDA device
    ``local_rank``; anything else is taken as it is.

    >>> local_device("auto", 1, cuda_available=True, cuda_count=2), local_device(None, 1, cuda_available=False)
    (device(type='cuda', index=1), device(type='cpu'))
    >>> local_device("cuda", 2, cuda_available=True, cuda_count=2)
    Traceback (most recent call last):
    ...
    ValueError: LOCAL_RANK=2 needs CUDA device 2, but only 2 are visible; start at most 2 processes per node
    """
    available = torch.cuda.is_available() if cuda_available is None else cuda_available
    if device is None or (isinstance(device, str) and device == "auto"):
        device = "cuda" if available else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or a torch device, but got {device!r}") from e
    if dev.type == "cuda":
        if not available:
            raise ValueError(f"device={str(device)!r} but CUDA is not available")
        count = torch.cuda.device_count() if cuda_count is None else cuda_count
        if dev.index is None:
            if local_rank >= count:
                raise ValueError(f"LOCAL_RANK={local_rank} needs CUDA device {local_rank}, but only {count} are "
                                 f"visible; start at most {count} processes per node")
            dev = torch.device("cuda", local_rank)
    return dev


@dataclass
class DistributedContext:
    """What :func:`init_distributed` set up: this rank's place, device and wire."""

    layout: Layout
    local_rank: int
    device: torch.device
    backend: str | None
    timeout: float
    communicator: Communicator
    owns_group: bool = False

    @property
    def rank(self) -> int:
        """This rank."""
        return self.layout.rank

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return self.layout.world_size

    @property
    def is_writer(self) -> bool:
        """Whether this rank writes results and checkpoints (rank 0)."""
        return self.layout.rank == 0

    def wrap(self, objective: Any, **options: Any) -> DistributedObjective:
        """``DistributedObjective(objective, probe_groups=..., group=...)`` on this context's
        layout and wire; ``options`` are its other keyword arguments."""
        return DistributedObjective(objective, probe_groups=self.layout.probe_groups, group=self.communicator,
                                    timeout=self.timeout, **options)

    def shard(self, data: Any) -> Any:
        """This rank's shard of ``data`` (:func:`~spsa_mix.distributed.shard.shard_data`)
        for its data rank."""
        return shard_data(data, rank=self.layout.data_rank, size=self.layout.data_size)

    def shard_sampler(self, batch_sampler: Iterable[list[int]]) -> ShardedBatchSampler:
        """This rank's slice of every batch of ``batch_sampler``."""
        return ShardedBatchSampler(batch_sampler, rank=self.layout.data_rank, size=self.layout.data_size)

    def close(self) -> None:
        """Destroy the process group if this context created it: once no object that holds
        it is left (a DDP module in a reference cycle), and after a barrier, so that no rank
        tears down while another still talks to it (gloo may abort a process then)."""
        if self.owns_group and dist.is_initialized():
            gc.collect()
            try:
                dist.barrier()  # gloo's also waits for the group's work still in flight
            except Exception as e:  # a rank is gone: nothing to wait for
                logger.warning("closing without the other ranks: %s", e)
            dist.destroy_process_group()
        self.owns_group = False

    def __enter__(self) -> DistributedContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def init_distributed(
    device: str | torch.device | None = "auto",
    *,
    probe_groups: int | Literal["all"] = 1,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    env: Mapping[str, str] | None = None,
) -> DistributedContext:
    """Set up this process for distributed scoring (see the module docstring).

    Parameters
    ----------
    device:
        ``"auto"`` (CUDA device ``LOCAL_RANK`` if CUDA is available, else the CPU),
        ``"cuda"``, ``"cpu"`` or an explicit device. A CUDA device becomes the current one.
    probe_groups:
        The layout of :class:`~spsa_mix.distributed.DistributedObjective` (``1``: data
        parallel, ``"all"``: probe parallel); must divide the world size.
    backend:
        Default: NCCL for a CUDA device, gloo for the CPU.
    timeout:
        Seconds a collective may wait (also the process group's timeout).
    env:
        The environment to read (default ``os.environ``).

    Returns
    -------
    DistributedContext
        With a process group already initialised (by the caller), its ranks and that group
        (``backend`` is then ignored, and :meth:`DistributedContext.close` leaves it alone).
    """
    timeout = check_positive(timeout, "timeout")
    info = torchrun_env(env)
    joined = dist.is_available() and dist.is_initialized()  # a group made by the caller (mp.spawn, ...)
    if joined:
        rank, world = int(dist.get_rank()), int(dist.get_world_size())
        local_rank = info[2] if info is not None else 0
    elif info is not None:
        rank, world, local_rank = info
    else:
        rank, world, local_rank = 0, 1, 0
    dev = local_device(device, local_rank)
    groups = world if probe_groups == "all" else probe_groups
    layout = Layout(world_size=world, rank=rank, probe_groups=groups)  # type: ignore[arg-type]
    if not joined and info is None:
        return DistributedContext(layout, local_rank, dev, None, timeout, LocalCommunicator())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    store = None
    if not joined:
        name = backend if backend is not None else backend_for_device(dev)
        span = datetime.timedelta(seconds=timeout)
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world, timeout=span))
        dist.init_process_group(name, store=store, rank=rank, world_size=world, timeout=span)
    comm = TorchCommunicator(None, timeout=timeout, store=store)
    return DistributedContext(layout, local_rank, dev, comm.backend, timeout, comm, owns_group=not joined)
