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
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.blend.sources.checkpoints import DATA_PARALLEL_PREFIX, Checkpoint, open_checkpoint
from spsa_mix.blend.held.experts import ALIGNMENT, ExpertStack, check_compatible, layer_groups, tied_aliases
from spsa_mix.blend.held.functional import Layout, accumulation_dtype, blend, unflatten
from spsa_mix.blend.saving import SaveSource, write_safetensors_shards
from spsa_mix.blend.skeleton import skeleton_of
from spsa_mix.blend.spaces import BlendSpace

if TYPE_CHECKING:
    from spsa_mix.blend.objective import BlendedObjective
    from spsa_mix.blend.pretrained import Loaded

__all__ = ["LoRALinear", "Adapter", "LoRABlend", "read_adapter", "check_adapters", "load_lora", "write_adapter",
           "PEFT_PREFIX", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."  # PEFT's names: base_model.model.<module>.lora_A.weight
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


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
class Adapter:
    """One PEFT LoRA adapter: its config, its factors' index, and per adapted module its
    rank and scaling."""

    label: str
    path: Path
    config: dict[str, Any]
    ckpt: Checkpoint
    ranks: dict[str, int] = field(default_factory=dict)
    scaling: dict[str, float] = field(default_factory=dict)

    def factor(self, module: str, which: str) -> str:
        return f"{PEFT_PREFIX}{module}.lora_{which}.weight"


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's ``get_pattern_key``: the first key ``k`` with ``re.match(rf"(.*\\.)?({k})$", module)``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def read_adapter(path: Path, label: str) -> Adapter:
    """Read and check an adapter's config and its factors' index (no weight is read)."""
    try:
        config = json.loads((path / ADAPTER_CONFIG).read_text())
    except ValueError as e:
        raise ValueError(f"{label}: {str(path / ADAPTER_CONFIG)!r} is not valid JSON ({e})") from None
    where = f"{label} ({str(path)!r})"
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{where} is a {config.get('peft_type')!r} adapter; only LoRA adapters can be blended")
    refused = [("use_dora", True, "DoRA"), ("fan_in_fan_out", True, "fan_in_fan_out (Conv1D layers)"),
               ("lora_bias", True, "LoRA biases")]
    for key, value, what in refused:
        if config.get(key) == value:
            raise ValueError(f"{where} uses {what} ({key}={value}), which the LoRA blend does not support")
    if config.get("bias", "none") != "none":
        raise ValueError(f"{where} trains biases (bias={config['bias']!r}); the LoRA blend supports bias='none' only")
    for key in ("modules_to_save", "target_parameters", "layer_replication", "trainable_token_indices"):
        if config.get(key):
            raise ValueError(f"{where} has {key}={config[key]!r}, which the LoRA blend does not support "
                             "(it blends the low-rank factors of linear layers only)")
    weights = next((path / w for w in ADAPTER_WEIGHTS if (path / w).is_file()), None)
    if weights is None:
        raise ValueError(f"{where} holds no adapter weights: expected one of {list(ADAPTER_WEIGHTS)}")
    ckpt = open_checkpoint(weights, label=label)
    adapter = Adapter(label, path, config, ckpt)
    factors: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, info in ckpt.infos.items():
        m = _FACTOR.match(name.removeprefix(PEFT_PREFIX)) if name.startswith(PEFT_PREFIX) else None
        if m is None:
            raise ValueError(f"{where}: tensor {name!r} is not a LoRA factor of a linear layer "
                             f"({PEFT_PREFIX}<module>.lora_A.weight or .lora_B.weight); it cannot be blended")
        factors.setdefault(m.group("module"), {})[m.group("which")] = info.shape
    for module, pair in factors.items():
        if set(pair) != {"A", "B"}:
            raise ValueError(f"{where}: module {module!r} has lora_{next(iter(pair))} but no "
                             f"lora_{'B' if 'A' in pair else 'A'}")
        (r, _), (_, r_b) = pair["A"], pair["B"]
        if r != r_b:
            raise ValueError(f"{where}: module {module!r} has lora_A of shape {pair['A']} and lora_B of shape "
                             f"{pair['B']}: their ranks differ")
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
        adapter.ranks[module] = r
        adapter.scaling[module] = float(alpha) / (math.sqrt(r) if config.get("use_rslora") else r)
    if not factors:
        raise ValueError(f"{where} holds no LoRA factor")
    return adapter


def _base_matches(adapter: Adapter, base: Path, base_config: Any) -> bool:
    named = adapter.config.get("base_model_name_or_path")
    if not named:
        return True
    candidates = {Path(str(base)).resolve().name, Path(str(getattr(base_config, "_name_or_path", "") or base)).name}
    return Path(str(named).rstrip("/")).name in candidates


def check_adapters(adapters: Sequence[Adapter], base_arch: nn.Module, *, base: Path, base_config: Any,
                   strict_base: bool) -> list[str]:
    """The adapted modules (in the base's order), after checking every adapter against the
    base and against ``adapters[0]`` (see the module docstring)."""
    modules = dict(base_arch.named_modules())
    first = adapters[0]
    for a in adapters:
        where = f"{a.label} ({str(a.path)!r})"
        if strict_base and not _base_matches(a, base, base_config):
            raise ValueError(f"{where} was trained on base_model_name_or_path={a.config['base_model_name_or_path']!r}, "
                             f"but base is {str(base)!r}: an adapter of another base? (pass strict_base=False if "
                             "it is the same model under another name)")
        for module in a.ranks:
            layer = modules.get(module)
            if layer is None:
                raise ValueError(f"{where} adapts {module!r}, which the base has no module of that name: "
                                 "an adapter of another base?")
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"{where} adapts {module!r}, a {type(layer).__name__} in the base; the LoRA "
                                 "blend supports nn.Linear layers only")
            shape_a = a.ckpt.infos[a.factor(module, "A")].shape
            shape_b = a.ckpt.infos[a.factor(module, "B")].shape
            if shape_a[1] != layer.in_features or shape_b[0] != layer.out_features:
                raise ValueError(
                    f"{where}: tensor {a.factor(module, 'A')!r} has shape {shape_a} and "
                    f"{a.factor(module, 'B')!r} has shape {shape_b}, but the base's {module!r} has weight shape "
                    f"{(layer.out_features, layer.in_features)}: an adapter trained on another base?")
        if set(a.ranks) != set(first.ranks):
            extra = sorted(set(a.ranks) - set(first.ranks))
            missing = sorted(set(first.ranks) - set(a.ranks))
            raise ValueError(f"{where} adapts other modules than {first.label}: it also adapts {extra[:3]} and "
                             f"lacks {missing[:3]}; all adapters must adapt the same modules")
    return [name for name in modules if name in first.ranks]


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


