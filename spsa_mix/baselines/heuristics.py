"""Mixing weights set without learning: uniform, data size, proxy accuracy, best single
expert, greedy soup.

All functions are pure and return a point of the probability simplex (non-negative,
summing to one).

* :func:`uniform_weights` -- ``alpha_i = 1/K`` (the uniform model soup);
* :func:`data_size_weights` -- GLUE's Config 1, ``alpha_i = n_i / sum_j n_j`` with
  ``n_i`` the size of expert ``i``'s training set;
* :func:`proxy_accuracy_weights` -- GLUE's Config 2, ``alpha_i = a_i / sum_j a_j`` with
  ``a_i`` expert ``i``'s accuracy on a small held-out target set;
* :func:`best_single_weights` -- one-hot on the best score;
* :func:`greedy_soup` -- Wortsman et al. (2022), "Model soups", Recipe 1.

Example
-------
>>> data_size_weights([100, 300]).tolist()
[0.25, 0.75]
>>> best_single_weights([0.7, 0.9, 0.8]).tolist()
[0.0, 1.0, 0.0]
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.validation import check_int

__all__ = [
    "uniform_weights",
    "data_size_weights",
    "proxy_accuracy_weights",
    "best_single_weights",
    "greedy_soup",
]

FloatArray = NDArray[np.float64]


def _scores(values: ArrayLike, name: str, *, nonnegative: bool, positive_sum: bool) -> FloatArray:
    """A 1-D float array of at least one finite value, checked."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a sequence of numbers, but got {values!r:.200}") from e
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, but got shape {arr.shape}: {values!r:.200}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, but got {arr.tolist()!r:.200}")
    if nonnegative and np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative, but got {arr.tolist()!r:.200}")
    if positive_sum and not arr.sum() > 0:
        raise ValueError(f"{name} must have a positive sum (at least one positive entry), but got {arr.tolist()!r:.200}")
    return arr


def uniform_weights(k: int) -> FloatArray:
    """``alpha_i = 1 / k``: the uniform soup.

    >>> uniform_weights(4).tolist()
    [0.25, 0.25, 0.25, 0.25]
    >>> uniform_weights(0)
    Traceback (most recent call last):
    ...
    ValueError: k must be an integer >= 1, but got 0
    """
    k = check_int(k, "k", minimum=1)
    return np.full(k, 1.0 / k)


def data_size_weights(sizes: Sequence[float]) -> FloatArray:
    """GLUE's Config 1: weights proportional to each expert's training-set size.

    >>> data_size_weights([1000, 3000, 1000]).tolist()
    [0.2, 0.6, 0.2]
    >>> data_size_weights([0, 0])
    Traceback (most recent call last):
    ...
    ValueError: sizes must have a positive sum (at least one positive entry), but got [0.0, 0.0]
    """
    n = _scores(sizes, "sizes", nonnegative=True, positive_sum=True)
    return n / n.sum()


def proxy_accuracy_weights(accuracies: Sequence[float]) -> FloatArray:
    """GLUE's Config 2: weights proportional to each expert's held-out accuracy.

    >>> proxy_accuracy_weights([0.5, 0.25, 0.25]).tolist()
    [0.5, 0.25, 0.25]
    >>> proxy_accuracy_weights([0.9, -0.1])
    Traceback (most recent call last):
    ...
    ValueError: accuracies must be non-negative, but got [0.9, -0.1]
    """
    a = _scores(accuracies, "accuracies", nonnegative=True, positive_sum=True)
    return a / a.sum()


def best_single_weights(scores: Sequence[float]) -> FloatArray:
    """One-hot on the highest score (the first one on ties).

    >>> best_single_weights([0.8, 0.9, 0.9]).tolist()
    [0.0, 1.0, 0.0]
    """
    s = _scores(scores, "scores", nonnegative=False, positive_sum=False)
    out = np.zeros(s.size)
    out[int(np.argmax(s))] = 1.0
    return out


def greedy_soup(
    scores: Sequence[float],
    evaluate: Callable[[FloatArray], float],
) -> tuple[FloatArray, dict[str, Any]]:
    """Greedy soup (Wortsman et al. 2022, "Model soups", Recipe 1).

    Visit the experts in decreasing held-out score (ties: lower index first). The soup
    starts as the best expert, whose held-out accuracy is its score; each next expert is
    added to the soup (the uniform average of the experts kept) and kept only if the
    held-out accuracy of the new soup, ``evaluate(weights)``, does not drop (``>=``, as in
    Recipe 1). ``scores`` must therefore be held-out accuracies on the same split that
    ``evaluate`` uses. ``evaluate`` is called ``K - 1`` times.

    Parameters
    ----------
    scores:
        Each expert's held-out accuracy.
    evaluate:
        ``evaluate(weights) -> float``: held-out accuracy of the blend with ``weights``
        (a point of the simplex, shape ``(K,)``).

    Returns
    -------
    weights : numpy.ndarray
        Uniform over the experts kept, zero elsewhere.
    record : dict
        ``order`` (experts in the order visited), ``steps`` (one dict per candidate:
        ``expert``, ``accuracy`` of the soup with it, ``best_before``, ``kept``),
        ``ingredients`` (experts kept) and ``accuracy`` (of the final soup).

    Example
    -------
    >>> acc = {(1, 2): 0.75, (0, 1): 0.85}           # held-out accuracy of each soup tried
    >>> w, rec = greedy_soup([0.6, 0.8, 0.7],
    ...                      lambda w: acc[tuple(int(i) for i in np.flatnonzero(w))])
    >>> w.tolist(), rec["order"], rec["ingredients"]
    ([0.5, 0.5, 0.0], [1, 2, 0], [0, 1])
    >>> [(step["expert"], step["kept"]) for step in rec["steps"]]
    [(2, False), (0, True)]
    """
    s = _scores(scores, "scores", nonnegative=False, positive_sum=False)
    if not callable(evaluate):
        raise ValueError(f"evaluate must be callable, but got {evaluate!r}")
    order = [int(i) for i in np.argsort(-s, kind="stable")]
    kept = [order[0]]
    best = float(s[order[0]])
    steps: list[dict[str, Any]] = []
    for i in order[1:]:
        trial = _uniform_over(kept + [i], s.size)
        acc = evaluate(trial)
        if isinstance(acc, bool) or not isinstance(acc, numbers.Real) or not math.isfinite(float(acc)):
            raise ValueError(f"evaluate must return a finite number, but returned {acc!r} for weights {trial.tolist()}")
        keep = float(acc) >= best
        steps.append({"expert": i, "accuracy": float(acc), "best_before": best, "kept": keep})
        if keep:
            kept.append(i)
            best = float(acc)
    ingredients = sorted(kept)
    record = {"order": order, "steps": steps, "ingredients": ingredients, "accuracy": best}
    return _uniform_over(ingredients, s.size), record


def _uniform_over(indices: Sequence[int], k: int) -> FloatArray:
    w = np.zeros(k)
    w[list(indices)] = 1.0 / len(indices)
    return w
