"""``spsa-mix bench compare``: methods side by side on one objective at equal budgets.

Every method of :func:`spsa_mix.minimize` (``spsa``, ``forward-grad``, ``backprop``,
``nevergrad:<name>``, ``optuna:<sampler>``, plus ``uniform``, the starting point, for
reference) runs on the same objective with the same ``max_evals`` over several seeds.
A method may carry settings after ``@``: ``spsa@lr=0.05,lr_schedule=cosine`` or
``optuna:tpe@parametrization=stick,batch_size=4``; names that are arguments of
``minimize`` go there, the others into its ``options`` (values are read as JSON when
they parse, else as strings).

Problems:

``quadratic``
    ``spsa_mix.problems.Quadratic.random(k, rng=seed)`` (one instance per seed, shared by
    the methods). "Final loss" is the exact, noise-free ``f(res.x) - f*``; ``rel`` divides
    it by ``f(1/k) - f*``, the uniform start's gap.
``network``
    a blended network (:func:`load_network_problem`): ``k`` experts of
    ``spsa_mix.models.build_model("small-cnn")`` trained on Dirichlet(0.5) class splits
    of scikit-learn's digits, blended by :class:`spsa_mix.blend.BlendedObjective` on
    minibatches of a target split. "Final loss" is the cross-entropy of theta(res.x) on
    the whole target split; held-out accuracy is on a test split no method sees.

The table gives mean and standard deviation over seeds, evaluations (``res.cost``), wall
time, and the optimiser's own overhead per evaluation: wall time minus the time spent
inside the objective, divided by the evaluations. JSON (``--output``), CSV (``--csv``) and
loss-versus-evaluations curves (``--plot``, median over seeds, min-max band) on request.

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser)
>>> args = parser.parse_args(["--k", "4", "--budget", "40", "--seeds", "2", "--methods", "spsa", "uniform",
...                           "--no-progress", "--quiet"])
>>> run(args)
0
>>> parse_method("optuna:tpe@parametrization=stick,batch_size=4")
('optuna:tpe@parametrization=stick,batch_size=4', 'optuna:tpe', {'options': {'parametrization': 'stick', 'batch_size': 4}})
"""

from __future__ import annotations

import argparse
import csv
import inspect
import json
import math
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["add_arguments", "run", "parse_method", "load_network_problem", "NetworkProblem", "Problem",
           "quadratic_problem"]

FloatArray = NDArray[np.float64]
DEFAULT_METHODS = ("spsa", "nevergrad:NGOpt", "optuna:tpe")


