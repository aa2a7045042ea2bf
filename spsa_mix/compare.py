"""Methods side by side on one objective at equal budgets (``spsa-mix bench compare``).

Every method of :func:`spsa_mix.minimize` (``spsa``, ``forward-grad``, ``backprop``,
``nevergrad:<name>``, ``optuna:<sampler>``, plus ``uniform``, the starting point, for
reference) runs on the same objective with the same ``max_evals`` over several seeds
(:func:`compare_methods`). A method may carry settings after ``@`` (:func:`parse_method`):
``spsa@lr=0.05,lr_schedule=cosine`` or ``optuna:tpe@parametrization=stick,batch_size=4``;
names that are arguments of ``minimize`` go there, the others into its ``options`` (values
are read as JSON when they parse, else as strings).

Problems:

``quadratic`` (:func:`quadratic_problem`)
    ``spsa_mix.problems.Quadratic.random(k, rng=seed)`` (one instance per seed, shared by
    the methods). "Final loss" is the exact, noise-free ``f(res.x) - f*``; ``rel`` divides
    it by ``f(1/k) - f*``, the uniform start's gap.
``network`` (:func:`network_problem`)
    a blended network: ``k`` experts of ``spsa_mix.models.build_model("small-cnn")`` built
    by :func:`spsa_mix.experiment.pool.build_pool` on scikit-learn's digits (all 1797
    images, scaled to [0, 1]): 30 % of them (at random) are a held-out split no method
    sees, ``target_size`` of the rest the target split, and the remainder is divided among
    the experts class by class in Dirichlet(0.5) proportions
    (:func:`spsa_mix.data.splits.dirichlet_partition`); every expert starts from one
    initialisation (seed 1000) and is trained with Adam (lr 1e-2, batch 32) for
    ``expert_epochs`` epochs. Everything derives from seed 0, so every seed of the
    comparison sees the same experts. The objective is
    :class:`spsa_mix.blend.BlendedObjective` on minibatches of the target split drawn by a
    shuffling ``torch.utils.data.DataLoader``; "final loss" is the cross-entropy of
    theta(res.x) on the whole target split, the accuracy is on the held-out split.

The table gives mean and standard deviation over seeds, evaluations (``res.cost``), wall
time, and the optimiser's own overhead per evaluation: wall time minus the time spent
inside the objective, divided by the evaluations.

Example
-------
>>> doc = compare_methods(lambda seed: quadratic_problem(4, seed), [parse_method("spsa"), parse_method("uniform")],
...                       seeds=2, budget=40)
>>> doc["status"], [s["method"] for s in doc["summary"]], len(doc["runs"])
('complete', ['spsa', 'uniform'], 4)
>>> parse_method("optuna:tpe@parametrization=stick,batch_size=4")
('optuna:tpe@parametrization=stick,batch_size=4', 'optuna:tpe', {'options': {'parametrization': 'stick', 'batch_size': 4}})
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spsa_mix.io import to_jsonable

__all__ = ["parse_method", "check_methods", "Problem", "quadratic_problem", "NetworkProblem", "network_problem",
           "run_one", "compare_methods", "summarize", "format_table", "plot_curves", "write_csv", "METHOD_HELP"]

FloatArray = NDArray[np.float64]
MethodSpec = tuple[str, str, dict[str, Any]]  # (label, method, keyword arguments of minimize)
METHOD_HELP = "methods of spsa_mix.minimize, or 'uniform' (the reference point); settings after '@'"


# ---------------------------------------------------------------------- methods
def parse_method(text: str) -> tuple[str, str, dict[str, Any]]:
    """``"name@key=value,..."`` -> (label, method, keyword arguments of ``minimize``).

    >>> parse_method("spsa@lr=0.05,lr_schedule=cosine")
    ('spsa@lr=0.05,lr_schedule=cosine', 'spsa', {'lr': 0.05, 'lr_schedule': 'cosine'})
    >>> parse_method("spsa@lr")
    Traceback (most recent call last):
    ...
    ValueError: method settings must be key=value, but got 'lr' in 'spsa@lr'
    """
    from spsa_mix.core.minimize import minimize

    method, _, settings = text.partition("@")
    accepted = set(inspect.signature(minimize).parameters)
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for item in filter(None, _split_top_level(settings)):
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"method settings must be key=value, but got {item!r} in {text!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if isinstance(value, list):
            value = tuple(value)
        (kwargs if key in accepted else options)[key] = value
    if options:
        kwargs["options"] = options
    return text, method, kwargs


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets and braces (so JSON lists stay whole).

    >>> _split_top_level('a=1,x0=[0.5,0.5],b={"c":1,"d":2}')
    ['a=1', 'x0=[0.5,0.5]', 'b={"c":1,"d":2}']
    """
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "[{"
        depth -= ch in "]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def check_methods(texts: Sequence[str]) -> list[MethodSpec]:
    """Parse ``texts`` and fail as :func:`spsa_mix.minimize` would, before any run, for an
    unknown method or a setting the method does not use.

    >>> check_methods(["spsa@lr=0.1", "uniform"])[0][1]
    'spsa'
    """
    from spsa_mix.core.minimize import check_method

    methods = [parse_method(m) for m in texts]
    for _, method, kwargs in methods:
        if method != "uniform":
            check_method(method, kwargs)
    return methods


