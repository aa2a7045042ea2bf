"""The variance benchmark: empirical statistics beside the closed forms over a grid.

:func:`run_grid` loops over direction distributions, subspaces, scales, spaces, radii
and ``K``, draws ``n_samples`` estimates for every ``m`` at the uniform mixture, and
returns one row per ``(configuration, K, m)`` with the empirical values and intervals,
the closed forms, whether each closed form lies inside its interval, and GLUE's
Proposition 1 where it applies (unit directions in the full space, ``c = 1``).
:func:`run_benchmark` runs it as ``spsa-mix bench variance`` (:mod:`spsa_mix.cli.variance`)
does: the results document, written after every finished cell (``status`` ``"running"``),
at the end (``"complete"``), on Ctrl-C (``"interrupted"``) or a failure (``"failed"``), so
that a kill loses only the cell in progress.

Which closed form a row carries (``theory["limit"]``):

``"exact"``
    the central difference is exact (a quadratic or linear objective in alpha space, or
    ``derivative="exact"``): the closed forms hold at every ``mu``;
``"mu^2"``
    a smooth objective in beta space: the bias includes the leading ``O(mu^2)`` term
    (:func:`~spsa_mix.variance.theory.mu_bias_leading`); the variance is its
    ``mu -> 0`` limit;
``"mu->0"``
    a network (ReLU kinks): all closed forms are the ``mu -> 0`` limit, evaluated with
    the autograd gradient.

``agree`` says whether each closed form lies in its interval, with a slack for float64
rounding of quantities that are exactly zero in theory (``1e-9`` of the estimate's
scale ``c |h|``) and, in ``"mu^2"`` rows, for the neglected terms (``mu^4 c |h|`` on the
bias, ``mu^2 c^2 |h|^2`` on the variance and MSE, ``mu^2`` on the cosine; unit
constants). ``"mu->0"`` rows get no such slack: there a ``NO`` measures the effect of
the finite radius on a network.

Example
-------
>>> out = run_grid(problem="linear", ks=[3], ms=[1, 2], kinds=["gaussian"], sum_zero=[True],
...                scales=["unbiased"], spaces=["alpha"], mus=[0.05], n_samples=3000, seed=0)
>>> [(r["k"], r["m"], r["agree"]["variance"]) for r in out["rows"]]
[(3, 1, True), (3, 2, True)]
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from spsa_mix.core.directions import DIRECTION_KINDS, estimator_scale, space_dim
from spsa_mix.core.validation import check_positive, check_positive_int
from spsa_mix.progress import progress_bar
from spsa_mix.variance.empirical import (
    DEFAULT_CONFIDENCE,
    DERIVATIVES,
    _check_confidence,
    sample_estimates,
    summarize,
)
from spsa_mix.variance.problems import (
    PROBLEMS,
    SPACES,
    FixedPoint,
    problem_at_uniform,
    third_derivative_terms,
)
from spsa_mix.variance.theory import (
    direction_moments,
    estimator_theory,
    mu_bias_leading,
    paper_proposition1,
    project,
)

__all__ = ["SCALES", "ALL_PROBLEMS", "CI_METHODS", "run_grid", "run_benchmark"]

SCALES: tuple[str, ...] = ("unbiased", "paper")
ALL_PROBLEMS: tuple[str, ...] = (*PROBLEMS, "network")
CI_METHODS = {
    "bias_norm": "CLT confidence ellipsoid of the mean vector (chi-square, rank of the sample covariance), "
    "enclosed in a ball; the norm interval follows by the triangle inequality",
    "variance": "delta method for the unbiased trace-of-covariance estimator (CLT on |g_i - mean|^2) plus the "
    "squared radius of the mean's ball for the centring term, Bonferroni over the two parts",
    "mse": "CLT interval for the mean of |g_i - h|^2",
    "cosine": "CLT interval for the mean of cos(g_i, h) (0 for a zero estimate)",
}
# Absolute slack of the comparisons, relative to the scale of each quantity: float64
# rounding of quantities that are exactly zero in theory (d = 1 gives a deterministic
# estimate, an unbiased estimate a zero bias).
_RTOL_ZERO = 1e-9


KK_COPIES = 6  # K x K float64 arrays at the peak: measured 5.1 (quadratic) and 1.0 (linear) at K = 1500 (tracemalloc)


def _check_memory(k: int, available: int | None = None) -> None:
    """Refuse (``ValueError``) a ``K`` whose ``K x K`` matrices (the quadratic's, the
    directions' basis) take more than the machine's memory, instead of a ``MemoryError``
    after the start.

    >>> _check_memory(100_000_000, available=24 * 2**30)
    Traceback (most recent call last):
    ...
    ValueError: K=100000000 needs about 4.8e+17 bytes (6 K x K float64 arrays), more than this machine's memory (2.6e+10 bytes)
    """
    if available is None:
        try:
            available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (AttributeError, ValueError, OSError):
            return
    need = KK_COPIES * 8 * k * k
    if need > available:
        raise ValueError(f"K={k} needs about {need:.2g} bytes ({KK_COPIES} K x K float64 arrays), more than this "
                         f"machine's memory ({available:.2g} bytes)")


def _check_list(values: Any, name: str, allowed: Sequence[Any] | None = None) -> list[Any]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty list, but got {values!r}")
    if allowed is not None:
        for v in values:
            if v not in allowed:
                raise ValueError(f"{name} must contain only {list(allowed)}, but got {v!r}")
    return list(dict.fromkeys(values))  # drop repeats, keep order


def run_grid(
    *,
    problem: str = "quadratic",
    ks: Sequence[int] = (2, 5, 10, 20, 50),
    ms: Sequence[int] = (1, 2, 4, 8, 16),
    kinds: Sequence[str] = DIRECTION_KINDS,
    sum_zero: Sequence[bool] = (True, False),
    orthogonal: Sequence[bool] = (False,),
    scales: Sequence[str] = SCALES,
    spaces: Sequence[str] = ("alpha",),
    mus: Sequence[float] = (0.05,),
    derivative: str = "finite-difference",
    n_samples: int = 10_000,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    network_options: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    rows_out: list[dict[str, Any]] | None = None,
    on_rows: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
) -> dict[str, Any]:
    """Every ``(configuration, K, m)`` of the grid: empirical statistics and closed forms.

    Parameters
    ----------
    problem:
        ``"quadratic"`` (:class:`spsa_mix.problems.Quadratic`, random, interior optimum),
        ``"linear"`` or ``"network"`` (:class:`spsa_mix.variance.network.DigitsBlend`).
    ks, ms:
        Numbers of experts (each at least 2) and of directions per estimate.
    kinds, sum_zero, orthogonal:
        Direction distributions, subspaces and whether the ``m`` directions of one
        estimate are orthogonal (orthogonal configurations skip Rademacher and ``m > d``).
    scales:
        ``"unbiased"`` (``c = estimator_scale(...)``, the optimiser's) and/or ``"paper"``
        (``c = 1``, GLUE's eq. (3)); where both are asked and the unbiased scale is 1
        (Gaussian and Rademacher directions) the rows are given once, as ``"unbiased"``.
    spaces:
        ``"alpha"`` and/or ``"beta"`` (softmax logits, where the optimiser perturbs).
    mus:
        Radii of the central difference.
    derivative:
        ``"finite-difference"`` (two forward passes) or ``"exact"`` (``g . u``).
    n_samples:
        Estimates per ``(configuration, K, m)``.
    confidence:
        Coverage of each interval.
    seed:
        Seeds the problems (one per ``K``, shared by every configuration) and the
        directions (one generator per configuration and ``K``).
    network_options:
        Keyword arguments of :class:`~spsa_mix.variance.network.DigitsBlend`.
    progress:
        Show a tqdm progress bar over the directions evaluated (where tqdm is installed).
    log:
        Called with a line of text for each skipped combination.
    rows_out:
        A list that receives each row as soon as it is computed, so that a caller keeps
        the finished rows when the grid is interrupted (Ctrl-C) or fails part way.
    on_rows:
        Called with the rows and the skipped combinations so far after each
        ``(configuration, K)`` cell (:func:`run_benchmark` writes its file there).

    Returns
    -------
    dict
        ``{"rows": [...], "skipped": [...], "elapsed_seconds": float}``.

    Raises
    ------
    ValueError
        For an unknown problem, kind, scale, space or derivative, an empty list, ``K < 2``,
        ``m < 1``, ``n_samples < 2``, a non-positive ``mu`` or a confidence outside (0, 1).

    Examples
    --------
    >>> out = run_grid(problem="quadratic", ks=[4], ms=[2], kinds=["normalized-gaussian"],
    ...                sum_zero=[False], n_samples=2000, seed=0)
    >>> [(r["scale_kind"], r["scale"], r["paper_prop1"] is not None) for r in out["rows"]]
    [('unbiased', 4.0, False), ('paper', 1.0, True)]
    >>> run_grid(ks=[1])
    Traceback (most recent call last):
    ...
    ValueError: every K must be at least 2 (one expert has nothing to blend), but got ks=[1]
    """
    if problem not in ALL_PROBLEMS:
        raise ValueError(f"problem must be one of {list(ALL_PROBLEMS)}, but got {problem!r}")
    ks = [check_positive_int(k, "k") for k in _check_list(ks, "ks")]
    if min(ks) < 2:
        raise ValueError(f"every K must be at least 2 (one expert has nothing to blend), but got ks={ks}")
    _check_memory(max(ks))
    ms = sorted(check_positive_int(m, "m") for m in _check_list(ms, "ms"))
    kinds = _check_list(kinds, "kinds", DIRECTION_KINDS)
    sum_zero = [bool(s) for s in _check_list(sum_zero, "sum_zero", (True, False))]
    orthogonal = [bool(o) for o in _check_list(orthogonal, "orthogonal", (True, False))]
    scales = _check_list(scales, "scales", SCALES)
    spaces = _check_list(spaces, "spaces", SPACES)
    mus = [check_positive(mu, "mu") for mu in _check_list(mus, "mus")]
    if derivative not in DERIVATIVES:
        raise ValueError(f"derivative must be one of {list(DERIVATIVES)}, but got {derivative!r}")
    n_samples = check_positive_int(n_samples, "n_samples")
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, but got {n_samples}")
    confidence = _check_confidence(confidence)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, but got {seed!r}")

    t0 = time.perf_counter()
    pool = None
    if problem == "network":
        from spsa_mix.variance.network import DigitsBlend

        pool = DigitsBlend(n_experts=max(ks), seed=seed, **(network_options or {}))

    # Direction configurations: the scale only changes c, so estimates are drawn once per
    # (space, kind, subspace, orthogonality, mu) and rescaled for each scale.
    draws = [
        (space, kind, sz, orth, mu)
        for space, kind, sz, orth, mu in itertools.product(spaces, kinds, sum_zero, orthogonal, mus)
        if not (orth and kind == "rademacher")
    ]
    skipped: list[dict[str, Any]] = []
    if any(o for o in orthogonal) and "rademacher" in kinds:
        skipped.append({"reason": "orthogonal=True is not defined for Rademacher signs", "directions": "rademacher"})

    def valid_ms(k: int, kind: str, sz: bool, orth: bool) -> list[int]:
        d = space_dim((k,), sz)
        return [m for m in ms if not orth or m <= d]

    total = 0
    for (_, kind, sz, orth, _), k in itertools.product(draws, ks):
        vm = valid_ms(k, kind, sz, orth)
        total += n_samples * (sum(vm) if orth else (max(vm) if vm else 0))
    bar = progress_bar(total, "variance", progress, unit="dir")

    rows: list[dict[str, Any]] = rows_out if rows_out is not None else []
    problems: dict[tuple[str, int], FixedPoint] = {}
    try:
        for di, (space, kind, sz, orth, mu) in enumerate(draws):
            for k in ks:
                vm = valid_ms(k, kind, sz, orth)
                for m in ms:
                    if m not in vm:
                        d = space_dim((k,), sz)
                        skipped.append({"space": space, "directions": kind, "sum_zero": sz, "orthogonal": orth,
                                        "mu": mu, "k": k, "m": m,
                                        "reason": f"orthogonal=True needs m <= d = {d}"})
                        if log is not None:
                            log(f"skipped K={k} m={m} {kind} sum_zero={sz} orthogonal: m > d = {d}")
                if not vm:
                    continue
                key = (space, k)
                if key not in problems:
                    if pool is not None:
                        problems[key] = pool.problem(k, space=space)
                    else:
                        problems[key] = problem_at_uniform(problem, k, space=space, rng=np.random.default_rng([seed, k]))
                fp = problems[key]
                rng = np.random.default_rng([seed, k, 1 + di])
                est = sample_estimates(fp, ms=vm, n_samples=n_samples, kind=kind, sum_zero=sz, mu=mu, scale=1.0,
                                       orthogonal=orth, derivative=derivative, rng=rng,
                                       progress=None if bar is None else bar.update)
                rows.extend(_rows_for(fp, problem, est, kind=kind, sum_zero=sz, orthogonal=orth, mu=mu,
                                      scales=scales, derivative=derivative, confidence=confidence))
                if on_rows is not None:
                    on_rows(rows, skipped)
    finally:
        if bar is not None:
            bar.close()
    return {"rows": rows, "skipped": skipped, "elapsed_seconds": time.perf_counter() - t0}


def _rows_for(
    fp: FixedPoint,
    problem: str,
    estimates: dict[int, np.ndarray],
    *,
    kind: str,
    sum_zero: bool,
    orthogonal: bool,
    mu: float,
    scales: Sequence[str],
    derivative: str,
    confidence: float,
) -> list[dict[str, Any]]:
    k = fp.shape[-1]
    shape = fp.shape
    h = project(fp.gradient, sum_zero=sum_zero)
    h_norm = float(np.linalg.norm(h))
    g_norm = float(np.linalg.norm(fp.gradient))
    d = space_dim(shape, sum_zero)
    if derivative == "exact" or fp.exact_differences:
        limit = "exact"
    elif fp.smooth:
        limit = "mu^2"
    else:
        limit = "mu->0"
    mu_terms = None
    if limit == "mu^2":
        mu_terms = third_derivative_terms(fp, sum_zero=sum_zero, cubes=kind == "rademacher")
    kappa = direction_moments(kind, shape, sum_zero=sum_zero).second
    rows = []
    unbiased = estimator_scale(kind, shape, sum_zero)
    for scale_name in scales:
        if scale_name == "paper" and "unbiased" in scales and unbiased == 1.0:
            continue  # c = 1 is already the unbiased scale (Gaussian, Rademacher): same rows
        c = unbiased if scale_name == "unbiased" else 1.0
        b_mu = np.zeros(shape)
        if mu_terms is not None:
            b_mu = mu_bias_leading(kind, shape, sum_zero=sum_zero, scale=c, mu=mu, trace_term=mu_terms[0],
                                   cube_terms=mu_terms[1])
        for m, est in estimates.items():
            stats = summarize(c * est, h, confidence=confidence)
            th = estimator_theory(kind, shape, sum_zero=sum_zero, m=m, scale=c, target_norm=h_norm,
                                  orthogonal=orthogonal)
            bias_vec = (c * kappa - 1.0) * h + b_mu
            bias = float(np.linalg.norm(bias_vec))
            mse = bias * bias + th.variance
            unit = c * h_norm  # the scale of one estimate
            atol = {"bias_norm": _RTOL_ZERO * unit, "variance": _RTOL_ZERO * unit**2, "mse": _RTOL_ZERO * unit**2}
            if limit == "mu^2":  # slack of the order of the neglected terms (unit constants)
                atol["bias_norm"] += mu**4 * unit  # next term of the bias: O(mu^4)
                atol["variance"] += mu**2 * unit**2  # variance and MSE: only their mu -> 0 limit
                atol["mse"] += mu**2 * unit**2
            agree = {
                "bias_norm": stats.bias_norm.contains(bias, atol=atol["bias_norm"]),
                "variance": stats.variance.contains(th.variance, atol=atol["variance"]),
                "mse": stats.mse.contains(mse, atol=atol["mse"]),
                "cosine": None if th.cosine is None or stats.cosine is None
                else stats.cosine.contains(th.cosine, atol=1e-9 + (mu**2 if limit == "mu^2" else 0.0)),
            }
            paper = None
            if kind == "normalized-gaussian" and not sum_zero and not orthogonal and scale_name == "paper":
                paper = paper_proposition1(k, m, grad_norm=g_norm)
            rows.append({
                "problem": problem, "space": fp.space, "directions": kind, "sum_zero": sum_zero,
                "orthogonal": orthogonal, "scale_kind": scale_name, "scale": c, "mu": mu, "derivative": derivative,
                "k": k, "m": m, "dim": d, "grad_norm": g_norm, "target_norm": h_norm,
                "empirical": stats.to_dict(),
                "theory": {"bias_norm": bias, "variance": th.variance, "mse": mse, "cosine": th.cosine,
                           "mu_bias_norm": float(np.linalg.norm(b_mu)) if limit == "mu^2" else None,
                           "limit": limit},
                "agree": agree,
                "paper_prop1": paper,
            })
    return rows


def run_benchmark(
    settings: dict[str, Any],
    *,
    output: str | os.PathLike[str] | None = None,
    command: str | None = None,
    network_options: dict[str, Any] | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """:func:`run_grid` with ``settings`` (its keyword arguments) as one results document,
    written to ``output`` (and given to ``on_update``) after every finished
    ``(configuration, K)`` cell and at the end.

    The document holds ``benchmark``, ``status``, ``command``, ``settings``,
    ``ci_methods``, ``environment``, ``elapsed_seconds``, ``summary`` (rows, closed forms
    compared, inside their intervals, skipped), ``rows`` and ``skipped``. ``status`` is
    ``"running"`` while cells remain, then ``"complete"``; on Ctrl-C the file gets the
    finished rows as ``"interrupted"`` and ``KeyboardInterrupt`` propagates; on any other
    exception raised after the first cell, ``"failed"`` with the ``error``, and the
    exception propagates. Bad settings raise ``ValueError`` before anything is written.

    >>> doc = run_benchmark(dict(problem="linear", ks=[3], ms=[1], kinds=["gaussian"], sum_zero=[True],
    ...                          scales=["unbiased"], n_samples=500))
    >>> doc["status"], doc["summary"]["rows"], doc["settings"]["n_samples"]
    ('complete', 1, 500)
    """
    from spsa_mix.io import check_writable, write_json

    if output is not None:
        check_writable(output, "output")
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    t0 = time.perf_counter()

    def document(status: str, elapsed: float | None = None, **extra: Any) -> dict[str, Any]:
        flags = [v for r in rows for v in r["agree"].values() if v is not None]
        return {
            "benchmark": "variance", "status": status, "command": command,
            "settings": {**settings, "network": network_options}, "ci_methods": CI_METHODS,
            "environment": _environment(),
            "elapsed_seconds": time.perf_counter() - t0 if elapsed is None else elapsed,
            "summary": {"rows": len(rows), "comparisons": len(flags), "agree": int(sum(flags)), "skipped": len(skipped)},
            "rows": rows, "skipped": skipped, **extra,
        }

    def save(doc: dict[str, Any]) -> dict[str, Any]:
        if output is not None:
            write_json(doc, output, indent=1)
        if on_update is not None:
            on_update(doc)
        return doc

    started = False

    def on_rows(so_far: list[dict[str, Any]], skipped_so_far: list[dict[str, Any]]) -> None:
        nonlocal started
        started = True
        skipped[:] = skipped_so_far
        save(document("running"))

    try:
        result = run_grid(**settings, network_options=network_options, progress=progress, log=log, rows_out=rows,
                          on_rows=on_rows)
    except KeyboardInterrupt:
        save(document("interrupted"))
        raise
    except Exception as e:
        if started:  # a bad setting fails before the first cell, and leaves no file
            save(document("failed", error=f"{type(e).__name__}: {e}"))
        raise
    skipped[:] = result["skipped"]
    return save(document("complete", result["elapsed_seconds"]))


def _environment() -> dict[str, str]:
    import platform

    import spsa_mix

    return {"python": platform.python_version(), "numpy": np.__version__, "spsa_mix": spsa_mix.__version__,
            "platform": platform.platform()}
