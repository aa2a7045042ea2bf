"""How much each rank's shard counts: the number a mean-reduced loss divides by.

Data parallelism turns each rank's mean loss into a sum, ``mean_r * w_r``, adds the sums
over ranks and divides by the total weight ``sum_r w_r``. That is the mean over the whole
minibatch exactly when ``w_r`` is what the loss divided by on rank ``r``'s shard:

==========================================  ============================================
loss                                        ``w`` (:func:`loss_weight`)
==========================================  ============================================
a loss with ``reduction_weight(targets)``   what that method returns (the protocol for
                                            your own losses)
``CausalLM`` (``"causal-lm"``)              scored tokens: ``labels[:, 1:] != -100``
                                            (Hugging Face's mean over tokens)
``F.cross_entropy``, ``CrossEntropy``,      integer targets not equal to the ignore
``nn.CrossEntropyLoss`` (mean)              index (``-100``); with class weights of
                                            ``nn.CrossEntropyLoss``, the sum of the
                                            targets' weights; class-probability
                                            targets: the batch size
``Entropy``                                 tokens marked real by ``(B, T)`` targets;
                                            else the batch size
anything else                               the batch size: the loss must be a mean over
                                            the examples (the first dimension)
==========================================  ============================================

A loss that is a mean over the *elements* of ``(B, d)`` outputs (``F.mse_loss``) divides
by ``B * d``: proportional to ``B`` when every shard has the same ``d``, which is all the
weighting needs. A loss that is not a mean (a sum, a median) cannot be split over ranks
this way; score it without data parallelism (``probe_groups=world_size``).

:func:`shard_weight` finds the weight of the last call of an objective: its own
``shard_weight()`` method if it has one, else ``loss_weight(objective.loss_fn, ...)`` on
``objective.last_batch`` (what :class:`~spsa_mix.blend.BlendedObjective` records).

Example
-------
>>> import torch
>>> from spsa_mix.blend.losses import CausalLM
>>> labels = torch.tensor([[5, 6, 7, -100], [1, 2, -100, -100]])    # 2 + 1 scored tokens
>>> loss_weight(CausalLM(), labels, 2), loss_weight(torch.nn.functional.cross_entropy, torch.tensor([0, -100, 2]), 3)
(3.0, 2.0)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.blend.losses import IGNORE_INDEX, CausalLM, CrossEntropy, Entropy

__all__ = ["loss_weight", "shard_weight"]


def _is_index_tensor(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and not t.is_floating_point() and not t.is_complex() and t.dtype != torch.bool


def loss_weight(loss_fn: Any, targets: Any, batch_size: int) -> float:
    """The number ``loss_fn`` divides by when it averages over a batch with these
    ``targets`` (see the module docstring for each loss).

    Parameters
    ----------
    loss_fn:
        The loss, ``loss_fn(outputs, targets) -> scalar``.
    targets:
        The batch's targets (a tensor, or ``None``).
    batch_size:
        The batch's number of examples (used when the targets say nothing more).

    Returns
    -------
    float
        A non-negative count (or a sum of class weights).

    >>> loss_weight(torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 3.0])), torch.tensor([1, 1, 0]), 3)
    7.0
    """
    own = getattr(loss_fn, "reduction_weight", None)
    if callable(own):
        return float(own(targets))
    if isinstance(loss_fn, CausalLM):
        if not isinstance(targets, torch.Tensor) or targets.ndim != 2:
            raise ValueError(f"causal-lm targets must be labels of shape (B, T), but got {type(targets).__name__}")
        return float((targets[:, 1:] != IGNORE_INDEX).sum())
    if isinstance(loss_fn, Entropy):
        if isinstance(targets, torch.Tensor) and targets.ndim == 2:
            return float((targets != IGNORE_INDEX).sum())
        return float(batch_size)
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        if loss_fn.reduction != "mean":
            raise ValueError(f"nn.CrossEntropyLoss with reduction={loss_fn.reduction!r} is not a mean; data "
                             "parallelism needs reduction='mean'")
        if _is_index_tensor(targets):
            valid = targets != loss_fn.ignore_index
            if loss_fn.weight is not None:
                return float(loss_fn.weight.to(targets.device)[targets[valid]].sum())
            return float(valid.sum())
        return float(batch_size)
    if loss_fn is F.cross_entropy or isinstance(loss_fn, CrossEntropy):
        return float((targets != IGNORE_INDEX).sum()) if _is_index_tensor(targets) else float(batch_size)
    return float(batch_size)


def shard_weight(objective: Any) -> float:
    """The weight of the shard that ``objective``'s last call scored.

    ``objective.shard_weight()`` if the objective has that method; otherwise
    :func:`loss_weight` of ``objective.loss_fn`` on ``objective.last_batch`` (a
    :class:`~spsa_mix.blend.batches.Batch`: :class:`~spsa_mix.blend.BlendedObjective`).

    Raises
    ------
    ValueError
        If the objective offers neither.

    >>> import numpy as np
    >>> from spsa_mix.blend import BlendedObjective
    >>> obj = BlendedObjective._example()
    >>> _ = obj(np.full(2, 0.5))
    >>> shard_weight(obj)                  # three examples
    3.0
    """
    own = getattr(objective, "shard_weight", None)
    if callable(own):
        return float(own())
    batch = getattr(objective, "last_batch", None)
    loss_fn = getattr(objective, "loss_fn", None)
    if batch is not None and loss_fn is not None:
        return loss_weight(loss_fn, batch.targets, batch.size)
    raise ValueError(
        f"data parallelism needs the weight of each rank's shard, but the objective ({type(objective).__name__}) "
        "has no shard_weight() method and no last_batch and loss_fn; pass weight=1.0 to DistributedObjective "
        "if every rank's shard has the same size, or weight=<callable returning this rank's count>"
    )