# ---------------------------------------------------------------------- problems
@dataclass
class Problem:
    """One objective instance: what a method minimises and how its answer is scored.

    ``final_loss(x)`` is the reported loss of an answer, ``curve_loss(history)`` turns a
    run's history into loss values for the curve, ``heldout_accuracy(x)`` (networks only)
    the accuracy on data no method sees.
    """

    objective: Callable[..., Any]
    k: int
    final_loss: Callable[[FloatArray], float]
    curve_loss: Callable[[dict[str, FloatArray]], FloatArray]
    heldout_accuracy: Callable[[FloatArray], float] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def quadratic_problem(k: int, seed: int, *, optimum: str = "interior", condition: float = 10.0,
                      noise: float = 0.0) -> Problem:
    """``Quadratic.random(k, rng=seed)``; losses are the exact ``f(x) - f*``.

    >>> p = quadratic_problem(3, 0)
    >>> round(p.final_loss(p.info["minimizer"]), 12)
    0.0
    """
    from spsa_mix.problems import Quadratic

    q = Quadratic.random(k, rng=seed, optimum=optimum, condition=condition, noise_std=noise)  # type: ignore[arg-type]
    x_star = q.minimizer()
    f_star = q.value(x_star)
    f_uniform = q.value(np.full(k, 1.0 / k))

    def final_loss(x: FloatArray) -> float:
        return q.value(x) - f_star

    def curve_loss(history: dict[str, FloatArray]) -> FloatArray:
        xs = np.asarray(history.get("x", np.zeros((0, k))))
        return np.array([q.value(x) - f_star for x in xs])

    return Problem(q, k, final_loss, curve_loss,
                   info={"minimizer": x_star, "f_star": f_star, "uniform_gap": f_uniform - f_star})


@dataclass
class NetworkProblem:
    """The interface ``--problem network`` needs from a blended-network pipeline.

    ``make_objective(seed)`` returns a fresh vectorized objective (minibatch order from
    ``seed``); ``target_loss(alpha)`` the loss of theta(alpha) on the whole target split;
    ``heldout_accuracy(alpha)`` its accuracy on a held-out test split; ``info`` describes
    the experts and data (JSON-serialisable).
    """

    k: int
    make_objective: Callable[[int], Any]
    target_loss: Callable[[FloatArray], float]
    heldout_accuracy: Callable[[FloatArray], float]
    info: dict[str, Any] = field(default_factory=dict)


