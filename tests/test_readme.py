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


@pytest.mark.parametrize("doc", ["README.md", "docs/glue.md", "docs/directions.md", "docs/variance.md", "docs/blend.md",
                                 "docs/distributed.md"])
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
        namespace: dict = {"__name__": "__readme__"}
        for i, code in enumerate(blocks):
            try:
                exec(compile(code, f"README.md ({heading}, block {i + 1})", "exec"), namespace)  # noqa: S102
            except Exception as e:  # noqa: BLE001
                pytest.fail(f"README.md, section {heading!r}, python block {i + 1}: {type(e).__name__}: {e}")


def test_the_learned_scale_example_runs_after_the_first():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    example = next(b for b in blocks if "spsa_mix.Domain" in b)
    namespace: dict = {}
    exec(compile(blocks[0] + example, "README.md", "exec"), namespace)  # noqa: S102
    res = namespace["res"]
    assert res.success and abs(res.extras["scale"] - 2.0) < 0.01
    assert abs(res.alpha - namespace["c"]).max() < 0.05
