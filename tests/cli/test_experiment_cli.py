"""``spsa-mix experiment``: options, defaults by dataset, error messages, a tiny run."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from spsa_mix.cli import experiment as experiment_cli

from .signal_helpers import interrupt_once_saved


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spsa-mix experiment")
    experiment_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_importing_the_command_does_not_import_torch() -> None:
    code = "import sys, spsa_mix.cli.experiment as g, argparse; g.add_arguments(argparse.ArgumentParser()); " \
           "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_defaults_by_dataset() -> None:
    digits = experiment_cli.config_from_args(parse())
    assert (digits.dataset, digits.k, digits.per_expert, digits.target_size, digits.budget) == ("digits", 10, 80, 300, 400)
    fashion = experiment_cli.config_from_args(parse("--dataset", "fashion-mnist", "--expert-epochs", "10"))
    assert (fashion.per_expert, fashion.target_size, fashion.expert_epochs) == (2000, 10_000, 10)
    custom = experiment_cli.config_from_args(parse("--k", "3", "--per-expert", "10", "20", "30", "--seeds", "4", "9",
                                             "--configs", "spsa", "backprop", "--m", "2"))
    assert custom.per_expert == (10, 20, 30) and custom.seeds == (4, 9) and custom.configs == ("spsa", "backprop")
    assert experiment_cli.config_from_args(parse("--seeds", "2")).seeds == (0, 1)
    quick = experiment_cli.config_from_args(parse("--quick"))
    assert (quick.k, quick.seeds) == (3, (0,))


def test_unknown_configuration_is_an_argparse_error(capsys) -> None:
    with pytest.raises(SystemExit):
        parse("--configs", "magic")
    assert "invalid choice: 'magic'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "foo"], "unknown dataset 'foo'; available: digits, fashion-mnist, cifar10"),
        (["--arch", "vgg"], "unknown architecture 'vgg'; available: mobilenet_v2, resnet20, small-cnn, tiny-llama, vit"),
        (["--k", "30"], "the training split holds 1297 images but the sizes need 2800: target_size=300 + "
                        "holdout_size=100 + k=30 x per_expert=80 (2400); lower k, per_expert"),
        (["--k", "1"], "k must be an integer >= 2 (a blend needs at least two experts), but got 1"),
        (["--seeds", "0"], "--seeds must be a count >= 1 or a list of seeds, but got 0"),
        (["--dataset", "fashion-mnist", "--data-root", "{tmp}"], "Fashion-MNIST not found: looked for"),
        (["--dataset", "svhn", "--data-root", "{tmp}"], "dataset 'svhn' not found locally"),
    ],
)
def test_bad_input_exits_2_with_the_reason(argv, message, tmp_path, capsys) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = experiment_cli.run(parse(*argv, "--no-progress", "--cache-dir", str(tmp_path / "c"),
                              "--output", str(tmp_path / "r.json")))
    err = capsys.readouterr().err
    assert code == 2 and message in err, err


def test_missing_data_root_says_how_to_provide_it(tmp_path, capsys) -> None:
    code = experiment_cli.run(parse("--dataset", "fashion-mnist", "--data-root", str(tmp_path), "--no-progress"))
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "FashionMNIST" / "raw") in err and "Provide it with --data-root PATH" in err


def test_cuda_refused_without_a_gpu(tmp_path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert experiment_cli.run(parse("--device", "cuda", "--no-progress")) == 2
    assert "device='cuda' is not available: torch.cuda.is_available() is False" in capsys.readouterr().err


def test_quick_run_prints_the_table_and_writes_the_files(tmp_path, capsys) -> None:
    out = tmp_path / "o" / "results.json"
    code = experiment_cli.run(parse("--quick", "--configs", "spsa", "data-size", "--no-progress", "--cache-dir",
                              str(tmp_path / "c"), "--output", str(out)))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "| SPSA (GLUE Config 4) |" in captured.out and "| data-size (Config 1) |" in captured.out
    saved = json.loads(out.read_text())
    assert saved["status"] == "complete" and saved["config"]["k"] == 3
    assert out.with_suffix(".md").is_file() and (out.parent / "figure.png").read_bytes()[:4] == b"\x89PNG"

    # --render rebuilds the report from the saved file, without running anything
    saved["summary"] = {}
    out.write_text(json.dumps(saved))
    assert experiment_cli.run(parse("--render", str(out))) == 0
    assert "| SPSA (GLUE Config 4) |" in capsys.readouterr().out
    assert json.loads(out.read_text())["summary"]["spsa"]["n_seeds"] == 1
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_render_of_a_missing_file_exits_2(tmp_path, capsys) -> None:
    assert experiment_cli.run(parse("--render", str(tmp_path / "none.json"))) == 2
    assert "cannot read results file" in capsys.readouterr().err


def test_default_output_paths() -> None:
    out, md, png = experiment_cli._default_paths(parse("--dataset", "fashion-mnist"))
    assert out == Path("runs/experiment_fashion-mnist_small-cnn/results.json")
    assert md == Path("runs/experiment_fashion-mnist_small-cnn/results.md") and png == out.with_name("figure.png")


def test_a_rerun_into_the_same_output_says_which_runs_it_reused(tmp_path, capsys) -> None:
    out = tmp_path / "results.json"
    argv = ["--quick", "--configs", "uniform", "spsa", "--no-progress", "--cache-dir", str(tmp_path / "c"),
            "--output", str(out)]
    assert experiment_cli.run(parse(*argv)) == 0
    capsys.readouterr()
    assert experiment_cli.run(parse(*argv, "--seeds", "0", "1")) == 0
    captured = capsys.readouterr()
    assert f"Reused 2 finished runs from {out} (same settings, not run again): uniform seed 0; spsa seed 0." \
        in captured.out
    assert "uniform seed 0: reused from" in captured.err and "spsa seed 1: reused" not in captured.err
    assert "Reused from the results file this run replaced" in out.with_suffix(".md").read_text()


def test_a_real_sigint_exits_130_and_keeps_the_finished_runs(tmp_path) -> None:
    out = tmp_path / "r.json"
    code, err, runs = interrupt_once_saved(
        ["experiment", "--quick", "--configs", "uniform", "spsa", "--seeds", "40", "--no-progress", "--cache-dir",
         str(tmp_path / "c"), "--output", str(out)], out, "runs", what="the experiment", deadline_s=300)
    assert code == 130, err
    saved = json.loads(out.read_text())
    assert saved["status"] == "interrupted" and runs <= len(saved["runs"]) < 80 and len(saved["experts"]) == 3
    assert f"interrupted; results so far in {out}; trained experts stay cached" in err
    assert len(list((tmp_path / "c" / "experts").glob("*.safetensors"))) == 3
    assert not out.with_suffix(".md").exists()  # the report and the figure are written at the end only


def test_a_diverged_expert_exits_2_with_one_line_and_is_not_cached(tmp_path, capsys, monkeypatch) -> None:
    import spsa_mix.experiment.experts as experts_mod
    from spsa_mix.core.errors import NonFiniteLossError

    def diverge(*args, **kwargs):
        raise NonFiniteLossError("training loss is nan at epoch 1, batch 3 (the weights are those after the last "
                                 "finite step); try a lower learning rate", index=2, value=float("nan"))

    monkeypatch.setattr(experts_mod, "train_model", diverge)
    code = experiment_cli.run(parse("--quick", "--configs", "uniform", "--no-progress", "--cache-dir",
                                    str(tmp_path / "c"), "--output", str(tmp_path / "r.json")))
    err = capsys.readouterr().err
    assert code == 2 and err.splitlines()[-1].startswith("spsa-mix experiment: error: training loss is nan at epoch "
                                                         "1, batch 3"), err
    assert "Traceback" not in err
    assert not list((tmp_path / "c" / "experts").glob("*"))
