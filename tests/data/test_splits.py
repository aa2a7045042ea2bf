"""The Dirichlet split and the target/held-out/expert split."""

from __future__ import annotations

import numpy as np
import pytest

from spsa_mix.data.images import ImageData, load_dataset
from spsa_mix.data.splits import dirichlet_split, make_splits


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


def _tv_to_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    glob = np.bincount(labels, minlength=10) / len(labels)
    return float(np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=10) / len(p) - glob).sum() for p in parts]))


# ---------------------------------------------------------------- dirichlet_split
def test_split_sizes_disjoint_and_inside_pool(digits: ImageData) -> None:
    y = digits.y_train.numpy()
    pool = np.arange(200, len(y))
    parts = dirichlet_split(y, k=10, per_expert=80, concentration=0.5, rng=np.random.default_rng(0), pool=pool)
    assert [len(p) for p in parts] == [80] * 10
    allix = np.concatenate(parts)
    assert len(np.unique(allix)) == 800  # disjoint
    assert allix.min() >= 200  # inside the pool


def test_split_unequal_sizes(digits: ImageData) -> None:
    y = digits.y_train.numpy()
    parts = dirichlet_split(y, k=3, per_expert=[10, 50, 100], rng=np.random.default_rng(0))
    assert [len(p) for p in parts] == [10, 50, 100]


def test_split_is_non_iid_at_05_and_near_iid_at_large_concentration(digits: ImageData) -> None:
    y = digits.y_train.numpy()
    for seed in range(3):
        skewed = dirichlet_split(y, k=10, per_expert=80, concentration=0.5, rng=np.random.default_rng(seed))
        flat = dirichlet_split(y, k=10, per_expert=80, concentration=1000.0, rng=np.random.default_rng(seed))
        assert _tv_to_global(y, skewed) > 0.25  # measured 0.39-0.49 over seeds 0-4
        assert _tv_to_global(y, flat) < 0.05  # measured ~0.01


def test_split_deterministic_by_seed(digits: ImageData) -> None:
    y = digits.y_train.numpy()
    a = dirichlet_split(y, k=5, per_expert=50, rng=np.random.default_rng(7))
    b = dirichlet_split(y, k=5, per_expert=50, rng=np.random.default_rng(7))
    c = dirichlet_split(y, k=5, per_expert=50, rng=np.random.default_rng(8))
    assert all(np.array_equal(x, z) for x, z in zip(a, b, strict=True))
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


def test_split_when_a_class_runs_short_takes_it_whole() -> None:
    # 3 classes of 10; experts of 12 must share 30 images: classes run out, sizes stay exact
    labels = np.repeat(np.arange(3), 10)
    parts = dirichlet_split(labels, k=2, per_expert=15, concentration=0.1, rng=np.random.default_rng(3))
    assert [len(p) for p in parts] == [15, 15]
    assert len(np.unique(np.concatenate(parts))) == 30


def test_split_refuses_more_than_the_pool() -> None:
    labels = np.repeat(np.arange(3), 10)
    with pytest.raises(ValueError, match=r"cannot split 30 images into k=4 experts of per_expert=10 \(needs 40\)"):
        dirichlet_split(labels, k=4, per_expert=10, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"needs 31"):
        dirichlet_split(labels, k=2, per_expert=[1, 30], rng=np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0, "per_expert": 3}, "k must be an integer >= 1, but got 0"),
        ({"k": 2, "per_expert": 0}, r"per_expert must be an integer >= 1 \(or k of them\), but got 0"),
        ({"k": 2, "per_expert": [3]}, r"per_expert must be one size or k=2 sizes, but got 1 sizes \[3\]"),
        ({"k": 2, "per_expert": 3, "concentration": 0.0}, "concentration must be a positive number, but got 0.0"),
    ],
)
def test_split_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dirichlet_split(np.arange(30) % 3, rng=np.random.default_rng(0), **kwargs)


def test_split_rejects_float_labels() -> None:
    with pytest.raises(ValueError, match="labels must be a 1-d integer array, but got dtype float64"):
        dirichlet_split(np.zeros(10), k=2, per_expert=2, rng=np.random.default_rng(0))


# ---------------------------------------------------------------- make_splits
def test_make_splits_disjoint_and_sized(digits: ImageData) -> None:
    y = digits.y_train.numpy()
    s = make_splits(y, k=10, per_expert=80, target_size=300, holdout_size=100, rng=np.random.default_rng(0))
    assert (len(s.target), len(s.holdout)) == (300, 100)
    everything = np.concatenate([s.target, s.holdout, *s.experts])
    assert len(np.unique(everything)) == len(everything) == 1200
    info = s.describe(y)
    assert sum(info["target_class_counts"]) == 300 and info["expert_sizes"] == [80] * 10
    # the target is IID: no class is far from its 10% share (expected 30 +- ~5)
    assert min(info["target_class_counts"]) >= 15 and max(info["target_class_counts"]) <= 45


def test_make_splits_refuses_sizes_the_data_cannot_hold(digits: ImageData) -> None:
    y = digits.y_train.numpy()
    with pytest.raises(ValueError, match=r"the training split holds 1297 images but the sizes need 2400: "
                                         r"target_size=300 \+ holdout_size=100 \+ k=10 x per_expert=200 \(2000\); "
                                         "lower k, per_expert, target_size or holdout_size"):
        make_splits(y, k=10, per_expert=200, target_size=300, holdout_size=100, rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="target_size must be an integer >= 1, but got 0"):
        make_splits(y, k=2, per_expert=2, target_size=0, holdout_size=1, rng=np.random.default_rng(0))
