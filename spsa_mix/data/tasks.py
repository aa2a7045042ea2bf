"""A task: what experts are trained for and a blend is scored on (data, loss, metric).

==========================  =========================  ================================  =====================
kind                        data                       loss (:mod:`spsa_mix.blend.losses`)  metric
==========================  =========================  ================================  =====================
``image-classification``    :class:`ImageData`         cross-entropy                     accuracy
``sequence-classification`` :class:`TextData`          cross-entropy                     accuracy
``causal-lm``               :class:`TextData`          next-token cross-entropy          next-token accuracy
==========================  =========================  ================================  =====================

A :class:`Task` is what the experiment pipeline and the expert pool take instead of a
dataset: it makes the minibatches (:class:`~spsa_mix.data.batches.Batches` accepts it as
a source; for a causal LM the targets are the token ids with padding set to ``-100``),
gives the labels the Dirichlet splits are drawn on (classes, or the domain of each
sequence), the input features SAIL compares, the digest that keys the expert cache and
the sizes an architecture is built from. :func:`load_task` builds one by dataset name.

Example
-------
>>> task = load_task("digits")
>>> task.kind, task.metric, task.model_dims()
('image-classification', 'accuracy', {'num_classes': 10, 'in_channels': 1, 'image_size': 8})
>>> lm = load_task("text-domains")
>>> lm.kind, lm.metric
('causal-lm', 'next-token accuracy')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spsa_mix.blend.losses import IGNORE_INDEX, LossFn, resolve_loss
from spsa_mix.data.images import ImageData, available_datasets, load_dataset
from spsa_mix.data.text import TEXT_DATASETS, TextData, load_text_dataset

__all__ = ["Task", "TASK_KINDS", "as_task", "load_task", "available_tasks"]

# kind -> (data class, loss name, metric)
TASK_KINDS: dict[str, tuple[type, str, str]] = {
    "image-classification": (ImageData, "cross-entropy", "accuracy"),
    "sequence-classification": (TextData, "cross-entropy", "accuracy"),
    "causal-lm": (TextData, "causal-lm", "next-token accuracy"),
}


@dataclass(frozen=True)
class Task:
    """Data, loss and metric of one task (see the module docstring).

    Parameters
    ----------
    data:
        An :class:`ImageData` or a :class:`TextData`.
    kind:
        One of :data:`TASK_KINDS`; it must suit ``data``.
    loss:
        The loss experts are trained on and the blend is scored with (default: the kind's).
    """

    data: ImageData | TextData
    kind: str
    loss: LossFn

    def __init__(self, data: ImageData | TextData, kind: str, loss: Any = None) -> None:
        if kind not in TASK_KINDS:
            raise ValueError(f"kind must be one of {list(TASK_KINDS)}, but got {kind!r}")
        data_cls, loss_name, _ = TASK_KINDS[kind]
        if not isinstance(data, data_cls):
            raise ValueError(f"a {kind} task needs {data_cls.__name__}, but got {type(data).__name__}")
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "loss", resolve_loss(loss_name if loss is None else loss))

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def metric(self) -> str:
        """What ``accuracy`` means for this task."""
        return TASK_KINDS[self.kind][2]

    def labels(self, split: str = "train") -> torch.Tensor:
        """The labels the splits are drawn on: classes, or the domain of each sequence."""
        return self.data.labels(split)

    # ------------------------------------------------------------------ what Batches uses
    def take(self, split: str, indices: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
        """The stored examples of a subset (see :class:`~spsa_mix.data.batches.BatchSource`)."""
        return self.data.take(split, indices, device)

    def collate(self, stored: Any, labels: torch.Tensor, ix: torch.Tensor) -> tuple[Any, Any]:
        """One batch ``(inputs, targets)``; for ``causal-lm`` the targets are the token ids
        with padding set to ``-100``."""
        inputs: Any
        inputs, targets = self.data.collate(stored, labels, ix)
        if self.kind == "causal-lm":
            ids, mask = inputs["input_ids"], inputs["attention_mask"]  # a TextData batch
            targets = ids.masked_fill(mask == 0, IGNORE_INDEX)
        return inputs, targets

    # ------------------------------------------------------------------ the rest
    def features(self, indices: Any) -> np.ndarray:
        """Input features of training examples, ``(n, p)`` float64 (SAIL compares them)."""
        return self.data.features(indices).flatten(1).numpy().astype(np.float64)

    def digest(self, indices: Any) -> str:
        """What an expert trained on ``indices`` saw, as a SHA-256 (keys the expert cache)."""
        return self.data.digest(indices)

    def model_dims(self) -> dict[str, int | None]:
        """Keyword arguments of :func:`spsa_mix.models.build_model` for this task
        (``num_classes=None`` for a causal LM: a language-model head)."""
        dims: dict[str, int | None] = dict(self.data.model_dims())
        if self.kind == "causal-lm":
            dims["num_classes"] = None
        return dims

    def describe(self) -> dict[str, Any]:
        """The task for the results file."""
        return {"kind": self.kind, "loss": repr(self.loss), "metric": self.metric, **self.data.describe()}


def as_task(value: Task | ImageData | TextData) -> Task:
    """A :class:`Task` as it is, or the default task of a dataset: image classification for
    :class:`ImageData`, a causal language model for :class:`TextData`.

    >>> as_task(load_dataset("digits")).kind
    'image-classification'
    """
    if isinstance(value, Task):
        return value
    if isinstance(value, ImageData):
        return Task(value, "image-classification")
    if isinstance(value, TextData):
        return Task(value, "causal-lm")
    raise ValueError(f"expected a Task, an ImageData or a TextData, but got {type(value).__name__}")


def available_tasks() -> list[str]:
    """Dataset names :func:`load_task` accepts.

    >>> "text-domains" in available_tasks()
    True
    """
    return [*available_datasets(), *TEXT_DATASETS]


def load_task(name: str, *, kind: str | None = None, data_root: str | os.PathLike[str] | None = None,
              cache_dir: str | os.PathLike[str] | None = None, image_size: int | None = None,
              standardize: bool = True, test_size: int | None = None) -> Task:
    """The task of a dataset by name: image sets are image classification; text sets are
    ``causal-lm`` unless ``kind="sequence-classification"`` (classify each sequence's label).

    The other arguments go to :func:`~spsa_mix.data.images.load_dataset` for image sets.

    >>> load_task("text-domains", kind="sequence-classification").metric
    'accuracy'
    >>> load_task("digits", kind="causal-lm")
    Traceback (most recent call last):
    ...
    ValueError: a causal-lm task needs TextData, but got ImageData
    """
    if isinstance(name, str) and name in TEXT_DATASETS:
        return Task(load_text_dataset(name), kind or "causal-lm")
    data = load_dataset(name, data_root=data_root, cache_dir=cache_dir, image_size=image_size,
                        standardize=standardize, test_size=test_size)
    return Task(data, kind or "image-classification")
