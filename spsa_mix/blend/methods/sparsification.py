"""Sparsify a task vector as mergekit 0.1.5 does (``mergekit/sparsify.py``), with a seeded generator.

Four ways to keep a fraction ``density`` of the entries of one tensor ``delta = theta_i - theta_base``:

====================  ==================================================================  ================
name                  what is kept                                                        used by
====================  ==================================================================  ================
``magnitude``         the ``max(1, int(density * n))`` largest ``|delta|``                ``ties``
``random``            each entry with probability ``density`` (Bernoulli)                 ``dare_*``
``magnitude_outliers``  the ``int(density * n)`` largest after the ``int(gamma * n)``     ``breadcrumbs*``
                      largest are dropped (fewer dropped when needed for the density)
``della_magprune``    each entry with probability ``density - epsilon + 2 epsilon r``,    ``della*``
                      ``r`` its magnitude rank in its row scaled to ``[0, 1]``
====================  ==================================================================  ================

``rescale`` (mergekit's ``rescale``, on by default for DARE and DELLA) multiplies what is
kept by ``||delta||_1 / ||kept||_1``, so the L1 norm of the task vector is unchanged (not
``1 / density``: that is DARE's paper; mergekit matches the norm). ``density >= 1`` keeps
everything. The random masks are drawn on the CPU from ``generator`` exactly as mergekit
draws them from torch's global generator (``torch.bernoulli`` of the same probabilities in
the same dtype), so seeding both the same way gives the same mask
(``tests/blend/test_methods.py`` checks it against mergekit's own functions).

Example
-------
>>> import torch
>>> d = torch.tensor([0.1, -3.0, 0.5, 2.0, -0.2])
>>> magnitude(d, 0.4).tolist()
[0.0, -3.0, 0.0, 2.0, -0.0]
>>> magnitude_outliers(d, 0.4, gamma=0.2).tolist()
[0.0, -0.0, 0.5, 2.0, -0.0]
"""

from __future__ import annotations

import torch

__all__ = ["SPARSIFIERS", "sparsify", "magnitude", "magnitude_outliers", "bernoulli", "della_magprune",
           "rescaled_masked"]

SPARSIFIERS = ("magnitude", "random", "magnitude_outliers", "della_magprune")
_EPS = 1e-7  # mergekit's rescaled_masked_tensor: norms below it are not rescaled


