"""spsa-mix merge on the examples' experts: what it refuses (exit 2, one line, before any
weight is read), what it keeps (inputs, state, results) and how it resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from spsa_mix.cli import main  # noqa: E402


@pytest.fixture
def lm(merge_demos) -> Path:
    """The lm example's root (config lm.yaml, experts under build/lm)."""
    return merge_demos("lm")


def _merge(*argv: str) -> int:
    return main(["merge", *argv, "--no-progress"])


def _refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line a refused merge prints (exit status 2)."""
    capsys.readouterr()
    assert _merge(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("spsa-mix merge: error: "), err
    return err


def _copy_experts(lm: Path, tmp_path: Path) -> Path:
    ex = tmp_path / "ex"
    shutil.copytree(lm / "build" / "lm" / "experts", ex)
    return ex


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_replaces_an_input(lm: Path, tmp_path: Path, capsys) -> None:
    ex = _copy_experts(lm, tmp_path)
    before = _tree(ex)
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output", str(ex), "--overwrite")
    assert "holds experts[0]" in msg
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output", str(ex / "domains_0_1"),
                   "--overwrite")
    assert "is experts[0]" in msg
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output",
                   str(lm / "build" / "lm" / "base" / "merged"))
    assert "lies inside model" in msg
    assert _tree(ex) == before and not (tmp_path / "ex.state").exists()
