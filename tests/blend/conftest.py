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


# Hugging Face families (tests skip when transformers or peft is absent): saved once per session.
@pytest.fixture(scope="session")
def llama_family(tmp_path_factory: pytest.TempPathFactory):
    from .hf_helpers import save_family

    return save_family(tmp_path_factory.mktemp("llama"), k=3)


@pytest.fixture(scope="session")
def lora_family(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("peft")
    from .hf_helpers import make_adapter, save_family

    family = save_family(tmp_path_factory.mktemp("lora"), k=0)
    root = family.base.parent
    specs = [dict(r=2, lora_alpha=4), dict(r=4, lora_alpha=4), dict(r=2, lora_alpha=3, use_rslora=True)]
    family.experts = [make_adapter(family.base, root / f"adapter{i}", seed=i + 1, **spec)
                      for i, spec in enumerate(specs)]
    return family


@pytest.fixture
def no_weight_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail if any weight is read: errors that the indexes and configs reveal come before that."""
    from spsa_mix.blend.sources.checkpoints import _SafetensorsCheckpoint, _TensorsCheckpoint

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a weight was read before the error")

    monkeypatch.setattr(_SafetensorsCheckpoint, "_readinto", refuse)
    monkeypatch.setattr(_SafetensorsCheckpoint, "mapped", refuse)
    monkeypatch.setattr(_TensorsCheckpoint, "read", refuse)
