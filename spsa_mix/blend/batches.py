"""Minibatches for the blended objective: a cycling stream, or one fixed batch.

``data`` is either

* an iterable of batches, e.g. a ``torch.utils.data.DataLoader``, re-iterated whenever it
  is exhausted (so a shuffling loader reshuffles each epoch); or
* one fixed batch, returned on every call (a deterministic objective, useful in tests): a
  tuple ``(inputs, targets)`` whose targets are a tensor, or one dict batch.

A batch is a pair ``(inputs, targets)``: ``inputs`` is a tensor (passed as the model's one
positional argument), a tuple or list of tensors (positional arguments) or a dict of
tensors (keyword arguments). Or it is a dict, as a Hugging Face tokenizer or collator
gives (``input_ids``, ``attention_mask``, optional ``labels``): the model is called with
the dict without ``labels`` as keyword arguments, and the targets are ``labels`` when
present, else ``input_ids`` with the padding (``attention_mask == 0``) set to ``-100``
(the causal-LM labels; the entropy objective reads them as the mask of real tokens), else
``None``. Everything is moved to the objective's device.

Example
-------
>>> import torch
>>> stream = BatchStream((torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)), device=torch.device("cpu"))
>>> batch = stream.next()
>>> batch.args[0].shape, batch.size
(torch.Size([4, 2]), 4)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from spsa_mix.blend.losses import IGNORE_INDEX

__all__ = ["Batch", "BatchStream", "split_batch", "is_fixed_batch", "iterate_once", "call_model", "dict_targets"]


@dataclass(frozen=True)
class Batch:
    """One minibatch on the device: ``model(*args, **kwargs)`` is scored against ``targets``."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    targets: Any = None

    @property
    def size(self) -> int:
        """Number of examples (the leading size of the targets, else of the first input)."""
        for t in (self.targets, *self.args, *self.kwargs.values()):
            if isinstance(t, torch.Tensor) and t.ndim > 0:
                return int(t.shape[0])
        return 1


def _to(value: Any, device: torch.device, dtype: torch.dtype | None = None) -> Any:
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point():
            return value.to(device, dtype=dtype, non_blocking=True)
        return value.to(device, non_blocking=True)
    if isinstance(value, (tuple, list)):
        return type(value)(_to(v, device, dtype) for v in value)
    if isinstance(value, Mapping):
        return {k: _to(v, device, dtype) for k, v in value.items()}
    return value


