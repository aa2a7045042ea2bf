"""Splits of a labelled set among a target, a held-out target split and K non-IID experts.

---------------------------
From the training split, in this order and without overlap: the target set (IID,
uniformly at random: it learns alpha and is fine-tuned on; GLUE 5), a held-out target
split (IID, the same way: proxy accuracy, best single, greedy soup), then the K expert splits
from what remains (:func:`dirichlet_split`). The test split only evaluates.

Example
-------
>>> import numpy as np
>>> labels = np.repeat(np.arange(4), 50)
>>> parts = dirichlet_split(labels, k=3, per_expert=40, concentration=0.5, rng=np.random.default_rng(0))
>>> [len(p) for p in parts], len(np.unique(np.concatenate(parts)))
([40, 40, 40], 120)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["Splits", "dirichlet_split", "make_splits", "stratified_pick"]

IntArray = NDArray[np.int64]


def stratified_pick(labels: IntArray, n: int, rng: np.random.Generator) -> IntArray:
    """``n`` indices with class shares as in ``labels`` (largest remainder), sorted."""
    classes, counts = np.unique(labels, return_counts=True)
    quota = _round_to_total(counts / counts.sum() * n, np.minimum(counts, n), n)
    picked = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota, strict=True)]
    return np.sort(np.concatenate(picked))



def _round_to_total(real: NDArray[np.float64], cap: NDArray[np.int64], total: int) -> IntArray:
    """Integers ``<= cap`` summing to ``total``, closest to ``real`` (largest remainder)."""
    out = np.minimum(np.floor(real).astype(np.int64), cap)
    rest = total - int(out.sum())
    frac = np.where(out < cap, real - np.floor(real), -np.inf)
    order = np.argsort(-frac, kind="stable")
    for i in order:
        if rest <= 0:
            break
        if out[i] < cap[i]:
            out[i] += 1
            rest -= 1
    if rest > 0:  # remainders exhausted: fill any spare capacity, in class order
        for i in range(len(out)):
            take = min(rest, int(cap[i] - out[i]))
            out[i] += take
            rest -= take
    return out


def _capped_counts(q: NDArray[np.float64], avail: IntArray, n: int) -> IntArray:
    """Counts as close as possible to ``n * q`` with ``counts <= avail``, summing to ``n``.

    Water filling: ``min(avail, t q)`` with the level ``t >= n`` at which the sum is
    ``n`` (bisection), then rounded. Classes an expert wants more of than remain are
    taken whole, and the shortfall goes to the other classes in proportion to ``q``.
    """
    q = np.maximum(q, 1e-300)
    lo, hi = float(n), float(n)
    while np.minimum(avail, hi * q).sum() < n:
        hi *= 2.0
        if hi > 1e300:
            break
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.minimum(avail, mid * q).sum() < n:
            lo = mid
        else:
            hi = mid
    return _round_to_total(np.minimum(avail, hi * q), avail, n)


def dirichlet_split(
    labels: Any,
    *,
    k: int,
    per_expert: int | Sequence[int],
    concentration: float = 0.5,
    rng: np.random.Generator,
    pool: Any = None,
) -> list[IntArray]:
    """Disjoint non-IID subsets: class proportions of each from Dirichlet(concentration).

    For each expert in turn, draw ``q ~ Dirichlet(concentration * 1_C)`` (GLUE 5,
    concentration 0.5) and take ``per_expert`` images without replacement from those
    still unused, with class counts as close to ``per_expert * q`` as the remaining
    images allow (a class that runs short is taken whole and the rest of the quota
    goes to the other classes in proportion to ``q``).

    Parameters
    ----------
    labels:
        Integer labels of the whole set, shape ``(N,)``.
    k, per_expert:
        Number of subsets and images in each (one size, or ``k`` sizes).
    concentration:
        Dirichlet concentration; small is skewed (0.5: GLUE 5), large approaches IID.
    rng:
        Generator for the proportions and the draws; same generator state, same split.
    pool:
        Indices allowed (default: all).

    Returns
    -------
    list of arrays
        ``k`` sorted index arrays into ``labels``, disjoint, of the sizes asked.

    Raises
    ------
    ValueError
        If the sizes add up to more than the pool, naming the numbers.

    Example
    -------
    >>> labels = np.repeat(np.arange(3), 10)
    >>> dirichlet_split(labels, k=4, per_expert=10, rng=np.random.default_rng(0))
    Traceback (most recent call last):
    ...
    ValueError: cannot split 30 images into k=4 experts of per_expert=10 (needs 40): lower k or per_expert
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-d integer array, but got dtype {labels.dtype} shape {labels.shape}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, but got {k!r}")
    sizes = _sizes(per_expert, k)
    if not (isinstance(concentration, (int, float)) and concentration > 0 and math.isfinite(concentration)):
        raise ValueError(f"concentration must be a positive number, but got {concentration!r}")
    idx = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    if sum(sizes) > len(idx):
        raise ValueError(
            f"cannot split {len(idx)} images into k={k} experts of per_expert={per_expert} "
            f"(needs {sum(sizes)}): lower k or per_expert"
        )
    num_classes = int(labels.max()) + 1
    remaining = [list(rng.permutation(idx[labels[idx] == c])) for c in range(num_classes)]
    parts = []
    for size in sizes:
        q = rng.dirichlet(np.full(num_classes, float(concentration)))
        avail = np.array([len(r) for r in remaining], dtype=np.int64)
        counts = _capped_counts(q, avail, size)
        chosen = []
        for c in range(num_classes):
            chosen += remaining[c][: counts[c]]
            remaining[c] = remaining[c][counts[c]:]
        parts.append(np.sort(np.asarray(chosen, dtype=np.int64)))
    return parts


