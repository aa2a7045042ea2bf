"""Fine-tune a blended prior theta(alpha) on the target set with alpha fixed.

GLUE 5 reports the test accuracy of the prior (zero-shot) and after "updating all
network parameters on the target training set while keeping alpha fixed"; its Figure 1
plots the test accuracy after every fine-tuning epoch. The paper does not name the
optimiser; this package uses Adam with the experts' settings (lr 1e-3, betas
(0.9, 0.999), batch 64), the same for every configuration, so the curves differ only by
their starting point.

Randomness: the order of the target minibatches comes from ``seed`` (a
``torch.Generator``); anything else stochastic in the model (dropout) runs under
:func:`torch.random.fork_rng` seeded by ``seed``, which restores the global generator
afterwards.

Example
-------
>>> import numpy as np, torch
>>> from spsa_mix.data.batches import Batches
>>> from spsa_mix.data.images import ImageData
>>> rng = np.random.default_rng(0)
>>> d = ImageData.from_arrays("toy", rng.integers(0, 255, (32, 1, 4, 4)), np.arange(32) % 2,
...                           rng.integers(0, 255, (8, 1, 4, 4)), np.arange(8) % 2, scale=1 / 255)
>>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
>>> out = finetune(model, Batches(d, split="train"), Batches(d, split="test"), epochs=2, seed=0)
>>> len(out["test_accuracy"]), len(out["train_loss"])
(3, 2)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.blend import evaluate
from spsa_mix.data.batches import Batches
from spsa_mix.experiment.training import train_model
from spsa_mix.progress import progress_bar

__all__ = ["finetune", "FINETUNE_BETAS"]

FINETUNE_BETAS = (0.9, 0.999)  # ours: as the experts (GLUE 5's expert optimiser)


def finetune(
    model: nn.Module,
    train: Batches,
    test: Batches,
    *,
    epochs: int,
    lr: float = 1e-3,
    betas: tuple[float, float] = FINETUNE_BETAS,
    seed: int = 0,
    loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
    progress: bool = False,
    desc: str = "fine-tune",
) -> dict[str, Any]:
    """Train all weights of ``model`` on ``train`` and record the test metrics per epoch.

    Parameters
    ----------
    model:
        The prior theta(alpha) (modified in place).
    train:
        Target minibatches; when shuffled, its generator is reseeded from ``seed``.
    test:
        Evaluation batches (the test split).
    epochs, lr, betas:
        Adam on every weight (defaults: the experts' settings).
    seed:
        The minibatch order and any dropout.
    loss_fn:
        The training and evaluation loss (a task's :attr:`~spsa_mix.data.tasks.Task.loss`).
    progress:
        A tqdm bar over batches (where tqdm is installed).
    desc:
        The bar's label.

    Returns
    -------
    dict
        ``test_accuracy`` and ``test_loss`` (``epochs + 1`` values: epoch 0 is the prior),
        ``train_loss`` (one per epoch) and ``seconds`` (training and evaluation).
    """
    start = time.perf_counter()
    if train.shuffle and train.generator is not None:
        train.generator.manual_seed(int(seed))
    prior = evaluate(model, test, loss_fn=loss_fn)
    accuracies, losses = [prior["accuracy"]], [prior["loss"]]

    def after_epoch(epoch: int, m: nn.Module) -> dict[str, float]:
        metrics = evaluate(m, test, loss_fn=loss_fn)
        accuracies.append(metrics["accuracy"])
        losses.append(metrics["loss"])
        return {"test_accuracy": metrics["accuracy"]}

    bar = progress_bar(epochs * len(train), desc, bool(progress) and epochs > 0, unit="batch", leave=False)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))  # scoped: restored on exit
            rows = train_model(model, train, epochs=epochs, lr=lr, betas=betas, loss_fn=loss_fn,
                               after_epoch=after_epoch, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    return {"test_accuracy": accuracies, "test_loss": losses, "train_loss": [r["train_loss"] for r in rows],
            "seconds": time.perf_counter() - start}
