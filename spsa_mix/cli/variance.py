"""``spsa-mix bench variance``: bias, variance and MSE of the gradient estimate versus K and m.

For every ``K`` and ``m`` of the grid, at the uniform mixture, draws ``--samples``
independent two-point estimates and reports the norm of the bias, the variance (trace of
the covariance), the MSE and the cosine to the true gradient, each with a confidence
interval, beside their closed forms (``docs/variance.md``) and GLUE's Proposition 1.
Prints a table, writes JSON (``--output``), a figure (``--plot``: variance and MSE
against K, one line per m, log scales, theory dashed) and optionally a CSV (``--csv``).

The JSON is rewritten after every finished (configuration, K) cell with ``status``
``"running"``, then ``"complete"`` (:func:`spsa_mix.variance.bench.run_benchmark`), so a
kill loses only the cell in progress. Every option and output path is checked before any
work.

Exit status: 0 on success, 2 for bad input or an output path that cannot be written (one
line says which option and why), 130 when interrupted (the JSON keeps the finished rows,
marked ``"interrupted"``).

Example
-------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_arguments(p)
>>> a = p.parse_args(["--k", "2", "5", "--sum-zero", "on", "--space", "beta"])
>>> a.k, a.sum_zero, a.space, a.m
([2, 5], ['on'], ['beta'], [1, 2, 4, 8, 16])
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

# Defaults written here (no import of the heavy modules at parse time).
_KINDS = ("normalized-gaussian", "gaussian", "rademacher")  # spsa_mix.core.directions.DIRECTION_KINDS
_DEFAULT_MU = 0.05  # spsa_mix.core.optimizer.DEFAULT_MU, the optimiser's radius
_DEFAULT_SAMPLES = {"quadratic": 10_000, "linear": 10_000, "network": 300}
_ON_OFF = {"on": True, "off": False}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spsa-mix bench variance`` (no NumPy-heavy or PyTorch import here)."""
    from spsa_mix.cli import DefaultsHelpFormatter

    parser.formatter_class = DefaultsHelpFormatter
    grid = parser.add_argument_group("grid")
    grid.add_argument("--k", type=int, nargs="+", default=[2, 5, 10, 20, 50], help="numbers of experts K (>= 2)")
    grid.add_argument("--m", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="directions per estimate")
    grid.add_argument("--problem", choices=["quadratic", "linear", "network"], default="quadratic",
                      help="random quadratic (analytic gradient), linear, or a blended small CNN on scikit-learn's "
                           "digits (autograd gradient)")
    grid.add_argument("--directions", nargs="+", choices=list(_KINDS), default=list(_KINDS), metavar="KIND",
                      help=f"direction distributions, any of: {' '.join(_KINDS)}")
    grid.add_argument("--sum-zero", nargs="+", choices=["on", "off"], default=["on", "off"],
                      help="restrict the directions to the sum-zero subspace (on), or not (off), or both")
    grid.add_argument("--orthogonal", nargs="+", choices=["on", "off"], default=["off"],
                      help="m mutually orthogonal directions per estimate (on), i.i.d. (off), or both")
    grid.add_argument("--scale", nargs="+", choices=["unbiased", "paper"], default=["unbiased", "paper"],
                      help="c = estimator_scale (the optimiser's unbiased estimate) and/or c = 1 (GLUE eq. 3)")
    grid.add_argument("--space", nargs="+", choices=["alpha", "beta"], default=["alpha"],
                      help="perturb alpha directly, or the softmax logits beta (what the optimiser does)")
    grid.add_argument("--mu", type=float, nargs="+", default=[_DEFAULT_MU], help="radii of the central difference")
    grid.add_argument("--derivative", choices=["finite-difference", "exact"], default="finite-difference",
                      help="two forward passes per direction, or the exact directional derivative g.u")
    stats = parser.add_argument_group("statistics")
    stats.add_argument("--samples", type=int, default=None,
                       help="independent estimates per (configuration, K, m) (default: 10000; 300 for network)")
    stats.add_argument("--confidence", type=float, default=0.999, help="coverage of each confidence interval")
    stats.add_argument("--seed", type=int, default=0, help="seeds the problems, the experts and the directions")
    net = parser.add_argument_group("network problem")
    net.add_argument("--target-size", type=int, default=64, help="digits in the fixed target batch")
    net.add_argument("--expert-steps", type=int, default=40, help="Adam steps per expert")
    net.add_argument("--threads", type=int, default=None,
                     help="PyTorch CPU threads (default: PyTorch's own choice; 1 on a shared machine)")
    out = parser.add_argument_group("output")
    out.add_argument("--output", default="variance.json", help="JSON results")
    out.add_argument("--plot", default="variance.png", help="PNG figure ('' for none)")
    out.add_argument("--csv", nargs="?", const="", default=None,
                     help="also write a CSV table (to this path; without one, beside --output)")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    out.add_argument("--quiet", action="store_true", help="do not print the table")


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    samples = args.samples if args.samples is not None else _DEFAULT_SAMPLES[args.problem]
    return {
        "problem": args.problem,
        "ks": list(args.k),
        "ms": list(args.m),
        "kinds": list(args.directions),
        "sum_zero": [_ON_OFF[v] for v in args.sum_zero],
        "orthogonal": [_ON_OFF[v] for v in args.orthogonal],
        "scales": list(args.scale),
        "spaces": list(args.space),
        "mus": list(args.mu),
        "derivative": args.derivative,
        "n_samples": samples,
        "confidence": args.confidence,
        "seed": args.seed,
    }


