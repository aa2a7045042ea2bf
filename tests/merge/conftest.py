"""The examples' experts, built once for the merge tests (small, in a temporary folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "merge"


@pytest.fixture(scope="session")
def demos(tmp_path_factory) -> Path:
    """The three examples' experts under <tmp>/build/<kind>, and their configs beside it."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    from spsa_mix.merge.demo import build_demo

    root = tmp_path_factory.mktemp("merge")
    for kind in ("lm", "lora", "vision"):
        build_demo(kind, root / "build" / kind)
        shutil.copy(EXAMPLES / f"{kind}.yaml", root / f"{kind}.yaml")
    return root
