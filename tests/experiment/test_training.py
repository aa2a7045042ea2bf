"""The training loop shared by the experts and fine-tuning."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.experiment.training import train_model


def test_train_model_bad_epochs() -> None:
    with pytest.raises(ValueError, match="epochs must be an integer >= 0, but got -1"):
        train_model(torch.nn.Linear(2, 2), [], epochs=-1)
