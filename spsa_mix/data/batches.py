"""Minibatches of an in-memory dataset, drawn on the device.

:class:`Batches` works with any source that stores its examples and collates a batch:
an :class:`~spsa_mix.data.images.ImageData` (normalised images and labels), a
:class:`~spsa_mix.data.text.TextData` or a :class:`~spsa_mix.data.tasks.Task` (whose
batches carry the targets its loss needs). The subset is moved to the device once, in
the form the source keeps it in (images normalised once, or uint8 for a large subset;
int64 tokens); each batch is indexed (and, where needed, collated) from it as it is drawn.

A source implements ``take(split, indices, device) -> (stored, labels)`` and
``collate(stored, labels, ix) -> (inputs, targets)``.

:class:`TensorBatches` gives the minibatches of tensors (what
``torch.utils.data.DataLoader(TensorDataset(...), batch_size, shuffle, generator)`` gives,
in the very same order) by indexing the tensors where they are, instead of collating
each batch from single examples.

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

from collections.abc import Iterator
from typing import Any, Protocol

import torch

from spsa_mix.core.validation import check_positive_int

__all__ = ["Batches", "BatchSource", "TensorBatches"]


class BatchSource(Protocol):
    """What :class:`Batches` needs from a dataset."""

    def take(self, split: str, indices: Any, device: torch.device) -> tuple[Any, torch.Tensor]: ...

    def collate(self, stored: Any, labels: torch.Tensor, ix: torch.Tensor) -> tuple[Any, Any]: ...


class Batches:
    """Minibatches ``(inputs, targets)`` of a subset of a dataset split.

    An iterable: each pass draws a new order from ``generator`` when ``shuffle`` (so
    :class:`~spsa_mix.blend.BlendedObjective` can cycle it).

    Parameters
    ----------
    data:
        A :class:`BatchSource` (:class:`~spsa_mix.data.images.ImageData`,
        :class:`~spsa_mix.data.tasks.Task`, ...).
    indices:
        Examples of ``split`` to use (default: all), in this order when not shuffled.
    split:
        ``"train"`` or ``"test"``.
    batch_size, drop_last:
        Examples per batch; drop a last, smaller batch.
    shuffle, generator:
        A new permutation per pass, from ``generator`` (a ``torch.Generator``, required).
    replacement, num_batches:
        Instead of passes over a permutation, each pass is ``num_batches`` batches of
        ``min(batch_size, n)`` examples drawn uniformly with replacement from ``generator``.
    min_batch_size:
        Skip batches smaller than this (BatchNorm in training mode needs 2).
    device:
        Where the subset is kept and the batches are made.

    >>> import numpy as np
    >>> from spsa_mix.data.images import ImageData
    >>> d = ImageData.from_arrays("toy", np.zeros((10, 1, 2, 2), np.uint8), np.arange(10) % 2,
    ...                           np.zeros((2, 1, 2, 2), np.uint8), np.arange(2), scale=1 / 255)
    >>> b = Batches(d, np.arange(10), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0))
    >>> [tuple(x.shape) for x, _ in b], len(b)
    ([(4, 1, 2, 2), (4, 1, 2, 2), (2, 1, 2, 2)], 3)
    >>> r = Batches(d, batch_size=3, replacement=True, num_batches=2, generator=torch.Generator().manual_seed(0))
    >>> [tuple(y.shape) for _, y in r]
    [(3,), (3,)]
    """

    def __init__(self, data: BatchSource, indices: Any = None, *, split: str = "train", batch_size: int = 64,
                 shuffle: bool = False, generator: torch.Generator | None = None,
                 device: str | torch.device = "cpu", drop_last: bool = False, replacement: bool = False,
                 num_batches: int | None = None, min_batch_size: int = 1) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', but got {split!r}")
        check_positive_int(batch_size, "batch_size")
        check_positive_int(min_batch_size, "min_batch_size")
        for flag, on in (("shuffle", shuffle), ("replacement", replacement)):
            if on and generator is None:
                raise ValueError(f"{flag}=True needs a torch.Generator (generator=...) so the order is reproducible")
        if replacement:
            check_positive_int(num_batches, "num_batches")
        elif num_batches is not None:
            raise ValueError(f"num_batches applies with replacement=True, but got num_batches={num_batches!r}")
        self.data = data
        self.device = torch.device(device)
        self.stored, self.y = data.take(split, indices, self.device)  # the subset, as stored; (n,) labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last
        self.replacement = replacement
        self.num_batches = num_batches
        self.min_batch_size = min_batch_size

    def __len__(self) -> int:
        if self.replacement:
            return int(self.num_batches)  # type: ignore[arg-type]
        n = int(self.y.shape[0])
        full, rest = divmod(n, self.batch_size)
        keep_last = rest >= self.min_batch_size and not self.drop_last
        return full + (1 if rest and keep_last else 0)

    @property
    def num_samples(self) -> int:
        return int(self.y.shape[0])

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        n = self.num_samples
        if self.replacement:
            for _ in range(len(self)):
                ix = torch.randint(0, n, (min(self.batch_size, n),), generator=self.generator).to(self.device)
                yield self.data.collate(self.stored, self.y, ix)
            return
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            ix = order[start: start + self.batch_size]
            yield self.data.collate(self.stored, self.y, ix)


class TensorBatches:
    """The minibatches of ``DataLoader(TensorDataset(*tensors), batch_size=..., shuffle=...,
    generator=..., drop_last=...)``, in the same order, drawn by indexing the tensors.

    A ``DataLoader`` over a ``TensorDataset`` (one worker, the default collate) fetches
    each example alone and stacks them (``torch.stack``): a cost per example and per batch
    that indexing the tensors kept on the device does not have. The batches hold the same
    values as the loader's, and the generator is drawn from as the loader draws from it, at
    the same points, so the sequence of minibatches and the generator's state after each pass
    are the loader's:

    * each pass (``iter``) draws the loader iterator's base seed,
      ``torch.empty((), dtype=torch.int64).random_(generator=generator)``, from ``generator``
      (from PyTorch's global generator when it is ``None``, as the loader does);
    * with ``shuffle``, its ``RandomSampler`` draws ``torch.randperm(n, generator=generator)``
      for the order of the pass, then one more permutation, of which it takes nothing, at
      the end of the pass (when the last batch is drawn if ``n`` is not a multiple of
      ``batch_size``, else when the batch after the last one is asked for).

    ``tests/data/test_batches.py`` checks the batches and the generator's state against
    ``torch.utils.data.DataLoader`` itself. Batches are tuples (the loader gives lists).

    Parameters
    ----------
    tensors:
        Tensors of equal length (examples along the first dimension), e.g. inputs and labels.
    batch_size, shuffle, generator, drop_last:
        As for ``DataLoader``; ``shuffle=True`` needs a ``generator``.
    device:
        Where the tensors are kept and the batches are made (default: where they are).

    >>> x, y = torch.arange(10.0)[:, None], torch.arange(10)
    >>> gen = torch.Generator().manual_seed(0)
    >>> [b[1].tolist() for b in TensorBatches(x, y, batch_size=4, shuffle=True, generator=gen)]
    [[3, 7, 5, 2], [0, 8, 1, 6], [9, 4]]
    """

    def __init__(self, *tensors: torch.Tensor, batch_size: int = 1, shuffle: bool = False,
                 generator: torch.Generator | None = None, drop_last: bool = False,
                 device: str | torch.device | None = None) -> None:
        if not tensors or not all(isinstance(t, torch.Tensor) and t.ndim > 0 for t in tensors):
            raise ValueError("tensors must be one or more tensors with a first dimension (the examples)")
        if len({int(t.shape[0]) for t in tensors}) != 1:
            raise ValueError(f"tensors must have the same length, but got {[int(t.shape[0]) for t in tensors]}")
        check_positive_int(batch_size, "batch_size")
        if shuffle and generator is None:
            raise ValueError("shuffle=True needs a torch.Generator (generator=...) so the order is reproducible")
        self.device = torch.device(device) if device is not None else tensors[0].device
        self.tensors = tuple(t.to(self.device) for t in tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.generator = generator
        self.drop_last = drop_last

    @property
    def num_samples(self) -> int:
        return int(self.tensors[0].shape[0])

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        torch.empty((), dtype=torch.int64).random_(generator=self.generator)  # the loader iterator's _base_seed
        return self._batches()

    def _batches(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n, b = self.num_samples, self.batch_size
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        full = n - n % b
        for start in range(0, full, b):
            ix = order[start: start + b]
            yield tuple(t[ix] for t in self.tensors)
        if self.shuffle:
            torch.randperm(n, generator=self.generator)  # RandomSampler's last, empty slice of a permutation
        if n > full and not self.drop_last:
            ix = order[full:]
            yield tuple(t[ix] for t in self.tensors)