def network_problem(k: int, *, target_size: int = 300, batch_size: int = 64, expert_epochs: int = 30,
                    device: str = "cpu", progress: bool = False) -> NetworkProblem:
    """K digits experts blended by :class:`spsa_mix.blend.BlendedObjective` (see the module docstring).

    Raises
    ------
    ValueError
        For a ``target_size`` the digits cannot hold beside ``k`` experts (before any training).
    """
    import torch

    from spsa_mix.blend import evaluate_blend
    from spsa_mix.data.splits import Splits, dirichlet_partition, random_parts
    from spsa_mix.experiment.experts import TrainSpec
    from spsa_mix.experiment.pool import PoolSpec, build_pool

    spec = PoolSpec(dataset="digits", test_size=0, standardize=False, arch="small-cnn", k=k,
                    train=TrainSpec(epochs=expert_epochs, lr=1e-2, batch_size=32, min_batch_size=2, init_seed=1000))

    def split(task: Any) -> Splits:
        labels = task.labels().numpy()
        n_test = int(0.3 * len(labels))
        if target_size < 10 or target_size > len(labels) - n_test - 10 * k:
            raise ValueError(f"target_size must be in [10, {len(labels) - n_test - 10 * k}] for k={k}, "
                             f"but got {target_size}")
        rng = np.random.default_rng(0)
        held_out, target, rest = random_parts(len(labels), [n_test, target_size], rng, sort=False)
        experts = dirichlet_partition(labels, k=k, rng=rng, pool=rest)
        return Splits(target=target, holdout=held_out, experts=experts, seeds=tuple(2000 + i for i in range(k)))

    pool = build_pool(spec, splits=split, cache=None, device=device, progress=progress)
    x_target, y_target = pool.whole("target")
    held_out = pool.whole("holdout")
    scorer = pool.objective()

    def make_objective(seed: int) -> Any:
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_target, y_target),
                                             batch_size=batch_size, shuffle=True, generator=gen)
        return pool.objective(data=loader)

    def target_loss(alpha: FloatArray) -> float:
        return float(evaluate_blend(scorer, alpha, (x_target, y_target))["loss"])  # type: ignore[call-overload]

    def heldout_accuracy(alpha: FloatArray) -> float:
        return float(evaluate_blend(scorer, alpha, held_out)["accuracy"])  # type: ignore[call-overload]

    info = {
        "dataset": "sklearn digits (1797 8x8 images)", "architecture": "small-cnn", "k": k,
        "expert_sizes": [int(len(s)) for s in pool.splits.experts], "target_size": int(len(pool.splits.target)),
        "test_size": int(len(pool.splits.holdout)),
        "expert_accuracy": [heldout_accuracy(np.eye(k)[i]) for i in range(k)],
        "batch_size": int(batch_size), "expert_epochs": int(expert_epochs),
    }
    return NetworkProblem(k, make_objective, target_loss, heldout_accuracy, info)


# ---------------------------------------------------------------------- one run
class _Timed:
    """Wraps an objective, adding up the seconds spent inside it (and in ``jvp`` and
    ``value_and_grad``, which it forwards)."""

    def __init__(self, fn: Any) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0
        for name in ("jvp", "value_and_grad"):
            if callable(getattr(fn, name, None)):
                setattr(self, name, self._timed(getattr(fn, name)))

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
        return wrapper

    def __call__(self, *args: Any) -> Any:
        return self._timed(self.fn)(*args)


