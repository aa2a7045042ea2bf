"""spsa-mix merge on the examples' experts: what it refuses (exit 2, one line, before any
weight is read), what it keeps (inputs, state, results) and how it resumes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")

from spsa_mix.cli import main  # noqa: E402


@pytest.fixture
def lm(merge_demos) -> Path:
    """The lm example's root (config lm.yaml, experts under build/lm)."""
    return merge_demos("lm")


def _merge(*argv: str) -> int:
    return main(["merge", *argv, "--no-progress"])


def _refused(capsys: pytest.CaptureFixture[str], *argv: str, logged: bool = False) -> str:
    """The one line a refused merge prints (exit status 2); ``logged``: after the log's lines
    (a refusal made once the experts are read), else alone."""
    capsys.readouterr()
    assert _merge(*argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and (logged or err.count("\n") == 0), err
    err = err.splitlines()[-1]
    assert err.startswith("spsa-mix merge: error: "), err
    return err


def _copy_experts(lm: Path, tmp_path: Path) -> Path:
    ex = tmp_path / "ex"
    shutil.copytree(lm / "build" / "lm" / "experts", ex)
    return ex


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_never_replaces_an_input(lm: Path, tmp_path: Path, capsys) -> None:
    ex = _copy_experts(lm, tmp_path)
    before = _tree(ex)
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output", str(ex), "--overwrite")
    assert "holds experts[0]" in msg
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output", str(ex / "domains_0_1"),
                   "--overwrite")
    assert "is experts[0]" in msg
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output",
                   str(lm / "build" / "lm" / "base" / "merged"))
    assert "lies inside model" in msg
    assert _tree(ex) == before and not (tmp_path / "ex.state").exists()


def _killed_run(lm: Path, out: Path, *extra: str) -> Path:
    """The lm merge into ``out``, SIGKILLed once its state holds two steps; returns the state's path."""
    from .signal_helpers import kill_once_saved

    state = out.with_name(out.name + ".state")
    kill_once_saved(["merge", str(lm / "lm.yaml"), "--budget", "81", "--checkpoint-every", "1", "--no-progress",
                     "--output", str(out), *extra], state, 2)
    return state


def test_resume_refuses_a_changed_config_or_input_naming_it(lm: Path, tmp_path: Path, capsys) -> None:
    ex = _copy_experts(lm, tmp_path)
    names = ["domains_0_1", "domains_2_3", "domains_4_5"]
    experts = ["--experts", *(str(ex / n) for n in names)]
    out = tmp_path / "m"
    state = _killed_run(lm, out, *experts)
    saved = state.read_bytes()
    target = lm / "build" / "lm" / "target"
    resume = [str(lm / "lm.yaml"), "--budget", "81", "--output", str(out), "--resume"]
    msg = _refused(capsys, *resume, "--experts", *(str(ex / n) for n in names[::-1]))  # reordered
    assert "cannot resume" in msg and "experts[0] differs from the run's" in msg and "domains_4_5" in msg
    assert "data.batch_size was 32, now 16" in _refused(capsys, *resume, *experts, "--batch-size", "16")
    assert "data.max_length was 32, now 24" in _refused(capsys, *resume, *experts, "--max-length", "24")
    assert "dtype was None, now 'bfloat16'" in _refused(capsys, *resume, *experts, "--dtype", "bfloat16")
    msg = _refused(capsys, *resume, *experts, "--data", str(target / "validation.jsonl"))
    assert "data.train differs from the run's" in msg
    msg = _refused(capsys, *resume, *experts, "--validation", str(target / "train.jsonl"))
    assert "data.validation differs from the run's" in msg
    assert "seed was 0, now 3" in _refused(capsys, *resume, *experts, "--seed", "3")
    assert "budget was 81, now 41" in _refused(capsys, *resume, *experts, "--budget", "41")
    replaced = ex / names[1] / "model.safetensors"
    replaced.write_bytes((ex / names[2] / "model.safetensors").read_bytes())  # one expert replaced in place
    msg = _refused(capsys, *resume, *experts)
    assert "experts[1] differs from the run's: model.safetensors: " in msg and "content changed" in msg
    assert state.read_bytes() == saved  # every refusal keeps the state
    shutil.copyfile(lm / "build" / "lm" / "experts" / names[1] / "model.safetensors", replaced)
    msg = _refused(capsys, *resume, *experts)
    assert "experts[1] differs from the run's: model.safetensors: modified" in msg  # same bytes, touched since
    os_utime = __import__("os").utime
    stamp = (ex / names[0] / "model.safetensors").stat()
    os_utime(replaced, ns=(stamp.st_atime_ns, _recorded_mtime(out, "experts[1]")))
    assert _merge(*resume, *experts) == 0 and (out / "recipe.json").is_file()
    assert not state.exists() and not out.with_name("m.fingerprint.json").exists()


