"""Tiny Hugging Face models, experts and LoRA adapters built from configs in temporary folders.

Nothing is downloaded: every model is built from a config (``LlamaConfig(vocab_size=64,
hidden_size=32, ...)``), its experts are the base with small random perturbations, and
the adapters are PEFT LoRA adapters with random factors. A family is saved once per test
session (a fraction of a second).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

VOCAB = 64


def llama_config(**overrides: Any) -> Any:
    kw: dict[str, Any] = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                              tie_word_embeddings=True, pad_token_id=0)
    kw.update(overrides)
    return transformers.LlamaConfig(**kw)


def perturbed(model: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """A copy of ``model`` with Gaussian noise of std ``scale`` added to every parameter."""
    out = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(scale * torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype))
    return out


def lm_batch(seed: int = 0, n: int = 3, length: int = 10, *, labels: bool = False) -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` with some right padding (and ``labels`` if asked)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, length), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, length - 3:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    batch = {"input_ids": ids, "attention_mask": mask}
    if labels:
        batch["labels"] = ids.masked_fill(mask == 0, -100)
    return batch


@dataclass
class Family:
    """A saved base and its K experts (directories), with the modules themselves."""

    base: Path
    experts: list[Path]
    base_model: torch.nn.Module
    expert_models: list[torch.nn.Module]
    extra: dict[str, Path] = field(default_factory=dict)


def save_family(root: Path, *, k: int = 3, seed: int = 0, cls: Any = None, config: Any = None,
                dtype: torch.dtype = torch.float32, max_shard_size: str | None = None) -> Family:
    """A base and ``k`` perturbed experts saved under ``root`` (sharded beyond ``max_shard_size``)."""
    cls = cls or transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    base = cls(config or llama_config()).to(dtype).eval()
    root.mkdir(parents=True, exist_ok=True)
    shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    base.save_pretrained(root / "base", **shards)
    experts, paths = [], []
    for i in range(k):
        e = perturbed(base, seed * 100 + i + 1).eval()
        e.save_pretrained(root / f"expert{i}", **shards)
        experts.append(e)
        paths.append(root / f"expert{i}")
    return Family(root / "base", paths, base, experts)


def make_adapter(base_dir: Path, out: Path, *, seed: int, r: int, lora_alpha: float,
                 targets: tuple[str, ...] = ("q_proj", "v_proj"), use_rslora: bool = False) -> Path:
    """A PEFT LoRA adapter of ``base_dir`` with random (non-zero) A and B."""
    from peft import LoraConfig, get_peft_model

    model = transformers.AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=list(targets),
                                                  lora_dropout=0.0, use_rslora=use_rslora))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=gen))
    peft_model.save_pretrained(out)
    return out


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        return model.eval()(**inputs).logits
