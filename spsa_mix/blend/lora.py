"""LoRA adapters of one base: ``W + sum_i alpha_i scaling_i B_i A_i`` per adapted layer, low rank.

Each expert is a PEFT adapter directory (``adapter_config.json`` and
``adapter_model.safetensors`` or ``adapter_model.bin``): for each adapted linear layer
``W (d_out, d_in)`` a pair ``A_i (r_i, d_in)``, ``B_i (d_out, r_i)`` and a scaling
``scaling_i = lora_alpha / r_i`` (``lora_alpha / sqrt(r_i)`` with ``use_rslora``; PEFT's
``alpha_pattern`` and ``rank_pattern`` honoured). The K adapters side by side are one
adapter of rank ``R = sum_i r_i``: ``A = [A_1; ...; A_K] (R, d_in)``, ``B = [B_1 ... B_K]
(d_out, R)``, and the blend is

    y = x W^T + b + ((x A^T) * w) B^T,     w = (alpha_i scaling_i repeated r_i times) (R,)

so no ``d_out x d_in`` matrix is formed per expert or per probe; the base is held once. The
per-rank-row weights ``w`` are themselves a blend ``w = alpha @ S``, with ``S (K, R)``
holding ``scaling_i`` on expert ``i``'s rows: the stack of this space, so that probes,
vmap, gradients and forward-mode derivatives are those of the other spaces. With
``granularity="layer"`` each adapted layer is a group with its own alpha.

Saving (:func:`write_adapter`) writes one PEFT adapter of rank ``R`` with ``w`` folded into
``A`` and ``lora_alpha = r`` (scaling 1): what PEFT's ``add_weighted_adapter(...,
combination_type="cat")`` writes for model-wise weights, and loadable with
``PeftModel.from_pretrained(base_model, path)``. PEFT's ``combination_type="linear"`` is
another function: it scales ``A_i`` and ``B_i`` by ``sqrt(w_i scaling_i)`` each and sums
them, so its update is ``(sum_i sqrt(w_i s_i) B_i)(sum_j sqrt(w_j s_j) A_j)``, with the
cross terms ``B_i A_j`` (``i != j``), and is not linear in the weights
(``tests/blend/test_lora.py`` checks both).

Refused, before any weight is read: DoRA, LoRA biases, ``modules_to_save``, ``fan_in_fan_out``
(GPT-2's ``Conv1D``), adapted layers that are not ``nn.Linear``, adapters that adapt
different layers, factors whose shapes do not fit the base's layers, and (with
``strict_base``) an adapter whose ``base_model_name_or_path`` names another model.

Example
-------
>>> import torch
>>> layer = LoRALinear(3, 2, rank=2, bias=False)
>>> with torch.no_grad():
...     _ = layer.weight.zero_(); _ = layer.lora_A.copy_(torch.eye(2, 3)); _ = layer.lora_B.copy_(torch.eye(2))
...     _ = layer.lora_mix.copy_(torch.tensor([2.0, 3.0]))
>>> layer(torch.tensor([[1.0, 1.0, 1.0]])).tolist()
[[2.0, 3.0]]
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.blend.held.experts import ExpertStack
from spsa_mix.blend.held.functional import accumulation_dtype, blend, unflatten
from spsa_mix.blend.saving import SaveSource, write_safetensors_shards
from spsa_mix.blend.sources.adapters import ADAPTER_CONFIG, PEFT_PREFIX

__all__ = ["LoRALinear", "LoRABlend", "attach", "write_adapter"]

class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a rank-``R`` update with per-row weights:
    ``y = x W^T + b + ((x A^T) * lora_mix) B^T``, the buffers ``lora_A (R, d_in)``,
    ``lora_B (d_out, R)``, ``lora_mix (R,)``; names of the base layer kept (``weight``, ``bias``)."""

    def __init__(self, in_features: int, out_features: int, *, rank: int, bias: bool = True,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.rank = rank
        self.register_buffer("lora_A", torch.zeros(rank, in_features, device=device, dtype=dtype))
        self.register_buffer("lora_B", torch.zeros(out_features, rank, device=device, dtype=dtype))
        self.register_buffer("lora_mix", torch.zeros(rank, device=device, dtype=dtype))

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    lora_mix: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)  # (..., d_out)
        h = F.linear(x, self.lora_A) * self.lora_mix  # (..., R)
        return out + F.linear(h, self.lora_B)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", rank={self.rank}"


