"""Datasets, the Dirichlet split, the target/held-out/expert split, minibatches."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from spsa_mix.glue.data import (
    Batches,
    ImageData,
    available_datasets,
    default_data_roots,
    dirichlet_split,
    load_dataset,
    make_splits,
    read_idx,
)


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


# ---------------------------------------------------------------- datasets
def test_digits_is_built_in(digits: ImageData) -> None:
    assert tuple(digits.x_train.shape) == (1297, 1, 8, 8) and tuple(digits.x_test.shape) == (500, 1, 8, 8)
    assert digits.num_classes == 10 and digits.x_train.dtype == torch.uint8
    # stratified test split: each class's share of the 1797 digits, within one image
    total = np.bincount(np.concatenate([digits.y_train.numpy(), digits.y_test.numpy()]))
    assert np.abs(np.bincount(digits.y_test.numpy()) - total / total.sum() * 500).max() < 1
    assert "scikit-learn" in digits.source


def test_unknown_dataset_lists_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown dataset 'foo'; available: digits, fashion-mnist, cifar10"):
        load_dataset("foo")
    assert available_datasets()[:2] == ["digits", "fashion-mnist"]


def _write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = struct.pack(">HBB", 0, 8, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _fake_mnist_layout(root: Path, folder: str, *, compress: bool, n: int = 30) -> None:
    rng = np.random.default_rng(0)
    raw = root / folder / "raw"
    _write_idx(raw / "train-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), compress=compress)
    _write_idx(raw / "train-labels-idx1-ubyte", np.arange(n) % 10, compress=compress)
    _write_idx(raw / "t10k-images-idx3-ubyte", rng.integers(0, 255, (10, 28, 28)), compress=compress)
    _write_idx(raw / "t10k-labels-idx1-ubyte", np.arange(10), compress=compress)


@pytest.mark.parametrize("compress", [True, False])
def test_fashion_mnist_reads_idx_files_gz_or_not(tmp_path: Path, compress: bool) -> None:
    _fake_mnist_layout(tmp_path, "FashionMNIST", compress=compress)
    d = load_dataset("fashion-mnist", data_root=tmp_path)
    assert tuple(d.x_train.shape) == (30, 1, 28, 28) and d.classes[0] == "T-shirt/top"
    assert d.y_train.tolist() == [i % 10 for i in range(30)]


def test_missing_data_root_says_where_it_looked_and_how_to_provide(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"Fashion-MNIST not found: looked for train-images-idx3-ubyte\[\.gz\].* in "
                                         + str(tmp_path) + r"/FashionMNIST/raw\. Provide it with --data-root PATH"):
        load_dataset("fashion-mnist", data_root=tmp_path)
    with pytest.raises(ValueError, match="data_root '/nonexistent/x' is not a folder"):
        load_dataset("fashion-mnist", data_root="/nonexistent/x")


def test_default_roots_include_shared_data_beside_the_repo_and_the_cache(tmp_path: Path) -> None:
    roots = default_data_roots(tmp_path)
    repo = Path(__file__).resolve().parents[2]
    assert repo.parent / "shared" / "data" in roots
    assert roots[-1] == tmp_path / "data"


def test_torchvision_dataset_present_locally_by_name(tmp_path: Path) -> None:
    _fake_mnist_layout(tmp_path, "MNIST", compress=False)  # torchvision's MNIST layout, unpacked
    d = load_dataset("MNIST", data_root=tmp_path)
    assert tuple(d.x_train.shape) == (30, 1, 28, 28) and d.num_classes == 10
    assert "torchvision.datasets.MNIST" in d.source


def test_torchvision_dataset_missing_lists_roots(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"dataset 'cifar10' not found locally: torchvision.datasets.CIFAR10\(root, "
                                         r"download=False\) failed for every root it looked in \(" + str(tmp_path)):
        load_dataset("cifar-10", data_root=tmp_path)


def test_resize(digits: ImageData) -> None:
    d = load_dataset("digits", image_size=16)
    assert tuple(d.x_train.shape[1:]) == (1, 16, 16)


def test_read_idx_rejects_other_files(tmp_path: Path) -> None:
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="is not an idx file of uint8"):
        read_idx(p)


# ---------------------------------------------------------------- batches
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
