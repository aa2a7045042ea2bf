"""``spsa-mix bench compare``: methods side by side on one objective at equal budgets.

Parses the command line, builds the problem and runs :func:`spsa_mix.compare.compare_methods`
(see :mod:`spsa_mix.compare` for the methods, problems and what the table reports); prints
the table and writes JSON (``--output``, rewritten after every run), CSV (``--csv``) and
loss-versus-evaluations curves (``--plot``, median over seeds, min-max band).

Every option, every output path (:func:`spsa_mix.io.check_outputs`) and, for the network
problem, the device are checked before any work.

Exit status: 0 when every run succeeded, 1 when some raised (the others still ran; their
errors are in the JSON), 2 for a bad argument or an output path that cannot be written (one
line says which and why), 130 when interrupted (the JSON keeps the runs so far, marked
``"interrupted"``).

Example
-------
>>> import argparse
>>> parser = argparse.ArgumentParser()
>>> add_arguments(parser)
>>> args = parser.parse_args(["--k", "4", "--budget", "40", "--seeds", "2", "--methods", "spsa", "uniform",
...                           "--no-progress", "--quiet"])
>>> run(args)
0
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

DEFAULT_METHODS = ("spsa", "nevergrad:NGOpt", "optuna:tpe")


# ---------------------------------------------------------------------- arguments
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of ``spsa-mix bench compare`` to ``parser``."""
    import spsa_mix
    from spsa_mix.cli import DefaultsHelpFormatter

    parser.formatter_class = DefaultsHelpFormatter
    names = ", ".join([*spsa_mix.available_methods(), "uniform (the starting point, for reference)"])
    parser.add_argument("--problem", choices=["quadratic", "network"], default="quadratic",
                        help="objective: an analytic quadratic, or a blended network of digits experts")
    parser.add_argument("--k", type=int, default=10, help="number of vertices (experts)")
    parser.add_argument("--budget", type=int, default=200, help="max_evals of every method")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (problem instance and method seed)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD[@key=value,...]",
                        help=f"methods of spsa_mix.minimize: {names}; settings after '@', as in "
                             "spsa@lr=0.05,lr_schedule=cosine or optuna:tpe@parametrization=stick")
    parser.add_argument("--no-vectorized", dest="vectorized", action="store_false",
                        help="call the objective one point at a time (default: whole batches)")
    parser.add_argument("--output", type=Path, default=None,
                        help="write results as JSON here (rewritten after every run)")
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


# ---------------------------------------------------------------------- entry point
def run(args: argparse.Namespace) -> int:
    """Run the comparison described by ``args`` (exit statuses in the module docstring)."""
    try:
        return _run(args)
    except ValueError as e:
        print(f"spsa-mix bench compare: error: {e}", file=sys.stderr)
        return 2


def _check_args(args: argparse.Namespace) -> list[tuple[str, str, dict[str, Any]]]:
    """Every option checked before any work (a bad value or path: ``ValueError``, exit 2)."""
    from spsa_mix.compare import check_methods
    from spsa_mix.io import check_outputs

    for name, low in (("k", 2), ("budget", 1), ("seeds", 1), ("batch_size", 1), ("expert_epochs", 1),
                      ("target_size", 1)):
        if getattr(args, name) < low:
            raise ValueError(f"--{name.replace('_', '-')} must be >= {low}, but got {getattr(args, name)}")
    for option, least in (("noise", 0.0), ("condition", 1.0)):  # NaN and infinity fail too
        value = getattr(args, option)
        if not math.isfinite(value) or not value >= least:
            raise ValueError(f"--{option} must be a number >= {least:g}, but got {value}")
    methods = check_methods(args.methods)  # an unknown method or setting fails before any run
    check_outputs({"--output": args.output, "--csv": args.csv, "--plot": args.plot})
    if args.problem == "network":
        from spsa_mix.blend import resolve_device

        resolve_device(args.device)  # an absent GPU fails before the experts are trained
    return methods


def _run(args: argparse.Namespace) -> int:
    import numpy as np

    from spsa_mix import compare
    from spsa_mix.io import write_json

    methods = _check_args(args)
    labels = [m[0] for m in methods]
    if args.problem == "network":
        network = compare.network_problem(args.k, target_size=args.target_size, batch_size=args.batch_size,
                                          expert_epochs=args.expert_epochs, device=args.device)

        def make_problem(seed: int) -> compare.Problem:
            return compare.Problem(network.make_objective(seed), network.k, network.target_loss,
                                   lambda h: np.asarray(h.get("loss", np.zeros(0)), float), network.heldout_accuracy,
                                   info=network.info)
        info = network.info
    else:
        def make_problem(seed: int) -> compare.Problem:
            return compare.quadratic_problem(args.k, seed, optimum=args.optimum, condition=args.condition,
                                             noise=args.noise)
        info = None
    settings = {
        "argv": {k: v for k, v in vars(args).items() if not k.startswith("_") and not callable(v)},
        "command": "spsa-mix bench compare " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", "compare"] else None,
    }

    latest: dict[str, Any] = {}

    def on_update(doc: dict[str, Any]) -> None:
        latest.update(doc)
        if args.output is not None:  # rewritten after every run: a crash or Ctrl-C loses nothing already computed
            write_json(doc, args.output)

    def on_error(label: str, seed: int, e: Exception) -> None:
        print(f"spsa-mix bench compare: {label} seed={seed} failed: {type(e).__name__}: {e}", file=sys.stderr)

    try:
        out = compare.compare_methods(make_problem, methods, seeds=args.seeds, budget=args.budget,
                                      vectorized=args.vectorized, problem_name=args.problem, problem_info=info,
                                      settings=settings, on_update=on_update,
                                      on_error=on_error, progress=not args.no_progress)
    except KeyboardInterrupt:
        if not args.quiet:
            print(latest.get("table", ""))
        where = f"; the runs so far are in {args.output}" if args.output is not None else ""
        print(f"spsa-mix bench compare: interrupted after {len(latest.get('runs', []))} runs{where}",
              file=sys.stderr)
        return 130
    if not args.quiet:
        print(f"problem={args.problem} k={args.k} budget={args.budget} seeds={args.seeds}"
              + (f" optimum={args.optimum} condition={args.condition:g} noise={args.noise:g}"
                 if args.problem == "quadratic" else ""))
        print(out["table"])
    if args.csv is not None:
        compare.write_csv(out["runs"], args.csv)
    if args.plot is not None:
        compare.plot_curves(out["runs"], labels, args.plot, budget=args.budget, log=args.problem == "quadratic",
                            title=f"{args.problem}, k={args.k}, budget {args.budget}, {args.seeds} seeds",
                            ylabel="f(x) - f* (exact)" if args.problem == "quadratic" else "minibatch loss (history)")
    return 1 if out["errors"] else 0
