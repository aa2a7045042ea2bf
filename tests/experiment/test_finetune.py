"""Fine-tuning a prior with alpha fixed: per-epoch test accuracy, determinism by seed."""

from __future__ import annotations

import numpy as np
import torch

from spsa_mix.data.batches import Batches
from spsa_mix.data.images import load_dataset
from spsa_mix.experiment.finetune import finetune


def _model() -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))


def _run(seed: int, epochs: int = 3) -> dict:
    d = load_dataset("digits")
    train = Batches(d, np.arange(300), batch_size=32, shuffle=True, generator=torch.Generator())
    test = Batches(d, split="test", batch_size=500)
    return finetune(_model(), train, test, epochs=epochs, lr=1e-2, seed=seed)


def test_records_the_prior_and_every_epoch() -> None:
    out = _run(0)
    assert len(out["test_accuracy"]) == 4 and len(out["test_loss"]) == 4 and len(out["train_loss"]) == 3
    assert out["test_accuracy"][-1] > out["test_accuracy"][0] + 0.3  # a linear model learns digits fast


def test_same_seed_same_curve_other_seed_other_order() -> None:
    a, b, c = _run(0), _run(0), _run(1)
    assert a["test_accuracy"] == b["test_accuracy"] and a["train_loss"] == b["train_loss"]
    assert a["train_loss"] != c["train_loss"]


def test_zero_epochs_is_the_prior_only() -> None:
    out = _run(0, epochs=0)
    assert len(out["test_accuracy"]) == 1 and out["train_loss"] == []
