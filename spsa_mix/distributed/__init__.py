"""Scale out on ``torch.distributed``: data- and probe-parallel scoring, scalars on the wire.

Every rank builds the same optimiser with the same seed, so the directions and probes are
the same everywhere and are never sent; each rank scores its part of a step (its chunk of
the probes, on its shard of the minibatch) and one collective of ``n + P`` float64
numbers gives every rank the same mean losses (MeZO's shared seed; DistZO2's
"perturbation parallelism").

* :class:`DistributedObjective` -- wrap any objective (a
  :class:`~spsa_mix.blend.BlendedObjective`): ``__call__``, ``value_and_grad``, ``jvp``,
  for every method of :func:`spsa_mix.minimize` and the adapters;
* :func:`init_distributed` -- under ``torchrun``: process group (NCCL for CUDA, gloo for
  CPUs), local device, layout; :class:`DistributedContext` wraps and shards;
* :mod:`~spsa_mix.distributed.shard` -- each rank's slice of every global minibatch;
  :mod:`~spsa_mix.distributed.weights` -- how much each shard counts (examples, tokens);
* :mod:`~spsa_mix.distributed.rank_zero` -- rank 0 writes, every rank resumes from the
  same state, a checksum of alpha across ranks;
* :class:`ThreadWorld` -- ranks as threads of one process, to try it without ``torchrun``.

``docs/distributed.md`` has the design, the numerics, the benchmark and a scaling model.

Example
-------
>>> import numpy as np
>>> from spsa_mix.distributed import DistributedObjective
>>> obj = DistributedObjective(lambda p: (p ** 2).sum(axis=1))   # one process: a pass-through
>>> obj(np.array([[1.0, 0.0], [0.5, 0.5]])).tolist(), obj.world_size
([1.0, 0.5], 1)
"""

from spsa_mix.distributed.comm import (
    DEFAULT_TIMEOUT_S,
    Communicator,
    LocalCommunicator,
    TorchCommunicator,
    backend_for_device,
    resolve_communicator,
    wire_device,
)
from spsa_mix.distributed.errors import DistributedError, DivergenceError, PeerError, RankFailureError
from spsa_mix.distributed.launch import DistributedContext, init_distributed, local_device, torchrun_env
from spsa_mix.distributed.layout import Layout, split_bounds
from spsa_mix.distributed.objective import DistributedObjective, points_digest
from spsa_mix.distributed.rank_zero import (
    broadcast_object,
    check_consistent,
    consistency_callback,
    current_rank,
    is_writer,
    load_checkpoint,
    rank_zero_only,
    save_checkpoint,
)
from spsa_mix.distributed.shard import (
    ShardedBatches,
    ShardedBatchSampler,
    batch_length,
    shard_batch,
    shard_data,
)
from spsa_mix.distributed.threads import ThreadCommunicator, ThreadWorld
from spsa_mix.distributed.weights import loss_weight, shard_weight

__all__ = [
    "DistributedObjective",
    "init_distributed",
    "DistributedContext",
    "torchrun_env",
    "local_device",
    "Layout",
    "split_bounds",
    "shard_batch",
    "shard_data",
    "batch_length",
    "ShardedBatches",
    "ShardedBatchSampler",
    "loss_weight",
    "shard_weight",
    "points_digest",
    "Communicator",
    "LocalCommunicator",
    "TorchCommunicator",
    "ThreadWorld",
    "ThreadCommunicator",
    "resolve_communicator",
    "backend_for_device",
    "wire_device",
    "DEFAULT_TIMEOUT_S",
    "current_rank",
    "is_writer",
    "rank_zero_only",
    "broadcast_object",
    "save_checkpoint",
    "load_checkpoint",
    "check_consistent",
    "consistency_callback",
    "DistributedError",
    "RankFailureError",
    "PeerError",
    "DivergenceError",
]
