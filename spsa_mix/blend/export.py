"""theta(alpha) out of the objective: tensor by tensor, as a state dict, a module.

:func:`iter_blended` yields every tensor of theta(alpha) in ``state_dict`` order, one at a
time, so that a blend can be written to disk with the memory of one tensor (plus a shard)
beyond what the objective holds: each blended tensor is its slice of the stack times its
group's coefficients, accumulated in float32 (block by block for a narrower stack) and
cast to the dtype asked for; constants (heads) are copied; integer buffers
(``num_batches_tracked``) are the rounded weighted average of the rows' values, clipped at
0 (a task-vector extrapolation could make it negative); tied names give the very tensor of
the name they are tied to. For LoRA the tensors are the base's with the blended update
merged in (:meth:`spsa_mix.blend.lora.LoRABlend.merged`).

:meth:`BlendedObjective.blended_state_dict`, :meth:`~BlendedObjective.blended_model` and
:meth:`~BlendedObjective.save_pretrained` are built on it.

Example
-------
>>> import numpy as np
>>> from spsa_mix.blend.objective import BlendedObjective
>>> obj = BlendedObjective._example()
>>> [(name, t.tolist()) for name, t in iter_blended(obj, np.array([0.5, 0.5]), lambda name: torch.float32)]
[('weight', [[0.0, 0.0], [0.5, -0.5]]), ('bias', [0.0, 0.0])]
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from spsa_mix.blend.functional import blend, blend_into
from spsa_mix.blend.skeleton import tie

if TYPE_CHECKING:
    from spsa_mix.blend.objective import BlendedObjective

__all__ = ["iter_blended", "blended_module"]


def _blended_tensor(obj: BlendedObjective, name: str, rows: torch.Tensor) -> torch.Tensor:
    """One blended tensor in the accumulation dtype: its slice of the stack times its group's
    coefficients ``rows (G, R)`` (upcast block by block)."""
    st = obj._stack
    start, stop = st.layout.offsets()[name]
    out = torch.empty(stop - start, dtype=obj._acc, device=obj.device)
    blend_into(out, st.weights[:, start:stop], rows[obj._group_of.get(name, 0)])
    return out.view(obj._shapes[name])


def iter_blended(obj: BlendedObjective, point: np.ndarray, out_dtype: Callable[[str], torch.dtype]
                 ) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor of theta(point) (a checked point), in order; see
    the module docstring. ``out_dtype(name)`` is the dtype each floating-point tensor is
    given."""
    st = obj._stack
    with torch.no_grad():
        points = obj._as_points(point[None])
        if obj._lora is not None:  # the per-rank weights in the accumulation dtype, not the forward's
            segments = st.segments if obj.granularity == "layer" else None
            mix = blend(st.weights, obj._coefficients(points), segments, dtype=obj._acc)[0]
            yield from obj._lora.merged(mix, st, out_dtype, obj._acc)
            return
        rows = obj._space.coefficients(points)[0]  # (G, R)
        rows64 = obj._space.counter_coefficients(points)[0].to(torch.float64)
        method = obj._method  # a task-vector method: its exact merge, recomputed tensor by tensor
        alpha, scale = obj._space.split(np.asarray(point, dtype=np.float64)[None])
        alpha = alpha.reshape(-1, obj.k)  # (G, K)
        tied: dict[str, torch.Tensor] = {}
        sources = set(st.aliases.values())
        for name in st.names:
            counter = st.counters.get(name)
            if name in st.aliases:
                tensor = tied[st.aliases[name]]
            elif counter is not None and counter[1] is not None and counter[0].dtype != torch.bool:
                stacked, group = counter
                w = rows64[group].reshape((-1,) + (1,) * (stacked.ndim - 1))
                tensor = torch.round((w * stacked.to(torch.float64)).sum(0)).clamp_min(0).to(stacked.dtype)
            elif name in st.constants:
                value = st.constants[name]
                tensor = value.to(out_dtype(name)).clone() if value.is_floating_point() else value.clone()
            elif method is not None:
                group = alpha[obj._group_of.get(name, 0)]
                tensor = method.tensor(name, group, float(scale[0]), st.weights.dtype).to(out_dtype(name))
            else:
                tensor = _blended_tensor(obj, name, rows).to(out_dtype(name))
            if name in sources:
                tied[name] = tensor
            yield name, tensor


def blended_module(obj: BlendedObjective, state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh copy of the objective's architecture (the base's for LoRA) holding ``state``,
    its tied parameters tied, in train mode, every parameter requiring grad."""
    net = copy.deepcopy(obj._lora.base_arch if obj._lora is not None else obj._arch)
    net.load_state_dict(state, assign=True)  # the skeleton's parameters are on meta: take the tensors
    tie(net, obj._stack.aliases)
    return net.requires_grad_(True).train()
