"""The blend as pure tensor functions: flat buffer, matrix product, functional calls.

The K experts' floating-point tensors are stored once as one flat buffer ``W`` of shape
``(K, P)`` (row ``i`` is expert ``i``, the tensors laid end to end in ``state_dict`` order).
Blending ``n`` probes is one matrix product, ``theta = alpha @ W`` of shape ``(n, P)``, or
one product per parameter group for layer-wise mixing (each group is a contiguous slice of
the buffer, because a module's own tensors are contiguous in ``state_dict`` order). Each
row of ``theta`` is cut into views (:func:`unflatten`, no copy) and the architecture runs
on them through :func:`torch.func.functional_call`, so no module is ever rebuilt.

The buffer may be narrower than the blend (bf16 or fp16 experts, kept as stored): the
coefficients are then float32 (float64 for float64 experts or forwards), each block of at
most ``CHUNK`` columns of ``W`` is upcast to them for its product, and the result is cast
to the forward's dtype, so the blend is accumulated in float32 while the extra memory
stays ``K * CHUNK`` floats.

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

__all__ = ["Layout", "blend", "blend_into", "accumulation_dtype", "unflatten", "bind_to_buffer", "call_blended",
           "map_probes", "CHUNK"]

CHUNK = 1 << 20  # columns of W upcast at a time for a narrower stack: K * 4 MiB of float32


def accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The dtype a blend is accumulated in: float32, or float64 if any of ``dtypes`` is.

    >>> accumulation_dtype(torch.bfloat16, torch.bfloat16), accumulation_dtype(torch.float32, torch.float64)
    (torch.float32, torch.float64)
    """
    out = torch.float32
    for d in dtypes:
        out = torch.promote_types(out, d)
    return out


def _chunks(start: int, stop: int) -> list[tuple[int, int]]:
    return [(a, min(a + CHUNK, stop)) for a in range(start, stop, CHUNK)]


def _product(coeffs: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``coeffs @ block`` (``(n, R) @ (R, C)``, or ``(R,) @ (R, C)``) in the coefficients' dtype.

    A narrower block on the CPU is multiplied row by row (:func:`_rows_product`); elsewhere
    it is upcast in one conversion and multiplied.
    """
    if block.dtype == coeffs.dtype:
        return coeffs @ block
    if block.device.type == "cpu":
        return _rows_product(coeffs, block)
    return coeffs @ block.to(coeffs.dtype)


def _rows_product(coeffs: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """``sum_i coeffs[..., i, None] * block[i]``: each contiguous row of the column slice is
    upcast by the product, so no float32 copy of the ``(R, C)`` slice is made (converting the
    strided slice at once was 5 to 10 times slower on the CPU, see :func:`_accumulate_rows`)
    and autograd keeps the stored rows (views) for the gradient, not float32 copies.
    Differentiable in ``coeffs`` (reverse and forward mode).

    >>> W = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.bfloat16)
    >>> _rows_product(torch.tensor([[1.0, 0.5]]), W).tolist(), _rows_product(torch.tensor([1.0, 0.5]), W).tolist()
    ([[2.5, 4.0]], [2.5, 4.0])
    """
    out = coeffs[..., 0, None] * block[0]  # (n, C) or (C,), in the coefficients' dtype
    for i in range(1, block.shape[0]):
        out = out + coeffs[..., i, None] * block[i]
    return out


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
          segments: Sequence[tuple[int, int]] | None = None, *, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``theta = alpha @ W``: blended flat parameters of ``n`` probes.

    Parameters
    ----------
    weights:
        ``(R, P)``, the experts' flat buffers (one row per expert, and one for a base).
    alpha:
        ``(n, R)`` coefficients, or ``(n, G, R)`` for ``G`` groups with ``segments``; their
        dtype is the accumulation dtype (a narrower ``weights`` is upcast block by block).
    segments:
        ``G`` contiguous ``(start, stop)`` slices of the buffer covering ``[0, P)`` in order;
        group ``g`` is blended with ``alpha[:, g]`` (one matrix product per group).
    dtype:
        The dtype of the result (default ``alpha``'s).

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
    >>> blend(W.to(torch.bfloat16), torch.tensor([[0.25, 0.75]]), dtype=torch.bfloat16).dtype
    torch.bfloat16
    """
    out_dtype = alpha.dtype if dtype is None else dtype
    if segments is None:
        if weights.dtype == alpha.dtype:
            out = alpha @ weights  # (n, R) @ (R, P) -> (n, P)
        else:
            out = torch.cat([_product(alpha, weights[:, a:b]).to(out_dtype) for a, b in _chunks(0, weights.shape[1])],
                            dim=1)
        return out.to(out_dtype)
    parts = [_product(alpha[:, g], weights[:, a:b]).to(out_dtype)
             for g, (start, stop) in enumerate(segments) for a, b in _chunks(start, stop)]
    return torch.cat(parts, dim=1)  # (n, P)


