"""Minibatches of a subset of an in-memory dataset, normalised as they are drawn.

Example
-------
>>> import numpy as np, torch
>>> from spsa_mix.data.images import ImageData
>>> d = ImageData.from_arrays("toy", np.zeros((10, 1, 2, 2), np.uint8), np.arange(10) % 2,
...                           np.zeros((2, 1, 2, 2), np.uint8), np.arange(2), scale=1 / 255)
>>> [tuple(x.shape) for x, _ in Batches(d, np.arange(5), batch_size=2)]
[(2, 1, 2, 2), (2, 1, 2, 2), (1, 1, 2, 2)]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from spsa_mix.data.images import ImageData

__all__ = ["Batches"]


class Batches:
    """Minibatches ``(x, y)`` of a subset of an :class:`ImageData` split, normalised.

    An iterable: each pass draws a new order from ``generator`` when ``shuffle`` (so
    :class:`~spsa_mix.blend.BlendedObjective` can cycle it). The subset is moved to
    ``device`` once, as uint8.

    >>> d = ImageData.from_arrays("toy", np.zeros((10, 1, 2, 2), np.uint8), np.arange(10) % 2,
    ...                           np.zeros((2, 1, 2, 2), np.uint8), np.arange(2), scale=1 / 255)
    >>> b = Batches(d, np.arange(10), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    >>> [tuple(x.shape) for x, _ in b], len(b)
    ([(4, 1, 2, 2), (4, 1, 2, 2), (2, 1, 2, 2)], 3)
    """

    def __init__(self, data: ImageData, indices: Any = None, *, split: str = "train", batch_size: int = 64,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", drop_last: bool = False) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', but got {split!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, but got {batch_size!r}")
        if shuffle and generator is None:
            raise ValueError("shuffle=True needs a torch.Generator (generator=...) so the order is reproducible")
        x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
        if indices is not None:
            ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
            x, y = x[ix], y[ix]
        self.data = data
        self.device = torch.device(device)
        self.x = x.to(self.device)  # (n, C, H, W) uint8
        self.y = y.to(self.device)  # (n,)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    def __len__(self) -> int:
        n = int(self.y.shape[0])
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_samples
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            ix = order[start: start + self.batch_size]
            yield self.data.normalize(self.x[ix]), self.y[ix]