def run_one(label: str, method: str, kwargs: dict[str, Any], problem: Problem, seed: int, budget: int,
             vectorized: bool) -> dict[str, Any]:
    """One method (or ``"uniform"``, the reference point) on ``problem`` with one seed: the
    row of the results (final loss, evaluations, times, overhead per evaluation, curve).

    Raises ``KeyboardInterrupt`` when the run was interrupted (``minimize`` itself returns
    the truncated result), so that a comparison stops instead of recording it."""
    import spsa_mix
    from spsa_mix.core.result import Status

    k = problem.k
    if method == "uniform":
        x = np.full(k, 1.0 / k)
        res_info: dict[str, Any] = dict(nfev=0, cost=0.0, nit=0, status="REFERENCE", message="the uniform point",
                                        success=True)
        wall = obj_s = 0.0
        curve_x, curve_y = [0.0], [problem.final_loss(x)]
    else:
        timed = _Timed(problem.objective)
        t0 = time.perf_counter()
        res = spsa_mix.minimize(timed, k, method=method, max_evals=budget, seed=seed, vectorized=vectorized, **kwargs)
        wall = time.perf_counter() - t0
        if res.status == Status.INTERRUPTED:  # minimize returns what it had on Ctrl-C; the comparison stops
            raise KeyboardInterrupt
        obj_s = timed.seconds
        x = res.x
        res_info = dict(nfev=int(res.nfev), cost=float(res.cost), nit=int(res.nit), status=res.status.name,
                        message=res.message, success=bool(res.success), fun=float(res.fun))
        curve_x = np.asarray(res.history.get("cost", np.zeros(0)), dtype=float).tolist()
        curve_y = np.asarray(problem.curve_loss(res.history), dtype=float).tolist()
    row = dict(method=label, seed=seed, final_loss=float(problem.final_loss(x)), **res_info,
               wall_s=wall, objective_s=obj_s,
               overhead_per_eval_s=(wall - obj_s) / res_info["cost"] if res_info["cost"] > 0 else None,
               x=np.asarray(x).tolist(), curve={"evals": curve_x, "loss": curve_y})
    if "uniform_gap" in problem.info:
        row["rel"] = row["final_loss"] / problem.info["uniform_gap"]
    if problem.heldout_accuracy is not None:
        row["heldout_accuracy"] = float(problem.heldout_accuracy(np.asarray(x)))
    return row


