"""``loss: multiple-choice``: a merge learned on questions, scored as ``spsa-mix eval`` scores them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spsa_mix.cli import main


def write_questions(demos: Path, folder: Path) -> tuple[Path, Path]:
    """Questions from the lm example's target texts: the prompt a text's first six words, the
    answer its next three, the other choices three words of the next text (two or three
    choices, the answer at every position)."""
    paths = []
    for name, src, n in (("mc_train.jsonl", "train.jsonl", 24), ("mc_val.jsonl", "validation.jsonl", 12)):
        texts = [json.loads(line)["text"].split() for line in
                 (demos / "build" / "lm" / "target" / src).read_text().splitlines()[: n + 1]]
        rows = []
        for i in range(n):
            answer, other = " " + " ".join(texts[i][6:9]), texts[i + 1]
            choices = [" " + " ".join(other[6:9]), " " + " ".join(other[9:12])][: 1 + i % 2]
            choices.insert(i % (len(choices) + 1), answer)
            rows.append({"prompt": " ".join(texts[i][:6]), "choices": choices, "answer": choices.index(answer)})
        paths.append(folder / name)
        paths[-1].write_text("".join(json.dumps(r) + "\n" for r in rows))
    return paths[0], paths[1]


def test_a_merge_on_questions_writes_a_model_scored_as_eval_scores_it(demos: Path, tmp_path: Path, capsys) -> None:
    train, val = write_questions(demos, tmp_path)
    out = tmp_path / "m"
    assert main(["merge", str(demos / "lm.yaml"), "--data", str(train), "--validation", str(val), "--loss",
                 "multiple-choice", "--budget", "9", "--batch-size", "8", "--output", str(out), "--no-progress"]) == 0
    assert "| blend | loss | multiple-choice accuracy (%) |" in capsys.readouterr().out
    recipe = json.loads((out / "recipe.json").read_text())
    assert (out / "model.safetensors").is_file() and recipe["scored_on"] == "validation"
    assert 0 <= recipe["learned"]["multiple-choice accuracy"] <= 1
    experts = recipe["experts"]
    assert main(["eval", *experts, str(out), "--data", str(val), "--loss", "multiple-choice", "--max-length", "32",
                 "--output", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    written = recipe["candidates"][recipe["written"]]
    for row, m in zip(rows, [*recipe["experts_scores"], written], strict=True):  # the same questions, the same code
        assert row["loss"] == pytest.approx(m["loss"], abs=1e-5)
        assert row["accuracy"] == m["multiple-choice accuracy"] and row["n"] == 12
    assert len({r["loss"] for r in rows}) == len(rows)  # the experts differ on these questions


def test_the_merges_scoring_equals_evals_batched_or_looped(demos: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from spsa_mix.blend import BlendedObjective, evaluate_blend
    from spsa_mix.data.batches import Batches
    from spsa_mix.data.choices import read_choices
    from spsa_mix.data.files import load_tokenizer
    from spsa_mix.merge.config import load_config
    from spsa_mix.merge.evaluation import multiple_choice
    from spsa_mix.merge.run import _load_data, plan_merge

    train, val = write_questions(demos, tmp_path)
    cfg = load_config(demos / "lm.yaml", {"output": str(tmp_path / "o"), "loss": "multiple-choice",
                                          "data": {"train": str(train), "validation": str(val), "batch_size": 5}})
    plan = plan_merge(cfg)
    assert plan.task_kind == "multiple-choice"
    source, batches, val_batches = _load_data(plan)
    experts = [str(p) for p in plan.experts]
    points = np.array([[1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]])
    losses = {}
    assert isinstance(batches, Batches) and batches.shuffle  # the training questions, shuffled
    for batched in (True, False):  # vmap over the probes, and one forward per probe, on the same first batch
        obj = BlendedObjective.from_pretrained(experts, loss="multiple-choice", data=Batches(source, batch_size=5),
                                               batched=batched)
        assert obj.uses_vmap(3) is batched
        losses[batched] = obj(points)
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-5)
    first = evaluate_blend(obj, points[0], val_batches)
    model = AutoModelForCausalLM.from_pretrained(experts[0], local_files_only=True)
    alone = multiple_choice(model, load_tokenizer(plan.model_dir), read_choices(val), batch_size=3, max_length=32)
    assert first["loss"] == pytest.approx(alone["loss"], abs=1e-6)
    assert first["accuracy"] == alone["accuracy"] and first["n"] == alone["n"] == 12


def test_bad_questions_exit_2_with_one_line_before_any_weight_is_read(demos: Path, tmp_path: Path, capsys) -> None:
    good = {"prompt": "w1 w2", "choices": [" w3", " w4"], "answer": 0}
    cases = {"missing.jsonl": ({"prompt": "w1", "answer": 0}, "missing.jsonl:2: a multiple-choice line needs"),
             "one.jsonl": ({**good, "choices": [" w3"]}, "one.jsonl:2: a multiple-choice line needs"),
             "range.jsonl": ({**good, "answer": 2}, "range.jsonl:2: 'answer' must be a choice's index or text")}
    for name, (row, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n")
        capsys.readouterr()
        assert main(["merge", str(demos / "lm.yaml"), "--data", str(path), "--loss", "multiple-choice",
                     "--output", str(tmp_path / "o"), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.strip().count("\n") == 0, err
    texts = tmp_path / "q.csv"
    texts.write_text("text\nw1 w2\n")
    assert main(["merge", str(demos / "lm.yaml"), "--data", str(texts), "--loss", "multiple-choice",
                 "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "reads a JSONL of {prompt, choices, answer}" in capsys.readouterr().err
    (tmp_path / "ok.jsonl").write_text(json.dumps(good) + "\n")
    vision = demos / "build" / "vision"
    config = tmp_path / "plain.yaml"  # plain state dicts of a CNN: no tokenizer
    config.write_text(json.dumps({"model": "small-cnn", "experts": [str(p) for p in (vision / "experts").glob("*")],
                                  "data": {"train": str(tmp_path / "ok.jsonl")}, "loss": "multiple-choice"}))
    assert main(["merge", str(config), "--output", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "name a Hugging Face causal-LM model directory" in capsys.readouterr().err