def _sizes(per_expert: Any, k: int) -> list[int]:
    sizes = list(per_expert) if isinstance(per_expert, (list, tuple, np.ndarray)) else [per_expert] * k
    if len(sizes) != k:
        raise ValueError(f"per_expert must be one size or k={k} sizes, but got {len(sizes)} sizes {sizes}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise ValueError(f"per_expert must be an integer >= 1 (or k of them), but got {per_expert!r}")
    return [int(s) for s in sizes]


@dataclass(frozen=True)
class Splits:
    """Index arrays into the training split: target, held-out target, one per expert."""

    target: IntArray
    holdout: IntArray
    experts: list[IntArray]

    def describe(self, labels: Any) -> dict[str, Any]:
        """Sizes and class counts, for the results file."""
        labels = np.asarray(labels)
        c = int(labels.max()) + 1

        def counts(ix: IntArray) -> list[int]:
            return np.bincount(labels[ix], minlength=c).tolist()

        return {"target_size": len(self.target), "holdout_size": len(self.holdout),
                "target_class_counts": counts(self.target), "holdout_class_counts": counts(self.holdout),
                "expert_sizes": [len(e) for e in self.experts],
                "expert_class_counts": [counts(e) for e in self.experts]}


def make_splits(
    labels: Any,
    *,
    k: int,
    per_expert: int | Sequence[int],
    target_size: int,
    holdout_size: int,
    concentration: float = 0.5,
    rng: np.random.Generator,
) -> Splits:
    """Target (IID), held-out target (IID), then K Dirichlet expert splits; disjoint.

    Raises
    ------
    ValueError
        If the sizes need more images than the training split holds, saying how many
        each part needs and what to lower.

    Example
    -------
    >>> labels = np.repeat(np.arange(10), 30)
    >>> s = make_splits(labels, k=4, per_expert=30, target_size=100, holdout_size=50, rng=np.random.default_rng(0))
    >>> len(s.target), len(s.holdout), [len(e) for e in s.experts]
    (100, 50, [30, 30, 30, 30])
    >>> make_splits(labels, k=10, per_expert=30, target_size=100, holdout_size=50, rng=np.random.default_rng(0))
    Traceback (most recent call last):
    ...
    ValueError: the training split holds 300 images but the sizes need 450: target_size=100 + holdout_size=50 + k=10 x per_expert=30 (300); lower k, per_expert, target_size or holdout_size
    """
    labels = np.asarray(labels)
    for name, value in (("target_size", target_size), ("holdout_size", holdout_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, but got {value!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, but got {k!r}")
    experts_need = sum(_sizes(per_expert, k))
    need = target_size + holdout_size + experts_need
    if need > len(labels):
        shown = f"k={k} x per_expert={per_expert}" if not isinstance(per_expert, (list, tuple)) else \
            f"per_expert={list(per_expert)}"
        raise ValueError(
            f"the training split holds {len(labels)} images but the sizes need {need}: "
            f"target_size={target_size} + holdout_size={holdout_size} + {shown} ({experts_need}); "
            f"lower k, per_expert, target_size or holdout_size"
        )
    perm = rng.permutation(len(labels))
    target = np.sort(perm[:target_size])
    holdout = np.sort(perm[target_size: target_size + holdout_size])
    experts = dirichlet_split(labels, k=k, per_expert=per_expert, concentration=concentration, rng=rng,
                              pool=np.sort(perm[target_size + holdout_size:]))
    return Splits(target=target, holdout=holdout, experts=experts)
