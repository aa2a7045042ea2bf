"""theta(alpha) out of the stacked experts: tensor by tensor, as a state dict, a module.

:func:`iter_blended` yields every tensor of theta in ``state_dict`` order, one at a time,
so that a blend can be written to disk with the memory of one tensor (plus a shard) beyond
what the stack holds: each blended tensor is its slice of the stack times its group's
coefficients (``rows``, from :meth:`spsa_mix.blend.spaces.BlendSpace.coefficients`),
accumulated in float32 (block by block for a narrower stack) and cast to the dtype asked
for; constants (heads) are copied; integer buffers (``num_batches_tracked``) are the
rounded weighted average of the rows' values, clipped at 0 (a task-vector extrapolation
could make it negative); tied names give the very tensor of the name they are tied to. For
LoRA the tensors are the base's with the blended update merged in
(:meth:`spsa_mix.blend.lora.LoRABlend.merged`).

:meth:`BlendedObjective.blended_state_dict <spsa_mix.blend.BlendedObjective.blended_state_dict>`,
``blended_model`` and ``save_pretrained`` are built on it.

Example
-------
>>> from spsa_mix.blend.held.experts import stack_experts
>>> experts = [{"weight": torch.zeros(2, 2), "bias": torch.zeros(2)},
...            {"weight": torch.tensor([[0.0, 0.0], [1.0, -1.0]]), "bias": torch.ones(2)}]
>>> stack = stack_experts(experts[0], experts, device=torch.device("cpu"), dtype=torch.float32)
>>> rows = torch.tensor([[0.5, 0.5]])                    # (G, R): one group, two experts
>>> [(name, t.tolist()) for name, t in iter_blended(stack, rows, lambda name: torch.float32, acc=torch.float32)]
[('weight', [[0.0, 0.0], [0.5, -0.5]]), ('bias', [0.5, 0.5])]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping

import torch
from torch import nn

from spsa_mix.blend.held.experts import ExpertStack
from spsa_mix.blend.held.streamed import StreamedExperts
from spsa_mix.blend.skeleton import tie

__all__ = ["iter_blended", "blended_entries", "blended_module"]


Held = ExpertStack | StreamedExperts


def _averaged(st: Held, name: str) -> bool:
    """Whether ``name`` is an integer buffer written as the rows' rounded weighted average."""
    counter = st.counters.get(name)
    return counter is not None and counter[1] is not None and counter[0].dtype != torch.bool


def iter_blended(st: Held, rows: torch.Tensor, out_dtype: Callable[[str], torch.dtype], *,
                 acc: torch.dtype, counter_rows: torch.Tensor | None = None,
                 exact: Callable[[str, int], torch.Tensor] | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of theta, in order; see the module docstring.
    ``rows`` ``(G, R)`` are the coefficients of the stack's rows for each group, in the
    accumulation dtype ``acc``; ``out_dtype(name)`` is the dtype each floating-point tensor
    is given (a tied name gets its source's tensor, so its source's dtype). ``counter_rows``
    (default ``rows``) weigh the integer buffers; ``exact(name, group)``, where given,
    computes each blended tensor instead of the stack's rows (a merge method's exact merge,
    :meth:`spsa_mix.blend.methods.space.MethodBlend.tensor`)."""
    with torch.no_grad():
        rows64 = (rows if counter_rows is None else counter_rows).to(torch.float64)
        tied: dict[str, torch.Tensor] = {}
        sources = set(st.aliases.values())
        for name in st.names:
            if name in st.aliases:
                tensor = tied[st.aliases[name]]
            elif _averaged(st, name):
                stacked, group = st.counters[name]
                w = rows64[group].reshape((-1,) + (1,) * (stacked.ndim - 1))
                tensor = torch.round((w * stacked.to(torch.float64)).sum(0)).clamp_min(0).to(stacked.dtype)
            elif name in st.constants:
                value = st.constants[name]
                tensor = value.to(out_dtype(name)).clone() if value.is_floating_point() else value.clone()
            elif exact is not None:
                tensor = exact(name, st.group_of[name]).to(out_dtype(name))
            else:
                tensor = st.blend_tensor(name, rows[st.group_of[name]], acc).to(out_dtype(name))
            if name in sources:
                tied[name] = tensor
            yield name, tensor


def blended_entries(st: Held, out_dtype: Callable[[str], torch.dtype]
                    ) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """``(name, dtype, shape)`` of every tensor :func:`iter_blended` yields, in its order,
    known before any is blended (the header of a streamed save).

    >>> from spsa_mix.blend.held.experts import stack_experts
    >>> nets = [torch.nn.BatchNorm1d(2) for _ in range(2)]
    >>> st = stack_experts(nets[0].state_dict(), nets, device=torch.device("cpu"), dtype=torch.float32)
    >>> [(n, str(d), s) for n, d, s in blended_entries(st, lambda name: torch.bfloat16)][-2:]
    [('running_var', 'torch.bfloat16', (2,)), ('num_batches_tracked', 'torch.int64', ())]
    """
    out = []
    for name in st.names:
        source = st.aliases.get(name, name)
        if _averaged(st, source):
            stacked = st.counters[source][0]
            dtype, shape = stacked.dtype, tuple(stacked.shape[1:])
        elif source in st.constants:
            value = st.constants[source]
            dtype = out_dtype(source) if value.is_floating_point() else value.dtype
            shape = tuple(value.shape)
        else:
            dtype, shape = out_dtype(source), st.shapes[source]
        out.append((name, dtype, shape))
    return out


def blended_module(arch: nn.Module, state: dict[str, torch.Tensor], aliases: Mapping[str, str]) -> nn.Module:
    """A fresh copy of the weightless architecture ``arch`` (the base's for LoRA) holding
    ``state``, its tied parameters (``aliases``) tied, in train mode, every parameter
    requiring grad."""
    net = copy.deepcopy(arch)
    net.load_state_dict(state, assign=True)  # the skeleton's parameters are on meta: take the tensors
    tie(net, aliases)
    return net.requires_grad_(True).train()