# ---------------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``spsa-mix bench compare`` to ``parser``."""
    parser.add_argument("--problem", choices=["quadratic", "network"], default="quadratic",
                        help="objective: an analytic quadratic, or a blended network of digits experts")
    parser.add_argument("--k", type=int, default=10, help="number of vertices (experts)")
    parser.add_argument("--budget", type=int, default=200, help="max_evals of every method")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (problem instance and method seed)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD[@key=value,...]",
                        help="methods of spsa_mix.minimize, or 'uniform'; settings after '@'")
    parser.add_argument("--no-vectorized", dest="vectorized", action="store_false",
                        help="call the objective one point at a time (default: whole batches)")
    parser.add_argument("--output", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--csv", type=Path, default=None, help="write one row per run as CSV here")
    parser.add_argument("--plot", type=Path, default=None, help="draw loss versus evaluations here (PNG, PDF...)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    quad = parser.add_argument_group("quadratic problem")
    quad.add_argument("--optimum", choices=["interior", "boundary"], default="interior",
                      help="minimiser inside the simplex or on a face")
    quad.add_argument("--condition", type=float, default=10.0, help="condition number of A")
    quad.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise on each evaluation")
    net = parser.add_argument_group("network problem")
    net.add_argument("--batch-size", type=int, default=64, help="target images per objective call")
    net.add_argument("--expert-epochs", type=int, default=30, help="training epochs of each expert")
    net.add_argument("--target-size", type=int, default=300, help="images of the target split (the objective's data)")
    net.add_argument("--device", default="cpu", help="torch device")


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


def load_network_problem(args: argparse.Namespace) -> NetworkProblem:
    """K digits experts blended by :class:`spsa_mix.blend.BlendedObjective`.

    Self-contained (scikit-learn's digits ship with scikit-learn; nothing is downloaded):
    30% of the 1797 images (stratified) are the held-out test split, ``args.target_size``
    of the rest the target split, and the remainder is divided among ``args.k`` experts
    with Dirichlet(0.5) class proportions (the GLUE paper's non-IID split); each expert
    is ``build_model("small-cnn")`` from one shared initialisation (blending networks
    trained from different initialisations averages unrelated features), trained with
    Adam (lr 1e-2) for ``args.expert_epochs`` epochs on its share. Everything derives
    from seed 0, so every seed of the comparison sees the same experts.
    """
    import torch
    from sklearn.datasets import load_digits

    from spsa_mix.blend import BlendedObjective, evaluate_blend
    from spsa_mix.models import build_model

    k = int(args.k)
    digits = load_digits()
    x_all = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]  # (1797, 1, 8, 8)
    y_all = torch.tensor(digits.target, dtype=torch.long)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y_all))
    n_test = int(0.3 * len(order))
    test, rest = order[:n_test], order[n_test:]
    if args.target_size < 10 or args.target_size > len(rest) - 10 * k:
        raise ValueError(f"--target-size must be in [10, {len(rest) - 10 * k}] for k={k}, but got {args.target_size}")
    target, pool = rest[: args.target_size], rest[args.target_size:]
    shares = _dirichlet_split(digits.target[pool], k, rng)
    experts = []
    for i, share in enumerate(shares):
        idx = pool[share]
        net = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=1000)
        _train(net, x_all[idx], y_all[idx], epochs=args.expert_epochs, seed=2000 + i)
        experts.append(net)
    arch = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=0)
    x_target, y_target = x_all[target], y_all[target]
    test_data = (x_all[test], y_all[test])
    scorer = BlendedObjective(arch, experts, data=None, device=args.device)

    def make_objective(seed: int) -> Any:
        gen = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_target, y_target),
                                             batch_size=args.batch_size, shuffle=True, generator=gen)
        return BlendedObjective(arch, experts, data=loader, device=args.device)

    def target_loss(alpha: FloatArray) -> float:
        return float(evaluate_blend(scorer, alpha, (x_target, y_target))["loss"])  # type: ignore[call-overload]

    def heldout_accuracy(alpha: FloatArray) -> float:
        return float(evaluate_blend(scorer, alpha, test_data)["accuracy"])  # type: ignore[call-overload]

    info = {
        "dataset": "sklearn digits (1797 8x8 images)", "architecture": "small-cnn", "k": k,
        "expert_sizes": [int(len(s)) for s in shares], "target_size": int(len(target)), "test_size": int(n_test),
        "expert_accuracy": [heldout_accuracy(np.eye(k)[i]) for i in range(k)],
        "batch_size": int(args.batch_size), "expert_epochs": int(args.expert_epochs),
    }
    return NetworkProblem(k, make_objective, target_loss, heldout_accuracy, info)


def _dirichlet_split(labels: np.ndarray, k: int, rng: np.random.Generator, concentration: float = 0.5) -> list[np.ndarray]:
    """Indices of ``labels`` for ``k`` experts: each class divided with Dirichlet(0.5)
    proportions (GLUE section 5), every expert getting at least 5 images."""
    for _ in range(100):
        shares: list[list[int]] = [[] for _ in range(k)]
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            cuts = (np.cumsum(rng.dirichlet(np.full(k, concentration)))[:-1] * len(idx)).astype(int)
            for i, part in enumerate(np.split(idx, cuts)):
                shares[i].extend(part.tolist())
        if min(len(s) for s in shares) >= 5:
            return [np.asarray(s) for s in shares]
    raise ValueError(f"could not split {len(labels)} images among k={k} experts with at least 5 each; lower --k")


def _train(net: Any, x: Any, y: Any, *, epochs: int, seed: int, lr: float = 1e-2, batch: int = 32) -> None:
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=gen)
        for start in range(0, len(y), batch):
            idx = perm[start:start + batch]
            if len(idx) < 2:  # BatchNorm needs two examples
                continue
            opt.zero_grad()
            F.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()


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


def _run_one(label: str, method: str, kwargs: dict[str, Any], problem: Problem, seed: int, budget: int,
             vectorized: bool) -> dict[str, Any]:
    import spsa_mix

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


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return _jsonable(v.item())
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN or infinity
    return v


