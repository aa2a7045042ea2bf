"""Hugging Face model directories: configs read offline and compared, the architecture built weightless.

The checks :meth:`~spsa_mix.blend.BlendedObjective.from_pretrained` makes before any weight
is read (:mod:`spsa_mix.blend.pretrained` runs them in order):

* :func:`check_directories` -- each path a model directory (``config.json``), or a PEFT
  adapter directory (``adapter_config.json``) where adapters are expected;
* :func:`read_config` -- ``AutoConfig.from_pretrained(..., local_files_only=True)`` (never a
  download, never remote code), and :func:`compare_configs`: the first key in which two
  experts differ, named with both values (:data:`IGNORED_CONFIG_KEYS` aside);
* :func:`forward_dtype` -- the forward's dtype (default the stored one) checked on the device;
* :func:`architecture_class` and :func:`build_skeleton` -- the class ``config.architectures``
  names, built with its parameters on the meta device (:mod:`spsa_mix.blend.skeleton`).

Example
-------
>>> import transformers
>>> default_loss(transformers.LlamaForCausalLM), default_loss(transformers.LlamaForSequenceClassification)
('causal-lm', 'cross-entropy')
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spsa_mix.blend.devices import check_device_dtype, check_float_dtype
from spsa_mix.blend.skeleton import move_buffers, parameters_on_meta
from spsa_mix.blend.sources.checkpoints import Checkpoint, is_hf_directory

__all__ = ["IGNORED_CONFIG_KEYS", "read_config", "compare_configs", "architecture_class", "build_skeleton",
           "check_directories", "default_loss", "stored_dtype", "forward_dtype"]

# Config entries that may differ between experts without changing what their weights mean.
IGNORED_CONFIG_KEYS = frozenset({
    "_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "id2label", "label2id",
    "_commit_hash", "finetuning_task", "_attn_implementation_autoset", "output_attentions",
    "output_hidden_states", "return_dict", "problem_type",
})


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


def default_loss(cls: type | str) -> str:
    """``"causal-lm"`` for a causal language model class (or its name): one of transformers'
    causal-LM classes (``AutoModelForCausalLM``'s, which include ``GPT2LMHeadModel``) or
    any ``*ForCausalLM``; else ``"cross-entropy"``.

    >>> default_loss("GPT2LMHeadModel"), default_loss("LlamaForCausalLM"), default_loss("BertForSequenceClassification")
    ('causal-lm', 'causal-lm', 'cross-entropy')
    """
    name = cls if isinstance(cls, str) else cls.__name__
    return "causal-lm" if name.endswith("ForCausalLM") or name in _causal_lm_classes() else "cross-entropy"


@functools.lru_cache(maxsize=1)
def _causal_lm_classes() -> frozenset[str]:
    """The class names ``transformers.AutoModelForCausalLM`` builds (the model's task, not its name)."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:
        return frozenset()
    names: set[str] = set()
    for value in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([value] if isinstance(value, str) else value)
    return frozenset(names)


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
