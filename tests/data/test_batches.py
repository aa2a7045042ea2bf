"""Minibatches of a subset of an in-memory dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.data.batches import Batches
from spsa_mix.data.images import ImageData, load_dataset


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def test_batches_cover_the_subset_once_per_pass_and_reshuffle(digits: ImageData) -> None:
    ix = np.arange(100)
    b = Batches(digits, ix, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    first = torch.cat([y for _, y in b])
    second = torch.cat([y for _, y in b])
    expected = digits.y_train[:100]
    assert sorted(first.tolist()) == sorted(expected.tolist()) == sorted(second.tolist())
    assert not torch.equal(first, second)  # a new order each pass
    assert len(b) == 4


def test_batches_are_normalised(digits: ImageData) -> None:
    x = torch.cat([x for x, _ in Batches(digits, batch_size=500)])
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-2


def test_batches_bad_arguments(digits: ImageData) -> None:
    with pytest.raises(ValueError, match=r"shuffle=True needs a torch.Generator"):
        Batches(digits, shuffle=True)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, but got 0"):
        Batches(digits, batch_size=0)
    with pytest.raises(ValueError, match="split must be 'train' or 'test', but got 'val'"):
        Batches(digits, split="val")


def test_replacement_batches_draw_uniform_indices_from_the_generator(digits: ImageData) -> None:
    b = Batches(digits, np.arange(50), batch_size=8, replacement=True, num_batches=3,
                generator=torch.Generator().manual_seed(3))
    got = [y for _, y in b]
    gen = torch.Generator().manual_seed(3)
    expected = [digits.y_train[torch.randint(0, 50, (8,), generator=gen)] for _ in range(3)]
    assert len(b) == 3 and all(torch.equal(a, e) for a, e in zip(got, expected, strict=True))
    with pytest.raises(ValueError, match="num_batches must be an integer >= 1, but got None"):
        Batches(digits, replacement=True, generator=torch.Generator())
    with pytest.raises(ValueError, match="replacement=True needs a torch.Generator"):
        Batches(digits, replacement=True, num_batches=2)
    with pytest.raises(ValueError, match="num_batches applies with replacement=True"):
        Batches(digits, num_batches=2)


def test_min_batch_size_skips_a_small_last_batch(digits: ImageData) -> None:
    sizes = [int(y.shape[0]) for _, y in Batches(digits, np.arange(9), batch_size=4, min_batch_size=2)]
    assert sizes == [4, 4]
    sizes = [int(y.shape[0]) for _, y in Batches(digits, np.arange(10), batch_size=4, min_batch_size=2)]
    assert sizes == [4, 4, 2]
