"""``spsa-mix``: the subcommands are listed from the table, and only the chosen one is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from spsa_mix.cli import build_parser, main, selected_command

ROOT = Path(__file__).resolve().parents[2]


def _run(argv: list[str]) -> tuple[str, list[str]]:
    """stdout of ``main(argv)`` in a fresh interpreter, and the subcommand modules it imported."""
    code = (f"import sys; from spsa_mix.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('spsa_mix.cli.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    *text, modules = out.stdout.rstrip("\n").split("\n")
    return "\n".join(text), ast.literal_eval(modules)


def test_top_level_help_imports_no_subcommand():
    text, modules = _run(["--help"])
    assert modules == []
    assert "experiment (glue)" in text and "bench" in text and "the GLUE paper's experiment" in text


def test_bench_help_lists_its_benchmarks_without_importing_them():
    text, modules = _run(["bench", "--help"])
    assert modules == []
    assert "compare methods on one objective" in text and "bias, variance and MSE" in text


@pytest.mark.parametrize("argv, module, option", [
    (["bench", "compare", "--help"], "spsa_mix.cli.compare", "--methods"),
    (["-v", "bench", "variance", "--help"], "spsa_mix.cli.variance", "--confidence"),
    (["experiment", "--help"], "spsa_mix.cli.experiment", "--arch"),
    (["glue", "--help"], "spsa_mix.cli.experiment", "--arch"),
])
def test_a_subcommand_help_imports_that_subcommand_only(argv, module, option):
    text, modules = _run(argv)
    assert modules == [module]
    assert option in text  # the command's full help


def test_selected_command_and_parser():
    assert selected_command(["glue", "--quick"]) == ("experiment",)  # the old name of the command
    assert selected_command(["experiment", "--quick"]) == ("experiment",)
    assert selected_command(["-vv", "bench", "variance"]) == ("bench", "variance")
    assert selected_command(["bench"]) is None and selected_command([]) is None
    args = build_parser(["bench", "variance"]).parse_args(["bench", "variance", "--k", "2", "3"])
    assert args.k == [2, 3] and callable(args._run)


def test_unknown_or_missing_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", "nope"])
    assert info.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
