"""Image datasets held in memory: scikit-learn's digits, Fashion-MNIST's idx files, torchvision.

Datasets (:func:`load_dataset`)
-------------------------------
``"digits"`` (the built-in default)
    scikit-learn's copy of the UCI optical handwritten digits: 1797 real 8x8 grayscale
    images of 10 classes, shipped inside the scikit-learn wheel, so it needs no download
    and no file. It has no official test split; a fixed, stratified 500-image test split
    is drawn with ``numpy.random.default_rng(0)`` (:data:`DIGITS_TEST_SIZE`). Chosen over
    a generated task because it is real data, small enough that ten experts, eleven ways
    to set alpha and fine-tuning run in minutes on a CPU, and the domain shift is the
    paper's own: each expert sees a label-skewed Dirichlet split while the target is
    IID, so no expert matches the target distribution.
``"fashion-mnist"``, ``"mnist"``, ``"kmnist"``
    read directly from their four idx files (``.gz`` or unpacked) under
    ``<root>/FashionMNIST/raw/``, ``<root>/MNIST/raw/`` or ``<root>/KMNIST/raw/`` (the
    layout torchvision uses, with the archives it downloads); the files stay untouched, so
    a read-only root works. Roots searched: :func:`default_data_roots`. When the files are
    not all there, the error says where it looked, what it found and what is missing.
``"cifar10-jpeg"``
    CIFAR-10 re-encoded as JPEG, one zip in torchvision's ImageFolder layout
    (``cifar10-jpeg.zip``: ``<top>/{train,test}/<class>/NNNN.jpg``; ``../shared/data`` holds
    one, its README gives the provenance; lossy: a pretrained ResNet-20 scores about 81 % on
    it against 91.8 % on the original pixels). Decoded once into ``uint8`` arrays and kept as
    ``<cache>/data/cifar10-jpeg-<size>-<mtime>.npz`` (:data:`CIFAR10_JPEG_ZIP`), so a second
    load reads the arrays; the zip is only read. Classes in ImageFolder's (alphabetical)
    order, which is CIFAR-10's.
any other torchvision dataset present locally
    by name (:data:`TORCHVISION_DATASETS`: ``cifar10``, ``svhn``, ``imagenette``, ...),
    loaded with ``download=False`` from the data root.

Images are kept as ``uint8`` (N, C, H, W) with a ``scale`` (1/16 for digits, 1/255
otherwise) and per-channel ``mean``/``std`` of the training split; :class:`Batches`
normalises a subset once when it is drawn from (at most :data:`COLLATE_ONCE_MAX_BYTES` in
float32; a larger one batch by batch). They are stored in PyTorch's default (contiguous, channels-first) layout
whatever the arrays they came from, strides included: the architecture picks the layout
it runs in (:func:`spsa_mix.models.preferred_layout`), not the accident of a copy.


Example
-------
>>> d = load_dataset("digits")
>>> d.num_classes, d.in_channels, d.image_size
(10, 1, 8)
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spsa_mix.data.splits import stratified_pick

__all__ = [
    "ImageData",
    "available_datasets",
    "load_dataset",
    "default_data_roots",
    "read_idx",
    "DIGITS_TEST_SIZE",
    "COLLATE_ONCE_MAX_BYTES",
    "TORCHVISION_DATASETS",
    "CIFAR10_JPEG_ZIP",
    "read_image_folder_zip",
    "image_folder_members",
    "decode_members",
]

DIGITS_TEST_SIZE = 500  # ours: 1797 digits -> 1297 train, 500 test (stratified, rng 0)
COLLATE_ONCE_MAX_BYTES = 512 * 2**20  # ours: a subset up to this size in float32 is normalised once, not per batch
CIFAR10_JPEG_ZIP = "cifar10-jpeg.zip"  # ../shared/data/README.md

# name -> (torchvision class, train kwargs, test kwargs)
TORCHVISION_DATASETS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "cifar10": ("CIFAR10", {"train": True}, {"train": False}),
    "cifar100": ("CIFAR100", {"train": True}, {"train": False}),
    "svhn": ("SVHN", {"split": "train"}, {"split": "test"}),
    "imagenette": ("Imagenette", {"split": "train"}, {"split": "val"}),
    "mnist": ("MNIST", {"train": True}, {"train": False}),
    "kmnist": ("KMNIST", {"train": True}, {"train": False}),
    "stl10": ("STL10", {"split": "train"}, {"split": "test"}),
    "usps": ("USPS", {"train": True}, {"train": False}),
    "gtsrb": ("GTSRB", {"split": "train"}, {"split": "test"}),
}
_IDX_FILES = {  # the four files of every idx dataset (MNIST's format), torchvision's names
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                    "Bag", "Ankle boot")


@dataclass(frozen=True)
class _IdxDataset:
    name: str  # as load_dataset names it
    title: str  # as people write it
    folder: str  # torchvision's folder: <root>/<folder>/raw/
    classes: tuple[str, ...]  # torchvision's class names
    origin: str  # where the files come from


_IDX_DATASETS = {
    "fashionmnist": _IdxDataset("fashion-mnist", "Fashion-MNIST", "FashionMNIST", _FASHION_CLASSES,
                                "github.com/zalandoresearch/fashion-mnist, data/fashion/"),
    "mnist": _IdxDataset("mnist", "MNIST", "MNIST",
                         ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
                          "7 - seven", "8 - eight", "9 - nine"),
                         "torchvision.datasets.MNIST(PATH, download=True) fetches them"),
    "kmnist": _IdxDataset("kmnist", "KMNIST", "KMNIST", ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
                          "torchvision.datasets.KMNIST(PATH, download=True) fetches them"),
}
_HOW_TO_PROVIDE = (
    "Provide it with --data-root PATH (Python: ExperimentConfig(data_root=PATH)) where {layout}; "
    "or set SPSA_MIX_DATA=PATH."
)


def _canonical(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset` (torchvision ones need their files locally).

    >>> available_datasets()[:3]
    ['digits', 'fashion-mnist', 'cifar10']
    """
    return ["digits", "fashion-mnist", *TORCHVISION_DATASETS, "cifar10-jpeg"]