def run(args: argparse.Namespace) -> int:
    """Run the grid, print the table, write the JSON, the figure and the CSV."""
    try:
        return _run(args)
    except ValueError as e:
        print(f"spsa-mix bench variance: error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from spsa_mix.io import check_outputs
    from spsa_mix.variance.bench import run_benchmark
    from spsa_mix.variance.report import plot_rows, render_proposition1, render_table, write_csv

    settings = _settings(args)
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, but got {args.seed}")
    for name in ("target_size", "expert_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, but got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, but got {args.threads}")
    output = Path(args.output)
    csv_path = None
    if args.csv is not None:
        csv_path = Path(args.csv) if args.csv else output.with_suffix(".csv")
    check_outputs({"--output": output, "--plot": args.plot or None, "--csv": csv_path})
    network_options = None
    if args.problem == "network":
        network_options = {"target_size": args.target_size, "steps": args.expert_steps}
        if args.threads is not None:
            import torch

            torch.set_num_threads(args.threads)

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    latest: dict[str, Any] = {"rows": []}
    try:
        doc = run_benchmark(settings, output=output, command=_command(args), network_options=network_options,
                            progress=not args.no_progress, log=None if args.quiet else log, on_update=latest.update)
    except KeyboardInterrupt:
        print(f"spsa-mix bench variance: interrupted; the {len(latest['rows'])} finished rows are in {output}",
              file=sys.stderr)
        return 130
    rows = doc["rows"]
    if args.plot:
        plot_rows(rows, args.plot, title=f"two-point estimate at the uniform mixture: {args.problem}, "
                                         f"{settings['n_samples']} estimates per point")
    if csv_path is not None:
        write_csv(rows, csv_path)
    if not args.quiet:
        print(render_table(rows))
        prop1 = render_proposition1(rows)
        if prop1:
            print("\nGLUE Proposition 1 (unit directions in the full space, c = 1) against the measurements:")
            print(prop1)
    written = ", ".join(str(p) for p in (output, args.plot or None, csv_path) if p)
    print(f"{doc['summary']['agree']}/{doc['summary']['comparisons']} closed forms inside their "
          f"{settings['confidence']:.4g} intervals ({len(rows)} rows, {doc['elapsed_seconds']:.1f} s); wrote {written}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (every grid option spelled out)."""
    parts = ["spsa-mix", "bench", "variance", "--problem", args.problem, "--k", *map(str, args.k),
             "--m", *map(str, args.m), "--directions", *args.directions, "--sum-zero", *args.sum_zero,
             "--orthogonal", *args.orthogonal, "--scale", *args.scale, "--space", *args.space,
             "--mu", *(f"{mu:g}" for mu in args.mu), "--derivative", args.derivative,
             "--confidence", f"{args.confidence:g}", "--seed", str(args.seed)]
    if args.samples is not None:
        parts += ["--samples", str(args.samples)]
    if args.problem == "network":
        parts += ["--target-size", str(args.target_size), "--expert-steps", str(args.expert_steps)]
        if args.threads is not None:
            parts += ["--threads", str(args.threads)]
    parts += ["--output", args.output, "--plot", args.plot]
    if args.csv is not None:
        parts += ["--csv"] + ([args.csv] if args.csv else [])
    return " ".join(shlex.quote(p) for p in parts)
