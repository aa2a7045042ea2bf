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


# ---------------------------------------------------------------------- several targets (data.tasks)
TASKS = ("experts: [ft/a, ft/b]\noutput: out\ndata:\n  batch_size: 8\n  tasks:\n"
         "    - {name: animals, train: train.jsonl, loss: entropy, head: fc, weight: 2}\n"
         "    - {name: fashion, train: train.jsonl, validation: train.jsonl, head: [fc, norm], batch_size: 4,"
         " head_file: train.jsonl, expert: ft/b}\n")


def test_tasks_take_the_shared_data_keys_and_their_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, TASKS))
    a, f = cfg.data.tasks
    assert (a.name, a.loss, a.head, a.weight, a.batch_size, a.train) == (
        "animals", "entropy", "fc", 2.0, 8, str(tmp_path / "train.jsonl"))
    assert (f.head, f.batch_size, f.weight, f.expert, f.head_file) == (
        ("fc", "norm"), 4, 1.0, str(tmp_path / "ft/b"), str(tmp_path / "train.jsonl"))
    assert f.data_config().validation == str(tmp_path / "train.jsonl") and cfg.data.train is None
    cfg.check_files()
    assert MergeConfig.from_dict(cfg.to_dict()).digest() == cfg.digest()
    one = MergeConfig.from_dict({"experts": ["x", "y"], "data": "t.jsonl"})
    assert "tasks" not in one.to_dict()["data"]  # one-target configs keep their digest


@pytest.mark.parametrize(("tasks", "message"), [
    ("[]", "data.tasks must be a non-empty list"),
    ("[{train: train.jsonl}]", r"data.tasks\[0\]: name must be a non-empty string"),
    ("[{name: a}]", r"data.tasks\[0\] \('a'\) has no data: give its train"),
    ("[{name: a, train: train.jsonl}, {name: a, train: train.jsonl}]", r"data.tasks\[1\] \('a'\): the name is used by two"),
    ("[{name: a, train: train.jsonl, weight: 0}]", r"\('a'\): weight must be a positive number, but got 0"),
    ("[{name: a, train: train.jsonl, weight: -1}]", "but got -1"),
    ("[{name: a, train: train.jsonl, weight: true}]", "but got True"),
    ("[{name: a, train: train.jsonl, weight: .nan}]", "but got nan"),
    ("[{name: a, train: train.jsonl, head: ''}]", "head must be a prefix of tensor names"),
    ("[{name: a, train: train.jsonl, head_file: x.pt}]", "head_file needs head"),
    ("[{name: a, train: train.jsonl, expert: -1}]", "expert must be an index into the experts"),
    ("[{name: a, train: train.jsonl, wieght: 2}]", r"unknown key 'wieght' in merge.yaml's data.tasks\[0\] \(did you mean 'weight'\?\)"),
])
def test_bad_tasks_are_named(tmp_path: Path, tasks: str, message: str) -> None:
    p = _write(tmp_path, f"experts: [ft/a, ft/b]\ndata:\n  tasks: {tasks}\n")
    with pytest.raises(ValueError, match=message):
        load_config(p)


def test_a_task_file_that_is_missing_is_named(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/a, ft/b]\ndata:\n  train: train.jsonl\n  tasks: [{name: a, train: train.jsonl}]\n")
    with pytest.raises(ValueError, match="data.train and data.validation belong to each task"):
        load_config(p)
    p.write_text("experts: [ft/a, ft/b]\ndata:\n  tasks: [{name: a, train: nope.jsonl}]\n")
    with pytest.raises(ValueError, match=r"data.tasks\[0\] \('a'\).train: no such file or folder"):
        load_config(p).check_files()
    p.write_text("experts: [ft/a, ft/b]\ndata:\n  tasks: [{name: a, train: train.jsonl, head: fc, head_file: h.pt}]\n")
    with pytest.raises(ValueError, match=r"data.tasks\[0\] \('a'\).head_file: no such file"):
        load_config(p).check_files()
