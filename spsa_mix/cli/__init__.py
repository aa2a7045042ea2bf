"""The ``spsa-mix`` command line.

``spsa-mix merge``
    expert checkpoints and target data in, a merged checkpoint out (:mod:`spsa_mix.cli.merge`);
``spsa-mix eval``
    checkpoints scored on target data with the merge's code and metrics (:mod:`spsa_mix.cli.eval`);
``spsa-mix experiment``
    the GLUE paper's experiment end to end on any dataset (:mod:`spsa_mix.cli.experiment`;
    ``spsa-mix experiment``, its name before 0.2, still works);
``spsa-mix bench compare``
    methods side by side on one objective at equal budgets (:mod:`spsa_mix.cli.compare`);
``spsa-mix bench variance``
    bias, variance and MSE of the gradient estimate against theory
    (:mod:`spsa_mix.cli.variance`).

Each subcommand lives in its own module with ``add_arguments(parser)`` and
``run(args) -> int``. Only the module of the subcommand named on the command line is
imported: ``spsa-mix --help`` lists the subcommands from the table ``_COMMANDS`` without
importing any of them, and ``spsa-mix bench compare --help`` imports
:mod:`spsa_mix.cli.compare` alone to show its full help; so the help needs no PyTorch, and
a subcommand that fails to import (a missing optional dependency) does not break the
others.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser", "selected_command", "DefaultsHelpFormatter"]

_COMMANDS = {
    ("merge",): ("spsa_mix.cli.merge", "blend expert checkpoints into one merged checkpoint, learning the weights on target data"),
    ("eval",): ("spsa_mix.cli.eval", "score checkpoints (merged, mergekit's, experts, adapters) on target data"),
    ("experiment",): ("spsa_mix.cli.experiment",
                      "train experts on non-IID splits, set alpha every way, fine-tune: the GLUE paper's experiment"),
    ("bench", "compare"): ("spsa_mix.cli.compare", "compare methods on one objective at equal budgets"),
    ("bench", "variance"): ("spsa_mix.cli.variance", "bias, variance and MSE of the gradient estimate versus K and m"),
}
_ALIASES = {"glue": "experiment"}  # old names of commands, still accepted


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that states each option's default once, as it is typed on the command line.

    Like :class:`argparse.ArgumentDefaultsHelpFormatter`, but adds nothing where the help
    already says its default, for a flag, or for a default of ``None``; and lists are shown
    as their words (``on off``), not as a Python list.

    >>> p = argparse.ArgumentParser(formatter_class=DefaultsHelpFormatter)
    >>> _ = p.add_argument("--m", type=int, nargs="+", default=[1, 2], help="directions")
    >>> _ = p.add_argument("--samples", type=int, help="estimates (default: 10000)")
    >>> " ".join(p.format_help().split("options:")[1].split()[-13:])
    '--m M [M ...] directions (default: 1 2) --samples SAMPLES estimates (default: 10000)'
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is argparse.SUPPRESS or isinstance(default, bool):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def selected_command(argv: Sequence[str]) -> tuple[str, ...] | None:
    """The subcommand that ``argv`` names (a key of the table), or ``None``.

    The top-level options take no value, so the first words of ``argv`` that are not
    options name the subcommand.

    >>> selected_command(["-v", "bench", "compare", "--k", "3"]), selected_command(["--help"])
    (('bench', 'compare'), None)
    >>> selected_command(["glue", "--quick"])
    ('experiment',)
    """
    words = [a for a in argv if not a.startswith("-")]
    words = [_ALIASES.get(words[0], words[0]), *words[1:]] if words else words
    for path in _COMMANDS:
        if tuple(words[: len(path)]) == path:
            return path
    return None


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The argument parser: every subcommand, listed from the table; only the one ``argv``
    names (see :func:`selected_command`) gets its arguments, and only its module is imported.

    >>> build_parser().prog
    'spsa-mix'
    >>> build_parser(["bench", "compare"]).parse_args(["bench", "compare", "--k", "3"]).k
    3
    """
    chosen = selected_command(argv)
    parser = argparse.ArgumentParser(prog="spsa-mix", description="Blend pretrained experts with forward passes only.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    top = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for path, (module, help_text) in _COMMANDS.items():
        if len(path) == 1:
            aliases = [old for old, new in _ALIASES.items() if new == path[0]]
            sub = top.add_parser(path[0], help=help_text, description=help_text, aliases=aliases)
        else:
            if path[0] not in groups:
                grp = top.add_parser(path[0], help="benchmarks: " + ", ".join(p[1] for p in _COMMANDS if p[0] == path[0]))
                groups[path[0]] = grp.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
            sub = groups[path[0]].add_parser(path[1], help=help_text, description=help_text)
        if path == chosen:
            mod = importlib.import_module(module)
            mod.add_arguments(sub)
            sub.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``spsa-mix`` console script."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    args._argv = tuple(argv)  # the command line, for what records it (the merge's model card)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
