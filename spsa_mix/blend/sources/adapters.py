"""PEFT LoRA adapter directories: their configs and factors indexed, checked against a base.

:func:`read_adapter` reads an adapter's ``adapter_config.json`` and the index of its
``adapter_model.safetensors`` (or ``.bin``): per adapted module its rank ``r`` and its
scaling ``lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``; PEFT's
``alpha_pattern`` honoured); no weight is read. :func:`check_adapters` checks the adapters
against the base architecture and against each other. What is refused, and why, is listed
in :mod:`spsa_mix.blend.lora` (the blend of the factors).

Example
-------
>>> _pattern_value({"q_proj": 16}, "model.layers.0.self_attn.q_proj", 8), _pattern_value({}, "x", 8)
(16, 8)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from spsa_mix.blend.sources.checkpoints import Checkpoint, hf_weight_files, open_checkpoint

__all__ = ["Adapter", "read_adapter", "check_adapters", "PEFT_PREFIX", "ADAPTER_CONFIG", "ADAPTER_WEIGHTS"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
PEFT_PREFIX = "base_model.model."  # PEFT's names: base_model.model.<module>.lora_A.weight
_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])\.weight$")


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
    """Whether the adapter's recorded ``base_model_name_or_path`` names ``base``: by its
    folder's name (or the config's ``_name_or_path``), or, where it names a folder of this
    machine, by content (``base`` is that folder or a copy of it, under another name)."""
    named = adapter.config.get("base_model_name_or_path")
    if not named:
        return True
    candidates = {Path(str(base)).resolve().name, Path(str(getattr(base_config, "_name_or_path", "") or base)).name}
    if Path(str(named).rstrip("/")).name in candidates:
        return True
    recorded = Path(str(named)).expanduser()
    return recorded.is_dir() and _same_model(recorded, Path(base))


def _same_model(a: Path, b: Path) -> bool:
    """Two model folders holding one model: the same folder, or a copy (equal ``config.json``
    but for ``_name_or_path``, weight files of the same names and sizes)."""
    try:
        if os.path.samefile(a, b):
            return True

        def config(p: Path) -> Any:
            c = json.loads((p / "config.json").read_text())
            return {k: v for k, v in c.items() if k != "_name_or_path"} if isinstance(c, dict) else c

        def weights(p: Path) -> list[tuple[str, int]]:
            return [(f.name, f.stat().st_size) for f in hf_weight_files(p, str(p))[1]]

        return config(a) == config(b) and weights(a) == weights(b)
    except (OSError, ValueError):
        return False


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
                             f"but base is {str(base)!r}: an adapter of another base? (pass strict_base=False, in "
                             "spsa-mix merge strict_base: false or --no-strict-base, if it is the same model under "
                             "another name)")
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