@dataclass(frozen=True)
class ImageData:
    """A labelled image set in memory: uint8 images, int64 labels, normalisation.

    ``x_*`` are ``(N, C, H, W)`` uint8; a float image is ``(x * scale - mean) / std``
    per channel (:meth:`normalize`), with ``mean``/``std`` from the training split.

    >>> d = ImageData.from_arrays("toy", np.zeros((4, 1, 2, 2), np.uint8), np.arange(4) % 2,
    ...                           np.zeros((2, 1, 2, 2), np.uint8), np.arange(2), scale=1 / 255)
    >>> d.num_classes, d.in_channels, d.image_size, d.normalize(d.x_test).shape
    (2, 1, 2, torch.Size([2, 1, 2, 2]))
    """

    name: str
    x_train: torch.Tensor  # (N, C, H, W) uint8
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, C, H, W) uint8
    y_test: torch.Tensor  # (M,) int64
    scale: float
    mean: torch.Tensor  # (C,)
    std: torch.Tensor  # (C,)
    classes: tuple[str, ...]
    source: str

    @classmethod
    def from_arrays(cls, name: str, x_train: Any, y_train: Any, x_test: Any, y_test: Any, *, scale: float,
                    classes: Sequence[str] | None = None, source: str = "arrays",
                    standardize: bool = True, mean: Sequence[float] | None = None,
                    std: Sequence[float] | None = None) -> ImageData:
        """Build from arrays (channels-first uint8 images, integer labels); the test split
        may be empty. Images are normalised by the training split's per-channel statistics,
        by ``mean`` and ``std`` when given (e.g. those the experts were trained with), or only
        scaled with ``standardize=False`` (``mean`` 0, ``std`` 1)."""
        xt = _standard_layout(torch.as_tensor(np.asarray(x_train), dtype=torch.uint8))
        xs = _standard_layout(torch.as_tensor(np.asarray(x_test), dtype=torch.uint8))
        if xt.ndim != 4 or xs.ndim != 4 or xt.shape[1:] != xs.shape[1:]:
            raise ValueError(f"images must be (N, C, H, W) with equal (C, H, W), but got {tuple(xt.shape)} "
                             f"and {tuple(xs.shape)}")
        yt = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
        ys = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
        n_classes = int(max(int(y.max()) for y in (yt, ys) if y.numel())) + 1
        channels = xt.shape[1]
        if mean is not None or std is not None:
            if mean is None or std is None or len(mean) != channels or len(std) != channels:
                raise ValueError(f"mean and std must both be given, one value per channel ({channels}), but got "
                                 f"mean={mean!r} and std={std!r}")
            mean_t, std_t = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
            if not bool((std_t > 0).all()):
                raise ValueError(f"std must be positive, but got {list(std)}")
        elif standardize:
            flat = xt.transpose(0, 1).reshape(channels, -1).to(torch.float64) * scale  # (C, N*H*W)
            mean_t = flat.mean(dim=1).to(torch.float32)
            std_t = flat.std(dim=1).clamp_min(1e-6).to(torch.float32)
        else:
            mean_t, std_t = torch.zeros(channels), torch.ones(channels)
        return cls(name, xt, yt, xs, ys, float(scale), mean_t, std_t,
                   tuple(classes) if classes is not None else tuple(str(c) for c in range(n_classes)), source)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``(n, C, H, W)`` to normalised float32, on ``x``'s device."""
        mean = self.mean.to(x.device).view(1, -1, 1, 1)
        std = self.std.to(x.device).view(1, -1, 1, 1)
        return (x.to(torch.float32) * self.scale - mean) / std

    def labels(self, split: str = "train") -> torch.Tensor:
        """The ``(N,)`` int64 labels of ``split`` (``"train"`` or ``"test"``)."""
        return self.y_train if _check_split(split) == "train" else self.y_test

    # ------------------------------------------------------------------ what Batches uses
    def take(self, split: str, indices: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels of a subset of ``split``, on ``device``: normalised once
        (float32) when that copy takes at most :data:`COLLATE_ONCE_MAX_BYTES`, else as stored
        (uint8, normalised batch by batch by :meth:`collate`). Normalising is elementwise, so
        a batch holds the same numbers either way."""
        x, y = (self.x_train, self.y_train) if _check_split(split) == "train" else (self.x_test, self.y_test)
        if indices is not None:
            ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
            x, y = x[ix], y[ix]
        x = x.to(device)
        if x.numel() * 4 <= COLLATE_ONCE_MAX_BYTES:
            x = self.normalize(x)
        return x, y.to(device)

    def collate(self, stored: torch.Tensor, labels: torch.Tensor, ix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch ``(normalised images, labels)`` of a subset :meth:`take` gave."""
        images = stored[ix]
        return (self.normalize(images) if images.dtype == torch.uint8 else images), labels[ix]

    # ------------------------------------------------------------------ what the experiments use
    def features(self, indices: Any) -> torch.Tensor:
        """Normalised training images of ``indices``, ``(n, C, H, W)`` (SAIL's input features)."""
        return self.normalize(self.x_train[torch.as_tensor(np.asarray(indices, dtype=np.int64))])

    def digest(self, indices: Any) -> str:
        """SHA-256 of the training examples ``indices`` and the normalisation: what an
        expert trained on them saw."""
        ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        h = hashlib.sha256()
        h.update(self.x_train[ix].contiguous().numpy().tobytes())
        h.update(self.y_train[ix].contiguous().numpy().tobytes())
        h.update(np.asarray([self.scale], dtype=np.float64).tobytes())
        h.update(self.mean.numpy().tobytes())
        h.update(self.std.numpy().tobytes())
        return h.hexdigest()

    def model_dims(self) -> dict[str, int]:
        """The sizes an image architecture is built from (:func:`spsa_mix.models.build_model`)."""
        return {"num_classes": self.num_classes, "in_channels": self.in_channels, "image_size": self.image_size}

    def describe(self) -> dict[str, Any]:
        """Sizes and shape, for the results file."""
        return {"name": self.name, "source": self.source, "n_train": int(self.x_train.shape[0]),
                "n_test": int(self.x_test.shape[0]), "image_shape": list(self.x_train.shape[1:]),
                "num_classes": self.num_classes, "classes": list(self.classes)}


def _standard_layout(x: torch.Tensor) -> torch.Tensor:
    """``x`` with the strides of a freshly allocated contiguous tensor. NumPy arrays of one
    channel come with a channel stride of 0 (``a[:, None]``) or 1 (a copy made by indexing),
    which PyTorch reads as two different layouts.

    >>> a = np.zeros((3, 4, 4), np.uint8)[:, None]
    >>> torch.as_tensor(a).stride(), _standard_layout(torch.as_tensor(a)).stride()
    ((16, 0, 4, 1), (16, 16, 4, 1))
    """
    return x if x.stride() == torch.empty(x.shape, dtype=x.dtype, device="meta").stride() else \
        x.clone(memory_format=torch.contiguous_format)


def _check_split(split: Any) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', but got {split!r}")
    return str(split)


# ---------------------------------------------------------------------------- roots
def default_data_roots(cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched for dataset files when no ``data_root`` is given, in order.

    ``$SPSA_MIX_DATA``; ``../shared/data`` beside the repository this package is
    installed from (editable install) and beside the working directory; the cache's
    ``data`` folder.

    >>> all(isinstance(p, Path) for p in default_data_roots("/tmp/c"))
    True
    """
    from spsa_mix.io import default_cache_dir

    roots: list[Path] = []
    if os.environ.get("SPSA_MIX_DATA"):
        roots.append(Path(os.environ["SPSA_MIX_DATA"]).expanduser())
    repo = Path(__file__).resolve().parents[2]
    roots += [repo.parent / "shared" / "data", Path.cwd().resolve().parent / "shared" / "data"]
    roots.append((Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "data")
    unique: list[Path] = []
    for r in roots:
        if r not in unique:
            unique.append(r)
    return unique


# ---------------------------------------------------------------------------- loaders
def load_dataset(name: str, *, data_root: str | os.PathLike[str] | None = None,
                 cache_dir: str | os.PathLike[str] | None = None, image_size: int | None = None,
                 standardize: bool = True, test_size: int | None = None) -> ImageData:
    """Load a dataset by name into memory (see the module docstring for the names).

    Parameters
    ----------
    name:
        ``"digits"``, ``"fashion-mnist"`` or a name of :data:`TORCHVISION_DATASETS`
        (case, ``-`` and ``_`` ignored).
    data_root:
        Folder holding the files; default: the first of :func:`default_data_roots` that
        has them.
    cache_dir:
        Cache folder whose ``data`` subfolder is searched last.
    image_size:
        Resize (shorter side) and centre-crop to this size; needed for datasets whose
        images differ in size (Imagenette: 64 by default).
    standardize:
        Normalise each channel by the training split's mean and standard deviation
        (default); ``False`` only scales to ``[0, 1]``.
    test_size:
        ``"digits"`` only (it has no official split): images held out as the test split
        (default :data:`DIGITS_TEST_SIZE`, stratified); ``0`` keeps all 1797 images, in
        scikit-learn's order, as the training split.

    Raises
    ------
    ValueError
        For an unknown name (listing the available ones) or missing files (saying where
        it looked and how to provide them).

    Example
    -------
    >>> d = load_dataset("digits")
    >>> tuple(d.x_train.shape), tuple(d.x_test.shape), d.num_classes
    ((1297, 1, 8, 8), (500, 1, 8, 8), 10)
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset must be a name, one of {available_datasets()}, but got {name!r}")
    key = _canonical(name)
    if test_size is not None and key != "digits":
        raise ValueError(f"test_size applies to 'digits' only (the others have their own test split), "
                         f"but got test_size={test_size!r} for {name!r}")
    if key == "digits":
        data = _load_digits(DIGITS_TEST_SIZE if test_size is None else test_size, standardize)
    elif key in _IDX_DATASETS:
        data = _load_idx_dataset(_IDX_DATASETS[key], _roots(data_root, cache_dir), standardize)
    elif key == "cifar10jpeg":
        data = _load_cifar10_jpeg(_roots(data_root, cache_dir), cache_dir, standardize)
    elif key in TORCHVISION_DATASETS:
        data = _load_torchvision(key, _roots(data_root, cache_dir), image_size, standardize)
    else:
        raise ValueError(
            f"unknown dataset {name!r}; available: {', '.join(available_datasets())} "
            f"(the torchvision ones must be present locally under the data root)"
        )
    if image_size is not None and data.image_size != image_size and key != "imagenette":
        data = _resize(data, image_size, standardize)
    return data


def _roots(data_root: str | os.PathLike[str] | None, cache_dir: str | os.PathLike[str] | None) -> list[Path]:
    if data_root is not None:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise ValueError(f"data_root {str(data_root)!r} is not a folder (it does not exist or is a file)")
        return [root]
    return default_data_roots(cache_dir)


def _load_digits(test_size: int, standardize: bool) -> ImageData:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a dependency of the torch extra
        raise ValueError("the built-in dataset 'digits' needs scikit-learn (pip install scikit-learn)") from e
    bunch = load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # (1797, 1, 8, 8), values 0..16
    labels = bunch.target.astype(np.int64)
    if isinstance(test_size, bool) or not isinstance(test_size, int) or not 0 <= test_size < len(labels):
        raise ValueError(f"test_size must be an integer in [0, {len(labels)}), but got {test_size!r}")
    source = "sklearn.datasets.load_digits (UCI optical digits, shipped with scikit-learn)"
    if test_size == 0:  # every image, in scikit-learn's order, as stored (no copy)
        x_train, y_train, x_test, y_test = images, labels, images[:0], labels[:0]
        source += ", test_size=0"
    else:
        test = stratified_pick(labels, test_size, np.random.default_rng(0))
        train = np.setdiff1d(np.arange(len(labels)), test)
        x_train, y_train, x_test, y_test = images[train], labels[train], images[test], labels[test]
        if test_size != DIGITS_TEST_SIZE:
            source += f", test_size={test_size}"
    # The strides numpy gives the channel axis of (N, 1, 8, 8) differ between a copy made by
    # indexing (1) and the array itself (0); PyTorch reads them as channels-last and
    # channels-first. from_arrays stores both in the standard layout; the architecture picks its own.
    return ImageData.from_arrays("digits", x_train, y_train, x_test, y_test, scale=1 / 16,
                                 classes=[str(c) for c in range(10)], source=source, standardize=standardize)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an idx file (MNIST's format; ``.gz`` or not) into a uint8 array.

    The header is big-endian: two zero bytes, the type code (8: uint8), the number of
    dimensions, then one 4-byte size per dimension; the data follow.

    >>> import tempfile, struct
    >>> p = Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
    >>> _ = p.write_bytes(struct.pack(">HBBI", 0, 8, 1, 3) + bytes([7, 8, 9]))
    >>> read_idx(p).tolist()
    [7, 8, 9]
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 8:
        raise ValueError(f"{path} is not an idx file of uint8 (header {raw[:4]!r})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path}: header says {dims} ({math.prod(dims)} bytes) but holds {data.size}")
    return data.reshape(dims).copy()  # writable, as torch wants


def _idx_folders(spec: _IdxDataset, root: Path) -> list[Path]:
    """Where the files of ``spec`` are looked for under ``root``: torchvision's layout, and
    for Fashion-MNIST (whose files are named as MNIST's) also ``root/raw`` and ``root``."""
    layout = root / spec.folder / "raw"
    return [layout, root / "raw", root] if spec.name == "fashion-mnist" else [layout]


def _find_idx(folder: Path) -> dict[str, Path]:
    """The idx files of :data:`_IDX_FILES` present in ``folder`` (unpacked or ``.gz``)."""
    found: dict[str, Path] = {}
    for key, stem in _IDX_FILES.items():
        for candidate in (folder / stem, folder / (stem + ".gz")):
            if candidate.is_file():
                found[key] = candidate
                break
    return found


def _load_idx_dataset(spec: _IdxDataset, roots: list[Path], standardize: bool) -> ImageData:
    """An idx dataset (MNIST, Fashion-MNIST, KMNIST) from the first folder holding its four
    files; else ``ValueError`` saying where it looked, what it found and what is missing."""
    partial: list[tuple[Path, dict[str, Path]]] = []
    for root in roots:
        for folder in _idx_folders(spec, root):
            files = _find_idx(folder)
            if len(files) == len(_IDX_FILES):
                arrays = {key: read_idx(path) for key, path in files.items()}
                return ImageData.from_arrays(
                    spec.name, arrays["x_train"][:, None], arrays["y_train"], arrays["x_test"][:, None],
                    arrays["y_test"], scale=1 / 255, classes=spec.classes,
                    source=f"idx files in {files['x_train'].parent} (torchvision.datasets.{spec.folder}'s layout)",
                    standardize=standardize,
                )
            if files:
                partial.append((folder, files))
    wanted = ", ".join(s + "[.gz]" for s in _IDX_FILES.values())
    looked = ", ".join(str(r / spec.folder / "raw") for r in roots)
    found = "".join(
        f"Found in {folder}: {', '.join(p.name for p in files.values())}; missing: "
        f"{', '.join(s + '[.gz]' for k, s in _IDX_FILES.items() if k not in files)}. "
        for folder, files in partial
    )
    raise ValueError(
        f"{spec.title} not found: looked for {wanted} in {looked}. {found}"
        + _HOW_TO_PROVIDE.format(layout=f"PATH/{spec.folder}/raw/ holds those four files, .gz or unpacked "
                                 f"(torchvision's layout; {spec.origin})")
    )


def image_folder_members(z: Any, split: str) -> dict[str, list[str]]:
    """The image members of ``split`` in an open :class:`zipfile.ZipFile` of ImageFolder
    layout (``<top>/<split>/<class>/<file>`` or ``<split>/<class>/<file>``), by class, each
    list sorted by member name (one listing for every reader of such zips)."""
    by_class: dict[str, list[str]] = {}
    for name in z.namelist():
        parts = name.split("/")
        if len(parts) >= 3 and parts[-3] == split and parts[-1] and \
                parts[-1].lower().endswith((".jpg", ".jpeg", ".png")):
            by_class.setdefault(parts[-2], []).append(name)
    return {cls: sorted(members) for cls, members in by_class.items()}


def decode_members(z: Any, members: list[str]) -> list[np.ndarray]:
    """The images ``members`` of an open zip, decoded by Pillow, as ``(H, W, 3)`` uint8 arrays."""
    import io

    from PIL import Image

    out = []
    for member in members:
        with Image.open(io.BytesIO(z.read(member))) as img:
            out.append(np.asarray(img.convert("RGB")))
    return out


def read_image_folder_zip(path: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Every image of ``split`` in a zip of ImageFolder layout (``<top>/<split>/<class>/<file>``
    or ``<split>/<class>/<file>``): ``(N, C, H, W)`` uint8 images in member-name order within
    each class, their labels and the class names (sorted, as ImageFolder sorts them).

    Raises
    ------
    ValueError
        For no image of ``split``, or images of different sizes or modes.
    """
    import zipfile

    with zipfile.ZipFile(path) as z:
        by_class = image_folder_members(z, split)
        if not by_class:
            raise ValueError(f"{path}: no image under '{split}/<class>/' (ImageFolder layout)")
        classes = sorted(by_class)
        images: list[np.ndarray] = []
        labels: list[int] = []
        for label, cls in enumerate(classes):
            images += decode_members(z, by_class[cls])
            labels += [label] * len(by_class[cls])
    shapes = {a.shape for a in images}
    if len(shapes) != 1:
        raise ValueError(f"{path}: the images of '{split}' differ in size: {sorted(shapes)[:4]}")
    x = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    return x, np.asarray(labels, dtype=np.int64), classes


def _load_cifar10_jpeg(roots: list[Path], cache_dir: str | os.PathLike[str] | None, standardize: bool) -> ImageData:
    """``cifar10-jpeg``: the zip of the first root holding it, decoded once and cached as .npz."""
    from spsa_mix.io import atomic_path, default_cache_dir

    zips = [r / CIFAR10_JPEG_ZIP for r in roots if (r / CIFAR10_JPEG_ZIP).is_file()]
    if not zips:
        raise ValueError(
            f"cifar10-jpeg not found: looked for {CIFAR10_JPEG_ZIP} in {', '.join(str(r) for r in roots)}. "
            + _HOW_TO_PROVIDE.format(layout=f"PATH/{CIFAR10_JPEG_ZIP} is CIFAR-10 as JPEG in ImageFolder layout "
                                     "(<top>/{train,test}/<class>/*.jpg; ../shared/data/README.md)"))
    zip_path = zips[0]
    stat = zip_path.stat()
    cache = (Path(cache_dir).expanduser() if cache_dir else default_cache_dir()) / "data"
    npz = cache / f"cifar10-jpeg-{stat.st_size}-{stat.st_mtime_ns}.npz"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test", "classes")}
        source = f"{zip_path} (decoded arrays cached in {npz})"
    else:
        x_train, y_train, classes = read_image_folder_zip(zip_path, "train")
        x_test, y_test, test_classes = read_image_folder_zip(zip_path, "test")
        if test_classes != classes:
            raise ValueError(f"{zip_path}: the test classes {test_classes} differ from the train classes {classes}")
        arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
                  "classes": np.asarray(classes)}
        with atomic_path(npz) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
        source = f"{zip_path} (decoded, arrays cached in {npz})"
    return ImageData.from_arrays("cifar10-jpeg", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                                 arrays["y_test"], scale=1 / 255, classes=[str(c) for c in arrays["classes"]],
                                 source=source, standardize=standardize)


def _load_torchvision(key: str, roots: list[Path], image_size: int | None, standardize: bool) -> ImageData:
    import torchvision.datasets as tvd

    cls_name, train_kw, test_kw = TORCHVISION_DATASETS[key]
    cls = getattr(tvd, cls_name, None)
    if cls is None:
        raise ValueError(f"dataset {key!r} needs torchvision.datasets.{cls_name}, which this torchvision lacks")
    if key == "imagenette" and image_size is None:
        image_size = 64  # ours: 64 px keeps ViT's patch 8 (8x8 patches) and CPU memory small
    errors = []
    for root in roots:
        try:
            train, test = _construct(cls, root, train_kw, image_size), _construct(cls, root, test_kw, image_size)
        except (RuntimeError, FileNotFoundError, OSError) as e:
            errors.append(f"{root}: {e}")
            continue
        x_train, y_train = _to_arrays(train, image_size)
        x_test, y_test = _to_arrays(test, image_size)
        classes = getattr(train, "classes", None)
        if isinstance(classes, (list, tuple)) and classes and not isinstance(classes[0], str):
            classes = [str(c[0]) if isinstance(c, (tuple, list)) else str(c) for c in classes]
        return ImageData.from_arrays(key, x_train, y_train, x_test, y_test, scale=1 / 255, classes=classes,
                                     source=f"torchvision.datasets.{cls_name}(root={str(root)!r}, download=False)",
                                     standardize=standardize)
    raise ValueError(
        f"dataset {key!r} not found locally: torchvision.datasets.{cls_name}(root, download=False) failed for "
        f"every root it looked in ({'; '.join(errors)}). "
        + _HOW_TO_PROVIDE.format(layout=f"PATH is the root torchvision.datasets.{cls_name} expects (download "
                                 "it once on a machine with internet with download=True and copy it)")
    )


def resize_transform(image_size: int | None) -> Any:
    """A torchvision transform that resizes (shorter side) and centre-crops to ``image_size``, or ``None``."""
    if image_size is None:
        return None
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(image_size), transforms.CenterCrop(image_size)])


def images_to_arrays(ds: Any, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, C, H, W)`` uint8 and labels of a torchvision-style dataset (see :func:`_to_arrays`)."""
    return _to_arrays(ds, image_size)


def _construct(cls: Any, root: Path, kwargs: dict[str, Any], image_size: int | None) -> Any:
    transform = resize_transform(image_size)
    if cls.__name__ == "Imagenette":
        last: Exception | None = None
        for size in ("full", "320px", "160px"):
            try:
                return cls(str(root), size=size, download=False, transform=transform, **kwargs)
            except (RuntimeError, FileNotFoundError, OSError) as e:
                last = e
        raise RuntimeError(str(last))
    return cls(str(root), download=False, transform=transform, **kwargs)


def _to_arrays(ds: Any, image_size: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, C, H, W) uint8 and labels, using the in-memory arrays when present."""
    data = getattr(ds, "data", None)
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = getattr(ds, "labels", None)
    if isinstance(data, (np.ndarray, torch.Tensor)) and labels is not None and image_size is None:
        x = np.asarray(data)
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        return np.ascontiguousarray(x, dtype=np.uint8), np.asarray(labels, dtype=np.int64)
    xs, ys = [], []
    for img, label in ds:  # PIL images through the resize transform
        arr = np.asarray(img, dtype=np.uint8)
        xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
        ys.append(int(label))
    shapes = {x.shape for x in xs}
    if len(shapes) != 1:
        raise ValueError(f"images differ in size ({sorted(shapes)[:3]}...); pass image_size to resize them")
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def _resize(data: ImageData, size: int, standardize: bool) -> ImageData:
    import torch.nn.functional as F

    def rs(x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False)
        return out.round().clamp(0, 255).to(torch.uint8)

    return ImageData.from_arrays(data.name, rs(data.x_train), data.y_train, rs(data.x_test), data.y_test,
                                 scale=data.scale, classes=data.classes, source=data.source + f", resized to {size}",
                                 standardize=standardize)
