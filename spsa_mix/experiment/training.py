"""The training loop shared by the experts and the fine-tuning of a blended model.

Example
-------
>>> import torch
>>> m = torch.nn.Linear(2, 2)
>>> data = [(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2)]
>>> [r["epoch"] for r in train_model(m, data, epochs=2)]
[1, 2]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.blend.batches import call_model
from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.core.validation import check_int

__all__ = ["train_model"]


def train_model(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    epochs: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = (0.9, 0.999),
    loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
    after_epoch: Callable[[int, nn.Module], dict[str, float] | None] | None = None,
    progress: Any = None,
) -> list[dict[str, float]]:
    """Train every weight of ``model`` with Adam for ``epochs`` passes over ``batches``.

    Used for the experts (GLUE 5: Adam, lr 1e-3, betas (0.9, 0.999)) and for the
    fine-tuning of a blended model. ``batches`` yields ``(inputs, targets)``; inputs that
    are a dict are passed as keyword arguments (:func:`spsa_mix.blend.batches.call_model`),
    and ``loss_fn(outputs, targets)`` is minimised (a task's loss,
    :attr:`spsa_mix.data.tasks.Task.loss`). ``after_epoch(epoch, model)`` may return metrics
    (e.g. test accuracy), stored with the epoch's mean training loss. ``progress`` is a
    bar advanced once per batch (:func:`spsa_mix.progress.progress_bar`), or ``None``. Leaves the model in eval mode.

    A NaN or infinite batch loss stops the training before its step:
    :class:`~spsa_mix.core.errors.NonFiniteLossError` names the epoch and the batch, and the
    weights are those after the last finite step (an expert is then not cached; a
    fine-tuned configuration is recorded as an error of the experiment).

    Returns
    -------
    list of dict
        One row per epoch: ``epoch`` (1-based), ``train_loss``, plus ``after_epoch``'s.

    >>> m = torch.nn.Linear(2, 2)
    >>> data = [(torch.randn(8, 2, generator=torch.Generator().manual_seed(0)), torch.arange(8) % 2)]
    >>> rows = train_model(m, data, epochs=2)
    >>> [r["epoch"] for r in rows]
    [1, 2]
    """
    check_int(epochs, "epochs", minimum=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=betas)
    rows = []
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        for batch, (inputs, targets) in enumerate(batches, start=1):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(call_model(model, inputs), targets)
            value = float(loss.detach())
            if not math.isfinite(value):  # before its step: the weights stay finite
                raise NonFiniteLossError(f"training loss is {value} at epoch {epoch}, batch {batch} (the weights are "
                                         "those after the last finite step); try a lower learning rate",
                                         index=batch - 1, value=value)
            loss.backward()
            optimizer.step()
            size = int(targets.shape[0])
            total += value * size
            n += size
            if progress is not None:
                progress.update(1)
        row: dict[str, float] = {"epoch": epoch, "train_loss": total / max(n, 1)}
        model.eval()
        if after_epoch is not None:
            row.update(after_epoch(epoch, model) or {})
        rows.append(row)
    model.eval()
    return rows

