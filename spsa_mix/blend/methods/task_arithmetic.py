"""mergekit's task-vector merges (its ``GeneralizedTaskArithmeticMerge``), one tensor at a time.

For one tensor, with base ``b``, experts ``theta_i``, weights ``w_i`` and a method of
:data:`~spsa_mix.blend.methods.registry.METHODS`:

1. ``delta'_i = sparsify(theta_i - b)`` in the tensors' dtype (:func:`sparsified_deltas`);
2. ``u_i = w_i delta'_i``; with a sign consensus, the elected sign of each entry is
   ``+1`` where ``sum_i u_i >= 0`` else ``-1``, and ``m_i = [sign(u_i) == elected]`` (an
   entry that is zero never agrees); without one, ``m_i = 1``;
3. ``mixed = sum_i m_i u_i``, divided, when ``normalize``, by ``sum_i w_i m_i`` entry by
   entry (TIES' disjoint mean; an entry no expert keeps is divided by 1) or, without
   consensus, by ``sum_i w_i`` (left alone when ``|sum_i w_i| < 1e-8``);
4. ``theta = b + lambda * mixed`` in ``b``'s dtype (:func:`combine`).

:func:`merge_tensor` is the four steps; :func:`fixed_rows` is what a search with the
consensus fixed at weights ``w0`` blends linearly (``docs/merge_methods.md``).

Example
-------
>>> import torch
>>> b = torch.zeros(4)
>>> experts = [torch.tensor([1.0, -2.0, 0.5, 0.0]), torch.tensor([3.0, 1.0, -0.5, 0.0])]
>>> params = {"density": (1.0, 1.0), "normalize": True, "rescale": False, "lambda": 1.0}
>>> merge_tensor("ties", b, experts, [0.5, 0.5], params).tolist()   # agreeing entries averaged
[2.0, -2.0, 0.5, 0.0]
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import torch

from spsa_mix.blend.methods.registry import METHODS
from spsa_mix.blend.methods.sparsification import sparsify

__all__ = ["sparsified_deltas", "agreement", "combine", "merge_tensor", "fixed_rows", "tensor_generator"]


def tensor_generator(seed: int, name: str) -> torch.Generator:
    """The CPU generator of the random masks (DARE, DELLA) of tensor ``name``: seeded by
    the first 8 bytes of ``sha256(f"{seed}/{name}")`` (little-endian, modulo 2**63), so
    each tensor's masks depend on the seed and its name only, not on the order of the work.

    >>> int(tensor_generator(0, "w").initial_seed()) == int(tensor_generator(0, "w").initial_seed())
    True
    """
    digest = hashlib.sha256(f"{int(seed)}/{name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") % 2**63)


def sparsified_deltas(method: str, base: torch.Tensor, experts: Sequence[torch.Tensor], params: dict[str, Any], *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """``(K, *shape)``: each expert's task vector ``theta_i - base``, sparsified by ``method``
    with its own density (gamma, epsilon), in ``base``'s dtype. The random masks are drawn
    from ``generator``, expert after expert, as mergekit draws them from torch's generator."""
    spec = METHODS[method]
    deltas = base.new_empty((len(experts), *base.shape))
    for i, theta in enumerate(experts):
        delta = theta - base
        if spec.sparsification:
            delta = sparsify(delta, spec.sparsification, density=params["density"][i], rescale=params["rescale"],
                             gamma=params["gamma"][i] if "gamma" in params else 0.0,
                             epsilon=params["epsilon"][i] if "epsilon" in params else 0.0, generator=generator)
        deltas[i] = delta
    return deltas


def _weights_like(weights: Any, deltas: torch.Tensor) -> torch.Tensor:
    """The weights as a ``(K, 1, ..., 1)`` tensor of ``deltas``' dtype (or the tensor given)."""
    w = weights if isinstance(weights, torch.Tensor) else torch.tensor(list(weights), dtype=deltas.dtype,
                                                                       device=deltas.device)
    return w.reshape(w.shape + (1,) * (deltas.ndim - w.ndim))


def agreement(weighted: torch.Tensor) -> torch.Tensor:
    """``(K, ...)`` bool: where ``sign(u_i)`` is the elected sign, ``+1`` where
    ``sum_i u_i >= 0`` else ``-1`` (mergekit's ``get_mask(method="sum")``).

    >>> agreement(torch.tensor([[1.0, -1.0, 0.0], [-3.0, -1.0, 0.0]])).tolist()
    [[False, True, False], [True, True, False]]
    """
    sign = weighted.sign()
    elected = (weighted.sum(dim=0) >= 0).to(weighted.dtype) * 2 - 1
    return sign == elected


def combine(method: str, base: torch.Tensor, deltas: torch.Tensor, weights: Any, params: dict[str, Any]
            ) -> torch.Tensor:
    """Steps 2 to 4 of the module docstring: ``base + lambda * mixed`` in ``base``'s dtype.

    ``weights``: ``K`` numbers, or a tensor ``(K,)`` (differentiable: no operation is in
    place); ``params["lambda"]`` a number or a 0-d tensor. ``deltas``: ``(K, *base.shape)``
    sparsified task vectors."""
    w = _weights_like(weights, deltas)
    weighted = deltas * w
    if METHODS[method].consensus:
        mask = agreement(weighted)
        mixed = (weighted * mask).sum(dim=0)
        divisor = (w * mask).sum(dim=0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor = torch.where(divisor.abs() < 1e-8, torch.ones_like(divisor), divisor)
    if params["normalize"]:
        mixed = mixed / divisor
    mixed = mixed * params["lambda"]  # mergekit skips it for lambda == 1: the same bits
    return (base + mixed).to(base.dtype)


def merge_tensor(method: str, base: torch.Tensor, experts: Sequence[torch.Tensor], weights: Sequence[float],
                 params: dict[str, Any], *, generator: torch.Generator | None = None) -> torch.Tensor:
    """One tensor merged as mergekit merges it (the module docstring), ``params`` as
    :func:`~spsa_mix.blend.methods.registry.check_parameters` returns them."""
    deltas = sparsified_deltas(method, base, experts, params, generator=generator)
    return combine(method, base, deltas, weights, params)


def fixed_rows(method: str, deltas: torch.Tensor, start: Sequence[float], params: dict[str, Any]) -> torch.Tensor:
    """``(K, ...)`` rows ``r_i`` such that ``theta = b + lambda * sum_i w_i r_i`` is the merge
    with the consensus of the weights ``start`` kept for every ``w``: the elected sign, the
    agreement masks and (with ``normalize``) the disjoint mean's divisor of ``start``.

    Exact at ``w = start`` (and, without a consensus, for every ``w`` on the simplex);
    elsewhere the consensus is that of ``start`` (``docs/merge_methods.md``). In ``deltas``'
    dtype, the division done in float32.

    >>> d = torch.tensor([[2.0, -1.0], [4.0, 3.0]])
    >>> fixed_rows("ties", d, [0.5, 0.5], {"normalize": True}).tolist()   # entry 1: only expert 1 agrees
    [[2.0, -0.0], [4.0, 6.0]]
    """
    if not METHODS[method].consensus:
        return deltas
    w = _weights_like(start, deltas)
    mask = agreement(deltas * w)
    rows = deltas * mask
    if params["normalize"]:
        divisor = (w.float() * mask).sum(dim=0)
        divisor = torch.where(divisor == 0, torch.ones_like(divisor), divisor)
        rows = (rows.float() / divisor).to(deltas.dtype)
    return rows
