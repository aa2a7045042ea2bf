"""The merge config: YAML, command-line overrides, relative paths, every bad key or value named."""

from __future__ import annotations

from pathlib import Path

import pytest

from spsa_mix.merge.config import MergeConfig, load_config


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ft").mkdir()
    for name in ("a", "b", "c"):
        (tmp_path / "ft" / name).mkdir()
    (tmp_path / "train.jsonl").write_text('{"text": "x"}\n')
    p = tmp_path / "merge.yaml"
    p.write_text(text)
    return p


def test_a_file_its_relative_paths_and_globs(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/*]\nbase: ft/a\nspace: task-vectors\nscale: learned\n"
                         "data:\n  train: train.jsonl\n  batch_size: 8\noutput: out\nbudget: 50\n"
                         "options: {lr: 0.05}\n")
    cfg = load_config(p)
    assert cfg.space == "task-vectors" and cfg.scale == "learned" and cfg.data.batch_size == 8
    assert cfg.data.train == str(tmp_path / "train.jsonl") and cfg.output == str(tmp_path / "out")
    assert [x.name for x in cfg.expert_paths()] == ["a", "b", "c"] and cfg.options == {"lr": 0.05}
    cfg.check_files()
    assert cfg.state_path() == tmp_path / "out.state"


def test_the_command_line_overrides_the_file(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/a, ft/b]\ndata: {train: train.jsonl, batch_size: 8}\nbudget: 50\n")
    cfg = load_config(p, {"budget": 80, "data": {"batch_size": 4, "validation": None}, "seed": None})
    assert cfg.budget == 80 and cfg.data.batch_size == 4 and cfg.data.train.endswith("train.jsonl")
    flags_only = load_config(None, {"experts": [str(tmp_path / "ft/a"), str(tmp_path / "ft/b")],
                                    "data": {"train": str(tmp_path / "train.jsonl")}, "output": "m"})
    assert flags_only.output == "m" and flags_only.method == "spsa"


@pytest.mark.parametrize(("text", "message"), [
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nbudgte: 3\n",
     r"unknown key 'budgte' in merge.yaml \(did you mean 'budget'\?\); valid keys: base, budget, "),
    ("experts: [ft/a, ft/b]\ndata: {train: train.jsonl, text_feild: t}\n",
     r"unknown key 'text_feild' in merge.yaml's data \(did you mean 'text_field'\?\)"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nspace: dare\n", "space must be one of convex, task-vectors, lora, but got 'dare'"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nspace: lora\n", "space 'lora' needs a base model"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nscale: 2.0\n", "scale applies to space 'task-vectors'"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nbudget: 0\n", "budget must be an integer >= 1, but got 0"),
    ("experts: [ft/a, ft/b]\n", "data.train must name the target data"),
    ("- a\n- b\n", "must be a mapping of keys to values, but holds a list"),
    ("experts: [ft/a, ft/b]\ndata: {train: train.jsonl, batch_size: -2}\n", "data.batch_size must be an integer >= 1"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nmemory: lazy\n",
     "memory must be one of auto, resident, streamed, but got 'lazy'"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nout_shard_size: 0\n",
     "out_shard_size must be a positive number of bytes or a string such as '5GB', but got 0"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nmax_memory: 3 apples\n", "max_memory must be a positive number"),
])
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        load_config(p)


def test_missing_files_are_named(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/a, ft/nope]\ndata: train.jsonl\n")
    with pytest.raises(ValueError, match="experts: no such file or folder .*ft/nope"):
        load_config(p).check_files()
    p.write_text("experts: [ft/z*]\ndata: train.jsonl\n")
    with pytest.raises(ValueError, match="the pattern .* matches no file or folder"):
        load_config(p).expert_paths()
    p.write_text("experts: [ft/a, ft/b]\ndata: {train: train.jsonl, validation: val.jsonl}\n")
    with pytest.raises(ValueError, match="data.validation: no such file or folder"):
        load_config(p).check_files()
    with pytest.raises(ValueError, match="no such config file"):
        load_config(tmp_path / "none.yaml")


def test_digest_names_the_settings() -> None:
    a = MergeConfig.from_dict({"experts": ["x", "y"], "data": "t.jsonl"})
    b = MergeConfig.from_dict({"experts": ["x", "y"], "data": "t.jsonl", "budget": 401})
    assert a.digest() == MergeConfig.from_dict(a.to_dict()).digest() != b.digest()
