"""Splits of a labelled set among a target, a held-out target split and K non-IID experts.

:func:`make_splits` (the experiments' split, GLUE 5): from the training split, in this
order and without overlap, the target set (IID, uniformly at random: it learns alpha and
is fine-tuned on), a held-out target split (IID, the same way: proxy accuracy, best
single, greedy soup), then the K expert splits from what remains
(:func:`dirichlet_split`). The test split only evaluates.

Three ways to give K experts non-IID shares of a pool, all driven by Dirichlet class
proportions of concentration ``delta`` (0.5 in GLUE 5; small is skewed, large near IID):

=========================  ==============================================================
:func:`dirichlet_split`    each expert in turn draws ``q ~ Dir(delta)`` and takes its
                           ``per_expert`` images with class counts as close to
                           ``per_expert * q`` as what is left allows; disjoint, sizes
                           fixed (GLUE 5)
:func:`dirichlet_partition` each class is divided among the K experts in ``Dir(delta)``
                           proportions; every image of the pool goes to one expert, sizes
                           vary (Hsu, Qi and Brown 2019, the usual federated-learning split)
:func:`dirichlet_sample`   each expert draws ``q ~ Dir(delta)`` and samples ``per_expert``
                           images of the whole pool with probability ``q[label]``; experts
                           may share images, so K can be large for a small pool
=========================  ==============================================================

:func:`random_parts` carves disjoint IID subsets (the target, held-out and test parts)
from one permutation.

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

from spsa_mix.core.validation import check_positive_int

__all__ = ["Splits", "dirichlet_split", "dirichlet_partition", "dirichlet_sample", "make_splits", "random_parts",
           "stratified_pick"]

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
    k = _check_k(k)
    sizes = _sizes(per_expert, k)
    _check_concentration(concentration)
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


def random_parts(n: int, sizes: Sequence[int], rng: np.random.Generator, *, sort: bool = True) -> list[IntArray]:
    """Disjoint uniformly random subsets of ``range(n)`` of the given sizes, then the rest:
    ``len(sizes) + 1`` arrays cut from one ``rng.permutation(n)``, each sorted when ``sort``.

    >>> [p.tolist() for p in random_parts(6, [2, 1], np.random.default_rng(0))]
    [[2, 3], [5], [0, 1, 4]]
    """
    if sum(sizes) > n:
        raise ValueError(f"cannot cut parts of sizes {list(sizes)} (total {sum(sizes)}) from {n} items")
    perm = rng.permutation(n)
    cuts = np.cumsum([0, *sizes])
    parts = [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)] + [perm[cuts[-1]:]]
    return [np.sort(p) for p in parts] if sort else parts


def dirichlet_partition(
    labels: Any,
    *,
    k: int,
    concentration: float = 0.5,
    rng: np.random.Generator,
    pool: Any = None,
    min_size: int = 5,
    attempts: int = 100,
) -> list[IntArray]:
    """Divide each class of the pool among ``k`` experts in Dirichlet proportions.

    For each class (in increasing order) the pool's images of that class are permuted and
    cut at the cumulative sums of ``q ~ Dir(concentration * 1_k)``; expert ``i`` gets the
    ``i``-th piece of every class. Every image goes to exactly one expert; sizes vary. The
    whole draw is repeated (up to ``attempts`` times) until every expert has at least
    ``min_size`` images.

    Returns
    -------
    list of arrays
        ``k`` index arrays into ``labels``, in class order (not sorted), disjoint, covering the pool.

    >>> labels = np.repeat(np.arange(3), 20)
    >>> parts = dirichlet_partition(labels, k=3, rng=np.random.default_rng(0))
    >>> sum(len(p) for p in parts), len(np.unique(np.concatenate(parts)))
    (60, 60)
    """
    labels = np.asarray(labels)
    k = _check_k(k)
    _check_concentration(concentration)
    idx = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    sub = labels[idx]
    for _ in range(attempts):
        shares: list[list[int]] = [[] for _ in range(k)]
        for c in np.unique(sub):
            members = rng.permutation(np.flatnonzero(sub == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(k, float(concentration))))[:-1] * len(members)).astype(int)
            for i, part in enumerate(np.split(members, cuts)):
                shares[i].extend(part.tolist())
        if min(len(s) for s in shares) >= min_size:
            return [idx[np.asarray(s, dtype=np.int64)] for s in shares]
    raise ValueError(f"could not split {len(idx)} images among k={k} experts with at least {min_size} each "
                     f"in {attempts} draws; lower k")


def dirichlet_sample(
    labels: Any,
    *,
    k: int,
    per_expert: int,
    concentration: float = 0.5,
    rng: np.random.Generator,
    pool: Any = None,
    with_seeds: bool = False,
) -> Any:
    """Each expert samples its own share of the whole pool with Dirichlet class proportions.

    For each expert in turn: ``q ~ Dir(concentration * 1_C)``, then ``per_expert`` images
    of the pool (all of it if smaller) without replacement, with probabilities
    proportional to ``q[label]``; with ``with_seeds``, then a seed for the order of its
    training minibatches (``rng.integers(2**31)``). Experts may share images.

    Returns
    -------
    list of arrays, or (list of arrays, tuple of seeds) with ``with_seeds``
        ``k`` index arrays into ``labels`` in the order drawn.

    >>> parts, seeds = dirichlet_sample(np.repeat(np.arange(2), 5), k=3, per_expert=4,
    ...                                 rng=np.random.default_rng(0), with_seeds=True)
    >>> [len(p) for p in parts], len(seeds)
    ([4, 4, 4], 3)
    """
    labels = np.asarray(labels)
    k = _check_k(k)
    _check_concentration(concentration)
    size = _sizes(per_expert, 1)[0]
    idx = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    num_classes = int(labels.max()) + 1
    pool_labels = labels[idx]
    parts, seeds = [], []
    for _ in range(k):
        q = rng.dirichlet(np.full(num_classes, float(concentration)))
        w = q[pool_labels]
        parts.append(idx[rng.choice(idx.size, size=min(size, idx.size), replace=False, p=w / w.sum())])
        if with_seeds:
            seeds.append(int(rng.integers(2**31)))
    return (parts, tuple(seeds)) if with_seeds else parts


def _check_k(k: Any) -> int:
    return check_positive_int(k, "k")


def _check_concentration(concentration: Any) -> None:
    if not (isinstance(concentration, (int, float)) and concentration > 0 and math.isfinite(concentration)):
        raise ValueError(f"concentration must be a positive number, but got {concentration!r}")


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
    """Index arrays into the training split: target, held-out target, one per expert.

    ``seeds``, when given, holds one seed per expert for the order of its training
    minibatches (drawn with the split, as :func:`dirichlet_sample` can); otherwise the
    training derives them (:func:`spsa_mix.experiment.experts.expert_seed`).
    """

    target: IntArray
    holdout: IntArray
    experts: list[IntArray]
    seeds: tuple[int, ...] | None = None
    test: IntArray | None = None  # indices into the test split (a shifted target's test set); None: all of it
    target_proportions: NDArray[np.float64] | None = None  # a shifted target's class proportions

    def describe(self, labels: Any) -> dict[str, Any]:
        """Sizes and class counts, for the results file."""
        labels = np.asarray(labels)
        c = int(labels.max()) + 1

        def counts(ix: IntArray) -> list[int]:
            return np.bincount(labels[ix], minlength=c).tolist()

        out: dict[str, Any] = {
            "target_size": len(self.target), "holdout_size": len(self.holdout),
            "target_class_counts": counts(self.target), "holdout_class_counts": counts(self.holdout),
            "expert_sizes": [len(e) for e in self.experts],
            "expert_class_counts": [counts(e) for e in self.experts]}
        if self.target_proportions is not None:
            out["target_proportions"] = [float(v) for v in self.target_proportions]
        if self.test is not None:
            out["test_size"] = len(self.test)
        return out


def make_splits(
    labels: Any,
    *,
    k: int,
    per_expert: int | Sequence[int],
    target_size: int,
    holdout_size: int,
    concentration: float = 0.5,
    rng: np.random.Generator,
    target_concentration: float | None = None,
    test_labels: Any = None,
) -> Splits:
    """Target (IID), held-out target (IID), then K Dirichlet expert splits; disjoint.

    With ``target_concentration``, the target domain is shifted in its labels: its class
    proportions ``q ~ Dirichlet(target_concentration)`` are drawn first, and the target set
    and the held-out split are drawn with class counts as close to ``q`` as the images
    allow (GLUE's "new target domain ... that exhibits a shifted data distribution");
    with ``test_labels`` (the labels of the test split), ``Splits.test`` is the largest
    subset of the test split whose class counts are proportional to ``q`` (to rounding), so
    that test accuracy is accuracy on the target domain. Without it (the default, GLUE 5's
    protocol) the target is IID and nothing else is drawn: the splits are as before, bit
    for bit.

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
        check_positive_int(value, name)
    k = _check_k(k)
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
    if target_concentration is None:
        target, holdout, rest = random_parts(len(labels), [target_size, holdout_size], rng)
        experts = dirichlet_split(labels, k=k, per_expert=per_expert, concentration=concentration, rng=rng, pool=rest)
        return Splits(target=target, holdout=holdout, experts=experts)
    _check_concentration(target_concentration)
    test_y = None if test_labels is None else np.asarray(test_labels)
    num_classes = int(max(labels.max(), -1 if test_y is None or not test_y.size else test_y.max())) + 1
    q = rng.dirichlet(np.full(num_classes, float(target_concentration)))
    target, holdout, rest = _shifted_parts(labels, q, [target_size, holdout_size], rng)
    experts = dirichlet_split(labels, k=k, per_expert=per_expert, concentration=concentration, rng=rng, pool=rest)
    test = None if test_y is None else _proportional_subset(test_y, q, rng)
    return Splits(target=target, holdout=holdout, experts=experts, test=test, target_proportions=q)


def _shifted_parts(labels: IntArray, q: NDArray[np.float64], sizes: Sequence[int],
                   rng: np.random.Generator) -> list[IntArray]:
    """Disjoint parts of the given sizes with class counts as close to ``size * q`` as the
    images allow (:func:`_capped_counts`), then the rest; each sorted."""
    remaining = [list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(q))]
    parts = []
    for size in sizes:
        avail = np.array([len(r) for r in remaining], dtype=np.int64)
        counts = _capped_counts(q, avail, size)
        chosen: list[int] = []
        for c in range(len(q)):
            chosen += remaining[c][: counts[c]]
            remaining[c] = remaining[c][counts[c]:]
        parts.append(np.sort(np.asarray(chosen, dtype=np.int64)))
    parts.append(np.sort(np.asarray([i for r in remaining for i in r], dtype=np.int64)))
    return parts


def _proportional_subset(labels: IntArray, q: NDArray[np.float64], rng: np.random.Generator) -> IntArray:
    """The largest subset with class counts ``n q`` (to rounding) that ``labels`` holds.

    >>> labels = np.repeat(np.arange(3), 10)
    >>> np.bincount(labels[_proportional_subset(labels, np.array([0.5, 0.25, 0.25]), np.random.default_rng(0))])
    array([10,  5,  5])
    """
    avail = np.bincount(labels, minlength=len(q)).astype(np.int64)
    wanted = q > 0
    n = int(np.floor(np.min(avail[wanted] / q[wanted]) + 1e-9)) if wanted.any() else 0
    n = min(n, int(avail.sum()))
    counts = _round_to_total(q * n, np.minimum(avail, np.ceil(q * n).astype(np.int64)), n)
    picked = [rng.choice(np.flatnonzero(labels == c), size=int(m), replace=False) for c, m in enumerate(counts) if m]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