def rescaled_masked(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """``tensor * mask``, times ``||tensor||_1 / ||tensor * mask||_1`` when ``rescale`` (and
    both norms are at least 1e-7), as mergekit's ``rescaled_masked_tensor`` with L1.

    >>> rescaled_masked(torch.tensor([1.0, -2.0, 1.0]), torch.tensor([1.0, 0.0, 1.0]), True).tolist()
    [2.0, -0.0, 2.0]
    """
    masked = tensor * mask
    if not rescale:
        return masked
    before, after = tensor.abs().sum(), masked.abs().sum()
    if before < _EPS or after < _EPS:
        return masked
    return masked * (before / after)


def magnitude(tensor: torch.Tensor, density: float, rescale: bool = False) -> torch.Tensor:
    """Keep the ``max(1, int(density * n))`` entries of largest magnitude (TIES' trim)."""
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    mask = torch.zeros(tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    w = tensor.abs().reshape(-1)
    if w.device.type == "cpu":
        w = w.float()
    mask[torch.argsort(w, descending=True)[:k]] = 1
    return rescaled_masked(tensor, mask.reshape_as(tensor), rescale)


def magnitude_outliers(tensor: torch.Tensor, density: float, rescale: bool = False, *,
                       gamma: float = 0.01) -> torch.Tensor:
    """Model Breadcrumbs: drop the ``int(gamma * n)`` largest magnitudes, then the smallest,
    keeping ``int(density * n)`` (the outliers dropped are fewer when the density needs them)."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    target = int(density * n)
    n_top = int(gamma * n)
    n_bot = max(0, n - target - n_top)
    w = tensor.abs().reshape(-1)
    if w.device.type == "cpu":
        w = w.float()
    indices = torch.sort(w, descending=False).indices
    mask = torch.zeros(n, dtype=tensor.dtype, device=tensor.device)
    mask[indices[n_bot: n_bot + target]] = 1
    return rescaled_masked(tensor, mask.reshape_as(tensor), rescale)


def _work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """mergekit's dtype for the random masks: the tensor's on a GPU and for bf16, else float32."""
    return tensor.dtype if tensor.device.type != "cpu" or tensor.dtype == torch.bfloat16 else torch.float32


def _draw(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``torch.bernoulli(probs)`` drawn on the CPU from ``generator`` (reproducible on any
    device), returned on ``probs``' device."""
    return torch.bernoulli(probs.cpu(), generator=generator).to(probs.device)


def bernoulli(tensor: torch.Tensor, density: float, rescale: bool = False, *,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """DARE: keep each entry with probability ``density``.

    >>> g = torch.Generator().manual_seed(0)
    >>> int((bernoulli(torch.ones(1000), 0.3, generator=g) != 0).sum())
    306
    """
    if density >= 1:
        return tensor
    work = _work_dtype(tensor)
    mask = _draw(torch.full_like(tensor, density, dtype=work), generator)
    return rescaled_masked(tensor.to(work), mask, rescale).to(tensor.dtype)


def della_magprune(tensor: torch.Tensor, density: float, rescale: bool = False, *, epsilon: float = 0.15,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DELLA's MagPrune: keep entry ``j`` of each row with probability ``density - epsilon +
    2 epsilon rank_j``, its magnitude rank in the row scaled to ``[0, 1]`` (a vector is one row).

    Raises ``ValueError`` when ``density +/- epsilon`` leaves ``(0, 1)`` (for ``density < 1``).
    Where a row has one entry (mergekit 0.1.5 raises there: its ranks divide by zero), the
    entry is kept with probability ``density``.
    """
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError(f"della: epsilon must keep density +/- epsilon in (0, 1), but got density={density} "
                         f"and epsilon={epsilon}")
    shape = tensor.shape
    work = _work_dtype(tensor)
    if tensor.ndim < 2:
        tensor = tensor.unsqueeze(0)
    ranks = torch.argsort(tensor.abs(), dim=1, descending=False).argsort(dim=1).to(work) + 1
    lo, hi = ranks.min(dim=1, keepdim=True).values, ranks.max(dim=1, keepdim=True).values
    # rows of one entry (a convolution over one input channel) have hi == lo: mergekit divides by
    # zero there and torch.bernoulli raises; such an entry is kept with probability density
    spread = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    rank = torch.where(hi > lo, ((ranks - lo) / spread).clamp(0, 1), torch.full_like(ranks, 0.5))
    probs = (density - epsilon) + rank * 2 * epsilon
    mask = _draw(probs, generator).to(work)
    return rescaled_masked(tensor.to(work), mask, rescale).to(tensor.dtype).reshape(shape)


def sparsify(tensor: torch.Tensor, method: str, *, density: float, rescale: bool = False, gamma: float = 0.0,
             epsilon: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """One of :data:`SPARSIFIERS` applied to ``tensor`` (see the module docstring).

    >>> sparsify(torch.tensor([1.0, -2.0, 3.0]), "magnitude", density=0.5).tolist()
    [0.0, -0.0, 3.0]
    """
    if method == "magnitude":
        return magnitude(tensor, density, rescale)
    if method == "random":
        return bernoulli(tensor, density, rescale, generator=generator)
    if method == "magnitude_outliers":
        return magnitude_outliers(tensor, density, rescale, gamma=gamma)
    if method == "della_magprune":
        return della_magprune(tensor, density, rescale, epsilon=epsilon, generator=generator)
    raise ValueError(f"sparsification must be one of {list(SPARSIFIERS)}, but got {method!r}")
