"""Load the K experts, check them against the architecture, stack them once on the device.

An expert is an ``nn.Module``, a ``state_dict`` (any mapping of names to tensors), or a
checkpoint file: ``.safetensors`` (read with :func:`safetensors.torch.load_file`) or a
PyTorch file ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` holding a state dict (read with
``torch.load(..., weights_only=True)``; a checkpoint dict with a ``"state_dict"``,
``"model_state_dict"`` or ``"model"`` entry is unwrapped).

Every expert must match the architecture tensor for tensor: the same names, shapes and
dtypes of parameters and persistent buffers; the first mismatch, in ``state_dict`` order,
is reported with the expert's index. Tensors under the ``head`` prefixes are exempt (the
experts may have different heads); see :class:`~spsa_mix.blend.BlendedObjective`.

:func:`stack_experts` copies each expert's floating-point tensors into row ``i`` of one
``(K, P)`` buffer on the device, loading the experts one at a time, so the host never holds
more than one expert beyond the sources it was given.

Example
-------
>>> import torch
>>> net = torch.nn.Linear(2, 1)
>>> sd = load_state_dict(net)
>>> sorted(sd), sd["weight"].shape
(['bias', 'weight'], torch.Size([1, 2]))
>>> check_compatible(net.state_dict(), {"weight": torch.zeros(1, 3), "bias": torch.zeros(1)}, index=2)
Traceback (most recent call last):
...
ValueError: experts[2] does not match the architecture: tensor 'weight' has shape (1, 3), but the architecture has (1, 2)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spsa_mix.blend.functional import Layout

__all__ = [
    "ExpertSource",
    "ExpertStack",
    "load_state_dict",
    "check_compatible",
    "check_expert_list",
    "matches_prefix",
    "stack_experts",
    "TORCH_SUFFIXES",
]

ExpertSource = nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
ALIGNMENT = 128  # elements between tensor starts in the flat buffer: 512 bytes in float32, like torch's CUDA allocator
_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def load_state_dict(source: ExpertSource, *, index: int = 0) -> dict[str, torch.Tensor]:
    """The tensors of one expert, on the CPU for files (``index`` only labels errors).

    Raises
    ------
    ValueError
        For a missing file, an unknown suffix, a file ``torch.load`` cannot read with
        ``weights_only=True`` (a pickled module: save its ``state_dict()`` instead), or a
        mapping with non-tensor values.

    Examples
    --------
    >>> load_state_dict("missing.pt", index=3)
    Traceback (most recent call last):
    ...
    ValueError: experts[3]: no such file 'missing.pt'
    """
    where = f"experts[{index}]"
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{where}: no such file {str(source)!r}")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            loaded: Any = load_file(str(path), device="cpu")
        elif suffix in TORCH_SUFFIXES:
            try:
                loaded = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:
                raise ValueError(
                    f"{where}: torch.load({str(path)!r}, weights_only=True) failed ({type(e).__name__}): the "
                    "file holds more than tensors (e.g. a pickled module); save model.state_dict() instead"
                ) from e
        else:
            raise ValueError(
                f"{where}: unknown checkpoint suffix {path.suffix!r} in {str(source)!r}; "
                f"expected .safetensors or one of {list(TORCH_SUFFIXES)}"
            )
        return _as_tensor_dict(loaded, where)
    if isinstance(source, Mapping):
        return _as_tensor_dict(source, where)
    raise ValueError(
        f"{where} must be an nn.Module, a state_dict or a checkpoint path, but got {type(source).__name__}"
    )


def _as_tensor_dict(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where} must hold a mapping of names to tensors, but holds a {type(obj).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _as_tensor_dict(obj[key], where)
        name, value = next((k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise ValueError(
            f"{where} must map names to tensors, but entry {name!r} is a {type(value).__name__} "
            f"(checkpoints are unwrapped from the keys {list(_CHECKPOINT_KEYS)})"
        )
    return dict(obj)


def matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``prefixes`` or lies under one (``"fc"`` covers ``"fc.weight"``).

    >>> matches_prefix("fc.weight", ["fc"]), matches_prefix("fc2.weight", ["fc"])
    (True, False)
    """
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_compatible(reference: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, index: int,
                     ignore: Callable[[str], bool] = lambda name: False) -> None:
    """Raise ``ValueError`` naming the first tensor of ``state`` that differs from
    ``reference`` (missing, unexpected, other shape or dtype); ``ignore(name)`` exempts."""
    where = f"experts[{index}] does not match the architecture"
    for name, ref in reference.items():
        if ignore(name):
            continue
        if name not in state:
            raise ValueError(f"{where}: it has no tensor {name!r} (shape {_shape(ref)})")
        t = state[name]
        if _shape(t) != _shape(ref):
            raise ValueError(f"{where}: tensor {name!r} has shape {_shape(t)}, but the architecture has {_shape(ref)}")
        if t.dtype != ref.dtype:
            raise ValueError(f"{where}: tensor {name!r} has dtype {t.dtype}, but the architecture has {ref.dtype}")
    for name in state:
        if name not in reference and not ignore(name):
            raise ValueError(f"{where}: it has a tensor {name!r} that the architecture does not have")