def _attach(arch: nn.Module, ranks: dict[str, int], dtype: torch.dtype) -> None:
    for module, rank in ranks.items():
        path, _, leaf = module.rpartition(".")
        old = arch.get_submodule(module)
        if not isinstance(old, nn.Linear):  # check_adapters refused any other kind of layer
            raise TypeError(f"internal error: {module!r} is a {type(old).__name__}, not an nn.Linear")
        new = LoRALinear(old.in_features, old.out_features, rank=rank, bias=old.bias is not None, device="meta",
                         dtype=dtype).requires_grad_(False)
        setattr(arch.get_submodule(path) if path else arch, leaf, new)


def load_lora(adapters_paths: Sequence[Any], *, base: Any, device: torch.device, dtype: Any, stack_dtype: Any,
              granularity: str, head: Any, model_class: Any, strict_base: bool) -> Loaded:
    """The parts of a LoRA objective: the base held once, the adapters' factors side by side."""
    from spsa_mix.blend.pretrained import (
        Loaded,
        architecture_class,
        build_skeleton,
        check_directories,
        default_loss,
        forward_dtype,
        read_config,
    )

    if head is not None:
        raise ValueError("head= does not apply to space='lora' (the base's head is shared by all adapters)")
    if stack_dtype is not None:
        raise ValueError("stack_dtype does not apply to space='lora': the base is held once, in dtype, and the "
                         "adapters' factors beside it")
    paths = check_directories(adapters_paths, "experts", adapters=True)
    base_path = check_directories([base], "base", adapters=False)[0]
    adapters = [read_adapter(p, f"experts[{i}]") for i, p in enumerate(paths)]
    base_config = read_config(base_path, "base")
    base_ckpt = open_checkpoint(base_path, label="base")
    dt = forward_dtype(dtype, [base_ckpt], device)
    cls = architecture_class(base_config, model_class)
    base_arch = build_skeleton(base_config, cls, dtype=dt, device=device)
    modules = check_adapters(adapters, base_arch, base=base_path, base_config=base_config, strict_base=strict_base)
    reference = base_arch.state_dict()
    aliases = tied_aliases(base_arch)
    names = [n for n in reference if n not in aliases]
    if not any(n.startswith(DATA_PARALLEL_PREFIX) for n in names):
        base_ckpt.strip_prefix(DATA_PARALLEL_PREFIX)
    check_compatible({n: reference[n] for n in names}, base_ckpt.infos, label="base",
                     ignore=lambda n: n in aliases, check_dtype=False)

    total = {m: sum(a.ranks[m] for a in adapters) for m in modules}  # R per module
    arch = skeleton_of(base_arch, device=device)
    _attach(arch, total, dt)
    mix_names = [f"{m}.lora_mix" for m in modules]
    layout = Layout(tuple(mix_names), tuple((total[m],) for m in modules), align=ALIGNMENT)
    offsets = layout.offsets()
    if granularity == "layer":
        groups, segments = layer_groups(mix_names, layout)
    else:
        groups, segments = ["model"], [(0, layout.size)]
    acc = accumulation_dtype(dt)
    weights = torch.zeros((len(adapters), layout.size), dtype=acc, device=device)  # (K, P): S, the scalings
    constants: dict[str, torch.Tensor] = {}
    for name in names:  # the base, held once, in the forward's dtype
        t = base_ckpt.read(name)
        constants[name] = (t.to(device=device, dtype=dt) if t.is_floating_point() else t.to(device))
    for m in modules:
        start = offsets[f"{m}.lora_mix"][0]
        a_parts, b_parts = [], []
        for i, a in enumerate(adapters):
            r = a.ranks[m]
            weights[i, start:start + r] = a.scaling[m]
            start += r
            a_parts.append(a.ckpt.read(a.factor(m, "A")).to(device=device, dtype=dt))
            b_parts.append(a.ckpt.read(a.factor(m, "B")).to(device=device, dtype=dt))
        constants[f"{m}.lora_A"] = torch.cat(a_parts, dim=0)  # (R, d_in)
        constants[f"{m}.lora_B"] = torch.cat(b_parts, dim=1)  # (d_out, R)
    stored = {n: base_ckpt.infos[n].dtype for n in names}
    stack = ExpertStack(weights, layout, groups, segments, constants, {}, list(reference), has_base=False,
                        aliases=aliases, stored_dtypes=stored)
    first = adapters[0]
    lora = LoRABlend(modules=modules, ranks=[dict(a.ranks) for a in adapters], base_arch=base_arch,
                     adapter_dtype=first.ckpt.infos[first.factor(modules[0], "A")].dtype,
                     adapter_config=dict(first.config))
    return Loaded(arch=arch, stack=stack, space=BlendSpace("lora", len(adapters), len(groups), 1.0, granularity == "layer"),
                  source=SaveSource("lora", config_dir=base_path, adapter_config=dict(first.config)), lora=lora,
                  device=device, dtype=dt, default_loss=default_loss(cls), head=())


def write_adapter(objective: BlendedObjective, point: np.ndarray, directory: Path, *, source: SaveSource,
                  dtype: torch.dtype | None) -> None:
    """One PEFT adapter of rank ``R_m = sum_i r_i`` per module, ``w`` folded into ``lora_A``
    and ``lora_alpha = R_m`` (scaling 1), into ``directory``."""
    lora = objective._lora
    if lora is None:
        raise TypeError("internal error: write_adapter needs a LoRA objective")
    st = objective._stack
    out = dtype or lora.adapter_dtype
    acc = accumulation_dtype(out, objective.dtype)
    coeffs = objective._coefficients(objective._as_points(point[None]))
    segments = st.segments if objective.granularity == "layer" else None
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
