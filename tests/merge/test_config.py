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
     r"unknown key 'budgte' in merge.yaml \(did you mean 'budget'\?\); valid keys: base, baselines, budget, "),
    ("experts: [ft/a, ft/b]\ndata: {train: train.jsonl, text_feild: t}\n",
     r"unknown key 'text_feild' in merge.yaml's data \(did you mean 'text_field'\?\)"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nspace: dare\n", "space must be one of convex, task-vectors, lora, ties, dare_ties, .*, but got 'dare'"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nspace: lora\n", "space 'lora' needs a base model"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nscale: 2.0\n", "scale applies to space 'task-vectors'"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nbudget: 0\n", "budget must be an integer >= 1, but got 0"),
    ("experts: [ft/a, ft/b]\n", "data.train must name the target data"),
    ("- a\n- b\n", "must be a mapping of keys to values, but holds a list"),
    ("experts: [ft/a, ft/b]\ndata: {train: train.jsonl, batch_size: -2}\n", "data.batch_size must be an integer >= 1"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nthreads: 0\n", "threads must be 'auto' or an integer >= 1, but got 0"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nthreads: many\n", "threads must be 'auto' or an integer >= 1, but got 'many'"),
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


@pytest.mark.parametrize(("text", "message"), [
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nbase: 5\nspace: task-vectors\n",
     "base must be a non-empty string \\(a path or a name\\), but got 5"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nmodel: 5\n", "model must be a non-empty string"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nloss: [1]\n", "loss must be a non-empty string"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\ndevice: 0\n", "device must be a non-empty string"),
    ("experts: [ft/a, ft/b]\ndata: 5\n", "data in merge.yaml must be a mapping .* or a path, but got int 5"),
    ("experts: [ft/a, ft/b]\ndata: [1, 2]\n", "data in merge.yaml must be a mapping .* but got list \\[1, 2\\]"),
])
def test_wrong_typed_values_are_named_with_the_command_lines_data_too(tmp_path: Path, text: str,
                                                                      message: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        load_config(p, {"data": {"batch_size": None, "train": None}})  # as the command line gives it


def test_a_yaml_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    import tracemalloc

    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    p = _write(tmp_path, "experts: [ft/a, ft/b]\ndata: train.jsonl\noptions:\n  lr: 0.1\n  bomb:\n" +
               "".join(f"    {line}\n" for line in lines))
    assert len(p.read_bytes()) < 1000  # 9**9 strings once expanded
    tracemalloc.start()
    with pytest.raises(ValueError, match="holds more than 100000 values once its aliases .* are expanded: refused"):
        load_config(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20


@pytest.mark.parametrize(("text", "message"), [
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\nbudget: 3\nbudget: 5\n", "the key 'budget' is given twice"),
    ("experts: [ft/a, ft/b]\ndata: {train: train.jsonl, train: x.jsonl}\n", "the key 'train' is given twice"),
    ("experts: [ft/a, ft/b]\ndata: train.jsonl\noutput: ''\n", "output must be a path, but got ''"),
    ("experts: [ft/a, ft/b]\ndata: {train: ''}\n", "data.train must be a non-empty string, but got ''"),
])
def test_duplicate_keys_and_empty_paths_are_refused(tmp_path: Path, text: str, message: str) -> None:
    p = _write(tmp_path, text)
    with pytest.raises(ValueError, match=message):
        load_config(p)


def test_a_yaml_merge_key_is_no_duplicate(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/a, ft/b]\ndata: &d {train: train.jsonl, batch_size: 4}\n"
                         "options: {<<: {lr: 0.1}, m: 2}\n")
    assert load_config(p).options == {"lr": 0.1, "m": 2}


def test_a_config_that_is_a_folder_or_not_utf8_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{str(tmp_path)!r} is a folder, not a config file"):
        load_config(tmp_path)
    p = tmp_path / "latin1.yaml"
    p.write_bytes("experts: [caf\xe9]\n".encode("latin-1"))
    with pytest.raises(ValueError, match="cannot read the config '.*latin1.yaml': it is not UTF-8 text \\(byte 13"):
        load_config(p)


def test_home_and_environment_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _write(tmp_path, "experts: ['~/ft/a', '$ROOT/ft/b']\ndata: ${ROOT}/train.jsonl\noutput: ~/out\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("ROOT", str(tmp_path))
    cfg = load_config(p, {"base": "$ROOT/ft/c"})
    assert cfg.experts == (str(tmp_path / "ft/a"), str(tmp_path / "ft/b")) and cfg.output == str(tmp_path / "out")
    assert cfg.data.train == str(tmp_path / "train.jsonl") and cfg.base == str(tmp_path / "ft/c")
    cfg.check_files()


def test_threads_default_to_auto_and_take_a_count(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/a, ft/b]\ndata: train.jsonl\n")
    assert load_config(p).threads == "auto"
    assert load_config(p, {"threads": 3}).threads == 3


def test_a_hub_id_gets_a_hint_to_download_it_first(tmp_path: Path) -> None:
    p = _write(tmp_path, "experts: [ft/a, meta-llama/Llama-3.2-1B]\ndata: train.jsonl\n")
    with pytest.raises(ValueError, match=r"no such file or folder .*meta-llama/Llama-3.2-1B.*Hugging Face hub id.*"
                                         r"huggingface-cli download meta-llama/Llama-3.2-1B --local-dir"):
        load_config(p).check_files()
    p.write_text("experts: [ft/a, ft/b]\nbase: org/base-model\nspace: task-vectors\ndata: train.jsonl\n")
    with pytest.raises(ValueError, match=r"base: no such file or folder .*huggingface-cli download org/base-model"):
        load_config(p).check_files()
    p.write_text("experts: [ft/a, ft/nope]\ndata: train.jsonl\n")
    with pytest.raises(ValueError) as info:  # a path that only looks like one: no hint
        load_config(p).check_files()
    assert "hub id" not in str(info.value)


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
