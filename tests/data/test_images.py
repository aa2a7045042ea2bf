"""Image datasets: digits, idx files, torchvision datasets present locally, resizing."""

from __future__ import annotations

import ast
import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import spsa_mix.data
from spsa_mix.data.images import ImageData, available_datasets, default_data_roots, load_dataset, read_idx


@pytest.fixture(scope="module")
def digits() -> ImageData:
    return load_dataset("digits")


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


@pytest.mark.parametrize(("name", "folder", "first_class"), [("mnist", "MNIST", "0 - zero"), ("kmnist", "KMNIST", "o"),
                                                             ("fashion-mnist", "FashionMNIST", "T-shirt/top")])
@pytest.mark.parametrize("compress", [True, False])
def test_every_idx_dataset_reads_torchvisions_layout_gz_or_not(tmp_path: Path, name, folder, first_class,
                                                                compress) -> None:
    _fake_mnist_layout(tmp_path, folder, compress=compress)
    d = load_dataset(name, data_root=tmp_path)
    assert tuple(d.x_train.shape) == (30, 1, 28, 28) and tuple(d.x_test.shape) == (10, 1, 28, 28)
    assert d.y_train.tolist() == [i % 10 for i in range(30)] and d.classes[0] == first_class
    assert str(tmp_path / folder / "raw") in d.source


def test_a_partial_idx_folder_says_what_was_found_and_what_is_missing(tmp_path: Path) -> None:
    _fake_mnist_layout(tmp_path, "MNIST", compress=True)
    for stem in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / "MNIST" / "raw" / f"{stem}.gz").unlink()
    raw = tmp_path / "MNIST" / "raw"
    with pytest.raises(ValueError) as info:
        load_dataset("mnist", data_root=tmp_path)
    message = str(info.value)
    assert message.startswith(f"MNIST not found: looked for train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                              f"t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] in {raw}. ")
    assert (f"Found in {raw}: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz; missing: "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]. Provide it with --data-root PATH") in message
    assert "download it once" not in message


def test_images_are_stored_in_the_standard_layout_whatever_the_arrays_strides() -> None:
    one = np.zeros((6, 4, 4), np.uint8)
    for arrays in (one[:, None], one[:, None][np.arange(6)], np.zeros((6, 3, 4, 4), np.uint8)):
        d = ImageData.from_arrays("toy", arrays, np.arange(6) % 2, arrays[:2], np.arange(2), scale=1 / 255)
        c = arrays.shape[1]
        assert d.x_train.stride() == d.x_test.stride() == (16 * c, 16, 4, 1)
    digits = load_dataset("digits")  # indexed copies (channel stride 1) and the array itself (stride 0)
    assert digits.x_train.stride() == digits.x_test.stride() == load_dataset("digits", test_size=0).x_train.stride()


def test_the_data_package_does_not_import_the_experiment_layer():
    data = Path(spsa_mix.data.__file__).parent
    for path in sorted(data.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("spsa_mix.experiment"), f"{path.name} imports {node.module}"