def dict_targets(batch: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """``(inputs, targets)`` of a dict batch (see the module docstring).

    >>> ids, mask = torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 0]])
    >>> inputs, targets = dict_targets({"input_ids": ids, "attention_mask": mask})
    >>> sorted(inputs), targets.tolist()
    (['attention_mask', 'input_ids'], [[5, 6, -100]])
    >>> dict_targets({"input_ids": ids, "labels": torch.tensor([1])})[1].tolist()
    [1]
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if "labels" in batch:
        return inputs, batch["labels"]
    ids = batch.get("input_ids")
    if not isinstance(ids, torch.Tensor):
        return inputs, None
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape == ids.shape:
        return inputs, ids.masked_fill(mask == 0, IGNORE_INDEX)
    return inputs, ids


def split_batch(batch: Any, device: torch.device, dtype: torch.dtype | None = None) -> Batch:
    """Turn one ``(inputs, targets)`` pair, or one dict batch, into a :class:`Batch` on
    ``device``; with ``dtype``, floating-point inputs are cast to it (the targets are left
    as they are).

    >>> b = split_batch(({"x": torch.ones(2)}, torch.ones(2)), torch.device("cpu"))
    >>> list(b.kwargs), b.args
    (['x'], ())
    >>> b = split_batch({"input_ids": torch.ones(2, 3, dtype=torch.long), "labels": torch.zeros(2)},
    ...                 torch.device("cpu"))
    >>> list(b.kwargs), b.targets.tolist()
    (['input_ids'], [0.0, 0.0])
    >>> split_batch(torch.ones(3), torch.device("cpu"))
    Traceback (most recent call last):
    ...
    ValueError: each batch of data must be a pair (inputs, targets) or a dict (input_ids, attention_mask, labels), but got a Tensor
    """
    if isinstance(batch, Mapping):
        raw_inputs, raw_targets = dict_targets(batch)
        return Batch(args=(), kwargs=_to(raw_inputs, device, dtype), targets=_to(raw_targets, device))
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        what = f"a {type(batch).__name__}" + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        raise ValueError(f"each batch of data must be a pair (inputs, targets) or a dict (input_ids, "
                         f"attention_mask, labels), but got {what}")
    inputs, targets = _to(batch[0], device, dtype), _to(batch[1], device)
    if isinstance(inputs, dict):
        return Batch(args=(), kwargs=inputs, targets=targets)
    if isinstance(inputs, (tuple, list)):
        return Batch(args=tuple(inputs), targets=targets)
    return Batch(args=(inputs,), targets=targets)


def call_model(model: Any, inputs: Any) -> Any:
    """``model`` applied to the inputs of a batch: a dict as keyword arguments, a tuple or
    list as positional arguments, anything else as the one argument (as :class:`Batch`).

    >>> call_model(lambda a, b=0: a + b, {"a": 1, "b": 2}), call_model(lambda a, b: a * b, (3, 4))
    (3, 12)
    """
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def is_fixed_batch(data: Any) -> bool:
    """Whether ``data`` is one fixed batch: a *tuple* ``(inputs, targets)`` whose targets are a
    tensor (a list, or a tuple of batches, is an iterable of batches), or a dict of tensors.

    >>> x, y = torch.zeros(3, 2), torch.zeros(3)
    >>> is_fixed_batch((x, y)), is_fixed_batch([(x, y), (x, y)]), is_fixed_batch(((x, y), (x, y)))
    (True, False, False)
    >>> is_fixed_batch({"input_ids": torch.zeros(2, 4, dtype=torch.long)})
    True
    """
    if isinstance(data, Mapping):
        return True
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[1], torch.Tensor)
        and isinstance(data[0], (torch.Tensor, tuple, list, dict))
    )


def iterate_once(data: Any, device: torch.device, *, max_batches: int | None = None,
                 dtype: torch.dtype | None = None) -> Iterator[Batch]:
    """One pass over ``data`` (a fixed batch is one batch), as :class:`Batch` objects."""
    if is_fixed_batch(data):
        yield split_batch(data, device, dtype)
        return
    if not isinstance(data, Iterable):
        raise ValueError(f"data must be an iterable of batches ((inputs, targets) pairs or dicts), a pair of "
                         f"tensors or one dict batch, but got {type(data).__name__}")
    for i, batch in enumerate(data):
        if max_batches is not None and i >= max_batches:
            return
        yield split_batch(batch, device, dtype)


class BatchStream:
    """An endless stream of minibatches on ``device``, floating inputs cast to ``dtype``
    (see the module docstring).

    ``next()`` returns the next batch, re-iterating ``data`` when it runs out; an iterable
    that yields nothing (or a one-shot iterator already consumed) is a ``ValueError``.
    """

    def __init__(self, data: Any, *, device: torch.device, dtype: torch.dtype | None = None) -> None:
        if data is None:
            raise ValueError("data is None: pass a DataLoader (or an iterable of (inputs, targets) batches) "
                             "or one fixed batch (inputs, targets)")
        self.device = device
        self.dtype = dtype
        self.fixed = is_fixed_batch(data)
        self._data = data
        self._iter: Iterator[Any] | None = None
        self._batch: Batch | None = split_batch(data, device, dtype) if self.fixed else None
        if not self.fixed and not isinstance(data, Iterable):
            raise ValueError(f"data must be an iterable of batches ((inputs, targets) pairs or dicts), a pair of "
                             f"tensors or one dict batch, but got {type(data).__name__}")
        self.batches_drawn = 0

    def next(self) -> Batch:
        """The next minibatch."""
        self.batches_drawn += 1
        if self._batch is not None:
            return self._batch
        return split_batch(self._next_raw(), self.device, self.dtype)

    def _next_raw(self) -> Any:
        """The next batch as ``data`` yields it, re-iterating ``data`` when it runs out."""
        for attempt in range(2):
            if self._iter is None:
                self._iter = iter(self._data)
            try:
                return next(self._iter)
            except StopIteration:
                self._iter = None
                if attempt == 1:
                    break
        raise ValueError(
            "data yielded no batch: pass a non-empty DataLoader or a re-iterable of batches "
            "(a generator can be iterated only once)"
        )

    # ------------------------------------------------------------------ resuming
    def restart(self, batches_drawn: int) -> None:
        """Start the stream again from the beginning of ``data`` and skip ``batches_drawn``
        batches: drawn from ``data`` (so its order advances as it did), neither moved to
        the device nor scored. The stream is then where a stream that drew that many
        batches was, provided ``data`` is the same and freshly made: its order must depend
        only on its own seed (a ``spsa_mix.data.Batches`` or a ``DataLoader`` with a seeded
        ``generator=``, built again as the first time), not on a generator shared with
        anything else.

        >>> import torch
        >>> data = [(torch.full((1, 1), float(i)), torch.zeros(1)) for i in range(3)]
        >>> s = BatchStream(data, device=torch.device("cpu"))
        >>> s.restart(4)
        >>> s.batches_drawn, float(s.next().args[0])
        (4, 1.0)
        """
        if isinstance(batches_drawn, bool) or not isinstance(batches_drawn, int) or batches_drawn < 0:
            raise ValueError(f"batches_drawn must be an integer >= 0, but got {batches_drawn!r}")
        self._iter = None
        self.batches_drawn = 0
        if self._batch is None:
            for _ in range(batches_drawn):
                self._next_raw()
        self.batches_drawn = batches_drawn
