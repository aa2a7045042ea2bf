"""Minibatches of a subset of an in-memory dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.data.batches import Batches, TensorBatches
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


def test_a_subset_is_normalised_once_and_batches_hold_the_same_numbers(digits: ImageData, monkeypatch) -> None:
    import spsa_mix.data.images as images

    ix = np.arange(0, 300, 3)
    once = Batches(digits, ix, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert once.stored.dtype == torch.float32
    monkeypatch.setattr(images, "COLLATE_ONCE_MAX_BYTES", 0)  # too large: kept as uint8, normalised per batch
    per_batch = Batches(digits, ix, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(1))
    assert per_batch.stored.dtype == torch.uint8
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(once, per_batch, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)  # bit for bit
            assert xa.stride() == xb.stride()


# ---------------------------------------------------------------------- TensorBatches
def _loader(tensors, **kwargs):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tensors), **kwargs)


@pytest.mark.parametrize("n", [64, 100, 7, 1])
@pytest.mark.parametrize("batch_size", [32, 7, 200])
@pytest.mark.parametrize("drop_last", [False, True])
def test_tensor_batches_are_the_dataloaders_batches_in_its_order(n, batch_size, drop_last) -> None:
    gen = torch.Generator().manual_seed(n + batch_size)
    tensors = (torch.randn(n, 1, 3, 3, generator=gen), torch.randint(0, 10, (n,), generator=gen))
    ours = TensorBatches(*tensors, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(5),
                         drop_last=drop_last)
    theirs = _loader(tensors, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(5),
                     drop_last=drop_last)
    assert len(ours) == len(theirs)
    for _ in range(3):  # three passes: each reshuffles
        it_ours, it_theirs = iter(ours), iter(theirs)
        assert ours.generator.get_state().equal(theirs.generator.get_state())  # the base seed drawn at iter()
        while True:
            a, b = next(it_ours, None), next(it_theirs, None)
            assert ours.generator.get_state().equal(theirs.generator.get_state())  # drawn at the same points
            if a is None or b is None:
                assert a is None and b is None
                break
            assert len(a) == len(b) == 2 and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_tensor_batches_in_order_draw_the_base_seed_as_the_loader_does() -> None:
    x = torch.arange(10)
    gen_a, gen_b = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    ours = [b[0].tolist() for b in TensorBatches(x, batch_size=4, generator=gen_a)]
    theirs = [b[0].tolist() for b in _loader((x,), batch_size=4, generator=gen_b)]
    assert ours == theirs == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert gen_a.get_state().equal(gen_b.get_state())
    torch.manual_seed(3)  # no generator: both draw from the global one
    list(TensorBatches(x, batch_size=4))
    after_ours = torch.get_rng_state()
    torch.manual_seed(3)
    list(_loader((x,), batch_size=4))
    assert after_ours.equal(torch.get_rng_state())


def test_a_blended_objective_over_tensor_batches_gives_the_dataloaders_losses() -> None:
    from spsa_mix.blend import BlendedObjective

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(50, 4, generator=gen), torch.randint(0, 3, (50,), generator=gen)
    experts = [torch.nn.Linear(4, 3) for _ in range(3)]
    pts = np.full((2, 3), 1 / 3)
    fast = BlendedObjective(torch.nn.Linear(4, 3), experts, device="cpu",
                            data=TensorBatches(x, y, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)))
    slow = BlendedObjective(torch.nn.Linear(4, 3), experts, device="cpu",
                            data=_loader((x, y), batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(1)))
    for _ in range(10):  # 2.5 passes
        assert np.array_equal(fast(pts), slow(pts))


def test_tensor_batches_bad_arguments() -> None:
    with pytest.raises(ValueError, match="same length"):
        TensorBatches(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="generator"):
        TensorBatches(torch.zeros(3), shuffle=True)
    with pytest.raises(ValueError, match="one or more tensors"):
        TensorBatches()
    with pytest.raises(ValueError, match="batch_size"):
        TensorBatches(torch.zeros(3), batch_size=0)