def plot_curves(rows: list[dict[str, Any]], labels: Sequence[str], path: Path, *, budget: int, title: str,
                ylabel: str, log: bool) -> None:
    """Loss versus evaluations: median over seeds, min-max band (matplotlib, Agg)."""
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------- entry point
def run(args: argparse.Namespace) -> int:
    """Run the comparison described by ``args``. Exit status: 0 when every run succeeded, 1 when
    some raised (the others still ran; their errors are in the JSON), 2 for a bad argument, 130
    when interrupted (the JSON, rewritten after every run, keeps the runs so far)."""
    try:
        return _run(args)
    except ValueError as e:
        print(f"spsa-mix bench compare: error: {e}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    for name, low in (("k", 2), ("budget", 1), ("seeds", 1)):
        if getattr(args, name) < low:
            raise ValueError(f"--{name} must be >= {low}, but got {getattr(args, name)}")
    methods = [parse_method(m) for m in args.methods]
    from spsa_mix.core.minimize import check_method

    for _, method, kwargs in methods:
        if method != "uniform":
            check_method(method, kwargs)  # an unknown method or setting fails before any run
    return methods


def _run(args: argparse.Namespace) -> int:
    methods = _check_args(args)
    labels = [m[0] for m in methods]
    network = load_network_problem(args) if args.problem == "network" else None
    from spsa_mix.io import atomic_write_text
    from spsa_mix.progress import progress_bar

    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    t_start = time.perf_counter()

    def result(status: str) -> dict[str, Any]:
        summary = summarize(rows, labels)
        return {
            "benchmark": "compare",
            "status": status,
            "argv": {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)},
            "command": "spsa-mix bench compare " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "compare"] else None,
            "problem": args.problem,
            "problem_info": network.info if network is not None else None,
            "seconds": time.perf_counter() - t_start,
            "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine(),
                        "note": "shared machine: wall times are indicative"},
            "summary": summary,
            "table": format_table(summary, problem=args.problem) if summary else "",
            "errors": errors,
            "runs": rows,
        }

    def write(status: str) -> dict[str, Any]:
        out = result(status)
        if args.output is not None:  # rewritten after every run: a crash or Ctrl-C loses nothing already computed
            atomic_write_text(args.output, json.dumps(_jsonable(out), indent=1, allow_nan=False) + "\n")
        return out

    bar = progress_bar(len(methods) * args.seeds, "compare", not args.no_progress, unit="run", disable=None)
    try:
        for seed in range(args.seeds):
            for label, method, kwargs in methods:
                if network is not None:
                    problem = Problem(network.make_objective(seed), network.k, network.target_loss,
                                      lambda h: np.asarray(h.get("loss", np.zeros(0)), float),
                                      network.heldout_accuracy, info=network.info)
                else:
                    problem = quadratic_problem(args.k, seed, optimum=args.optimum, condition=args.condition,
                                                noise=args.noise)
                if bar is not None:
                    bar.set_postfix_str(f"{label} seed={seed}")
                try:
                    rows.append(_run_one(label, method, kwargs, problem, seed, args.budget, args.vectorized))
                except Exception as e:  # one failing method does not stop the others
                    errors.append({"method": label, "seed": seed, "error": f"{type(e).__name__}: {e}"})
                    print(f"spsa-mix bench compare: {label} seed={seed} failed: {type(e).__name__}: {e}", file=sys.stderr)
                write("running")
                if bar is not None:
                    bar.update(1)
    except KeyboardInterrupt:
        out = write("interrupted")
        if not args.quiet:
            print(out["table"])
        where = f"; the runs so far are in {args.output}" if args.output is not None else ""
        print(f"spsa-mix bench compare: interrupted after {len(rows)} runs{where}", file=sys.stderr)
        return 130
    finally:
        if bar is not None:
            bar.close()
    out = write("complete with errors" if errors else "complete")
    table = out["table"]
    if not args.quiet:
        print(f"problem={args.problem} k={args.k} budget={args.budget} seeds={args.seeds}"
              + (f" optimum={args.optimum} condition={args.condition:g} noise={args.noise:g}"
                 if args.problem == "quadratic" else ""))
        print(table)
    if args.csv is not None:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        keys = ["method", "seed", "final_loss", "rel", "heldout_accuracy", "nfev", "cost", "nit", "wall_s",
                "objective_s", "overhead_per_eval_s", "status"]
        keys = [k for k in keys if any(k in r for r in rows)]
        with args.csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=keys, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(_jsonable(rows))
    if args.plot is not None:
        plot_curves(rows, labels, args.plot, budget=args.budget, log=args.problem == "quadratic",
                    title=f"{args.problem}, k={args.k}, budget {args.budget}, {args.seeds} seeds",
                    ylabel="f(x) - f* (exact)" if args.problem == "quadratic" else "minibatch loss (history)")
    return 1 if errors else 0
