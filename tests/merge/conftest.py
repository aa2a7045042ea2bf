"""The examples' experts, built once for the merge tests (small, in a temporary folder)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def demos(merge_demos) -> Path:
    """The three examples' experts under <tmp>/build/<kind>, and their configs beside it
    (built once per session by tests/conftest.py's ``merge_demos``)."""
    pytest.importorskip("peft")
    for kind in ("lm", "lora", "vision"):
        root = merge_demos(kind)
    return root
