"""Shared test settings: hypothesis profile, small helpers, and the merge examples built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    max_examples=int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "20")),
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,  # the same examples on every run: CI never flakes on a new draw
)
settings.load_profile("default")


MERGE_EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "merge"


@pytest.fixture(scope="session")
def merge_demos(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``merge_demos(kind)``: a root holding ``build/<kind>`` (the example's experts and
    data, built on the first call for that kind) and ``<kind>.yaml`` (its config) beside it.

    Shared by the tests of one session: tests that change or delete inputs copy them first.
    """
    root = tmp_path_factory.mktemp("merge_demos")
    built: set[str] = set()

    def build(kind: str) -> Path:
        if kind not in built:
            pytest.importorskip("transformers")
            from spsa_mix.merge.demo import build_demo

            build_demo(kind, root / "build" / kind)
            shutil.copy(MERGE_EXAMPLES / f"{kind}.yaml", root / f"{kind}.yaml")
            built.add(kind)
        return root

    return build