def check_expert_list(experts: Any) -> list[Any]:
    """``experts`` as a list of at least two sources.

    A blend needs two experts: with one there is nothing to learn, so ``K=1`` is an error.

    >>> check_expert_list([])
    Traceback (most recent call last):
    ...
    ValueError: experts is empty: pass at least two experts (nn.Modules, state_dicts or checkpoint paths)
    """
    if isinstance(experts, (nn.Module, Mapping, str, os.PathLike)) or not isinstance(experts, Sequence):
        raise ValueError(
            f"experts must be a list of nn.Modules, state_dicts or checkpoint paths, but got {type(experts).__name__}"
        )
    experts = list(experts)
    if not experts:
        raise ValueError("experts is empty: pass at least two experts (nn.Modules, state_dicts or checkpoint paths)")
    if len(experts) == 1:
        raise ValueError("experts holds 1 expert, but a blend needs at least two (with one there is nothing to learn)")
    return experts


@dataclass
class ExpertStack:
    """The K experts on the device, ready to blend.

    Attributes
    ----------
    weights:
        ``(K, P)`` flat buffer of the blended (floating-point) tensors, row ``i`` expert ``i``
        (each tensor starting at a multiple of ``ALIGNMENT`` elements, zeros between).
    layout:
        Names and shapes of the blended tensors in the buffer.
    groups, segments:
        The parameter groups and their contiguous slices of the buffer (one group covering
        everything for ``granularity="model"``).
    constants:
        Tensors that are not blended: the head (with ``head``), and integer buffers such as
        BatchNorm's ``num_batches_tracked`` (expert 0's value; eval mode never reads them).
    counters:
        Integer tensors stacked ``(K, *shape)`` with the index of their group (or ``None``),
        for the rounded weighted average written by ``blended_state_dict``.
    names:
        Every ``state_dict`` name of the architecture, in order.
    """

    weights: torch.Tensor
    layout: Layout
    groups: list[str]
    segments: list[tuple[int, int]]
    constants: dict[str, torch.Tensor]
    counters: dict[str, tuple[torch.Tensor, int | None]]
    names: list[str]

    @property
    def k(self) -> int:
        return int(self.weights.shape[0])


def _group_of(name: str) -> str:
    return name.rpartition(".")[0]


def stack_experts(
    reference: Mapping[str, torch.Tensor],
    experts: Sequence[ExpertSource],
    *,
    device: torch.device,
    dtype: torch.dtype,
    granularity: str = "model",
    head: Sequence[str] = (),
    head_from: int | None = None,
) -> ExpertStack:
    """Check the experts against ``reference`` (the architecture's ``state_dict``) and stack them.

    Floating-point tensors outside ``head`` are blended, cast to ``dtype``. Head tensors
    come from ``experts[head_from]``, or from ``reference`` when ``head_from`` is ``None``.
    With ``granularity="layer"`` each module that owns blended tensors directly is one
    group (its parameters and buffers share one simplex).

    >>> nets = [torch.nn.Linear(2, 1) for _ in range(3)]
    >>> stack = stack_experts(nets[0].state_dict(), nets, device=torch.device("cpu"), dtype=torch.float32)
    >>> stack.weights.shape, stack.layout.names, stack.layout.offsets()
    (torch.Size([3, 256]), ('weight', 'bias'), {'weight': (0, 2), 'bias': (128, 129)})
    """
    in_head = (lambda name: matches_prefix(name, head)) if head else (lambda name: False)
    blended = [n for n, t in reference.items() if t.is_floating_point() and not in_head(n)]
    integer = [n for n, t in reference.items() if not t.is_floating_point() and not in_head(n)]
    layout = Layout(tuple(blended), tuple(_shape(reference[n]) for n in blended), align=ALIGNMENT)
    offsets = layout.offsets()

    if granularity == "layer":
        groups: list[str] = []
        starts: list[int] = []
        for name in blended:
            if not groups or groups[-1] != _group_of(name):
                groups.append(_group_of(name))
                starts.append(offsets[name][0])
        if len(set(groups)) != len(groups):  # a module's tensors not contiguous: cannot happen with state_dict
            raise ValueError(f"the tensors of a module are not contiguous in the state_dict: groups {groups}")
        starts[0] = 0
        segments = list(zip(starts, starts[1:] + [layout.size], strict=True))  # padding included
    else:
        groups, segments = ["model"], [(0, layout.size)]
    group_index = {g: i for i, g in enumerate(groups)}

    k = len(experts)
    weights = torch.zeros((k, layout.size), device=device, dtype=dtype)  # (K, P), zero padding
    counter_rows: dict[str, list[torch.Tensor]] = {n: [] for n in integer}
    constants: dict[str, torch.Tensor] = {}
    if head and head_from is None:
        constants.update({n: t.detach().to(device) for n, t in reference.items() if in_head(n)})
        for n, t in constants.items():
            if t.is_floating_point():
                constants[n] = t.to(dtype)
    for i, source in enumerate(experts):
        state = load_state_dict(source, index=i)
        exempt = in_head if (head and i != head_from) else (lambda name: False)
        check_compatible(reference, state, index=i, ignore=exempt)
        row = weights[i]
        for name in blended:
            start, stop = offsets[name]
            row[start:stop].copy_(state[name].detach().reshape(-1))
        for name in integer:
            counter_rows[name].append(state[name].detach().to(device))
        if head and i == head_from:
            for n in reference:
                if in_head(n):
                    t = state[n].detach().to(device)
                    constants[n] = t.to(dtype) if t.is_floating_point() else t
        del state
    counters: dict[str, tuple[torch.Tensor, int | None]] = {}
    for name, rows in counter_rows.items():
        constants[name] = rows[0]
        counters[name] = (torch.stack(rows), group_index.get(_group_of(name)) if granularity == "layer" else 0)
    return ExpertStack(weights, layout, groups, segments, constants, counters, list(reference))