def _recorded_mtime(out: Path, label: str) -> int:
    import json

    record = json.loads(out.with_name(out.name + ".fingerprint.json").read_text())
    return int(record["inputs"][label]["files"]["model.safetensors"][1])


def test_a_run_stopped_in_its_write_phase_resumes_by_finishing_it(lm: Path, tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    import json

    import spsa_mix.io

    common = [str(lm / "lm.yaml"), "--budget", "21", "--select", "learned"]
    assert _merge(*common, "--output", str(tmp_path / "whole")) == 0
    out = tmp_path / "m"
    real = spsa_mix.io.write_json

    def interrupted(value, path, **kw):  # Ctrl-C after the model is renamed into place, before recipe.json
        if Path(path).name == "recipe.json":
            raise KeyboardInterrupt
        return real(value, path, **kw)

    monkeypatch.setattr(spsa_mix.io, "write_json", interrupted)
    assert _merge(*common, "--output", str(out)) == 130
    assert "run again with --resume" in capsys.readouterr().err
    monkeypatch.setattr(spsa_mix.io, "write_json", real)
    assert (out / "model.safetensors").is_file() and not (out / "recipe.json").exists()
    # what a kill leaves beside the output: a folder being written, a replaced one, state temporaries
    stale = [tmp_path / ".m.ab12cd_9.tmp", tmp_path / ".m.old.zz99yy_1", tmp_path / ".m.0123456789abcdef.tmp",
             tmp_path / ".m.fingerprint.fedcba9876543210.tmp", out / ".recipe.00112233aabbccdd.tmp"]
    for p in stale[:2]:
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"partial")
    for p in stale[2:]:
        p.write_text("{")
    keep = tmp_path / ".m-other.ab12cd_9.tmp"  # another output's: not this run's to remove
    keep.mkdir()
    assert _merge(*common, "--output", str(out), "--resume") == 0
    assert not any(p.exists() for p in stale) and keep.is_dir()
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    a, b = (json.loads((p / "recipe.json").read_text()) for p in (tmp_path / "whole", out))
    assert a["alpha"] == b["alpha"] and a["history"] == b["history"]
    assert (out / "loss.png").is_file() and not (tmp_path / "m.state").exists()


def test_a_full_disk_is_found_before_the_search(lm: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import collections

    import spsa_mix.merge.checks as checks

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 10**5, 10**5))
    msg = _refused(capsys, str(lm / "lm.yaml"), "--output", str(tmp_path / "m"))
    assert "not enough free space for the merged model: it needs about" in msg and "0.1 MB free" in msg


