"""spsa-mix merge with several targets (data.tasks): per-task heads, output, recipe, bad input."""

from __future__ import annotations

import re

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from spsa_mix.cli import main
from spsa_mix.models import build_model

REPO = Path(__file__).resolve().parents[2]
TASKS = {"low": (0, 1, 2, 3, 4, 5), "high": (6, 7, 8, 9)}  # digits 0-5 (6 classes) and 6-9 (4 classes)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return (x - 0.3) / 0.4, torch.tensor(d.target)


def _train(model, x, y, *, epochs, seed):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            ix = order[i:i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[ix]), y[ix]).backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A base CNN pretrained on digits, two experts fine-tuned from it on two tasks with
    heads of their own sizes (6 and 4 classes), each task's data as tensor files."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("multitask")
    torch.manual_seed(0)
    x, y = _digits()
    base = _train(build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=0), x[:600], y[:600],
                  epochs=2, seed=0)
    save_file({k: v.contiguous() for k, v in base.state_dict().items()}, str(root / "base.safetensors"))
    for i, (name, classes) in enumerate(TASKS.items()):
        keep = torch.isin(y, torch.tensor(classes))
        xs, ys = x[keep], y[keep] - classes[0]  # labels from 0
        expert = build_model("small-cnn", num_classes=len(classes), in_channels=1, image_size=8)
        expert.load_state_dict({k: v for k, v in base.state_dict().items() if not k.startswith("fc.")}, strict=False)
        _train(expert, xs[:300], ys[:300], epochs=2, seed=i + 1)
        save_file({k: v.contiguous() for k, v in expert.state_dict().items()}, str(root / f"{name}.safetensors"))
        (root / name).mkdir()
        torch.save({"inputs": xs[300:500], "targets": ys[300:500]}, root / name / "train.pt")
        torch.save({"inputs": xs[500:], "targets": ys[500:]}, root / name / "validation.pt")
    config = {"model": "small-cnn", "experts": ["low.safetensors", "high.safetensors"],
              "data": {"batch_size": 16, "tasks": [
                  {"name": n, "train": f"{n}/train.pt", "validation": f"{n}/validation.pt", "loss": "entropy",
                   "head": "fc", "weight": w} for n, w in (("low", 1), ("high", 2))]},
              "budget": 24, "validate_every": 4, "output": "merged"}
    (root / "merge.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def _merge(*argv: str) -> int:
    return main(["merge", *argv, "--no-progress"])


def test_a_multitask_merge_writes_each_task_with_its_head_and_reports_each_task(built: Path, capsys) -> None:
    from safetensors.torch import load_file

    assert _merge(str(built / "merge.yaml"), "--output", str(built / "out"), "--select", "learned") == 0
    printed = capsys.readouterr().out
    assert "| blend | low loss | low accuracy (%) | high loss | high accuracy (%) | mean loss" in printed
    out = built / "out"
    recipe = json.loads((out / "recipe.json").read_text())
    assert [t["name"] for t in recipe["tasks"]] == ["low", "high"] and recipe["written"] == "learned"
    assert recipe["tasks"][1]["normalised_weight"] == pytest.approx(2 / 3)
    for key in ("uniform", "best_single", "learned"):
        per = recipe[key]["tasks"]
        assert set(per) == {"low", "high"} and all(0 <= per[n]["accuracy"] <= 1 for n in per)
        assert recipe[key]["accuracy"] == pytest.approx((per["low"]["accuracy"] + per["high"]["accuracy"]) / 2)
        assert recipe[key]["loss"] == pytest.approx((per["low"]["loss"] + 2 * per["high"]["loss"]) / 3)
    assert len(recipe["experts_scores"]) == 2 and recipe["learned"]["cost"] <= 24
    assert not (out / "mergekit.yaml").exists() and (out / "loss.png").is_file()
    # Loading a task's model: the snippet of docs/multitask.md, run as written there.
    doc = (REPO / "docs" / "multitask.md").read_text()
    snippet = doc.split("<!-- load-per-task -->")[1].split("```python")[1].split("```")[0]
    scope: dict = {}
    exec(snippet.replace("merged/", str(out) + "/"), scope)  # noqa: S102 - the documentation's own code
    net = scope["net"]
    assert net.fc.weight.shape == (4, 64)
    expert = load_file(str(built / "high.safetensors"))
    assert torch.equal(net.fc.weight, expert["fc.weight"])  # the task's own head, not blended
    data = torch.load(built / "high" / "validation.pt")
    with torch.no_grad():
        acc = float((net(data["inputs"]).argmax(1) == data["targets"]).float().mean())
    assert acc == pytest.approx(recipe["learned"]["tasks"]["high"]["accuracy"])


def _one_line_error(argv: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", "spsa_mix", "merge", *argv, "--no-progress"], capture_output=True,
                          text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr


def _variant(built: Path, tmp_path: Path, edit) -> str:
    config = yaml.safe_load((built / "merge.yaml").read_text())
    edit(config)
    config["experts"] = [str(built / e) for e in config["experts"]]
    for t in config["data"]["tasks"]:
        for key in ("train", "validation"):
            if key in t:
                t[key] = str(built / t[key])
    config["output"] = str(tmp_path / "out")
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(config))
    return str(p)


def test_bad_tasks_exit_2_with_one_line(built: Path, tmp_path: Path) -> None:
    def drop_train(c):
        del c["data"]["tasks"][1]["train"]

    def zero_weight(c):
        c["data"]["tasks"][0]["weight"] = 0

    def same_name(c):
        c["data"]["tasks"][1]["name"] = "low"

    def wrong_head(c):
        c["data"]["tasks"][0]["head"] = "classifier"

    def swapped(c):  # the 4-class expert's head for the 6-class task
        c["data"]["tasks"][0]["expert"] = 1

    assert "data.tasks[1] ('high') has no data" in _one_line_error([_variant(built, tmp_path, drop_train)])
    assert "weight must be a positive number, but got 0" in _one_line_error([_variant(built, tmp_path, zero_weight)])
    assert "the name is used by two tasks" in _one_line_error([_variant(built, tmp_path, same_name)])
    assert "head 'classifier' matches no tensor of the architecture" in _one_line_error(
        [_variant(built, tmp_path, wrong_head)])
    assert re.search(r"low/train.pt has labels up to 5, but the experts' head \(fc.weight of '.*high.safetensors'\) "
                     "has 4 classes", _one_line_error([_variant(built, tmp_path, swapped)]))
    assert not (tmp_path / "out").exists()


def test_under_torchrun_it_is_the_one_process_merge(built: Path, tmp_path: Path) -> None:
    """Two ranks, 15 examples a task's batch (shards of 8 and 7): each task's shards weighted apart."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    args = ["merge", str(built / "merge.yaml"), "--budget", "16", "--batch-size", "15", "--select", "learned",
            "--no-progress"]
    assert main([*args, "--output", str(tmp_path / "one")]) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "spsa_mix", *args, "--output", str(tmp_path / "two")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| learned (spsa)") == 1  # rank 0 alone prints and writes
    one, two = (json.loads((tmp_path / n / "recipe.json").read_text()) for n in ("one", "two"))
    assert one["learned"]["nfev"] == two["learned"]["nfev"]
    np.testing.assert_allclose(two["alpha"], one["alpha"], atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir() if p.is_dir()) == ["high", "low"]


def test_eval_scores_every_task_as_the_recipe_does(built: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """``spsa-mix eval OUT --tasks merge.yaml``: each task with its own folder of the output,
    the learned row of recipe.json again; an expert scores every task; bad input exits 2."""
    out = tmp_path / "out"
    assert _merge(str(built / "merge.yaml"), "--output", str(out), "--select", "learned", "--budget", "12") == 0
    recipe = json.loads((out / "recipe.json").read_text())
    capsys.readouterr()
    result = tmp_path / "scores.json"
    assert main(["eval", str(out), str(built / "low.safetensors"), "--tasks", str(built / "merge.yaml"),
                 "--output", str(result)]) == 0
    printed = capsys.readouterr().out
    assert "| checkpoint | low loss | low accuracy (%) | high loss | high accuracy (%) | mean loss" in printed
    assert "low: validation (" in printed
    scores = json.loads(result.read_text())
    merged, expert = scores["rows"]
    learned = recipe["learned"]
    for name in ("low", "high"):
        assert merged["tasks"][name]["checkpoint"] == str(out / name)
        assert merged["tasks"][name]["loss"] == pytest.approx(learned["tasks"][name]["loss"], rel=1e-5)
        assert merged["tasks"][name]["accuracy"] == pytest.approx(learned["tasks"][name]["accuracy"])
        assert 0 <= expert["tasks"][name]["accuracy"] <= 1 and expert["tasks"][name]["checkpoint"].endswith("low.safetensors")
    assert merged["loss"] == pytest.approx(learned["loss"], rel=1e-5)
    assert merged["accuracy"] == pytest.approx(learned["accuracy"])
    assert [t["normalised_weight"] for t in scores["tasks"]] == pytest.approx([1 / 3, 2 / 3])
    # A task without validation data is scored on its training data, and says so; CSV as eval writes it.
    config = yaml.safe_load((built / "merge.yaml").read_text())
    del config["data"]["tasks"][1]["validation"]
    no_val = built / "no_validation.yaml"
    no_val.write_text(yaml.safe_dump(config, sort_keys=False))
    table = tmp_path / "scores.csv"
    assert main(["eval", str(out), "--tasks", str(no_val), "--output", str(table)]) == 0
    assert "high: training (no validation data) (" in capsys.readouterr().out
    header, row = table.read_text().splitlines()
    assert header.startswith("checkpoint,kind,low loss,low accuracy,low n,high loss") and row.startswith(str(out))
    assert float(row.split(",")[2]) == pytest.approx(learned["tasks"]["low"]["loss"], rel=1e-5)
    assert int(row.split(",")[7]) == int(torch.load(built / "high" / "train.pt")["targets"].shape[0])
    # Bad input: one line, exit 2, before any weight is read.
    import spsa_mix.merge.evaluation as evaluation

    monkeypatch.setattr(evaluation, "load_checkpoint", lambda *a, **k: pytest.fail("a weight was read"))
    one_target = built / "one_target.yaml"
    one_target.write_text(yaml.safe_dump({"model": "small-cnn", "experts": ["low.safetensors"],
                                          "data": {"train": "low/train.pt"}}))
    partial = tmp_path / "partial"
    (partial / "low").mkdir(parents=True)
    (partial / "low" / "model.safetensors").write_bytes((out / "low" / "model.safetensors").read_bytes())
    for argv, message in (([str(out), "--tasks", str(one_target)], "the config has no data.tasks"),
                          ([str(partial), "--tasks", str(built / "merge.yaml")], "no folder for task 'high'"),
                          ([str(out), "--tasks", str(built / "merge.yaml"), "--data", str(built / "low" / "train.pt")],
                           "--tasks and --data: give one"),
                          ([str(out), "--tasks", str(built / "merge.yaml"), "--loss", "entropy"], "--loss with --tasks")):
        capsys.readouterr()
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err
