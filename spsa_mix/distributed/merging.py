"""What ``spsa-mix merge`` does differently under ``torchrun``: nothing, in one process.

``torchrun --nproc-per-node N -m spsa_mix merge merge.yaml`` starts ``N`` copies of the
command; :func:`~spsa_mix.merge.run.run_merge` asks :class:`MergeRanks` to

* set up the ranks (:func:`~spsa_mix.distributed.init_distributed`: NCCL on CUDA device
  ``LOCAL_RANK``, gloo on CPUs), with data parallelism: every rank builds the same
  training batches (one seed) and scores its slice of each (:meth:`shard`), the objective
  wrapped in :class:`~spsa_mix.distributed.DistributedObjective` (:meth:`wrap`);
* run the validation objective on rank 0 and send its value to every rank (:meth:`same`),
  so that every rank keeps the same best point and stops at the same check;
* check that every rank read the same data (:meth:`check_same_data`: a digest of the
  examples, compared across ranks), since each reads its own files;
* leave the logs, the progress bar, the saved state and every file to rank 0
  (:attr:`is_writer`): after the search the other ranks return, and rank 0 scores, chooses
  and writes alone (:meth:`close` first, so that no rank waits on another meanwhile).

Without ``torchrun`` each method returns what it was given and :attr:`is_writer` is true.

Example
-------
>>> ranks = MergeRanks.start("cpu", env={})
>>> ranks.world_size, ranks.is_writer, ranks.wrap(len) is len
(1, True, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from spsa_mix.distributed.errors import PeerError
from spsa_mix.distributed.launch import DistributedContext, init_distributed, torchrun_env
from spsa_mix.distributed.rank_zero import broadcast_object

__all__ = ["MergeRanks"]


class MergeRanks:
    """The ranks of one merge (see the module docstring); build with :meth:`start`."""

    def __init__(self, ctx: DistributedContext | None) -> None:
        self.ctx = ctx

    @classmethod
    def start(cls, device: str | None, *, env: Mapping[str, str] | None = None) -> MergeRanks:
        """The ranks under ``torchrun`` (``WORLD_SIZE`` set), else one process.

        Raises
        ------
        ValueError
            For an explicit CUDA index under ``torchrun`` with several processes: every rank
            would use that one GPU (use ``device: auto`` or ``cuda``).
        """
        info = torchrun_env(env)
        if info is None:
            return cls(None)
        if info[1] > 1 and device is not None and str(device).startswith("cuda:"):
            raise ValueError(f"device {device!r} under torchrun puts every rank on one GPU: use device 'auto' "
                             "or 'cuda' (each rank takes the GPU of its LOCAL_RANK)")
        local = None if device in (None, "auto") else ("cuda" if str(device).startswith("cuda") else device)
        return cls(init_distributed(local, env=env))

    @property
    def world_size(self) -> int:
        return 1 if self.ctx is None else self.ctx.world_size

    @property
    def is_writer(self) -> bool:
        """Whether this rank logs and writes (rank 0, or the only process)."""
        return self.ctx is None or self.ctx.is_writer

    @property
    def device(self) -> torch.device | None:
        """This rank's device under ``torchrun`` (``None`` in one process)."""
        return None if self.ctx is None else self.ctx.device

    def shard(self, data: Any) -> Any:
        """This rank's slice of every batch of ``data``."""
        return data if self.ctx is None else self.ctx.shard(data)

    def wrap(self, objective: Any) -> Any:
        """``objective`` scored by all ranks (data parallel)."""
        return objective if self.ctx is None else self.ctx.wrap(objective)

    def same(self, fn: Callable[[Any], float]) -> Callable[[Any], float]:
        """``fn`` computed on rank 0 and its value (or its error) sent to every rank."""
        if self.ctx is None or self.ctx.world_size == 1:
            return fn
        comm = self.ctx.communicator

        def on_rank_zero(x: Any) -> float:
            payload: tuple[str, Any] | None = None
            error: Exception | None = None
            if comm.rank == 0:
                try:
                    payload = ("ok", float(fn(x)))
                except Exception as e:
                    error, payload = e, ("error", f"{type(e).__name__}: {e}")
            status, value = broadcast_object(payload, group=comm)
            if error is not None:
                raise error
            if status == "error":
                raise PeerError(f"spsa_mix.distributed: the validation objective raised on rank 0: {value}",
                                ranks=[0], messages={0: value})
            return float(value)

        return on_rank_zero

    def check_same_data(self, source: Any) -> None:
        """Raise ``ValueError`` on every rank if the examples of ``source`` (a batch source:
        ``labels`` and ``take``) differ from rank 0's, naming the ranks; nothing in one process."""
        if self.ctx is None or self.ctx.world_size == 1:
            return
        digests = self.ctx.communicator.all_gather_object(data_digest(source), what="the data's digests")
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        if differ:
            raise ValueError(f"the data differs across ranks: rank{'s' if len(differ) > 1 else ''} "
                             f"{', '.join(map(str, differ))} read other examples than rank 0 (each rank reads its own "
                             "files: give every rank the same data)")

    def close(self) -> None:
        """Tear the process group down (every rank at once)."""
        if self.ctx is not None:
            self.ctx.close()


def data_digest(source: Any) -> str | None:
    """SHA-256 of every example of ``source`` (both splits: inputs and targets, in order), or
    ``None`` for data that is only an iterable of batches.

    >>> from spsa_mix.data.files import TensorData
    >>> a = TensorData("t", torch.zeros(3, 2), torch.arange(3))
    >>> data_digest(a) == data_digest(TensorData("u", torch.zeros(3, 2), torch.arange(3))), data_digest([(1, 2)])
    (True, None)
    """
    import hashlib

    import numpy as np

    if not (hasattr(source, "take") and hasattr(source, "labels")):
        return None
    h = hashlib.sha256()
    for split in ("train", "test"):
        n = int(source.labels(split).shape[0])
        if not n:
            continue
        for t in _tensors(source.take(split, np.arange(n), torch.device("cpu"))):
            t = t.detach().contiguous().cpu()
            h.update(f"{split}{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _tensors(value: Any) -> list[torch.Tensor]:
    """The tensors of nested dicts (by sorted key), tuples and lists, in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        return [t for k in sorted(value) for t in _tensors(value[k])]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []
