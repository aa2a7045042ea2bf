r"""SAIL's closed-form mixing weights from distances between data distributions.

SAIL (Theorem 3, section 4.2, proof in appendix E) picks the convex combination
``theta_P = sum_i gamma_i theta_i`` closest to the target parameters ``theta*`` and, for
lack of ``theta*``, replaces parameter distances by distances between the experts' data
distributions ``D_i`` and the target's ``D*``. With ``delta_i = theta_i - theta*``,

.. math::

    \|\theta_P - \theta^*\|^2 = \gamma^\top G \gamma,\qquad
    G_{ij} = \delta_i^\top\delta_j = \tfrac12\,(d_{i*}^2 + d_{j*}^2 - d_{ij}^2)

(the polarisation identity; SAIL's eq. 13 is ``H = 2 G``), minimised over the simplex.

What we checked numerically (``tests/baselines/test_sail.py``), with random vectors
``theta_i, theta*`` whose pairwise distances are fed in:

* ``n = 2``: the minimiser over the line is
  ``gamma_1 = (d_2*^2 + d_12^2 - d_1*^2) / (2 d_12^2)``, the main text's eq. (11) and the
  last lines of the appendix E derivation. The statement of the theorem in appendix E and
  the formula applied in section 4.4 subtract the other distance,
  ``(d_1*^2 + d_12^2 - d_2*^2) / (2 d_12^2)``, which is ``gamma_2 = 1 - gamma_1``: they
  give the weight of the wrong expert (an expert closer to the target gets less weight).
  This module uses eq. (11), in its general form below.
* ``n > 2``: eq. (12), ``gamma = H^{-1} e / (e^T H^{-1} e)``, is the minimiser on the
  affine hull ``sum gamma = 1``; it ignores ``gamma >= 0``. We solve the KKT system
  ``[[2G, e], [e^T, 0]]`` by least squares (which also covers a singular ``G``, e.g.
  ``theta*`` on the line through two experts, where eq. 12 has no inverse); when that
  solution has a negative weight it is not the answer, and the convex quadratic program
  on the simplex is solved instead (:func:`simplex_qp`, an exact active-set method). ``record["closed_form_on_simplex"]`` says which case occurred.

Distances. Following section 4.4, the distances are maximum mean discrepancies (MMD)
between feature distributions. The squared MMD of two empirical distributions (biased,
V-statistic) is the squared distance between their kernel mean embeddings in one RKHS,
so ``G`` is the Gram matrix of the embeddings minus the target's: positive semi-definite,
and the quadratic program convex. Caveat: the appendix's link between parameter and
distribution distances (Lemma 2) assumes Gaussian classes with a shared covariance and a
constant ratio between the two distances; in general the distance-based weights are a
heuristic, not the parameter-space optimum.

Features. Each row of ``expert_features[i]`` describes one example of expert ``i``'s
training data and each row of ``target_features`` one target example, all in one
feature space: raw inputs (flattened, normalised pixels), or the penultimate-layer
activations of one reference network applied to every set (e.g. the uniform blend, so
that no expert is favoured). Rows are subsampled to ``max_points`` per set.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> experts = [rng.normal(0.0, 1, (200, 2)), rng.normal(3.0, 1, (200, 2))]
>>> target = rng.normal(0.5, 1, (200, 2))          # close to the first expert's data
>>> w, rec = sail_weights(experts, target)
>>> bool(w[0] > 0.8), rec["closed_form_on_simplex"]
(True, True)
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.validation import check_int

__all__ = ["sail_weights", "sail_from_distances", "mmd2_matrix", "median_bandwidth", "simplex_qp"]

logger = logging.getLogger("spsa_mix")
FloatArray = NDArray[np.float64]

DEFAULT_MAX_POINTS = 1000  # rows per distribution (the MMD is quadratic in them); this package's choice
_NEG_TOL = 1e-12  # a closed-form weight above -_NEG_TOL counts as non-negative
_CHUNK = 2048  # rows of the kernel matrix formed at once


def _rbf(x: FloatArray, y: FloatArray, bandwidth: float) -> FloatArray:
    sq = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return np.exp(-np.maximum(sq, 0.0) / (2.0 * bandwidth**2))


def median_bandwidth(points: ArrayLike, *, max_points: int = 1000, rng: np.random.Generator | int = 0) -> float:
    """The median heuristic: the median Euclidean distance between distinct rows (of at
    most ``max_points`` rows drawn without replacement).

    >>> median_bandwidth(np.array([[0.0], [1.0], [3.0]]))
    2.0
    """
    x = np.asarray(points, dtype=np.float64)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if len(x) > max_points:
        x = x[g.choice(len(x), size=max_points, replace=False)]
    sq = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2.0 * x @ x.T
    iu = np.triu_indices(len(x), k=1)
    d = np.sqrt(np.maximum(sq[iu], 0.0))
    d = d[d > 0]
    if d.size == 0:
        raise ValueError("the features are all identical: no bandwidth can be chosen by the median heuristic")
    return float(np.median(d))


def mmd2_matrix(
    sets: Sequence[ArrayLike],
    *,
    kernel: Literal["rbf", "linear"] = "rbf",
    bandwidth: float = 1.0,
) -> FloatArray:
    """Squared MMD between every pair of empirical distributions (biased V-statistic).

    ``M_ab`` = mean of ``k(x, y)`` over ``x`` in set ``a`` and ``y`` in set ``b`` is the
    inner product of the mean embeddings; ``MMD^2(a, b) = M_aa + M_bb - 2 M_ab``. With
    ``kernel="linear"`` that is the squared distance between the sets' means.

    >>> a, b = np.zeros((3, 2)), np.ones((4, 2))
    >>> mmd2_matrix([a, b], kernel="linear").tolist()
    [[0.0, 2.0], [2.0, 0.0]]
    """
    arrays = [np.asarray(s, dtype=np.float64) for s in sets]
    sizes = [len(a) for a in arrays]
    x = np.concatenate(arrays)  # (N, p)
    owner = np.repeat(np.arange(len(arrays)), sizes)
    avg = np.zeros((len(arrays), len(x)))  # row a averages the points of set a
    avg[owner, np.arange(len(x))] = 1.0 / np.asarray(sizes, dtype=np.float64)[owner]
    if kernel == "linear":
        means = avg @ x
        inner = means @ means.T
    else:
        inner = np.zeros((len(arrays), len(arrays)))
        for start in range(0, len(x), _CHUNK):
            block = _rbf(x[start:start + _CHUNK], x, bandwidth)  # (chunk, N)
            inner += avg[:, start:start + _CHUNK] @ block @ avg.T
    inner = 0.5 * (inner + inner.T)
    diag = np.diag(inner)
    return np.maximum(diag[:, None] + diag[None, :] - 2.0 * inner, 0.0)


def simplex_qp(gram: ArrayLike) -> FloatArray:
    """``argmin gamma^T G gamma`` over the probability simplex, ``G`` positive semi-definite.

    A primal active-set method (as in Lawson and Hanson's NNLS): start at the vertex of
    the smallest ``G_ii``; on the current support solve the equality-constrained problem
    exactly (:func:`_affine_minimizer`), stepping back to the first weight that reaches
    zero and dropping it when the solution leaves the simplex; then add the vertex whose
    gradient ``2 (G gamma)_j`` is furthest below the multiplier ``2 gamma^T G gamma``,
    until none is (the KKT conditions). Exact up to rounding, finite for the small ``K``
    of expert blending.

    >>> simplex_qp(np.array([[1.0, 0.0], [0.0, 4.0]])).round(12).tolist()
    [0.8, 0.2]
    """
    g = np.asarray(gram, dtype=np.float64)
    n = g.shape[0]
    g = g / max(float(np.abs(g).max()), 1e-300)
    tol = 1e-12
    w = np.zeros(n)
    first = int(np.argmin(np.diag(g)))
    w[first] = 1.0
    support = [first]
    for _ in range(50 * n):
        while True:  # best point on the current support that stays on the simplex
            z = np.zeros(n)
            z[support] = _affine_minimizer(g[np.ix_(support, support)])
            neg = [i for i in support if z[i] < 0]
            if not neg:
                w = z
                break
            t = min(w[i] / (w[i] - z[i]) for i in neg)
            w = w + t * (z - w)
            support = [i for i in support if w[i] > tol]
            w[[i for i in range(n) if i not in support]] = 0.0
        grad = 2.0 * g @ w
        multiplier = 2.0 * float(w @ g @ w)
        outside = [j for j in range(n) if j not in support]
        if not outside:
            break
        j = min(outside, key=lambda i: grad[i])
        if grad[j] >= multiplier - tol:
            break
        support.append(j)
    w = np.clip(w, 0.0, None)
    return w / w.sum()


def _affine_minimizer(gram: FloatArray) -> FloatArray:
    """``argmin gamma^T G gamma`` subject to ``sum gamma = 1`` only (the KKT system solved
    by least squares: eq. 12 of SAIL when ``G`` is invertible)."""
    n = gram.shape[0]
    kkt = np.zeros((n + 1, n + 1))
    kkt[:n, :n] = 2.0 * gram
    kkt[:n, n] = kkt[n, :n] = 1.0
    rhs = np.zeros(n + 1)
    rhs[n] = 1.0
    sol = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
    return sol[:n] / sol[:n].sum()


def sail_from_distances(to_target: ArrayLike, between: ArrayLike) -> tuple[FloatArray, dict[str, Any]]:
    """SAIL weights from squared distances: ``to_target[i] = d(D_i, D*)^2`` and
    ``between[i, j] = d(D_i, D_j)^2``.

    Returns the weights (on the simplex) and a record: ``gram`` (``G``), ``closed_form``
    (the minimiser on ``sum gamma = 1``, eq. 11/12), ``closed_form_on_simplex`` and
    ``solver`` (``"closed form"`` or ``"simplex QP"``).

    >>> w, rec = sail_from_distances([1.0, 4.0], [[0.0, 5.0], [5.0, 0.0]])
    >>> w.round(12).tolist(), rec["closed_form_on_simplex"]   # eq. 11: (4 + 5 - 1) / (2 * 5)
    ([0.8, 0.2], True)
    """
    d = _check_array(to_target, "to_target", ndim=1)
    n = d.size
    pair = _check_array(between, "between", ndim=2)
    if pair.shape != (n, n):
        raise ValueError(f"between must have shape ({n}, {n}) to match to_target, but got {pair.shape}")
    if n < 1:
        raise ValueError("to_target must hold at least one distance, but got none")
    gram = 0.5 * (d[:, None] + d[None, :] - pair)
    gram = 0.5 * (gram + gram.T)
    closed = _affine_minimizer(gram)
    on_simplex = bool(closed.min() >= -_NEG_TOL)
    if on_simplex:
        weights = np.clip(closed, 0.0, None)
        weights /= weights.sum()
        solver = "closed form"
    else:
        weights = simplex_qp(gram)
        solver = "simplex QP"
        logger.info("SAIL: the closed form %s leaves the simplex; solved the QP on the simplex instead: %s",
                    np.array2string(closed, precision=4), np.array2string(weights, precision=4))
    record = {
        "gram": gram.tolist(),
        "closed_form": closed.tolist(),
        "closed_form_on_simplex": on_simplex,
        "solver": solver,
        "distance_to_target": float(np.sqrt(max(weights @ gram @ weights, 0.0))),
    }
    return weights, record


def sail_weights(
    expert_features: Sequence[ArrayLike],
    target_features: ArrayLike,
    *,
    kernel: Literal["rbf", "linear"] = "rbf",
    bandwidth: float | Literal["median"] = "median",
    max_points: int = DEFAULT_MAX_POINTS,
    rng: np.random.Generator | int = 0,
) -> tuple[FloatArray, dict[str, Any]]:
    """SAIL's weights (Theorem 3) with squared MMDs between feature distributions.

    Parameters
    ----------
    expert_features:
        One array ``(n_i, p)`` per expert: features of the expert's training data.
    target_features:
        ``(n, p)``: features of target data (see the module docstring for what to use).
    kernel:
        ``"rbf"`` (``exp(-|x - y|^2 / (2 sigma^2))``, the default) or ``"linear"`` (MMD =
        distance between means).
    bandwidth:
        ``sigma`` of the RBF kernel, or ``"median"`` for the median heuristic on the
        pooled features.
    max_points:
        Rows used per set at most (drawn without replacement with ``rng``).
    rng:
        Generator or seed of the subsampling and of the median heuristic.

    Returns
    -------
    weights : numpy.ndarray
        ``(K,)`` on the simplex.
    record : dict
        ``mmd2_to_target``, ``mmd2_between``, ``kernel``, ``bandwidth``, ``points`` and the
        fields of :func:`sail_from_distances`.

    Example
    -------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> experts = [rng.normal(m, 1.0, (100, 3)) for m in (0.0, 1.0, 2.0)]
    >>> w, rec = sail_weights(experts, rng.normal(1.0, 1.0, (100, 3)), kernel="linear")
    >>> int(np.argmax(w)), round(float(w.sum()), 12)
    (1, 1.0)
    """
    if isinstance(expert_features, np.ndarray) or not isinstance(expert_features, Sequence) or len(expert_features) < 1:
        raise ValueError(f"expert_features must be a non-empty sequence of (n_i, p) arrays, but got "
                         f"{type(expert_features).__name__}")
    if kernel not in ("rbf", "linear"):
        raise ValueError(f"kernel must be 'rbf' or 'linear', but got {kernel!r}")
    max_points = check_int(max_points, "max_points", minimum=2)
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    target = _check_array(target_features, "target_features", ndim=2)
    sets = [_check_array(f, f"expert_features[{i}]", ndim=2) for i, f in enumerate(expert_features)]
    for i, s in enumerate(sets):
        if s.shape[1] != target.shape[1]:
            raise ValueError(f"expert_features[{i}] has {s.shape[1]} features per row but target_features has "
                             f"{target.shape[1]}; all sets must live in one feature space")
    sets = [s if len(s) <= max_points else s[g.choice(len(s), size=max_points, replace=False)] for s in sets + [target]]
    if kernel == "rbf":
        if bandwidth == "median":
            sigma = median_bandwidth(np.concatenate(sets), rng=g)
        elif isinstance(bandwidth, numbers.Real) and not isinstance(bandwidth, bool) and math.isfinite(bandwidth) \
                and bandwidth > 0:
            sigma = float(bandwidth)
        else:
            raise ValueError(f"bandwidth must be a positive number or 'median', but got {bandwidth!r}")
    else:
        sigma = math.nan
    mmd2 = mmd2_matrix(sets, kernel=kernel, bandwidth=sigma)
    to_target, between = mmd2[:-1, -1], mmd2[:-1, :-1]
    weights, record = sail_from_distances(to_target, between)
    record = {
        "mmd2_to_target": to_target.tolist(),
        "mmd2_between": between.tolist(),
        "kernel": kernel,
        "bandwidth": None if math.isnan(sigma) else sigma,
        "points": [len(s) for s in sets],
        **record,
    }
    return weights, record


def _check_array(value: ArrayLike, name: str, *, ndim: int) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be a numeric array, but got {type(value).__name__}") from e
    if arr.ndim != ndim or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, but got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, but it holds NaN or infinity")
    return arr
