"""cifar10-jpeg: an ImageFolder zip decoded once into arrays, cached as .npz, reread from it."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from spsa_mix.data.images import CIFAR10_JPEG_ZIP, load_dataset, read_image_folder_zip

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / CIFAR10_JPEG_ZIP


def _zip(path: Path, sizes: dict[str, int], top: str = "cifar10-jpeg") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as z:
        for split, n in sizes.items():
            for cls in ("cat", "airplane"):
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, "PNG")
                    z.writestr(f"{top}/{split}/{cls}/{i:04d}.png", buf.getvalue())


def test_an_image_folder_zip_is_read_class_by_class(tmp_path):
    _zip(tmp_path / "z.zip", {"train": 3, "test": 2})
    x, y, classes = read_image_folder_zip(tmp_path / "z.zip", "train")
    assert x.shape == (6, 3, 32, 32) and x.dtype == np.uint8
    assert classes == ["airplane", "cat"] and y.tolist() == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="no image under 'val/<class>/'"):
        read_image_folder_zip(tmp_path / "z.zip", "val")


def test_the_arrays_are_cached_and_reread(tmp_path):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    _zip(root / CIFAR10_JPEG_ZIP, {"train": 4, "test": 2})
    first = load_dataset("cifar10-jpeg", data_root=root, cache_dir=cache)
    assert tuple(first.x_train.shape) == (8, 3, 32, 32) and tuple(first.x_test.shape) == (4, 3, 32, 32)
    assert list(cache.glob("data/cifar10-jpeg-*.npz")) and "decoded, arrays cached" in first.source
    again = load_dataset("cifar10-jpeg", data_root=root, cache_dir=cache)
    assert "decoded arrays cached" in again.source
    assert bool((again.x_train == first.x_train).all()) and again.classes == first.classes


def test_a_missing_zip_says_where_it_looked(tmp_path):
    with pytest.raises(ValueError, match=r"cifar10-jpeg not found: looked for cifar10-jpeg.zip in"):
        load_dataset("cifar10-jpeg", data_root=tmp_path, cache_dir=tmp_path)


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/data/cifar10-jpeg.zip is absent")
@pytest.mark.slow
def test_the_shared_zip_holds_cifar10(tmp_path):
    d = load_dataset("cifar10-jpeg", data_root=SHARED.parent, cache_dir=tmp_path)
    assert tuple(d.x_train.shape) == (50_000, 3, 32, 32) and tuple(d.x_test.shape) == (10_000, 3, 32, 32)
    assert tuple(d.classes[:3]) == ("airplane", "automobile", "bird")
    assert np.bincount(d.y_test.numpy()).tolist() == [1000] * 10


@pytest.mark.skipif(not SHARED.is_file(), reason="../shared/data/cifar10-jpeg.zip is absent")
def test_the_shared_zip_has_the_layout_the_loader_reads():
    with zipfile.ZipFile(SHARED) as z:
        names = [n for n in z.namelist() if n.endswith(".jpg")]
    splits = {n.split("/")[-3] for n in names}
    classes = sorted({n.split("/")[-2] for n in names})
    assert splits == {"train", "test"} and len(names) == 60_000
    assert classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
