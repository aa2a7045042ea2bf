"""Each rank's shard of every global minibatch.

Data parallelism here keeps the single-process schedule: every rank iterates the same
global minibatches (the same loader, with the same seed, on every rank) and scores its
contiguous slice of each, so that the ranks' shards of a step together are exactly that
step's global minibatch, the one a single process would score. A minibatch of ``B``
examples on ``D`` data ranks gives shards of ``ceil(B / D)`` or ``floor(B / D)`` examples,
the larger first (:func:`~spsa_mix.distributed.layout.split_bounds`); the objective
weights them by what each holds (:mod:`spsa_mix.distributed.weights`).

Two ways to get the shards:

* :func:`shard_data` / :class:`ShardedBatches` -- slice each batch that ``data`` yields
  (a ``DataLoader``, any iterable of ``(inputs, targets)``, or one fixed batch): simple,
  but every rank loads the whole global batch;
* :class:`ShardedBatchSampler` -- slice each batch of *indices* of a batch sampler, so a
  ``DataLoader`` loads only this rank's examples (``torch.utils.data.DistributedSampler``
  splits the dataset instead, which changes the batches; this keeps them).

Example
-------
>>> import torch
>>> x, y = torch.arange(10.0)[:, None], torch.arange(10)
>>> shard_batch((x, y), rank=2, size=3)[1].tolist()       # 10 examples: 4, 3, 3
[7, 8, 9]
>>> list(ShardedBatchSampler([[0, 1, 2, 3, 4], [5, 6, 7]], rank=0, size=2))
[[0, 1, 2], [5, 6]]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

import torch

from spsa_mix.blend.batches import is_fixed_batch
from spsa_mix.core.validation import check_int
from spsa_mix.distributed.layout import split_bounds

__all__ = ["shard_batch", "shard_data", "ShardedBatches", "ShardedBatchSampler", "batch_length"]


def _check_rank(rank: int, size: int) -> tuple[int, int]:
    size = check_int(size, "size", minimum=1)
    rank = check_int(rank, "rank", minimum=0)
    if rank >= size:
        raise ValueError(f"rank must be in [0, {size - 1}] (size={size}), but got {rank}")
    return rank, size


def batch_length(batch: Any) -> int:
    """Number of examples of an ``(inputs, targets)`` batch: the leading size of its
    targets, else of its first input tensor.

    >>> batch_length(({"input_ids": torch.zeros(4, 7)}, None))
    4
    """
    inputs, targets = _pair(batch)
    for t in (targets, *_tensors(inputs)):
        if isinstance(t, torch.Tensor) and t.ndim > 0:
            return int(t.shape[0])
    raise ValueError("cannot shard a batch with no tensor of at least one dimension")


def _pair(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"each batch must be a pair (inputs, targets), but got a {type(batch).__name__}")
    return batch[0], batch[1]


def _tensors(inputs: Any) -> list[Any]:
    if isinstance(inputs, dict):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def _slice(value: Any, lo: int, hi: int, n: int) -> Any:
    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == n:
        return value[lo:hi]
    if isinstance(value, dict):
        return {k: _slice(v, lo, hi, n) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_slice(v, lo, hi, n) for v in value)
    return value  # scalars and tensors of another leading size are shared by every shard


def shard_batch(batch: Any, *, rank: int, size: int) -> tuple[Any, Any]:
    """Rank ``rank``'s contiguous slice (of ``size``) of one ``(inputs, targets)`` batch.

    Every tensor whose leading size is the batch's is sliced (inputs as a tensor, a tuple
    or list, or a dict; the targets); other values are kept whole.

    Raises
    ------
    ValueError
        If the batch has fewer examples than ``size`` (a rank would get none).

    >>> x = torch.zeros(5, 2)
    >>> [tuple(shard_batch((x, torch.zeros(5)), rank=r, size=2)[0].shape) for r in range(2)]
    [(3, 2), (2, 2)]
    """
    rank, size = _check_rank(rank, size)
    inputs, targets = _pair(batch)
    n = batch_length(batch)
    if n < size:
        raise ValueError(f"a batch of {n} examples cannot be split over {size} data-parallel ranks; "
                         f"use batches of at least {size} (drop_last=True drops a short last batch)")
    bounds = split_bounds(n, size)
    lo, hi = bounds[rank], bounds[rank + 1]
    return _slice(inputs, lo, hi, n), _slice(targets, lo, hi, n)


class ShardedBatches:
    """An iterable of this rank's shards of the batches of ``data`` (re-iterable when
    ``data`` is; its length is ``data``'s).

    >>> batches = [(torch.zeros(4, 1), torch.arange(4)), (torch.zeros(4, 1), torch.arange(4, 8))]
    >>> [y.tolist() for _, y in ShardedBatches(batches, rank=1, size=2)]
    [[2, 3], [6, 7]]
    """

    def __init__(self, data: Iterable[Any], *, rank: int, size: int) -> None:
        self.rank, self.size = _check_rank(rank, size)
        if not isinstance(data, Iterable):
            raise ValueError(f"data must be an iterable of (inputs, targets) batches, but got {type(data).__name__}")
        self.data = data

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        for batch in self.data:
            yield shard_batch(batch, rank=self.rank, size=self.size)

    def __len__(self) -> int:
        if not isinstance(self.data, Sized):
            raise TypeError(f"the data ({type(self.data).__name__}) has no length")
        return len(self.data)

    def __repr__(self) -> str:
        return f"ShardedBatches(rank={self.rank}, size={self.size}, data={type(self.data).__name__})"


def shard_data(data: Any, *, rank: int, size: int) -> Any:
    """This rank's shard of ``data`` as :class:`~spsa_mix.blend.BlendedObjective` takes it:
    one fixed batch ``(inputs, targets)`` gives its fixed slice (a tuple), anything else a
    :class:`ShardedBatches`; ``size=1`` returns ``data`` itself.

    >>> x, y = torch.zeros(6, 3), torch.arange(6)
    >>> shard_data((x, y), rank=1, size=3)[1].tolist()
    [2, 3]
    """
    rank, size = _check_rank(rank, size)
    if size == 1:
        return data
    if is_fixed_batch(data):
        return tuple(shard_batch(data, rank=rank, size=size))
    return ShardedBatches(data, rank=rank, size=size)


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's slice of every batch of indices of ``batch_sampler``, for
    ``DataLoader(dataset, batch_sampler=ShardedBatchSampler(...))``.

    Build the same ``batch_sampler`` on every rank (for shuffling, a ``RandomSampler``
    whose generator has the same seed everywhere), so that every rank sees the same global
    batches. A batch with fewer indices than ``size`` is an error, as in
    :func:`shard_batch`.

    >>> from torch.utils.data import BatchSampler, SequentialSampler
    >>> sampler = BatchSampler(SequentialSampler(range(7)), batch_size=4, drop_last=False)
    >>> list(ShardedBatchSampler(sampler, rank=1, size=2))
    [[2, 3], [6]]
    """

    def __init__(self, batch_sampler: Iterable[list[int]], *, rank: int, size: int) -> None:
        self.rank, self.size = _check_rank(rank, size)
        self.batch_sampler = batch_sampler

    def __iter__(self) -> Iterator[list[int]]:
        for indices in self.batch_sampler:
            indices = list(indices)
            if len(indices) < self.size:
                raise ValueError(f"a batch of {len(indices)} indices cannot be split over {self.size} "
                                 "data-parallel ranks; use drop_last=True or larger batches")
            bounds = split_bounds(len(indices), self.size)
            yield indices[bounds[self.rank]:bounds[self.rank + 1]]

    def __len__(self) -> int:
        if not isinstance(self.batch_sampler, Sized):
            raise TypeError(f"the batch sampler ({type(self.batch_sampler).__name__}) has no length")
        return len(self.batch_sampler)
