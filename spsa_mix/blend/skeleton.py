"""The architecture without its weights: parameters on the meta device, nothing else lost.

The objective never runs the architecture on weights of its own: every parameter and
persistent buffer is supplied (views of the blended buffer, or constants). So the copies it
keeps hold their parameters on PyTorch's ``meta`` device (shapes and dtypes, no memory),
while the non-persistent buffers, which no checkpoint holds (e.g. rotary embeddings'
``inv_freq``), stay real.

* :func:`skeleton_of` -- a weightless copy of a module, made without copying its weights;
* :func:`parameters_on_meta` -- build a new module (e.g. from a Hugging Face config) with its
  parameters on meta from the start, its buffers computed as usual;
* :func:`tie` -- make tied names share one parameter again after loading;
* :func:`meta_tensors` -- what is still on meta (a module that would fail to run).

Example
-------
>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
>>> sk = skeleton_of(net, device=torch.device("cpu"), dtype=torch.float32)
>>> sk[0].weight.is_meta, net[0].weight.is_meta, meta_tensors(sk)[:2]
(True, False, ['0.weight', '0.bias'])
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["skeleton_of", "parameters_on_meta", "move_buffers", "tie", "meta_tensors"]


def _persistent_buffers(model: nn.Module) -> Iterator[torch.Tensor]:
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None and name not in module._non_persistent_buffers_set:
                yield buf


def skeleton_of(model: nn.Module, *, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """A copy of ``model`` whose parameters and persistent buffers are on meta; the other
    tensors (non-persistent buffers) are copied to ``device`` (floating ones cast to
    ``dtype`` when given). The weights are never copied (``copy.deepcopy`` is handed their
    meta versions up front); tied parameters stay tied. ``model`` is untouched."""
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(param.detach().to("meta"), requires_grad=False)
    for buf in _persistent_buffers(model):
        memo[id(buf)] = buf.detach().to("meta")
    return move_buffers(copy.deepcopy(model, memo), device=device, dtype=dtype)


def move_buffers(model: nn.Module, *, device: torch.device, dtype: torch.dtype | None = None) -> nn.Module:
    """Move the real (non-meta) buffers of ``model`` to ``device`` in place (floating ones
    cast to ``dtype`` when given); returns ``model``."""
    for module in model.modules():
        for name, buf in module._buffers.items():
            if buf is not None and not buf.is_meta:
                cast = dtype if dtype is not None and buf.is_floating_point() else None
                module._buffers[name] = buf.to(device=device, dtype=cast)
    return model


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Within this context, every parameter a module registers goes to the meta device at
    once (its initialisation then costs nothing), while buffers are created as usual.

    >>> with parameters_on_meta():
    ...     net = torch.nn.Linear(2, 2)
    >>> net.weight.is_meta
    True
    """
    register = nn.Module.register_parameter

    def register_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register_on_meta  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def tie(model: nn.Module, aliases: Mapping[str, str]) -> nn.Module:
    """Make each name of ``aliases`` the very parameter of the name it maps to (in place).

    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    >>> tie(net, {"1.weight": "0.weight"})[1].weight is net[0].weight
    True
    """
    for alias, source in aliases.items():
        path, _, leaf = alias.rpartition(".")
        model.get_submodule(path)._parameters[leaf] = model.get_parameter(source)
    return model


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``model`` still on the meta device."""
    named = list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers(remove_duplicate=False))
    return [name for name, t in named if t.is_meta]
