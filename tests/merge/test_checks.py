"""The checks of spsa-mix merge made before any weight is read (spsa_mix/merge/checks.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from spsa_mix.merge.checks import check_apart, check_options, merge_inputs
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


def _cfg(**values) -> MergeConfig:
    return MergeConfig.from_dict({"experts": ["a", "b"], "data": "t.jsonl", **values})


@pytest.mark.parametrize(("options", "message"), [
    ({"max_evals": 3}, "options: 'max_evals' is set by the config key budget, not by options"),
    ({"seed": 1}, "options: 'seed' is set by the config key seed"),
    ({"vectorized": False}, "options: 'vectorized' is set by the merge"),
    ({"checkpoint": "x"}, "options: 'checkpoint' is set by the merge"),
    ({"val_objective": "x"}, "options: 'val_objective' is set by the merge"),
    ({"lrr": 0.1}, "options: unknown key 'lrr' \\(did you mean 'lr'\\?\\); minimize takes"),
    ({"lr": -1}, "options: lr must be positive, but got -1"),
    ({"m": 0}, "options: m must be an integer >= 1, but got 0"),
    ({"betas": "x"}, "options: "),
])
def test_options_are_checked_before_any_weight_is_read(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_options(_cfg(options=options), 3)
    check_options(_cfg(options={"lr": 0.05, "m": 2, "mu": 0.1}), 3)


def test_option_values_are_checked_for_the_method_and_space() -> None:
    with pytest.raises(ValueError, match="options: method 'backprop' does not use mu"):
        check_options(_cfg(method="backprop", options={"mu": 0.1}), 3)
    check_options(_cfg(space="task-vectors", base="b", scale="learned", options={"lr": 0.05}), 3)
    check_options(_cfg(granularity="layer", options={"x0": [0.5, 0.5]}), 2)  # the groups are not known yet
    with pytest.raises(ValueError, match="options: x0"):
        check_options(_cfg(options={"x0": [0.5, 0.2, 0.3]}), 2)


def test_a_nonfinite_score_is_traced_to_the_expert_whose_weights_hold_it(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from spsa_mix.merge.checks import check_scores, nonfinite_tensor

    good, bad = tmp_path / "good.safetensors", tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(3), "n": torch.zeros(2, dtype=torch.int64)}, str(good))
    save_file({"w": torch.tensor([1.0, float("inf"), 0.0])}, str(bad))
    assert nonfinite_tensor(good) is None and nonfinite_tensor(bad) == "w"
    inputs = [("experts[0]", good), ("experts[1]", bad)]
    check_scores(1.0, [1.0, 2.0], inputs, "the data")
    with pytest.raises(ValueError, match=r"experts\[1\] '.*bad.safetensors' holds NaN or infinite weights \(tensor "
                                         r"'w'\), so every blend scores a loss that is not finite on the data"):
        check_scores(float("nan"), [float("nan")] * 2, inputs, "the data")
    with pytest.raises(ValueError, match="the loss on the data is not finite .* the data gives it"):
        check_scores(float("nan"), [1.0, 1.0], inputs[:1], "the data")


def test_tensor_data_with_nan_inputs_is_named() -> None:
    import torch

    from spsa_mix.data.files import TensorData
    from spsa_mix.merge.checks import check_finite_inputs

    x = torch.zeros(4, 2)
    x[2, 1] = float("nan")
    data = TensorData("t", torch.zeros(4, 2), torch.arange(4), x, torch.arange(4))
    check_finite_inputs(TensorData("t", torch.zeros(4, 2), torch.arange(4)), {"train": "data.train", "test": "v"})
    with pytest.raises(ValueError, match="data.validation 'v.pt': inputs of example 2 hold NaN"):
        check_finite_inputs(data, {"train": "data.train 't.pt'", "test": "data.validation 'v.pt'"})


def test_the_context_is_read_from_the_models_config(tmp_path: Path) -> None:
    import json

    from spsa_mix.merge.checks import check_context

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 64, "n_ctx": 64}))
    check_context(tmp_path, 64)
    with pytest.raises(ValueError, match="takes at most 64 tokens \\(n_positions in its config.json\\)"):
        check_context(tmp_path, 65)
    (tmp_path / "config.json").write_text("{}")
    check_context(tmp_path, 10**6)  # no context named: not checked


@pytest.mark.parametrize("method", ["backprop", "forward-grad"])
def test_the_gradient_methods_pass_the_options_check(method):
    check_options(_cfg(method=method), 3)  # one dry step on a flat loss with the gradient interfaces
    check_options(_cfg(method=method, options={"lr": 0.05}), 3)