@dataclass
class LoRABlend:
    """What the objective needs to merge or save a LoRA blend."""

    modules: list[str]
    ranks: list[dict[str, int]]  # per expert, per module
    base_arch: nn.Module  # the base architecture without LoRA layers (for blended_model)
    adapter_dtype: torch.dtype
    adapter_config: dict[str, Any]

    def merged(self, theta: torch.Tensor, stack: ExpertStack, out_dtype: Callable[[str], torch.dtype],
               acc: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
        """The base's tensors with ``B diag(w) A`` added to each adapted weight, one at a time."""
        mix = unflatten(theta, stack.layout)
        tied: dict[str, torch.Tensor] = {}
        adapted = {f"{m}.weight": m for m in self.modules}
        for name in stack.names:
            if name in stack.aliases:
                yield name, tied[stack.aliases[name]]
                continue
            value = stack.constants[name]
            if name in adapted:
                m = adapted[name]
                a, b = stack.constants[f"{m}.lora_A"].to(acc), stack.constants[f"{m}.lora_B"].to(acc)
                update = (b * mix[f"{m}.lora_mix"].to(acc)) @ a  # (d_out, R) (R, d_in): one product
                tensor = (value.to(acc) + update).to(out_dtype(name))
            else:
                tensor = value.to(out_dtype(name)).clone() if value.is_floating_point() else value.clone()
            if name in stack.aliases.values():
                tied[name] = tensor
            yield name, tensor


def attach(arch: nn.Module, ranks: dict[str, int], dtype: torch.dtype) -> None:
    """Replace each ``nn.Linear`` named in ``ranks`` by a :class:`LoRALinear` of that rank
    (on meta: the objective supplies every tensor)."""
    for module, rank in ranks.items():
        path, _, leaf = module.rpartition(".")
        old = arch.get_submodule(module)
        if not isinstance(old, nn.Linear):  # check_adapters refused any other kind of layer
            raise TypeError(f"internal error: {module!r} is a {type(old).__name__}, not an nn.Linear")
        new = LoRALinear(old.in_features, old.out_features, rank=rank, bias=old.bias is not None, device="meta",
                         dtype=dtype).requires_grad_(False)
        setattr(arch.get_submodule(path) if path else arch, leaf, new)


def write_adapter(lora: LoRABlend, st: ExpertStack, coeffs: torch.Tensor, directory: Path, *,
                  segments: Sequence[tuple[int, int]] | None, forward_dtype: torch.dtype, source: SaveSource,
                  dtype: torch.dtype | None) -> None:
    """One PEFT adapter of rank ``R_m = sum_i r_i`` per module, ``w`` folded into ``lora_A``
    and ``lora_alpha = R_m`` (scaling 1), into ``directory``; ``coeffs`` ``(1, R)`` (or
    ``(1, G, R)`` with ``segments``) are one point's coefficients of the stack's rows."""
    out = dtype or lora.adapter_dtype
    acc = accumulation_dtype(out, forward_dtype)
    mix = unflatten(blend(st.weights, coeffs, segments, dtype=acc)[0], st.layout)

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        for m in lora.modules:
            a = st.constants[f"{m}.lora_A"].to(acc) * mix[f"{m}.lora_mix"][:, None]  # (R, d_in), w folded in
            yield f"{PEFT_PREFIX}{m}.lora_A.weight", a.to(out)
            yield f"{PEFT_PREFIX}{m}.lora_B.weight", st.constants[f"{m}.lora_B"].to(out)

    write_safetensors_shards(tensors(), directory, max_shard_size=2**62, prefix="adapter_model")
    ranks = {m: sum(r[m] for r in lora.ranks) for m in lora.modules}
    r = max(set(ranks.values()), key=list(ranks.values()).count)  # the most common rank
    config = dict(source.adapter_config)
    config.update(r=r, lora_alpha=r, use_rslora=False, lora_dropout=0.0,
                  rank_pattern={re.escape(m): v for m, v in ranks.items() if v != r},
                  alpha_pattern={re.escape(m): v for m, v in ranks.items() if v != r})
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for name in os.listdir(directory):
        if name.startswith("adapter_model") and name.endswith(".index.json"):  # never sharded for PEFT
            raise RuntimeError("internal error: the adapter was sharded")
