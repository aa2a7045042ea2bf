"""Many independent two-point estimates at one point, and their statistics with intervals.

:func:`sample_estimates` draws the directions with the optimiser's own
:func:`spsa_mix.core.directions.sample_directions`, evaluates the central differences in
large vectorized batches and averages them as :func:`spsa_mix.core.updates.two_point_gradient`
does; :func:`summarize` reports, each with a confidence interval:

``bias_norm``  ``|mean(g_bar) - h|``
    Interval: the normal (CLT) confidence ellipsoid of the mean vector,
    ``N (b - b_hat)^T S^{-1} (b - b_hat) <= chi2_{r, q}`` (``r`` the rank of the sample
    covariance ``S``), enclosed in the ball of radius
    ``sqrt(chi2_{r, q} lambda_max(S) / N)``; by the triangle inequality the norm of every
    ``b`` in the ball lies in ``[|b_hat| - radius, |b_hat| + radius]``. Conservative in
    every direction but the longest axis; valid for all coordinates at once.
``variance``  ``tr Cov(g_bar)``, estimated by ``sum_i |g_i - mean|^2 / (N - 1)``
    Interval: write ``(N-1)/N V_hat = A - B`` with ``A = mean_i |g_i - mu|^2`` (``mu`` the
    true mean; ``E A = V``) and ``B = |mean - mu|^2 >= 0``. ``A`` gets a CLT interval
    ``+- z sd(Y)/sqrt(N)`` with ``Y_i = |g_i - mean|^2`` (the delta method: to first
    order ``V_hat`` is the mean of the ``Y_i``) and ``B`` lies in ``[0, R^2]`` with ``R``
    the radius of the mean's ball above, each at level ``1 - (1 - q)/2`` (Bonferroni),
    so ``V`` lies in ``[(N-1)/N V_hat - z s/sqrt(N), (N-1)/N V_hat + R^2 + z s/sqrt(N)]``.
    For large ``N`` this is the delta-method interval (``R^2 = O(1/N)``); the ``B`` term
    keeps it valid where ``|g - mu|^2`` is constant and the first-order term vanishes
    (``d = 1``, or unit directions with ``c = d = 2``). Preferred to the bootstrap, which
    fails in the same degenerate cases and costs a thousand resamples; the tests check
    the coverage by repeated simulation.
``mse``  ``E|g_bar - h|^2``
    Interval: CLT for the mean of ``|g_i - h|^2``.
``cosine``  ``E[cos(g_bar, h)]`` (0 for a zero estimate)
    Interval: CLT for the mean of the cosines (bounded in ``[-1, 1]``).

The target ``h`` is the gradient projected onto the direction space
(:func:`spsa_mix.variance.theory.project`).

Example
-------
>>> import numpy as np
>>> from spsa_mix.variance.problems import problem_at_uniform
>>> fp = problem_at_uniform("quadratic", 5, rng=0)
>>> est = sample_estimates(fp, ms=[4], n_samples=2000, kind="gaussian", sum_zero=False,
...                        mu=0.05, scale=1.0, rng=np.random.default_rng(1))
>>> stats = summarize(est[4], fp.gradient)
>>> est[4].shape, stats.variance.low < stats.variance.value < stats.variance.high
((2000, 5), True)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.directions import sample_directions
from spsa_mix.core.validation import check_positive, check_positive_int
from spsa_mix.variance.problems import FixedPoint

__all__ = [
    "DERIVATIVES",
    "DEFAULT_CONFIDENCE",
    "Interval",
    "EstimateStats",
    "directional_derivatives",
    "average_estimates",
    "sample_estimates",
    "summarize",
]

FloatArray = NDArray[np.float64]
DERIVATIVES: tuple[str, ...] = ("finite-difference", "exact")
# 99.9 % per interval: with a few hundred comparisons in one test run, Bonferroni bounds
# the chance that a correct formula falls outside any of them by a few hundred times 0.1 %
# before seeding; the seeds then make every run identical.
DEFAULT_CONFIDENCE = 0.999
_MAX_ELEMENTS = 1 << 22  # floats per chunk of directions (32 MiB)


@dataclass(frozen=True)
class Interval:
    """A point estimate and a two-sided confidence interval ``[low, high]``.

    >>> Interval(1.0, 0.5, 1.5).contains(1.6, atol=0.2)
    True
    """

    value: float
    low: float
    high: float

    def contains(self, x: float, *, atol: float = 0.0) -> bool:
        """Whether ``x`` lies in ``[low - atol, high + atol]``."""
        return bool(self.low - atol <= x <= self.high + atol)

    def to_dict(self) -> dict[str, float]:
        return {"value": float(self.value), "low": float(self.low), "high": float(self.high)}


@dataclass(frozen=True)
class EstimateStats:
    """Statistics of ``N`` independent estimates against a target (see module docstring).

    ``cosine`` is ``None`` when the target is zero. ``mean`` is the average estimate.

    >>> s = summarize(np.array([[1.0, 0.0], [3.0, 0.0]]), np.array([2.0, 0.0]))
    >>> s.mean.tolist(), s.to_dict()["mse"]["value"]
    ([2.0, 0.0], 1.0)
    """

    n_samples: int
    confidence: float
    bias_norm: Interval
    variance: Interval
    mse: Interval
    cosine: Interval | None
    mean: FloatArray

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_samples": self.n_samples, "confidence": self.confidence}
        for name in ("bias_norm", "variance", "mse"):
            out[name] = getattr(self, name).to_dict()
        out["cosine"] = None if self.cosine is None else self.cosine.to_dict()
        return out


def _check_confidence(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be a number in (0, 1), but got {confidence!r}")
    return float(confidence)


def _check_derivative(derivative: str) -> None:
    if derivative not in DERIVATIVES:
        raise ValueError(f"derivative must be one of {list(DERIVATIVES)}, but got {derivative!r}")


def directional_derivatives(
    problem: FixedPoint, directions: ArrayLike, *, mu: float, derivative: str = "finite-difference"
) -> FloatArray:
    """``d_r`` for every direction: ``(L(x + mu u) - L(x - mu u)) / (2 mu)``, or the exact
    ``g . u`` with ``derivative="exact"`` (what forward-mode AD gives).

    ``directions`` has shape ``(n, *shape)``; the losses are evaluated in chunks of
    ``problem.chunk_size`` points, each chunk in one vectorized call.

    >>> from spsa_mix.variance.problems import Linear, at_point
    >>> fp = at_point(Linear(np.array([1.0, 2.0])), [0.5, 0.5])
    >>> directional_derivatives(fp, np.array([[1.0, -1.0]]), mu=0.1).round(12).tolist()
    [-1.0]
    """
    _check_derivative(derivative)
    mu = check_positive(mu, "mu")
    u = np.asarray(directions, dtype=np.float64)
    if u.ndim != problem.x.ndim + 1 or u.shape[1:] != problem.shape:
        raise ValueError(f"directions must have shape (n, *{problem.shape}), but got shape {u.shape}")
    n = u.shape[0]
    if derivative == "exact":
        return u.reshape(n, -1) @ problem.gradient.ravel()
    out = np.empty(n)
    step = max(1, problem.chunk_size // 2)
    for start in range(0, n, step):
        chunk = u[start : start + step]
        pts = np.concatenate([problem.x + mu * chunk, problem.x - mu * chunk])  # (2b, *shape)
        losses = np.asarray(problem.losses(pts), dtype=np.float64).reshape(-1)
        b = chunk.shape[0]
        if losses.shape != (2 * b,):
            raise ValueError(f"the objective must return {2 * b} losses for {2 * b} points, but got shape {losses.shape}")
        out[start : start + b] = (losses[:b] - losses[b:]) / (2.0 * mu)
    return out


def average_estimates(derivs: ArrayLike, directions: ArrayLike, *, m: int, scale: float) -> FloatArray:
    """Group ``N m`` directional derivatives into ``N`` estimates ``c/m sum_r d_r u_r``.

    The same arithmetic as :func:`spsa_mix.core.updates.directional_gradient`, vectorized
    over the ``N`` estimates.

    >>> average_estimates([1.0, 3.0], [[1.0, 0.0], [0.0, 1.0]], m=2, scale=2.0).tolist()
    [[1.0, 3.0]]
    """
    m = check_positive_int(m, "m")
    c = check_positive(scale, "scale")
    d = np.asarray(derivs, dtype=np.float64)
    u = np.asarray(directions, dtype=np.float64)
    if d.ndim != 1 or u.shape[0] != d.shape[0] or d.shape[0] % m:
        raise ValueError(
            f"derivs must have shape (N * m,) = ({u.shape[0]},) with m={m} dividing it, but got shape {d.shape}"
        )
    n_est = d.shape[0] // m
    shape = u.shape[1:]
    prod = (d.reshape(-1, *([1] * len(shape))) * u).reshape(n_est, m, *shape)
    return c * prod.mean(axis=1)


def sample_estimates(
    problem: FixedPoint,
    *,
    ms: Sequence[int],
    n_samples: int,
    kind: str,
    sum_zero: bool,
    mu: float,
    scale: float,
    orthogonal: bool = False,
    derivative: str = "finite-difference",
    rng: np.random.Generator,
    progress: Callable[[int], Any] | None = None,
) -> dict[int, FloatArray]:
    """``n_samples`` independent estimates ``g_bar`` for every ``m`` in ``ms``.

    With i.i.d. directions one pool is drawn per chunk of estimates and shared: the
    estimates for ``m`` use the first ``m`` directions of each group of ``max(ms)``, so
    every ``m`` gets independent estimates at the cost of the largest ``m`` only (the
    estimates of different ``m`` are correlated with each other, which no statistic here
    uses). Orthogonal directions are drawn separately for every ``m``, ``m`` at a time,
    as the optimiser draws them.

    Parameters
    ----------
    problem:
        The objective at its fixed point.
    ms:
        Numbers of directions per estimate.
    n_samples:
        Number ``N`` of estimates per ``m``.
    kind, sum_zero, orthogonal:
        Passed to :func:`~spsa_mix.core.directions.sample_directions`.
    mu:
        Radius of the central difference.
    scale:
        Factor ``c`` of the estimate.
    derivative:
        ``"finite-difference"`` or ``"exact"`` (``g . u``).
    rng:
        The only source of randomness.
    progress:
        Called with the number of directions done after each chunk (e.g. ``tqdm.update``).

    Returns
    -------
    dict
        ``m -> (n_samples, *shape)`` estimates.

    Examples
    --------
    >>> from spsa_mix.variance.problems import problem_at_uniform
    >>> fp = problem_at_uniform("linear", 3, rng=0)
    >>> est = sample_estimates(fp, ms=[1, 2], n_samples=4, kind="normalized-gaussian",
    ...                        sum_zero=True, mu=0.1, scale=2.0, orthogonal=True,
    ...                        rng=np.random.default_rng(0))
    >>> sorted(est), est[2].shape
    ([1, 2], (4, 3))
    >>> sample_estimates(fp, ms=[], n_samples=4, kind="gaussian", sum_zero=True, mu=0.1,
    ...                  scale=1.0, rng=np.random.default_rng(0))
    Traceback (most recent call last):
    ...
    ValueError: ms must be a non-empty list of integers >= 1, but got []
    """
    if not isinstance(ms, Sequence) or isinstance(ms, str) or len(ms) == 0:
        raise ValueError(f"ms must be a non-empty list of integers >= 1, but got {ms!r}")
    ms_list = [check_positive_int(v, "m") for v in ms]
    n_samples = check_positive_int(n_samples, "n_samples")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, but got {type(rng).__name__}")
    _check_derivative(derivative)
    shape = problem.shape
    n = int(np.prod(shape))
    out: dict[int, FloatArray] = {}
    if orthogonal:
        for m in ms_list:
            per_chunk = max(1, _MAX_ELEMENTS // (m * n))
            parts = []
            for start in range(0, n_samples, per_chunk):
                b = min(per_chunk, n_samples - start)
                u = np.concatenate(
                    [sample_directions(rng, m, shape, kind=kind, sum_zero=sum_zero, orthogonal=True) for _ in range(b)]
                )
                d = directional_derivatives(problem, u, mu=mu, derivative=derivative)
                parts.append(average_estimates(d, u, m=m, scale=scale))
                if progress is not None:
                    progress(b * m)
            out[m] = np.concatenate(parts)
        return out
    m_max = max(ms_list)
    per_chunk = max(1, _MAX_ELEMENTS // (m_max * n))
    parts_by_m: dict[int, list[FloatArray]] = {m: [] for m in ms_list}
    for start in range(0, n_samples, per_chunk):
        b = min(per_chunk, n_samples - start)
        u = sample_directions(rng, b * m_max, shape, kind=kind, sum_zero=sum_zero).reshape(b, m_max, *shape)
        d = directional_derivatives(problem, u.reshape(b * m_max, *shape), mu=mu, derivative=derivative)
        d = d.reshape(b, m_max)
        for m in parts_by_m:
            parts_by_m[m].append(
                average_estimates(d[:, :m].reshape(-1), u[:, :m].reshape(b * m, *shape), m=m, scale=scale)
            )
        if progress is not None:
            progress(b * m_max)
    return {m: np.concatenate(parts) for m, parts in parts_by_m.items()}


def _z(confidence: float) -> float:
    return float(scipy.stats.norm.ppf(0.5 + confidence / 2.0))


def _mean_interval(values: FloatArray, z: float, *, lower: float = -math.inf) -> Interval:
    mean = float(values.mean())
    half = z * float(values.std(ddof=1)) / math.sqrt(values.shape[0])
    return Interval(mean, max(lower, mean - half), mean + half)


def _ball_radius(eig: FloatArray, n_est: int, confidence: float) -> float:
    """Radius of the ball around the sample mean that holds the CLT confidence ellipsoid
    of the mean: ``sqrt(chi2_{r, q} lambda_max / N)``, ``r`` the rank of the covariance."""
    lam_max = max(float(eig[-1]), 0.0)
    if lam_max == 0.0:
        return 0.0
    rank = int(np.sum(eig > 1e-10 * lam_max))
    return math.sqrt(float(scipy.stats.chi2.ppf(confidence, rank)) * lam_max / n_est)


def summarize(estimates: ArrayLike, target: ArrayLike, *, confidence: float = DEFAULT_CONFIDENCE) -> EstimateStats:
    """Bias norm, variance, MSE and mean cosine of ``N`` estimates, with intervals.

    Parameters
    ----------
    estimates:
        ``(N, *shape)`` independent estimates, ``N >= 2``.
    target:
        The quantity they estimate, of shape ``shape`` (the projected gradient).
    confidence:
        Coverage of each interval (default 0.999).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> s = summarize(rng.standard_normal((4000, 3)) + 1.0, np.ones(3))
    >>> s.variance.contains(3.0), s.bias_norm.contains(0.0), s.mse.contains(3.0)
    (True, True, True)
    >>> summarize(np.zeros((1, 3)), np.ones(3))
    Traceback (most recent call last):
    ...
    ValueError: estimates must have shape (N, 3) with N >= 2, but got shape (1, 3)
    """
    conf = _check_confidence(confidence)
    h = np.asarray(target, dtype=np.float64)
    x = np.asarray(estimates, dtype=np.float64)
    if x.ndim != h.ndim + 1 or x.shape[1:] != h.shape or x.shape[0] < 2:
        raise ValueError(
            f"estimates must have shape (N, {', '.join(map(str, h.shape))}) with N >= 2, but got shape {x.shape}"
        )
    n_est = x.shape[0]
    flat = x.reshape(n_est, -1)
    hv = h.ravel()
    z = _z(conf)

    mean = flat.mean(axis=0)
    centred = flat - mean
    cov = centred.T @ centred / (n_est - 1)
    eig = np.linalg.eigvalsh(cov)
    radius = _ball_radius(eig, n_est, conf)
    b_norm = float(np.linalg.norm(mean - hv))
    bias = Interval(b_norm, max(0.0, b_norm - radius), b_norm + radius)

    # Variance: (N-1)/N V_hat = A - B with A = mean |g_i - mu|^2 (CLT) and
    # B = |mean - mu|^2 in [0, R^2] (the mean's ball); each part at level 1 - (1 - q)/2.
    y = np.sum(centred * centred, axis=1)  # |g_i - mean|^2
    v_hat = float(y.sum() / (n_est - 1))
    z_half = _z(1.0 - (1.0 - conf) / 2.0)
    half = z_half * float(y.std(ddof=1)) / math.sqrt(n_est)
    r2 = _ball_radius(eig, n_est, 1.0 - (1.0 - conf) / 2.0) ** 2
    a_low = v_hat * (n_est - 1) / n_est
    variance = Interval(v_hat, max(0.0, a_low - half), a_low + r2 + half)

    err = flat - hv
    mse = _mean_interval(np.sum(err * err, axis=1), z, lower=0.0)

    h_norm = float(np.linalg.norm(hv))
    cosine = None
    if h_norm > 0:
        norms = np.linalg.norm(flat, axis=1)
        safe = np.where(norms > 0, norms, 1.0)
        cos = np.where(norms > 0, flat @ hv / (safe * h_norm), 0.0)
        cosine = _mean_interval(cos, z)
    return EstimateStats(n_est, conf, bias, variance, mse, cosine, mean.reshape(h.shape))
