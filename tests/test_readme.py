"""The README keeps its promises: CI runs its test command, its figures are the code's."""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _sync_docs():
    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "benchmarks" / "sync_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, re.S)]


def test_ci_runs_the_readme_test_command_word_for_word():
    ci = (ROOT / ".ci" / "run").read_text()
    command = re.search(r"^TEST_COMMAND='(.*)'$", ci, re.M)
    assert command, "TEST_COMMAND not found in .ci/run"
    assert command.group(1) in _bash_blocks(README)
    assert "pytest" in command.group(1) and '".[all,test]"' in command.group(1)


def test_the_main_command_installs_and_runs_the_experiment_with_no_arguments():
    mains = [b for b in _bash_blocks(README) if b.endswith("spsa-mix experiment")]
    assert len(mains) == 1
    words = shlex.split(mains[0].replace("&&", " && "))
    assert words[:4] == ["python3", "-m", "venv", ".venv"]
    assert ".[all]" in words


def test_the_slow_marker_is_explained_where_it_is_deselected():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert "-m 'not slow'" in pyproject
    assert "-m slow" in README


@pytest.mark.parametrize("doc", _sync_docs().DOCS)  # every document sync_docs.py keeps up to date
def test_every_generated_figure_is_what_its_results_file_gives(doc):
    sync = _sync_docs()
    text = (ROOT / doc).read_text()
    found = sync.blocks(text)
    assert found, f"{doc} has no generated block"
    for kind, path, body in found:
        assert (ROOT / path).is_file(), f"{doc}: {path} does not exist"
        assert body == sync.render(kind, path), (
            f"{doc}: the {kind} block of {path} is stale; run `python benchmarks/sync_docs.py`")


def test_no_placeholder_is_left_in_the_docs():
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "PLACEHOLDER" not in doc.read_text(), doc.name


def test_paths_the_readme_names_exist():
    names = set(re.findall(r"`((?:benchmarks|docs|examples|spsa_mix)/[\w./-]*\w)`", README))
    assert names
    missing = [n for n in sorted(names) if "*" not in n and not (ROOT / n).exists()]
    assert not missing, missing


def test_the_first_python_example_runs():
    code = re.findall(r"```python\n(.*?)```", README, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["res"].success
    assert abs(namespace["res"].x - namespace["c"]).max() < 0.05


def _python_blocks_by_section(text: str) -> dict[str, list[str]]:
    """Every ```python block, grouped by the heading (any level) it falls under, in order."""
    sections: dict[str, list[str]] = {}
    heading = "(top)"
    for part in re.split(r"(^#+ [^\n]*$|```python\n.*?```)", text, flags=re.M | re.S):
        if part.startswith("#"):
            heading = part.lstrip("#").strip()
        elif part.startswith("```python"):
            sections.setdefault(heading, []).append(part[len("```python\n"):-3])
    return sections


def test_every_python_snippet_runs_as_written():
    """Each section's blocks run in order in one fresh namespace (a block may use the ones
    before it in its section), with nothing imported for them."""
    sections = _python_blocks_by_section(README)
    assert sum(len(b) for b in sections.values()) >= 2
    for heading, blocks in sections.items():
        _run_in_order(blocks, f"README.md, section {heading!r}")


def _run_in_order(blocks: list[str], where: str) -> None:
    """Run ``blocks`` in order in one fresh namespace; fail naming the block that raised."""
    namespace: dict = {"__name__": "__readme__"}
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"{where}, block {i + 1}", "exec"), namespace)  # noqa: S102
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{where}, python block {i + 1}: {type(e).__name__}: {e}")


def test_the_learned_scale_example_runs_after_the_first():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = next(b for b in blocks if "spsa_mix.Domain" in b)
    namespace: dict = {}
    exec(compile(blocks[0] + example, "README.md", "exec"), namespace)  # noqa: S102
    res = namespace["res"]
    assert res.success and abs(res.extras["scale"] - 2.0) < 0.01
    assert abs(res.alpha - namespace["c"]).max() < 0.05


# ---------------------------------------------------------------- a README a newcomer reads in five minutes
_DURATION = re.compile(r"\b(\d+(\.\d+)?\s*(ms|s|sec|seconds?|min|minutes?|hours?)|(a|an|one|two|three|four|five|ten|a few|"
                       r"several)\s+(seconds?|minutes?|hours?)|in seconds|under a minute)\b", re.I)


def _outside_generated(text: str) -> str:
    return re.sub(r"<!-- generated: .*?<!-- /generated -->", "", text, flags=re.S)


def test_every_time_the_readme_states_is_measured_by_a_script():
    """A duration in the README's own words is a promise nothing checks: every time it gives is
    in a generated block (benchmarks/readme_times.py measures the commands as written)."""
    stated = [m.group(0) for m in _DURATION.finditer(_outside_generated(README))]
    assert not stated, f"durations stated outside a generated block: {stated}"
    assert "<!-- generated: md-tables benchmarks/results/readme_times.md -->" in README


def test_merge_your_own_experts_comes_right_after_the_two_commands():
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[:2] == ["Two commands", "Merge your own experts"], headings


def test_the_readme_stays_a_five_minute_read():
    assert len(README.splitlines()) <= 300 and len(README) <= 20_000, (len(README.splitlines()), len(README))


@pytest.mark.parametrize("index", range(len(re.findall(r"```python\n", README))))
def test_each_python_block_runs_on_its_own_as_a_script_and_prints_its_results(index, tmp_path):
    import subprocess
    import sys

    block = re.findall(r"```python\n(.*?)```", README, re.S)[index]
    script = tmp_path / f"block{index + 1}.py"
    script.write_text(block)
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip(), f"python block {index + 1} prints nothing when run as a script"


def test_the_blocks_of_docs_usage_run_in_order():
    """docs/usage.md holds the library's longer examples (moved from the README): its blocks run
    in one namespace, in order."""
    text = (ROOT / "docs" / "usage.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    _run_in_order(blocks, "docs/usage.md")