def test_a_failed_write_keeps_the_state_and_says_how_to_resume(lm: Path, tmp_path: Path, capsys,
                                                                monkeypatch) -> None:
    import errno

    from spsa_mix.blend import BlendedObjective

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".m.x1y2z3w4.tmp" / "model.safetensors"))

    common = [str(lm / "lm.yaml"), "--budget", "11", "--output", str(tmp_path / "m")]
    monkeypatch.setattr(BlendedObjective, "save_pretrained", full)
    capsys.readouterr()
    assert _merge(*common) == 1
    printed = capsys.readouterr().err
    assert "Traceback" not in printed and printed.strip().splitlines()[-1].startswith("spsa-mix merge: error: ")
    err = printed.strip().splitlines()[-1]
    assert "No space left on device (the disk is full)" in err, err
    assert "the run's state is kept in" in err and "--resume" in err
    assert (tmp_path / "m.state").is_file() and not (tmp_path / "m").exists()
    monkeypatch.undo()
    assert _merge(*common, "--resume") == 0 and (tmp_path / "m" / "recipe.json").is_file()


def test_a_second_merge_into_one_output_is_refused_at_its_start(lm: Path, tmp_path: Path, capsys) -> None:
    import os
    import subprocess
    import sys

    lock = tmp_path / "m.lock"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock.write_text(f"pid={holder.pid}\nhost={__import__('socket').gethostname()}\nstarted=\n")
        msg = _refused(capsys, str(lm / "lm.yaml"), "--budget", "5", "--output", str(tmp_path / "m"))
        assert f"another merge into {str(tmp_path / 'm')!r} is running (process {holder.pid}" in msg
    finally:
        holder.kill()
        holder.wait()
    assert lock.exists() and not (tmp_path / "m").exists()  # refused: nothing written, the lock left to its holder
    assert _merge(str(lm / "lm.yaml"), "--budget", "5", "--output", str(tmp_path / "m")) == 0  # its holder is gone
    assert not lock.exists() and os.listdir(tmp_path) == ["m"]


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if an expert is read."""
    from spsa_mix.blend import BlendedObjective

    def refuse(*args, **kwargs):
        raise AssertionError("an expert was read before the refusal")

    monkeypatch.setattr(BlendedObjective, "from_pretrained", refuse)


@pytest.mark.parametrize(("extra", "message"), [
    ("options: {max_evals: 3}", "options: 'max_evals' is set by the config key budget"),
    ("options: {checkpoint: x}", "options: 'checkpoint' is set by the merge"),
    ("options: {lrr: 0.1}", "options: unknown key 'lrr' (did you mean 'lr'?)"),
    ("options: {lr: -1}", "options: lr must be positive, but got -1"),
    ("base: 5", "base must be a non-empty string (a path or a name), but got 5"),
    ("model: 5", "model must be a non-empty string"),
])
def test_bad_values_exit_2_before_any_weight_is_read(lm: Path, tmp_path: Path, capsys, no_loading, extra: str,
                                                     message: str) -> None:
    cfg = tmp_path / "c.yaml"
    text = (lm / "lm.yaml").read_text()
    if extra.startswith("model:"):
        text = text.replace("model: build/lm/base", extra)
    else:
        text += extra + "\n"
    cfg.write_text(text.replace("build/", str(lm / "build") + "/"))
    assert message in _refused(capsys, str(cfg), "--output", str(tmp_path / "m"))


@pytest.mark.parametrize("data", ["5", "[1, 2]"])
def test_a_data_value_that_is_no_mapping_nor_path_exits_2(lm: Path, tmp_path: Path, capsys, data: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"experts: [{lm / 'build/lm/experts'}/*]\nmodel: {lm / 'build/lm/base'}\ndata: {data}\n")
    assert "data in c.yaml must be a mapping" in _refused(capsys, str(cfg), "--output", str(tmp_path / "m"))


def test_a_loss_that_is_not_finite_is_refused_at_the_first_evaluation_naming_its_cause(
        merge_demos, tmp_path: Path, capsys) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    lm = merge_demos("lm")
    words = tmp_path / "words.txt"  # one word a line: no next token to predict
    words.write_text("".join(f"w{i % 40 + 1}\n" for i in range(100)))
    msg = _refused(capsys, str(lm / "lm.yaml"), "--data", str(words), "--validation", str(words), "--output",
                   str(tmp_path / "a"))
    assert "words.txt: no example has 2 tokens or more" in msg
    ex = _copy_experts(lm, tmp_path)
    weights = ex / "domains_2_3" / "model.safetensors"
    tensors = load_file(str(weights))
    tensors["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(tensors, str(weights), metadata={"format": "pt"})
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), "--output", str(tmp_path / "b"),
                   logged=True)
    assert "experts[1]" in msg and "domains_2_3' holds NaN or infinite weights (tensor " \
        "'model.layers.0.mlp.up_proj.weight')" in msg
    vision = merge_demos("vision")
    train = torch.load(vision / "build/vision/target/train.pt", weights_only=True)
    train["inputs"][3, 0, 0, 0] = float("nan")
    torch.save(train, tmp_path / "nan.pt")
    msg = _refused(capsys, str(vision / "vision.yaml"), "--data", str(tmp_path / "nan.pt"), "--output",
                   str(tmp_path / "c"), logged=True)
    assert "nan.pt'" in msg and "inputs of example 3 hold NaN or infinite values" in msg
    assert not any((tmp_path / n).exists() for n in "abc")


def test_max_length_beyond_the_models_context_exits_2(lm: Path, tmp_path: Path, capsys, no_loading) -> None:
    msg = _refused(capsys, str(lm / "lm.yaml"), "--max-length", "100000", "--output", str(tmp_path / "m"))
    assert "data.max_length is 100000, but the model in" in msg and "takes at most 32 tokens " \
        "(max_position_embeddings in its config.json)" in msg


def test_a_target_with_fewer_classes_than_the_experts_merges(merge_demos, tmp_path: Path, capsys) -> None:
    import json

    import torch

    vision = merge_demos("vision")
    for split in ("train", "validation"):  # labels 0-6 of the experts' 10 classes
        t = torch.load(vision / f"build/vision/target/{split}.pt", weights_only=True)
        keep = t["targets"] < 7
        torch.save({"inputs": t["inputs"][keep], "targets": t["targets"][keep]}, tmp_path / f"{split}.pt")
    common = [str(vision / "vision.yaml"), "--data", str(tmp_path / "train.pt"), "--validation",
              str(tmp_path / "validation.pt"), "--budget", "11"]
    assert _merge(*common, "--output", str(tmp_path / "m")) == 0
    assert len(json.loads((tmp_path / "m" / "recipe.json").read_text())["learned"]["alpha"]) == 3
    t = torch.load(tmp_path / "train.pt", weights_only=True)
    t["targets"][0] = 12  # a class the experts' head does not have
    torch.save(t, tmp_path / "train.pt")
    msg = _refused(capsys, *common, "--output", str(tmp_path / "n"), logged=True)
    assert "train.pt has labels up to 12, but the experts' head (fc.weight of" in msg and "has 10 classes" in msg


def test_lora_adapters_of_a_renamed_base_merge_and_strict_base_is_a_key(merge_demos, tmp_path: Path, capsys) -> None:
    import json

    lora = merge_demos("lora")
    base = tmp_path / "my-base"
    shutil.copytree(lora / "build/lora/base", base)  # the adapters record the original's path
    common = [str(lora / "lora.yaml"), "--base", str(base), "--budget", "5"]
    assert _merge(*common, "--output", str(tmp_path / "a")) == 0
    adapters = tmp_path / "adapters"
    shutil.copytree(lora / "build/lora/adapters", adapters)
    for cfg in adapters.glob("*/adapter_config.json"):  # trained on a base that is not on this machine
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "base_model_name_or_path": "org/tiny-llama"}))
    msg = _refused(capsys, *common, "--experts", str(adapters / "*"), "--output", str(tmp_path / "b"), logged=True)
    assert "base_model_name_or_path='org/tiny-llama'" in msg and "--no-strict-base" in msg
    assert _merge(*common, "--experts", str(adapters / "*"), "--no-strict-base", "--output", str(tmp_path / "c")) == 0
    cfg = tmp_path / "c.yaml"
    cfg.write_text((lora / "lora.yaml").read_text().replace("build/", f"{lora}/build/") + "strict_base: false\n")
    assert _merge(str(cfg), "--base", str(base), "--experts", str(adapters / "*"), "--budget", "5", "--output",
                  str(tmp_path / "d")) == 0


def _gpt2_experts(root: Path, k: int = 2) -> tuple[list[Path], Path]:
    """``k`` tiny GPT-2 experts (``GPT2LMHeadModel``, 32 positions) with a word tokenizer, and
    target text."""
    import json

    import torch
    import transformers

    from spsa_mix.merge.demo import word_tokenizer

    tok = word_tokenizer(40)
    config = transformers.GPT2Config(vocab_size=len(tok), n_positions=32, n_embd=16, n_layer=1, n_head=2,
                                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    experts = []
    for i in range(k):
        torch.manual_seed(i)
        experts.append(root / f"gpt2_{i}")
        transformers.GPT2LMHeadModel(config).save_pretrained(experts[-1])
        tok.save_pretrained(experts[-1])
    data = root / "text.jsonl"
    data.write_text("".join(json.dumps({"text": " ".join(f"w{(i * 7 + j) % 39 + 1}" for j in range(12))}) + "\n"
                            for i in range(64)))
    return experts, data


def test_gpt2_experts_merge_as_a_causal_lm_and_their_context_is_checked(tmp_path: Path, capsys) -> None:
    import json

    experts, data = _gpt2_experts(tmp_path)
    common = ["--experts", *map(str, experts), "--data", str(data), "--budget", "7", "--max-length", "16"]
    assert _merge(*common, "--output", str(tmp_path / "m")) == 0
    assert "next-token accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "m" / "recipe.json").read_text())["config"]["loss"] is None  # chosen: causal-lm
    msg = _refused(capsys, *common, "--max-length", "64", "--output", str(tmp_path / "n"))
    assert "takes at most 32 tokens (n_positions in its config.json)" in msg


@pytest.mark.parametrize("dtype", [None, "float32", "float16"])
def test_float16_state_dict_experts_merge_whatever_the_forwards_dtype(merge_demos, tmp_path: Path,
                                                                     dtype: str | None) -> None:
    from safetensors.torch import load_file, save_file

    vision = merge_demos("vision")
    for f in [*(vision / "build/vision/experts").glob("*.safetensors"), vision / "build/vision/base.safetensors"]:
        save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(f)).items()},
                  str(tmp_path / f.name))
    flags = ["--dtype", dtype] if dtype else []
    assert _merge(str(vision / "vision.yaml"), "--experts", *(str(tmp_path / f"{n}.safetensors") for n in
                  ("noise", "mirror", "contrast")), "--base", str(tmp_path / "base.safetensors"), "--budget", "11",
                  "--output", str(tmp_path / "m"), *flags) == 0
    merged = load_file(str(tmp_path / "m" / "model.safetensors"))
    written = __import__("torch").float32 if dtype == "float32" else __import__("torch").float16
    assert {v.dtype for v in merged.values() if v.is_floating_point()} == {written}  # --dtype, else the stored one


def test_an_expert_named_twice_is_refused(lm: Path, tmp_path: Path, capsys, no_loading) -> None:
    ex = lm / "build/lm/experts"
    (tmp_path / "alias").symlink_to(ex / "domains_0_1")
    msg = _refused(capsys, str(lm / "lm.yaml"), "--experts", str(ex / "*"), str(tmp_path / "alias"), "--output",
                   str(tmp_path / "m"))
    assert "experts[3] " in msg and "alias' is experts[0] " in msg and "under another name" in msg


def test_an_output_that_is_a_link_is_written_where_it_leads(lm: Path, tmp_path: Path) -> None:
    (tmp_path / "disk").mkdir()
    (tmp_path / "m").symlink_to(tmp_path / "disk")
    assert _merge(str(lm / "lm.yaml"), "--budget", "5", "--output", str(tmp_path / "m")) == 0
    assert (tmp_path / "m").is_symlink() and (tmp_path / "disk" / "model.safetensors").is_file()
    assert _merge(str(lm / "lm.yaml"), "--budget", "5", "--output", str(tmp_path / "m"), "--overwrite") == 0
    assert (tmp_path / "m").is_symlink() and (tmp_path / "disk" / "recipe.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["disk", "m"]


def test_a_loss_callable_of_the_wrong_signature_exits_2_before_loading(lm: Path, tmp_path: Path, capsys,
                                                                       no_loading) -> None:
    msg = _refused(capsys, str(lm / "lm.yaml"), "--loss", "math:sqrt", "--output", str(tmp_path / "m"))
    assert "loss 'math:sqrt' must take (outputs, targets)" in msg


def _wait_for(predicate, proc, what: str, deadline_s: float = 240) -> None:
    import time

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if predicate():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail(f"{what} never happened (exit status {proc.poll()})")


def test_a_real_ctrl_c_exits_130_keeps_the_state_frees_the_lock_and_resumes_bit_for_bit(lm: Path, tmp_path: Path):
    import json
    import os
    import signal
    import subprocess
    import sys

    from .signal_helpers import default_sigint

    if os.name != "posix":
        pytest.skip("SIGINT to a subprocess needs POSIX")
    common = [str(lm / "lm.yaml"), "--budget", "61", "--checkpoint-every", "2", "--select", "learned"]
    assert _merge(*common, "--output", str(tmp_path / "whole")) == 0
    out, state = tmp_path / "m", tmp_path / "m.state"
    proc = subprocess.Popen([sys.executable, "-m", "spsa_mix", "merge", *common, "--no-progress", "--output", str(out)],
                            cwd=Path(__file__).resolve().parents[2], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        _wait_for(lambda: json.loads(state.read_text())["run"]["nit"] >= 4, proc, "a saved step")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130 and "run again with --resume" in err and "Traceback" not in err, err
    assert state.exists() and not (tmp_path / "m.lock").exists() and not out.exists()
    assert _merge(*common, "--output", str(out), "--resume") == 0
    a, b = (p / "model.safetensors" for p in (tmp_path / "whole", out))
    assert a.read_bytes() == b.read_bytes()


def test_a_kill_in_the_write_phase_resumes_to_the_same_model(lm: Path, tmp_path: Path) -> None:
    """SIGKILL once the model is renamed into place, before recipe.json: the process leaves its
    lock (its pid gone), the state and the record; --resume finishes the write."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    common = [str(lm / "lm.yaml"), "--budget", "21", "--select", "learned", "--no-progress"]
    assert _merge(*common[:-1], "--output", str(tmp_path / "whole")) == 0
    out = tmp_path / "m"
    slow_recipe = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import spsa_mix.io as io
        real = io.write_json
        def write_json(value, path, **kw):
            if Path(path).name == "recipe.json":
                time.sleep(600)  # killed here
            return real(value, path, **kw)
        io.write_json = write_json
        from spsa_mix.cli import main
        sys.exit(main(["merge", *{common!r}, "--output", {str(out)!r}]))
    """)
    proc = subprocess.Popen([sys.executable, "-c", slow_recipe], cwd=Path(__file__).resolve().parents[2],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (out / "model.safetensors").is_file(), proc, "the model renamed into place")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "m.lock").exists() and (tmp_path / "m.state").exists() and not (out / "recipe.json").exists()
    assert json.loads((tmp_path / "m.fingerprint.json").read_text())["phase"] == "write"
    assert _merge(*common[:-1], "--output", str(out)) == 2  # without --resume: an output that is not empty
    assert _merge(*common[:-1], "--output", str(out), "--resume") == 0
    assert (out / "model.safetensors").read_bytes() == (tmp_path / "whole" / "model.safetensors").read_bytes()
    a, b = (json.loads((p / "recipe.json").read_text()) for p in (tmp_path / "whole", out))
    assert a["alpha"] == b["alpha"] and a["history"] == b["history"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "whole"]  # no lock, state, record or temporaries
