"""The checks of spsa-mix merge made before any weight is read (spsa_mix/merge/checks.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from spsa_mix.merge.checks import check_apart, merge_inputs
from spsa_mix.merge.config import MergeConfig


def _tree(tmp_path: Path) -> list[tuple[str, Path]]:
    for name in ("ex/a", "ex/b", "base"):
        (tmp_path / name).mkdir(parents=True)
    (tmp_path / "train.jsonl").write_text('{"text": "x"}\n')
    return [("experts[0]", tmp_path / "ex/a"), ("experts[1]", tmp_path / "ex/b"), ("base", tmp_path / "base"),
            ("data.train", tmp_path / "train.jsonl")]


@pytest.mark.parametrize(("output", "why", "label"), [
    ("ex/a", "is", "experts[0]"),              # an expert replaced by the merge
    ("ex", "holds", "experts[0]"),             # every expert deleted with the folder
    ("base/merged", "lies inside", "base"),    # written into the base's folder
    ("train.jsonl", "is", "data.train"),
    (".", "holds", "experts[0]"),
])
def test_an_output_that_is_holds_or_lies_inside_an_input_is_refused(tmp_path: Path, output: str, why: str,
                                                                    label: str) -> None:
    inputs = _tree(tmp_path)
    with pytest.raises(ValueError, match=f"output .* {why} {re.escape(label)} .*choose an output apart from the experts"):
        check_apart(tmp_path / output, {}, inputs)


def test_an_output_apart_from_the_inputs_passes(tmp_path: Path) -> None:
    inputs = _tree(tmp_path)
    check_apart(tmp_path / "merged", {"the run's state": tmp_path / "merged.state"}, inputs)
    check_apart(tmp_path / "ex-merged", {}, inputs)  # a sibling whose name starts like an input's


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_an_output_reached_through_a_link_is_compared_where_it_leads(tmp_path: Path) -> None:
    inputs = _tree(tmp_path)
    (tmp_path / "link").symlink_to(tmp_path / "ex")
    with pytest.raises(ValueError, match="output .*link/a' is experts\\[0\\]"):
        check_apart(tmp_path / "link" / "a", {}, inputs)


def test_a_file_written_beside_the_output_may_not_be_an_input(tmp_path: Path) -> None:
    inputs = _tree(tmp_path)
    with pytest.raises(ValueError, match="the run's state .* is data.train"):
        check_apart(tmp_path / "train", {"the run's state": tmp_path / "train.jsonl"}, inputs)


def test_merge_inputs_names_every_path_the_config_reads(tmp_path: Path) -> None:
    _tree(tmp_path)
    cfg = MergeConfig.from_dict({"experts": [str(tmp_path / "ex/a"), str(tmp_path / "ex/b")],
                                 "base": str(tmp_path / "base"), "space": "task-vectors", "model": "small-cnn",
                                 "data": {"train": f"torchvision:MNIST:{tmp_path / 'base'}"}})
    labels = [label for label, _ in merge_inputs(cfg, [tmp_path / "ex/a", tmp_path / "ex/b"])]
    assert labels == ["experts[0]", "experts[1]", "base", "data.train"]  # model: an architecture's name
