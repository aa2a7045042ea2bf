"""Hugging Face directories as experts and base: configs compared, architecture built offline.

:func:`load_pretrained` (behind :meth:`BlendedObjective.from_pretrained`) does, in order,
everything that needs no weight before anything that does:

1. each expert (and the base) is a model directory (``config.json`` and weights), its
   config read with ``AutoConfig.from_pretrained(..., local_files_only=True)`` (never a
   download, never remote code) and compared with ``experts[0]``'s: the first differing
   key is named with both values (keys that do not change the weights' meaning, such as
   ``_name_or_path``, ``transformers_version``, ``dtype``, ``use_cache`` and the label
   names, are ignored);
2. each weight file is indexed (names, stored dtypes, shapes; every shard of a sharded
   index must exist), and the forward's dtype, by default the experts' stored dtype, is
   checked on the device with a small product;
3. the architecture is built from the config with the class ``config.architectures``
   names, its parameters on the meta device (no memory, no initialisation; buffers such as
   rotary frequencies computed as usual: :mod:`spsa_mix.blend.skeleton`), and every
   expert's index is checked against it (names and shapes; tied weights such as
   ``lm_head.weight`` may be absent from the files, as transformers writes them);
4. only then the stack is filled, one tensor at a time, in the stored dtype
   (:func:`~spsa_mix.blend.experts.stack_experts`).

LoRA adapters over a base take the same road through :mod:`spsa_mix.blend.lora`.

Example
-------
>>> import tempfile, torch, transformers
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
...                                num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True)
>>> dirs = []
>>> for seed in range(2):
...     _ = torch.manual_seed(seed)
...     dirs.append(tempfile.mkdtemp())
...     transformers.LlamaForCausalLM(cfg).save_pretrained(dirs[-1])
>>> from spsa_mix.blend import BlendedObjective
>>> obj = BlendedObjective.from_pretrained(dirs, device="cpu")
>>> obj.k, obj.shape, obj.dtype, obj.loss_fn
(2, (2,), torch.float32, CausalLM())
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spsa_mix.blend.checkpoints import Checkpoint, is_hf_directory, open_checkpoint
from spsa_mix.blend.devices import check_device_dtype, check_float_dtype, resolve_device
from spsa_mix.blend.experts import ExpertStack, check_expert_list, stack_experts, tied_aliases
from spsa_mix.blend.methods.space import MethodBlend, as_method
from spsa_mix.blend.saving import SaveSource
from spsa_mix.blend.skeleton import move_buffers, parameters_on_meta
from spsa_mix.blend.spaces import BlendSpace, check_space

__all__ = ["Loaded", "load_pretrained", "read_config", "compare_configs", "architecture_class", "build_skeleton",
           "IGNORED_CONFIG_KEYS", "check_directories"]

# Config entries that may differ between experts without changing what their weights mean.
IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "id2label", "label2id",
    "_commit_hash", "finetuning_task", "_attn_implementation_autoset", "output_attentions",
    "output_hidden_states", "return_dict", "problem_type",
})


@dataclass
class Loaded:
    """What :meth:`BlendedObjective.from_pretrained` builds the objective from."""

    arch: nn.Module
    stack: ExpertStack
    space: BlendSpace
    source: SaveSource
    lora: Any
    device: torch.device
    dtype: torch.dtype
    default_loss: str
    head: tuple[str, ...]
    method: Any = None  # a task-vector method space's MethodBlend (spsa_mix.blend.methods.space)


def read_config(path: str | os.PathLike[str], label: str) -> Any:
    """``AutoConfig.from_pretrained(path, local_files_only=True)``, errors labelled."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for a bad config
        raise ValueError(f"{label}: cannot read {str(Path(path) / 'config.json')!r} ({type(e).__name__}: {e})") from None


def compare_configs(configs: Sequence[tuple[str, Any]]) -> None:
    """Raise ``ValueError`` naming the first config entry in which ``configs[j]`` differs from
    ``configs[0]`` (``(label, config)`` pairs; :data:`IGNORED_CONFIG_KEYS` aside)."""
    (label0, config0), rest = configs[0], configs[1:]
    ref = config0.to_dict()
    for label, config in rest:
        d = config.to_dict()
        for key in sorted(set(ref) | set(d)):
            if key in IGNORED_CONFIG_KEYS:
                continue
            a, b = d.get(key, "<missing>"), ref.get(key, "<missing>")
            if a != b:
                raise ValueError(f"{label} has a config that differs from {label0}'s: {key}={a!r}, but {label0} "
                                 f"has {key}={b!r} (the experts must share one architecture)")


def architecture_class(config: Any, model_class: Any = None) -> type:
    """The transformers class to build: ``model_class`` (a class or its name), else the first
    of ``config.architectures``."""
    import transformers

    if isinstance(model_class, type):
        return model_class
    name = model_class if isinstance(model_class, str) else (getattr(config, "architectures", None) or [None])[0]
    if name is None:
        raise ValueError("the config names no architecture (config.architectures is empty): pass "
                         "model_class= (e.g. transformers.AutoModelForCausalLM's target class)")
    cls = getattr(transformers, name, None)
    if not isinstance(cls, type):
        raise ValueError(f"transformers {transformers.__version__} has no model class {name!r} "
                         "(from config.architectures or model_class=); pass model_class=<a transformers class>")
    return cls


