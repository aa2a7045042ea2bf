"""The blend as pure tensor functions: flat buffer, matrix product, functional calls.

The K experts' floating-point tensors are stored once as one flat buffer ``W`` of shape
``(K, P)`` (row ``i`` is expert ``i``, the tensors laid end to end in ``state_dict`` order).
Blending ``n`` probes is one matrix product, ``theta = alpha @ W`` of shape ``(n, P)``, or
one product per parameter group for layer-wise mixing (each group is a contiguous slice of
the buffer, because a module's own tensors are contiguous in ``state_dict`` order). Each
row of ``theta`` is cut into views (:func:`unflatten`, no copy) and the architecture runs
on them through :func:`torch.func.functional_call`, so no module is ever rebuilt.

The ``n`` probes of one call run either in one batched forward (:func:`torch.func.vmap`
over the functional call) or in a loop (:func:`map_probes`); both give the same losses to
float tolerance (``tests/blend/test_functional.py``).

Example
-------
>>> import torch
>>> W = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])    # K=2 experts, P=3
>>> blend(W, torch.tensor([[0.5, 0.5], [1.0, 0.0]])).tolist()
[[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]]
>>> layout = Layout(("w", "b"), ((2,), (1,)))
>>> {k: v.tolist() for k, v in unflatten(torch.tensor([1.0, 2.0, 3.0]), layout).items()}
{'w': [1.0, 2.0], 'b': [3.0]}
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, vmap

__all__ = ["Layout", "blend", "blend_into", "unflatten", "bind_to_buffer", "call_blended", "map_probes"]


@dataclass(frozen=True)
class Layout:
    """Names and shapes of the tensors laid end to end in a flat buffer, each starting at a
    multiple of ``align`` elements (the gaps hold zeros), so that every view is as aligned
    as a freshly allocated tensor."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    align: int = 1

    @property
    def numels(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def numel(self) -> int:
        """Number of scalars held (the padding excluded)."""
        return sum(self.numels)

    @property
    def size(self) -> int:
        """Length ``P`` of the flat buffer, padding included (a multiple of ``align``)."""
        spans = self._spans.values()
        return self._round_up(max((stop for _, stop in spans), default=0))

    def _round_up(self, n: int) -> int:
        return -(-n // self.align) * self.align

    def offsets(self) -> dict[str, tuple[int, int]]:
        """``name -> (start, stop)`` in the flat buffer.

        >>> Layout(("a", "b"), ((2, 2), (3,))).offsets()
        {'a': (0, 4), 'b': (4, 7)}
        >>> Layout(("a", "b"), ((2, 2), (3,)), align=8).offsets()
        {'a': (0, 4), 'b': (8, 11)}
        """
        return dict(self._spans)

    @functools.cached_property
    def _spans(self) -> dict[str, tuple[int, int]]:
        out, start = {}, 0
        for name, n in zip(self.names, self.numels, strict=True):
            start = self._round_up(start)
            out[name] = (start, start + n)
            start += n
        return out


def blend(weights: torch.Tensor, alpha: torch.Tensor,
          segments: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """``theta = alpha @ W``: blended flat parameters of ``n`` probes.

    Parameters
    ----------
    weights:
        ``(K, P)``, the experts' flat buffers.
    alpha:
        ``(n, K)`` mixing weights, or ``(n, G, K)`` for ``G`` groups with ``segments``.
    segments:
        ``G`` contiguous ``(start, stop)`` slices of the buffer covering ``[0, P)`` in order;
        group ``g`` is blended with ``alpha[:, g]`` (one matrix product per group).

    Returns
    -------
    torch.Tensor
        ``(n, P)``; differentiable in ``alpha`` (autograd and forward-mode AD).

    Examples
    --------
    >>> W = torch.arange(8.0).reshape(2, 4)                        # K=2, P=4
    >>> a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])               # n=1, G=2
    >>> blend(W, a, segments=[(0, 1), (1, 4)]).tolist()
    [[0.0, 5.0, 6.0, 7.0]]
    """
    if segments is None:
        return alpha @ weights  # (n, K) @ (K, P) -> (n, P)
    parts = [alpha[:, g] @ weights[:, start:stop] for g, (start, stop) in enumerate(segments)]
    return torch.cat(parts, dim=1)  # (n, P)


def blend_into(out: torch.Tensor, weights: torch.Tensor, alpha: torch.Tensor,
               segments: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Write one probe's ``theta = alpha @ W`` into ``out`` ``(P,)`` in place (no allocation).

    ``alpha`` is ``(K,)``, or ``(G, K)`` with ``segments``; one matrix-vector product per
    group. Used to refresh the buffer a module's tensors are views of
    (:func:`bind_to_buffer`), so the module then runs with no per-call overhead.

    >>> W = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    >>> out = torch.empty(3)
    >>> blend_into(out, W, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), segments=[(0, 1), (1, 3)]).tolist()
    [1.0, 2.0, 1.0]
    """
    if segments is None:
        return torch.mv(weights.T, alpha, out=out)  # (P, K) @ (K,) -> (P,)
    for g, (start, stop) in enumerate(segments):
        torch.mv(weights[:, start:stop].T, alpha[g], out=out[start:stop])
    return out


def unflatten(flat: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of one flat ``(P,)`` buffer as the named tensors of ``layout`` (no copy)."""
    return {name: flat[start:stop].view(shape)
            for (name, (start, stop)), shape in zip(layout._spans.items(), layout.shapes, strict=True)}


def bind_to_buffer(model: nn.Module, layout: Layout, buffer: torch.Tensor,
                   constants: Mapping[str, torch.Tensor]) -> nn.Module:
    """Make the tensors of ``layout`` in ``model`` views of ``buffer`` ``(P,)``, in place.

    Parameters become ``nn.Parameter`` views (``requires_grad=False``) and buffers plain
    views, so writing ``buffer`` (:func:`blend_into`) changes the module's weights at once;
    ``constants`` are set as they are. Returns ``model``.

    >>> net = torch.nn.Linear(2, 1)
    >>> buf = torch.zeros(3)
    >>> _ = bind_to_buffer(net, Layout(("weight", "bias"), ((1, 2), (1,))), buf, {})
    >>> _ = buf.copy_(torch.tensor([1.0, 2.0, 0.5]))
    >>> net(torch.ones(1, 2)).item()
    3.5
    """
    tensors = unflatten(buffer, layout)
    tensors.update(constants)
    for name, tensor in tensors.items():
        path, _, leaf = name.rpartition(".")
        module = model.get_submodule(path)
        if leaf in module._parameters:
            module._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
        elif leaf in module._buffers:
            module._buffers[leaf] = tensor
        else:
            raise ValueError(f"{name!r} is neither a parameter nor a buffer of the model")
    return model


def call_blended(model: nn.Module, theta: torch.Tensor, layout: Layout, constants: Mapping[str, torch.Tensor],
                 args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Any:
    """``model(*args, **kwargs)`` with its tensors replaced by ``theta`` (flat ``(P,)``) and
    ``constants`` (tensors that are not blended: BatchNorm counters, a fixed head)."""
    tensors = unflatten(theta, layout)
    tensors.update(constants)
    return functional_call(model, tensors, args, dict(kwargs), tie_weights=False, strict=False)


def map_probes(fn: Callable[[torch.Tensor], Any], thetas: torch.Tensor, *, batched: bool) -> Any:
    """Apply ``fn`` to each row of ``thetas`` ``(n, P)`` and stack the results.

    ``batched=True`` runs all rows in one batched call (:func:`torch.func.vmap`);
    ``batched=False`` loops. ``fn`` returns a tensor or a tuple of tensors; the result has
    a leading axis of size ``n`` on each.

    >>> t = torch.arange(6.0).reshape(2, 3)
    >>> map_probes(lambda th: th.sum(), t, batched=True).tolist()
    [3.0, 12.0]
    >>> map_probes(lambda th: th.sum(), t, batched=False).tolist()
    [3.0, 12.0]
    """
    if batched:
        return vmap(fn, randomness="error")(thetas)
    outs = [fn(theta) for theta in thetas]
    if isinstance(outs[0], tuple):
        return tuple(torch.stack(parts) for parts in zip(*outs, strict=True))
    return torch.stack(outs)
