"""spsa-mix eval: checkpoints of every kind scored with the merge's code, multiple choice by log-likelihood."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from spsa_mix.cli import main
from spsa_mix.merge.evaluation import multiple_choice, read_choices


def test_eval_gives_the_figures_of_the_merge_for_every_kind_of_checkpoint(demos: Path, tmp_path: Path,
                                                                         capsys) -> None:
    out = tmp_path / "m"
    assert main(["merge", str(demos / "lm.yaml"), "--budget", "9", "--output", str(out), "--baselines", "none",
                 "--select", "learned", "--no-progress", "--batch-size", "64"]) == 0
    recipe = json.loads((out / "recipe.json").read_text())
    lm = demos / "build" / "lm"
    capsys.readouterr()
    assert main(["eval", str(out), str(lm / "experts" / "domains_0_1"), "--data", str(lm / "target" / "validation.jsonl"),
                 "--max-length", "32", "--batch-size", "64", "--output", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    assert "| checkpoint | loss | next-token accuracy (%) |" in printed
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert rows[0]["loss"] == pytest.approx(recipe["learned"]["loss"], abs=1e-6)
    assert rows[1]["loss"] == pytest.approx(recipe["experts_scores"][0]["loss"], abs=1e-6)
    adapter = demos / "build" / "lora" / "adapters" / "domains_0_1"
    vision = demos / "build" / "vision"
    assert main(["eval", str(adapter), "--base", str(demos / "build" / "lora" / "base"), "--data",
                 str(lm / "target" / "validation.jsonl"), "--max-length", "32", "--output", str(tmp_path / "a.csv")]) == 0
    with open(tmp_path / "a.csv") as f:
        row = next(csv.DictReader(f))
    assert row["kind"] == "adapter" and float(row["loss"]) > 0
    assert main(["eval", str(vision / "experts" / "noise.safetensors"), "--model", "small-cnn", "--data",
                 str(vision / "target" / "validation.pt")]) == 0
    assert "noise.safetensors" in capsys.readouterr().out


def test_multiple_choice_is_the_arg_max_of_each_choices_log_likelihood(demos: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from spsa_mix.data.files import load_tokenizer

    lm = demos / "build" / "lm"
    texts = [json.loads(line)["text"] for line in (lm / "target" / "validation.jsonl").read_text().splitlines()[:6]]
    path = tmp_path / "mc.jsonl"
    lines = []
    for i, t in enumerate(texts):
        words = t.split()
        lines.append({"prompt": " ".join(words[:6]), "choices": [" ".join(words[6:9]), " ".join(words[9:12][::-1])],
                      "answer": i % 2})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    model = AutoModelForCausalLM.from_pretrained(lm / "base", local_files_only=True).eval()
    tok = load_tokenizer(lm / "base")
    examples = read_choices(path)
    got = multiple_choice(model, tok, examples, batch_size=3)
    hits, loss = 0, 0.0
    for prompt, choices, answer in examples:  # the same, one sequence at a time
        lls = []
        for c in choices:
            ctx, cont = tok(prompt)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + cont])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
            lls.append(sum(float(logp[len(ctx) + j - 1, t]) for j, t in enumerate(cont)))
        hits += int(max(range(len(lls)), key=lls.__getitem__) == answer)
        loss += float(-torch.log_softmax(torch.tensor(lls, dtype=torch.float64), 0)[answer])
    assert got["n"] == 6 and got["accuracy"] == hits / 6 and got["loss"] == pytest.approx(loss / 6, rel=1e-5)
    assert main(["eval", str(lm / "base"), "--data", str(path), "--loss", "multiple-choice"]) == 0


def test_bad_input_exits_2_with_one_line(demos: Path, tmp_path: Path, capsys) -> None:
    lm = demos / "build" / "lm"
    data = str(lm / "target" / "validation.jsonl")
    for argv, message in ((["nowhere/", "--data", data], "no such checkpoint"),
                          ([str(lm / "base"), "--data", "nothing.jsonl"], "--data: no such file"),
                          ([str(demos / "build/vision/base.safetensors"), "--data", data], "needs --model"),
                          ([str(lm / "base"), "--data", data, "--loss", "mse"], "loss must be one of"),
                          ([str(lm / "base"), "--data", data, "--output", str(tmp_path / "r.txt")], "must end in .json")):
        capsys.readouterr()
        assert main(["eval", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "w1", "choices": ["w2"], "answer": 0}) + "\n")
    with pytest.raises(ValueError, match="at least two strings"):
        read_choices(bad)
