"""The merge methods' keys of spsa-mix merge: every bad method, parameter or mergekit file is one line
and exit status 2, before any weight is read; a mergekit config imported as the space and start."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from spsa_mix.cli import main


def _error(argv: list[str], capsys, monkeypatch) -> str:
    import spsa_mix.merge.run as run

    def no_weights(*args, **kwargs):  # the checks come first: no expert is ever read
        raise AssertionError("run_merge was called: a bad input reached the weights")

    monkeypatch.setattr(run, "run_merge", no_weights)
    assert main(["merge", *argv, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err


def test_bad_methods_and_parameters_exit_2_with_one_line(demos: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    lm, base = str(demos / "lm.yaml"), str(demos / "build" / "lm" / "base")
    out = ["--output", str(tmp_path / "o")]
    bad = tmp_path / "bad.yaml"
    bad.write_text((demos / "lm.yaml").read_text().replace("space: convex", "space: dare"))
    assert "space must be one of convex, task-vectors, lora, ties" in _error([str(bad), *out], capsys, monkeypatch)
    assert "space 'ties' needs a base model" in _error([lm, "--space", "ties", *out], capsys, monkeypatch)
    assert "density must be a number in (0, 1]" in _error([lm, "--space", "ties", "--base", base, "--density", "1.5",
                                                           *out], capsys, monkeypatch)
    assert "density must be a number in (0, 1] or a list of 3" in _error(
        [lm, "--space", "ties", "--base", base, "--density", "0.5", "0.5", *out], capsys, monkeypatch)
    assert "gamma applies to space breadcrumbs / breadcrumbs_ties, but space is 'ties'" in _error(
        [lm, "--space", "ties", "--base", base, "--gamma", "0.1", *out], capsys, monkeypatch)
    assert "density applies to space" in _error([lm, "--density", "0.5", *out], capsys, monkeypatch)
    assert "della: density +/- epsilon must lie in (0, 1)" in _error(
        [lm, "--space", "della", "--base", base, "--density", "0.1", "--epsilon", "0.2", *out], capsys, monkeypatch)
    assert "slerp merges exactly 2 models" in _error([lm, "--baselines", "slerp", *out], capsys, monkeypatch)
    assert "model_stock needs a base model" in _error([lm, "--baselines", "model_stock", *out], capsys, monkeypatch)
    assert "unknown method 'karcher'" in _error([lm, "--baselines", "karcher", *out], capsys, monkeypatch)
    assert "consensus applies to the spaces" in _error([lm, "--consensus", "per-probe", *out], capsys, monkeypatch)


def _kit(tmp_path: Path, demos: Path, *, layered: bool = False, **changes) -> Path:
    experts = sorted((demos / "build" / "lm" / "experts").iterdir())
    cfg = {"merge_method": "ties", "base_model": str(demos / "build" / "lm" / "base"),
           "models": [{"model": str(p), "parameters": {"weight": w, "density": 0.5}}
                      for p, w in zip(experts, (1.0, 2.0, 1.0), strict=True)],
           "parameters": {"normalize": True, "lambda": 0.9}, "dtype": "float32"}
    if layered:
        cfg["models"][0]["parameters"]["weight"] = [0.1, 0.9]  # a gradient over the layers
    cfg.update(changes)
    path = tmp_path / "kit.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_an_inexpressible_mergekit_file_names_what(demos: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    data = ["--data", str(demos / "build/lm/target/train.jsonl"), "--max-length", "32", "--output", str(tmp_path / "o")]
    for changes, message in (
            ({"merge_method": "slerp"}, "merge_method 'slerp' cannot be learned by spsa_mix"),
            ({"merge_method": "karcher"}, "merge_method 'karcher' cannot be learned"),
            ({"slices": [{"sources": []}], "models": None}, "slices (layer ranges taken from several models)"),
            ({"tokenizer_source": "union"}, "tokenizer_source 'union'"),
            ({"parameters": {"gradient": [0.1, 0.9]}}, "parameter 'gradient' of ties cannot be expressed"),
            ({"base_model": None}, "ties needs base_model")):
        assert message in _error(["--from-mergekit", str(_kit(tmp_path, demos, **changes)), *data], capsys,
                                 monkeypatch)
    assert "models[0]'s weight must be a number" in _error(["--from-mergekit", str(_kit(tmp_path, demos, layered=True)),
                                                           *data], capsys, monkeypatch)


def test_a_mergekit_config_becomes_the_space_and_the_start(demos: Path, tmp_path: Path) -> None:
    kit = _kit(tmp_path, demos)
    out = tmp_path / "m"
    assert main(["merge", "--from-mergekit", str(kit), "--data", str(demos / "build/lm/target/train.jsonl"),
                 "--max-length", "32", "--budget", "9", "--output", str(out), "--baselines", "none",
                 "--no-progress", "--option", "start=\"uniform\""]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    assert recipe["config"]["space"] == "ties" and recipe["config"]["density"] == 0.5
    assert recipe["config"]["scale"] == 0.9 and recipe["config"]["dtype"] == "float32"
    assert recipe["space"]["consensus_fixed_at"] == pytest.approx([0.25, 0.5, 0.25])
    assert recipe["start"] == pytest.approx([0.25, 0.5, 0.25])  # the search starts at its weights


def test_select_best_scores_every_baseline_and_writes_the_best(demos: Path, tmp_path: Path) -> None:
    lm = demos / "build" / "lm"
    out = tmp_path / "two"
    assert main(["merge", str(demos / "lm.yaml"), "--experts", str(lm / "experts" / "domains_0_1"),
                 str(lm / "experts" / "domains_2_3"), "--base", str(lm / "base"), "--budget", "9",
                 "--output", str(out), "--no-progress"]) == 0  # space convex: the base serves the baselines
    recipe = json.loads((out / "recipe.json").read_text())
    cands = recipe["candidates"]
    assert {"uniform", "best single", "learned", "base", "model_stock", "slerp", "nuslerp", "ties",
            "task_arithmetic"} <= set(cands) and "linear" not in cands  # linear at defaults is the uniform blend
    assert cands["dare_ties"]["same_merge_as"] == ["breadcrumbs_ties"]  # at density 1 they coincide
    best = min(cands[c]["loss"] for c in cands)  # the lowest, or the learned blend tied with it (report.TIE_RTOL)
    assert cands[recipe["written"]]["loss"] == best or (
        recipe["written"] == "learned" and cands["learned"]["loss"] <= best + 1e-5 * abs(best))
    kit = yaml.safe_load((out / "mergekit.yaml").read_text())
    written = cands[recipe["written"]]
    if "method" in written and written["method"] not in ("base", "expert"):
        assert kit["merge_method"] == written["method"]
