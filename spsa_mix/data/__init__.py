"""Data for experiments: datasets held in memory, splits among experts, minibatches.

* :mod:`~spsa_mix.data.images`: image datasets (digits, Fashion-MNIST, torchvision) as
  :class:`~spsa_mix.data.images.ImageData`;
* :mod:`~spsa_mix.data.splits`: the target, held-out and Dirichlet non-IID expert splits
  (NumPy only);
* :mod:`~spsa_mix.data.batches`: minibatches of a subset, normalised as they are drawn.

Names are imported lazily, so ``import spsa_mix.data.splits`` needs no PyTorch.

Example
-------
>>> from spsa_mix.data import available_datasets
>>> available_datasets()[0]
'digits'
"""

from __future__ import annotations

from spsa_mix.lazy import lazy_exports

__all__ = [
    "ImageData",
    "available_datasets",
    "load_dataset",
    "default_data_roots",
    "read_idx",
    "Splits",
    "dirichlet_split",
    "make_splits",
    "stratified_pick",
    "Batches",
]

_WHERE = {
    "ImageData": "images", "available_datasets": "images", "load_dataset": "images",
    "default_data_roots": "images", "read_idx": "images",
    "Splits": "splits", "dirichlet_split": "splits", "make_splits": "splits", "stratified_pick": "splits",
    "Batches": "batches",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
