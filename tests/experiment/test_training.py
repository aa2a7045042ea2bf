"""The training loop shared by the experts and fine-tuning."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.experiment.training import train_model


def test_train_model_bad_epochs() -> None:
    with pytest.raises(ValueError, match="epochs must be an integer >= 0, but got -1"):
        train_model(torch.nn.Linear(2, 2), [], epochs=-1)


def test_a_non_finite_loss_stops_training_before_its_step() -> None:
    from spsa_mix.core.errors import NonFiniteLossError

    model = torch.nn.Linear(2, 2)
    data = [(torch.ones(4, 2), torch.tensor([0, 1, 0, 1]))] * 3
    calls = []

    def loss_fn(out, y):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss * float("nan") if len(calls) == 5 else loss  # epoch 2, batch 2

    before = {}

    def snapshot(epoch, m):
        before.update({k: v.clone() for k, v in m.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match=r"training loss is nan at epoch 2, batch 2 \(the weights are those "
                                                 r"after the last finite step\)"):
        train_model(model, data, epochs=3, lr=0.1, loss_fn=loss_fn, after_epoch=snapshot)
    assert torch.isfinite(model.weight).all() and not torch.equal(model.weight, before["weight"])  # batch 1 stepped