def build_skeleton(config: Any, cls: type, *, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """``cls`` built from ``config`` with its parameters on meta (no memory, no random
    initialisation), its buffers computed as transformers does and moved to ``device``; in
    eval mode, without a key/value cache."""
    with parameters_on_meta():
        try:
            model = cls._from_config(config, dtype=dtype)  # type: ignore[attr-defined]
        except TypeError:  # transformers < 4.56 calls it torch_dtype
            model = cls._from_config(config, torch_dtype=dtype)  # type: ignore[attr-defined]
    if hasattr(model, "config") and hasattr(model.config, "use_cache"):
        model.config.use_cache = False  # a probe scores whole sequences: no cache to build
    return move_buffers(model.eval(), device=device)


def check_directories(paths: Sequence[Any], what: str, *, adapters: bool) -> list[Path]:
    """Each path an existing directory of the expected kind (model or PEFT adapter)."""
    out = []
    for i, p in enumerate(paths):
        label = what if what == "base" else f"{what}[{i}]"
        if not isinstance(p, (str, os.PathLike)):
            raise ValueError(f"{label} must be a directory path, but got {type(p).__name__} (for modules and "
                             "state dicts use BlendedObjective(model, experts))")
        path = Path(p)
        if not path.is_dir():
            raise ValueError(f"{label}: no such directory {str(p)!r}")
        is_adapter = (path / "adapter_config.json").is_file()
        if adapters and not is_adapter:
            hint = " (it holds a full model: use space='convex' or 'task-vectors')" if is_hf_directory(path) else ""
            raise ValueError(f"{label}: {str(p)!r} is not a PEFT adapter directory (no adapter_config.json){hint}")
        if not adapters and not is_hf_directory(path):
            hint = " (it holds a PEFT adapter: pass space='lora' and base=)" if is_adapter else ""
            raise ValueError(f"{label}: {str(p)!r} is not a Hugging Face model directory (no config.json){hint}")
        out.append(path)
    return out


def default_loss(cls: type) -> str:
    """``"causal-lm"`` for a ``*ForCausalLM`` class, else ``"cross-entropy"``."""
    return "causal-lm" if cls.__name__.endswith("ForCausalLM") else "cross-entropy"


def stored_dtype(ckpts: Sequence[Checkpoint]) -> torch.dtype:
    """The promoted dtype of every floating-point tensor the checkpoints store."""
    out: torch.dtype | None = None
    for ckpt in ckpts:
        for info in ckpt.infos.values():
            if info.dtype.is_floating_point:
                out = info.dtype if out is None else torch.promote_types(out, info.dtype)
    return out or torch.float32


def forward_dtype(dtype: Any, ckpts: Sequence[Checkpoint], device: torch.device) -> torch.dtype:
    """``dtype`` (default the stored one), checked on ``device``."""
    dt = stored_dtype(ckpts) if dtype is None else check_float_dtype(dtype)
    return check_device_dtype(device, dt)


def load_pretrained(experts: Sequence[Any], *, base: Any, space: Any, scale: Any, device: Any, dtype: Any,
                    stack_dtype: Any, granularity: str, head: Any, head_from: Any, model_class: Any,
                    strict_base: bool, check_head: Callable[..., tuple[str, ...]]) -> Loaded:
    """Check and load Hugging Face experts (see the module docstring)."""
    expert_list = check_expert_list(experts)
    space_name, scale_value = check_space(space, scale, has_base=base is not None)
    if base is not None and space_name == "convex":
        raise ValueError("base= is used by space='task-vectors' and 'lora'; the convex blend has no base")
    if stack_dtype is not None:
        check_float_dtype(stack_dtype)
    dev = resolve_device(device)
    if space_name == "lora":
        from spsa_mix.blend.lora import load_lora

        return load_lora(expert_list, base=base, device=dev, dtype=dtype, stack_dtype=stack_dtype,
                         granularity=granularity, head=head, model_class=model_class, strict_base=strict_base)
    paths = check_directories(expert_list, "experts", adapters=False)
    base_path = check_directories([base], "base", adapters=False)[0] if base is not None else None
    labelled = [(f"experts[{i}]", p) for i, p in enumerate(paths)] + ([("base", base_path)] if base_path else [])
    configs = [(label, read_config(p, label)) for label, p in labelled]
    compare_configs(configs)

    ckpts = [open_checkpoint(p, label=label) for label, p in labelled]  # indexes only
    dt = forward_dtype(dtype, ckpts, dev)
    source_index = int(head_from) if (head is not None and isinstance(head_from, int)
                                      and 0 <= head_from < len(paths)) else 0
    config = configs[source_index][1]
    cls = architecture_class(config, model_class)
    arch = build_skeleton(config, cls, dtype=dt, device=dev)
    reference = arch.state_dict()
    heads = check_head(head, head_from, reference, len(paths))
    hf = None if head_from is None else int(head_from)
    stack = stack_experts(reference, ckpts[: len(paths)], device=dev, dtype=dt, granularity=granularity, head=heads,
                          head_from=hf, base=ckpts[len(paths)] if base_path else None, aliases=tied_aliases(arch),
                          stack_dtype=stack_dtype, check_dtype=False)
    config_dir = paths[hf] if hf is not None else (base_path or paths[0])
    method = as_method(space)
    blend = None if method is None else MethodBlend.build(
        method, stack, lambda: [open_checkpoint(p, label=label) for label, p in labelled])
    return Loaded(arch=arch, stack=stack, method=blend,
                  space=BlendSpace(space_name, stack.k, len(stack.groups), scale_value, granularity == "layer"),
                  source=SaveSource("hf", config_dir=config_dir), lora=None, device=dev, dtype=dt,
                  default_loss=default_loss(cls), head=heads)
