"""Fixtures of the blend tests; the helpers live in ``blend_helpers.py``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from .blend_helpers import make_tiny_experts, tiny_batch, train_digits_experts


@pytest.fixture
def tiny_experts() -> list[nn.Module]:
    return make_tiny_experts(3)


@pytest.fixture
def tiny_data() -> tuple[torch.Tensor, torch.Tensor]:
    return tiny_batch()


@pytest.fixture(scope="session")
def digits_experts() -> tuple[list[nn.Module], torch.Tensor, torch.Tensor]:
    return train_digits_experts(3)