# ---------------------------------------------------------------------- the comparison
def compare_methods(
    make_problem: Callable[[int], Problem],
    methods: Sequence[MethodSpec],
    *,
    seeds: int,
    budget: int,
    vectorized: bool = True,
    problem_name: str = "quadratic",
    problem_info: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
    on_update: Callable[[dict[str, Any]], None] | None = None,
    on_error: Callable[[str, int, Exception], None] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every method on ``make_problem(seed)`` for seeds ``0 .. seeds - 1``.

    ``on_update(document)`` is called after every run with the results so far (status
    ``"running"``; write it to disk there, so a crash or Ctrl-C loses nothing), and once at
    the end. A run that raises is recorded in ``errors`` (``on_error(label, seed, e)`` is
    told) and the others still run. Ctrl-C stops the comparison: ``on_update`` gets the
    runs so far with status ``"interrupted"`` and ``KeyboardInterrupt`` propagates.

    Returns
    -------
    dict
        ``status`` (``"complete"`` or ``"complete with errors"``), ``summary`` (per method
        over seeds), ``table`` (markdown), ``runs``, ``errors``, ``seconds``, ``machine``,
        and ``problem``, ``problem_info``, ``settings`` as given.
    """
    from spsa_mix.progress import progress_bar

    labels = [m[0] for m in methods]
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def document(status: str) -> dict[str, Any]:
        summary = summarize(rows, labels)
        return {
            "benchmark": "compare",
            "status": status,
            **(settings or {}),
            "problem": problem_name,
            "problem_info": problem_info,
            "seconds": time.perf_counter() - t_start,
            "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                        "note": "shared machine: wall times are indicative"},
            "summary": summary,
            "table": format_table(summary, problem=problem_name) if summary else "",
            "errors": errors,
            "runs": rows,
        }

    def update(status: str) -> dict[str, Any]:
        doc = document(status)
        if on_update is not None:
            on_update(doc)
        return doc

    bar = progress_bar(len(methods) * seeds, "compare", progress, unit="run", disable=None)
    try:
        for seed in range(seeds):
            for label, method, kwargs in methods:
                problem = make_problem(seed)
                if bar is not None:
                    bar.set_postfix_str(f"{label} seed={seed}")
                try:
                    rows.append(run_one(label, method, kwargs, problem, seed, budget, vectorized))
                except Exception as e:  # one failing method does not stop the others
                    errors.append({"method": label, "seed": seed, "error": f"{type(e).__name__}: {e}"})
                    if on_error is not None:
                        on_error(label, seed, e)
                update("running")
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        update("interrupted")
        raise
    finally:
        if bar is not None:
            bar.close()
    return update("complete with errors" if errors else "complete")


# ---------------------------------------------------------------------- reporting
def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def summarize(rows: list[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds, per method (in the order of ``labels``)."""
    out = []
    for label in labels:
        mine = [r for r in rows if r["method"] == label]
        if not mine:
            continue
        s: dict[str, Any] = {"method": label, "runs": len(mine)}
        for key in ("final_loss", "rel", "heldout_accuracy", "cost", "wall_s", "overhead_per_eval_s"):
            if key in mine[0]:
                s[key + "_mean"], s[key + "_std"] = _mean_std([r[key] for r in mine])
        if "rel" in mine[0]:
            s["rel_median"] = float(np.median([r["rel"] for r in mine]))
        s["statuses"] = sorted({r["status"] for r in mine})
        out.append(s)
    return out


def format_table(summary: list[dict[str, Any]], *, problem: str) -> str:
    """A markdown table of :func:`summarize`'s output."""
    loss_head = ("final loss f(x)-f* (exact, noise-free)" if problem == "quadratic"
                 else "final loss (target split, cross-entropy)")
    head = ["method", loss_head]
    if problem == "quadratic":
        head.append("rel. gap (median)")
    else:
        head.append("held-out accuracy")
    head += ["evaluations", "wall s", "overhead µs/eval", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for s in summary:
        cells = [f"`{s['method']}`", f"{s['final_loss_mean']:.3e} ± {s['final_loss_std']:.1e}"]
        if problem == "quadratic":
            cells.append(f"{s['rel_median']:.3f}")
        else:
            cells.append(f"{s['heldout_accuracy_mean']:.4f} ± {s['heldout_accuracy_std']:.4f}")
        ov = s.get("overhead_per_eval_s_mean", math.nan)
        cells += [f"{s['cost_mean']:.0f}", f"{s['wall_s_mean']:.2f}",
                  "-" if not math.isfinite(ov) else f"{ov * 1e6:.0f}", ",".join(s["statuses"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """One line per run (method, seed, losses, evaluations, times, status)."""
    from spsa_mix.io import atomic_write_text, check_writable

    check_writable(path, "path")
    keys = ["method", "seed", "final_loss", "rel", "heldout_accuracy", "nfev", "cost", "nit", "wall_s",
            "objective_s", "overhead_per_eval_s", "status"]
    keys = [k for k in keys if any(k in r for r in rows)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(to_jsonable(list(rows)))
    return atomic_write_text(path, buf.getvalue())


def plot_curves(rows: list[dict[str, Any]], labels: Sequence[str], path: Path, *, budget: int, title: str,
                ylabel: str, log: bool) -> None:
    """Loss versus evaluations: median over seeds, min-max band (matplotlib, Agg)."""
    from spsa_mix.io import atomic_path, check_writable

    check_writable(path, "path")  # before the drawing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.arange(0, budget + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label in labels:
        curves = []
        for r in (r for r in rows if r["method"] == label):
            ev, loss = np.asarray(r["curve"]["evals"], float), np.asarray(r["curve"]["loss"], float)
            if ev.size == 0:
                continue
            idx = np.searchsorted(ev, grid, side="right") - 1  # last value recorded at or before each grid point
            curves.append(np.where(idx >= 0, loss[np.clip(idx, 0, None)], np.nan))
        if not curves:
            continue
        c = np.vstack(curves)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first step
                med, lo, hi = np.nanmedian(c, 0), np.nanmin(c, 0), np.nanmax(c, 0)
        if label == "uniform" or np.isfinite(med).sum() == 1:
            ax.axhline(float(np.nanmax(med)), ls=":", color="gray", label=label)
            continue
        (line,) = ax.plot(grid, med, label=label)
        ax.fill_between(grid, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120)
    finally:
        plt.close(fig)