def blend_into(out: torch.Tensor, weights: torch.Tensor, alpha: torch.Tensor,
               segments: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """Write one probe's ``theta = alpha @ W`` into ``out`` ``(P,)`` in place.

    ``alpha`` is ``(R,)``, or ``(G, R)`` with ``segments``; one matrix-vector product per
    group (and per block of ``CHUNK`` columns when ``W`` is narrower than ``alpha``, or
    ``out`` is of another dtype). Used to refresh the buffer a module's tensors are views
    of (:func:`bind_to_buffer`), so the module then runs with no per-call overhead.

    >>> W = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    >>> out = torch.empty(3)
    >>> blend_into(out, W, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), segments=[(0, 1), (1, 3)]).tolist()
    [1.0, 2.0, 1.0]
    """
    rows = [alpha] if segments is None else list(alpha)
    spans = [(0, weights.shape[1])] if segments is None else list(segments)
    direct = weights.dtype == alpha.dtype == out.dtype
    rowwise = weights.device.type == "cpu" and weights.dtype != alpha.dtype
    for a_g, (start, stop) in zip(rows, spans, strict=True):
        if direct:
            torch.mv(weights[:, start:stop].T, a_g, out=out[start:stop])  # (P_g, R) @ (R,) -> (P_g,)
            continue
        coeffs = a_g.tolist() if rowwise else None
        for a, b in _chunks(start, stop):
            if coeffs is not None:
                out[a:b].copy_(_accumulate_rows(coeffs, weights[:, a:b], alpha.dtype))
            else:
                out[a:b].copy_(_product(a_g, weights[:, a:b]))
    return out


def _accumulate_rows(coeffs: Sequence[float], block: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``sum_i coeffs[i] * block[i]`` accumulated in ``dtype``, one row of the stack at a time.

    The CPU path of :func:`blend_into` for a stack narrower than the accumulation dtype:
    each row of the column slice is contiguous and is upcast as it is added, so no ``(R, C)``
    float32 copy of the slice is made. Measured on one thread (bf16 stack, P = 4.2 M):
    converting the strided ``(R, C)`` slice at once and multiplying took 180 ms per blend at
    K = 8 and 330 ms at K = 16 (a fresh 4 R MiB buffer, page-faulted, for every block), this
    19 and 28 ms, about a float32 stack's matrix-vector product (13 and 30 ms).

    >>> _accumulate_rows([0.5, 0.25], torch.tensor([[2.0, 4.0], [4.0, 8.0]], dtype=torch.bfloat16), torch.float32).tolist()
    [2.0, 4.0]
    """
    acc = torch.zeros(block.shape[1], dtype=dtype, device=block.device)  # (C,)
    for c, row in zip(coeffs, block, strict=True):
        acc.add_(row, alpha=c)  # the bf16 row is upcast by the addition
    return acc


def unflatten(flat: torch.Tensor, layout: Layout) -> dict[str, torch.Tensor]:
    """Views of one flat ``(P,)`` buffer as the named tensors of ``layout`` (no copy)."""
    return {name: flat[start:stop].view(shape)
            for (name, (start, stop)), shape in zip(layout._spans.items(), layout.shapes, strict=True)}


def bind_to_buffer(model: nn.Module, layout: Layout, buffer: torch.Tensor,
                   constants: Mapping[str, torch.Tensor], aliases: Mapping[str, str] | None = None) -> nn.Module:
    """Make the tensors of ``layout`` in ``model`` views of ``buffer`` ``(P,)``, in place.

    Parameters become ``nn.Parameter`` views (``requires_grad=False``) and buffers plain
    views, so writing ``buffer`` (:func:`blend_into`) changes the module's weights at once;
    ``constants`` are set as they are; each name of ``aliases`` (a tied weight, e.g. an
    output embedding tied to the input one) becomes the very tensor of the name it maps to.
    Returns ``model``.

    >>> net = torch.nn.Linear(2, 1)
    >>> buf = torch.zeros(3)
    >>> _ = bind_to_buffer(net, Layout(("weight", "bias"), ((1, 2), (1,))), buf, {})
    >>> _ = buf.copy_(torch.tensor([1.0, 2.0, 0.5]))
    >>> net(torch.ones(1, 2)).item()
    3.5
    """
    tensors = unflatten(buffer, layout)
    tensors.update(constants)
    bound: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        bound[name] = _set_tensor(model, name, tensor)
    for alias, source in (aliases or {}).items():
        _set_tensor(model, alias, bound[source], reuse=True)
    return model


def _set_tensor(model: nn.Module, name: str, tensor: torch.Tensor, *, reuse: bool = False) -> torch.Tensor:
    path, _, leaf = name.rpartition(".")
    module = model.get_submodule(path)
    if leaf in module._parameters:
        param = tensor if reuse and isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False)
        module._parameters[leaf] = param
        return param
    if leaf in module._buffers:
        module._buffers[leaf] = tensor
        return tensor
    raise ValueError(f"{name!r} is neither a parameter nor a buffer of the model")


def call_blended(model: nn.Module, theta: torch.Tensor, layout: Layout, constants: Mapping[str, torch.Tensor],
                 args: tuple[Any, ...], kwargs: Mapping[str, Any], aliases: Mapping[str, str] | None = None) -> Any:
    """``model(*args, **kwargs)`` with its tensors replaced by ``theta`` (flat ``(P,)``),
    ``constants`` (tensors that are not blended: BatchNorm counters, a fixed head) and, for
    each tied name of ``aliases``, the tensor of the name it maps to."""
    tensors = unflatten(theta, layout)
    tensors.update(constants)
    for alias, source in (aliases or {}).items():
        tensors[alias] = tensors[source]
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
