"""What a merge tells its user: which blend it wrote and why, the figure, the model card, the last line."""

from __future__ import annotations

import numpy as np
import pytest

from spsa_mix.core.result import OptimizeResult
from spsa_mix.merge.report import choose_blend, kept_line, loss_figure, model_card, pair, wrote_line


def test_a_tie_is_not_a_loss() -> None:
    chosen, why = choose_blend({"learned": 2.744712, "uniform": 3.1, "best single": 2.744690}, "best")
    assert chosen == "learned" and "ties with the best single" in why


def test_a_real_loss_is_written_with_numbers_that_differ() -> None:
    chosen, why = choose_blend({"learned": 2.74481, "uniform": 3.1, "best single": 2.74460}, "best", where="validation")
    assert chosen == "best single"
    assert "2.7446 against 2.7448" in why and "validation" in why
    assert choose_blend({"learned": 3.0, "uniform": 1.0, "best single": 2.0}, "learned")[0] == "learned"
    chosen, why = choose_blend({"learned": 1.0, "uniform": 2.0, "best single": 3.0}, "best")
    assert chosen == "learned" and "lowest" in why


def test_pair_shows_enough_digits_to_tell_two_numbers_apart() -> None:
    assert pair(2.74469, 2.74471) == ("2.74469", "2.74471")
    assert pair(3.0954, 3.4431) == ("3.0954", "3.4431")
    assert pair(1.0, 1.0) == ("1.0000", "1.0000")


def _result(val_loss: list[float], val_fun: float, start: dict | None = None) -> OptimizeResult:
    res = OptimizeResult(x=np.zeros(3), nit=len(val_loss), val_fun=val_fun,
                         history={"val_loss": np.asarray(val_loss, dtype=float)})
    if start is not None:
        res["start"] = start
    return res


def test_kept_line_names_the_step_or_the_start() -> None:
    nan = float("nan")
    line = kept_line(_result([nan, nan, nan, nan, 3.0954], 3.0954), "validation", validate_every=10)
    assert "step 5 of 5" in line and "3.0954" in line
    line = kept_line(_result([nan, 3.5, nan, 3.6], 3.4431), "validation", validate_every=2)
    assert "the start point" in line and "3.4431" in line and "no point of the 4 steps" in line
    res = _result([nan, 3.5], 3.5, start={"returned": "vertex 1", "final_losses": [3.5, 3.2], "chosen": "vertex 1"})
    line = kept_line(res, "validation", validate_every=2)
    assert "vertex 1" in line and "3.2000" in line and "3.5000" in line


def test_the_figure_has_reference_lines_a_smoothed_main_curve_and_the_scale() -> None:
    steps = 40
    rng = np.random.default_rng(0)
    x = np.column_stack([np.full((steps, 3), 1 / 3), np.linspace(1.0, 2.0, steps)])
    history = {"cost": 2.0 * np.arange(1, steps + 1), "loss": 3 + rng.normal(0, 0.3, steps),
               "val_loss": np.where(np.arange(steps) % 10 == 9, 2.9, np.nan), "x": x}
    fig = loss_figure(history, title="t", references={"uniform blend": 3.2, "best single expert": 3.0},
                      where="validation", scale_column=3)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert "uniform blend (3.2000)" in labels and "best single expert (3.0000)" in labels
    assert any(lab.startswith("validation loss") for lab in labels)
    assert any("moving average" in lab for lab in labels)
    assert any(ax.get_ylabel() == "learned scale" for ax in fig.axes)
    main = next(line for ax in fig.axes for line in ax.get_lines() if "moving average" in line.get_label())
    assert np.std(np.diff(main.get_ydata())) < np.std(np.diff(history["loss"]))  # smoother than the raw loss


def test_the_figure_without_validation_or_scale() -> None:
    history = {"cost": np.arange(1.0, 6.0), "loss": np.ones(5)}
    fig = loss_figure(history, title="t", references={"uniform blend": 1.0}, where="training")
    assert len(fig.axes) == 1


def test_the_model_card_holds_what_a_user_looks_for() -> None:
    card = model_card(name="merged", model="small-cnn", experts=["a.safetensors", "b.safetensors"], base="base.safetensors",
                      alpha=[0.25, 0.75], scale=1.5, space="task-vectors", method="spsa", budget=300,
                      table="| blend | loss |\n| --- | ---: |\n| learned | 1.0 |", written="learned",
                      reason="lowest validation loss", command="spsa-mix merge vision.yaml", scored_on="validation",
                      loader="from spsa_mix.merge import load_merged\nmodel = load_merged('merged')", warnings=["w1"])
    for text in ("# merged", "a.safetensors", "0.2500", "0.7500", "scale", "1.5", "base.safetensors", "spsa",
                 "300", "| learned | 1.0 |", "spsa-mix merge vision.yaml", "load_merged", "w1", "validation"):
        assert text in card, text


@pytest.mark.parametrize(("files", "expected"), [
    (["model.safetensors", "recipe.json", "README.md", "loss.png"],
     "Wrote out/: model.safetensors, recipe.json, README.md, loss.png"),
])
def test_wrote_line_names_the_files_inside_the_output(files: list[str], expected: str) -> None:
    from pathlib import Path

    assert wrote_line(Path("out"), [Path("out") / f for f in files]) == expected
