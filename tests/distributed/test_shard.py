"""Each rank's shard of every global minibatch: slices that put the batch back together."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from spsa_mix.blend.batches import is_fixed_batch
from spsa_mix.distributed import ShardedBatches, ShardedBatchSampler, batch_length, shard_batch, shard_data


@given(n=st.integers(1, 40), size=st.integers(1, 7))
def test_the_shards_of_a_batch_are_its_contiguous_slices_in_rank_order(n, size):
    x, y = torch.arange(n * 2.0).reshape(n, 2), torch.arange(n)
    if n < size:
        with pytest.raises(ValueError, match=f"a batch of {n} examples cannot be split over {size}"):
            shard_batch((x, y), rank=0, size=size)
        return
    shards = [shard_batch((x, y), rank=r, size=size) for r in range(size)]
    assert torch.equal(torch.cat([s[0] for s in shards]), x) and torch.equal(torch.cat([s[1] for s in shards]), y)
    lengths = [len(s[1]) for s in shards]
    assert max(lengths) - min(lengths) <= 1


def test_every_kind_of_inputs_is_sliced_and_other_values_are_kept_whole():
    ids, mask, y = torch.arange(12).reshape(6, 2), torch.ones(6, 2), torch.arange(6)
    table = torch.zeros(3, 3)  # not of the batch's leading size: shared
    inputs, targets = shard_batch(({"input_ids": ids, "attention_mask": mask, "table": table, "flag": True}, y),
                                  rank=1, size=3)
    assert inputs["input_ids"].tolist() == [[4, 5], [6, 7]] and inputs["attention_mask"].shape == (2, 2)
    assert inputs["table"] is table and inputs["flag"] is True and targets.tolist() == [2, 3]
    pos, _ = shard_batch(((ids, mask), y), rank=0, size=2)
    assert isinstance(pos, tuple) and pos[0].shape == (3, 2)
    assert batch_length((ids, None)) == 6


def test_a_fixed_batch_stays_a_fixed_batch():
    x, y = torch.zeros(5, 3), torch.zeros(5, dtype=torch.long)
    shard = shard_data((x, y), rank=1, size=2)
    assert is_fixed_batch(shard) and shard[0].shape == (2, 3)
    assert shard_data((x, y), rank=0, size=1)[0] is x


def test_sharded_batches_follow_the_loader_and_keep_its_length():
    data = [(torch.full((4, 1), float(i)), torch.arange(4) + 4 * i) for i in range(3)]
    sharded = shard_data(data, rank=0, size=2)
    assert isinstance(sharded, ShardedBatches) and len(sharded) == 3
    assert [y.tolist() for _, y in sharded] == [[0, 1], [4, 5], [8, 9]]
    assert [y.tolist() for _, y in sharded] == [[0, 1], [4, 5], [8, 9]]  # re-iterable


def test_the_batch_sampler_loads_exactly_the_slices_of_the_same_global_batches():
    dataset = TensorDataset(torch.arange(23.0)[:, None], torch.arange(23))

    def batches(seed: int) -> BatchSampler:
        return BatchSampler(RandomSampler(dataset, generator=torch.Generator().manual_seed(seed)), 8, drop_last=True)

    full = list(DataLoader(dataset, batch_sampler=batches(0)))
    for rank in range(3):
        loader = DataLoader(dataset, batch_sampler=ShardedBatchSampler(batches(0), rank=rank, size=3))
        sliced = list(ShardedBatches(full, rank=rank, size=3))
        assert len(loader) == len(full) == 2
        assert [y.tolist() for _, y in loader] == [y.tolist() for _, y in sliced]


def test_bad_shard_arguments_are_errors():
    with pytest.raises(ValueError, match=r"rank must be in \[0, 1\] \(size=2\), but got 2"):
        shard_batch((torch.zeros(4), torch.zeros(4)), rank=2, size=2)
    with pytest.raises(ValueError, match=r"each batch must be a pair \(inputs, targets\), but got a Tensor"):
        shard_batch(torch.zeros(4), rank=0, size=2)
    with pytest.raises(ValueError, match=r"a batch of 1 indices cannot be split over 2"):
        list(ShardedBatchSampler([[0, 1], [2]], rank=0, size=2))
    with pytest.raises(ValueError, match=r"data must be an iterable of \(inputs, targets\) batches, but got int"):
        ShardedBatches(3, rank=0, size=2)  # type: ignore[arg-type]
