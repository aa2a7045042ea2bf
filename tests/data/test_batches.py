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
