"""Hugging Face directories as experts and base: configs compared, architecture built offline.

:func:`load_pretrained` (behind :meth:`BlendedObjective.from_pretrained`) does, in order,
everything that needs no weight before anything that does:

1. each expert (and the base) is a model directory (``config.json`` and weights;
   :mod:`spsa_mix.blend.sources.hub`), its config read with
   ``AutoConfig.from_pretrained(..., local_files_only=True)`` (never a download, never
   remote code) and compared with ``experts[0]``'s: the first differing key is named with
   both values (keys that do not change the weights' meaning, such as ``_name_or_path``,
   ``transformers_version``, ``dtype``, ``use_cache`` and the label names, are ignored);
2. each weight file is indexed (names, stored dtypes, shapes; every shard of a sharded
   index must exist), and the forward's dtype, by default the experts' stored dtype, is
   checked on the device with a small product;
3. the architecture is built from the config with the class ``config.architectures``
   names, its parameters on the meta device (no memory, no initialisation; buffers such as
   rotary frequencies computed as usual: :mod:`spsa_mix.blend.skeleton`), and every
   expert's index is checked against it (names and shapes; tied weights such as
   ``lm_head.weight`` may be absent from the files, as transformers writes them);
4. only then the stack is filled, one tensor at a time, in the stored dtype
   (:func:`~spsa_mix.blend.held.experts.stack_experts`).

LoRA adapters over a base take the same road (:func:`load_lora`): their configs and factors'
indexes read and checked (:mod:`spsa_mix.blend.sources.adapters`), the base built with
:class:`~spsa_mix.blend.lora.LoRALinear` layers in place of the adapted ones.

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from spsa_mix.blend.devices import check_float_dtype, resolve_device
from spsa_mix.blend.held.experts import (
    ALIGNMENT,
    ExpertStack,
    check_compatible,
    check_expert_list,
    layer_groups,
    tied_aliases,
)
from spsa_mix.blend.held.functional import Layout, accumulation_dtype
from spsa_mix.blend.held.memory import decide_memory, hold_experts
from spsa_mix.blend.lora import LoRABlend, attach
from spsa_mix.blend.methods.space import MethodBlend, as_method, method_memory
from spsa_mix.blend.saving import SaveSource
from spsa_mix.blend.skeleton import skeleton_of
from spsa_mix.blend.sources.adapters import check_adapters, read_adapter
from spsa_mix.blend.sources.checkpoints import DATA_PARALLEL_PREFIX, open_checkpoint
from spsa_mix.blend.sources.hub import (
    architecture_class,
    build_skeleton,
    check_directories,
    compare_configs,
    default_loss,
    forward_dtype,
    read_config,
)
from spsa_mix.blend.spaces import BlendSpace, check_space

__all__ = ["Loaded", "load_pretrained", "load_lora"]


@dataclass
class Loaded:
    """What :meth:`BlendedObjective.from_pretrained` builds the objective from."""

    arch: nn.Module
    stack: ExpertStack
    space: BlendSpace
    source: SaveSource
    lora: LoRABlend | None
    device: torch.device
    dtype: torch.dtype
    default_loss: str
    head: tuple[str, ...]
    memory_choice: str
    method: Any = None  # a task-vector method space's MethodBlend (spsa_mix.blend.methods.space)


def load_pretrained(experts: Sequence[Any], *, base: Any, space: Any, scale: Any, device: Any, dtype: Any,
                    stack_dtype: Any, granularity: str, head: Any, head_from: Any, model_class: Any,
                    strict_base: bool, check_head: Callable[..., tuple[str, ...]], memory: str = "resident",
                    max_memory: int | str | None = None) -> Loaded:
    """Check and load Hugging Face experts (see the module docstring), resident or streamed
    (:mod:`spsa_mix.blend.held.memory`)."""
    expert_list = check_expert_list(experts)
    space_name, scale_value = check_space(space, scale, has_base=base is not None)
    if base is not None and space_name == "convex":
        raise ValueError("base= is used by space='task-vectors' and 'lora'; the convex blend has no base")
    if stack_dtype is not None:
        check_float_dtype(stack_dtype)
    dev = resolve_device(device)
    if space_name == "lora":
        return load_lora(expert_list, base=base, device=dev, dtype=dtype, stack_dtype=stack_dtype,
                         granularity=granularity, head=head, model_class=model_class, strict_base=strict_base,
                         memory=memory, max_memory=max_memory)
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
    method = as_method(space)
    stack, choice = hold_experts(reference, ckpts[: len(paths)], memory=method_memory(method, memory),
                                 max_memory=max_memory, device=dev,
                                 dtype=dt, granularity=granularity, head=heads, head_from=hf,
                                 base=ckpts[len(paths)] if base_path else None, aliases=tied_aliases(arch),
                                 stack_dtype=stack_dtype, check_dtype=False)
    config_dir = paths[hf] if hf is not None else (base_path or paths[0])
    blend = None if method is None else MethodBlend.build(
        method, stack, lambda: [open_checkpoint(p, label=label) for label, p in labelled])
    return Loaded(arch=arch, stack=stack, method=blend,
                  space=BlendSpace(space_name, stack.k, len(stack.groups), scale_value, granularity == "layer"),
                  source=SaveSource("hf", config_dir=config_dir), lora=None, device=dev, dtype=dt,
                  default_loss=default_loss(cls), head=heads, memory_choice=choice)


def load_lora(adapters_paths: Sequence[Any], *, base: Any, device: torch.device, dtype: Any, stack_dtype: Any,
              granularity: str, head: Any, model_class: Any, strict_base: bool, memory: str = "resident",
              max_memory: int | str | None = None) -> Loaded:
    """The parts of a LoRA objective: the base held once (or, streamed, mapped from its file
    where it is stored in the forward's dtype on the CPU), the adapters' factors side by side."""
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
    attach(arch, total, dt)
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
    size = dt.itemsize
    need = sum(base_ckpt.infos[n].numel * (size if base_ckpt.infos[n].dtype.is_floating_point
                                           else base_ckpt.infos[n].dtype.itemsize) for n in names)
    mode, why = decide_memory(memory, max_memory, device, need, what="the base")
    mapped: set[str] = set()
    for name in names:  # the base, held once, in the forward's dtype
        t = base_ckpt.mapped(name) if mode == "streamed" else base_ckpt.read(name)
        constants[name] = (t.to(device=device, dtype=dt) if t.is_floating_point() else t.to(device))
        if mode == "streamed" and constants[name].data_ptr() == t.data_ptr() and t.numel():
            mapped.add(name)  # a view of the file: not held
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
                        aliases=aliases, stored_dtypes=stored, mapped=frozenset(mapped))
    where = f"mapped from its file ({len(mapped)} of {len(names)} tensors; the others cast)" if mode == "streamed" \
        else f"held on {device}"
    choice = f"LoRA: the base {where}: {why}"
    first = adapters[0]
    lora = LoRABlend(modules=modules, ranks=[dict(a.ranks) for a in adapters], base_arch=base_arch,
                     adapter_dtype=first.ckpt.infos[first.factor(modules[0], "A")].dtype,
                     adapter_config=dict(first.config))
    return Loaded(arch=arch, stack=stack, space=BlendSpace("lora", len(adapters), len(groups), 1.0, granularity == "layer"),
                  source=SaveSource("lora", config_dir=base_path, adapter_config=dict(first.config)), lora=lora,
                  device=device, dtype=dt, default_loss=default_loss(cls), head=(), memory_choice=choice)
