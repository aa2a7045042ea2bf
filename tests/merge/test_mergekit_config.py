"""mergekit configs read as spsa-mix merge keys, and the configs written for what was merged (no mergekit needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spsa_mix.merge.mergekit import config_values, export_config


def test_weights_become_the_start_and_lambda_times_their_sum_the_scale(tmp_path: Path) -> None:
    ta = {"merge_method": "task_arithmetic", "base_model": "b", "dtype": "bfloat16",
          "models": [{"model": "b"}, {"model": "x", "parameters": {"weight": 0.5}},
                     {"model": "y", "parameters": {"weight": 1.5}}], "parameters": {"lambda": 0.8}}
    keys = config_values(ta, root=tmp_path)
    assert keys["space"] == "task-vectors" and keys["experts"] == ["x", "y"]  # the base listed as a model is the base
    assert keys["start"] == [0.25, 0.75] and keys["scale"] == pytest.approx(1.6) and keys["dtype"] == "bfloat16"
    ties = dict(ta, merge_method="ties", parameters={"lambda": 0.8})  # normalize: the weights' sum cancels
    assert config_values(ties, root=tmp_path)["scale"] == pytest.approx(0.8)
    lora = {"merge_method": "linear", "models": [{"model": "b+a1", "parameters": {"weight": 1.0}},
                                                 {"model": "b+a2", "parameters": {"weight": 3.0}}]}
    keys = config_values(lora, root=tmp_path)
    assert (keys["space"], keys["base"], keys["experts"], keys["start"]) == ("lora", "b", ["a1", "a2"], [0.25, 0.75])
    (tmp_path / "x").mkdir()
    assert config_values(ta, root=tmp_path)["experts"][0] == str(tmp_path / "x")  # found beside the file


def test_what_cannot_be_expressed_is_named() -> None:
    base = {"merge_method": "linear", "models": [{"model": "a", "parameters": {"weight": 1.0}},
                                                 {"model": "b", "parameters": {"weight": 1.0}}]}
    with pytest.raises(ValueError, match="weights summing to 2 leaves the simplex"):
        config_values(dict(base, parameters={"normalize": False}), root=Path("."))
    with pytest.raises(ValueError, match="unknown mergekit key 'merge_methd'"):
        config_values(dict(base, merge_methd="x"), root=Path("."))
    with pytest.raises(ValueError, match="mix base\\+adapter references and full models"):
        config_values(dict(base, models=[{"model": "b+a", "parameters": {"weight": 1.0}},
                                         {"model": "c", "parameters": {"weight": 1.0}}]), root=Path("."))
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        config_values(dict(base, models=[{"model": "a", "parameters": {"weight": -1.0}},
                                         {"model": "c", "parameters": {"weight": 1.0}}]), root=Path("."))


def test_export_paths_are_relative_to_the_files_folder_and_layers_are_filters(tmp_path: Path) -> None:
    out = tmp_path / "out"
    experts = [tmp_path / "ft" / "a", tmp_path / "ft" / "b"]
    kit, reason = export_config(kind="hf", space="ties", experts=experts, base=str(tmp_path / "base"), root=out,
                                alpha=[[0.25, 0.75], [0.5, 0.5]], scale=1.5,
                                method_record={"parameters": {"density": [0.5, 0.7], "normalize": True,
                                                              "rescale": False}},
                                per_tensor={"m.layers.1.w": 1, "m.layers.1.w.bias": 1, "m.emb": 0},
                                dtype="bfloat16", out_dtype="bfloat16")
    assert reason is None and kit["base_model"] == "../base" and kit["models"][1]["model"] == "../ft/b"
    weight = kit["models"][1]["parameters"]["weight"]
    assert [w["filter"] for w in weight] == ["m.layers.1.w.bias", "m.layers.1.w", "m.emb"]  # longest first
    assert [w["value"] for w in weight] == [0.5, 0.5, 0.75]
    assert kit["models"][0]["parameters"]["density"] == 0.5 and kit["parameters"]["lambda"] == 1.5
    assert "out_dtype" not in kit and kit["dtype"] == "bfloat16"
    none, why = export_config(kind="file", space="convex", experts=experts, base=None, root=out, alpha=[0.5, 0.5],
                              dtype="float32", out_dtype=None)
    assert none is None and "state dicts" in why
