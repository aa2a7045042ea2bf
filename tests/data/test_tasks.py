"""Tasks: data, loss and metric together; the targets each kind's loss needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.blend.losses import CausalLM, CrossEntropy
from spsa_mix.data.batches import Batches
from spsa_mix.data.images import load_dataset
from spsa_mix.data.tasks import Task, as_task, available_tasks, load_task
from spsa_mix.data.text import TextData


def _toy_text() -> TextData:
    return TextData.from_sequences("toy", [[1, 2, 3], [4, 5]], [0, 1], [[1, 2]], [0], vocab_size=6)


def test_causal_lm_targets_are_the_ids_with_padding_ignored() -> None:
    task = Task(_toy_text(), "causal-lm")
    (inputs, targets), = list(Batches(task, batch_size=2))
    assert targets.tolist() == [[1, 2, 3], [4, 5, -100]] and isinstance(task.loss, CausalLM)
    assert set(inputs) == {"input_ids", "attention_mask"} and task.metric == "next-token accuracy"
    assert task.model_dims() == {"vocab_size": 6, "num_classes": None, "max_length": 3}


def test_sequence_classification_targets_are_the_labels() -> None:
    task = Task(_toy_text(), "sequence-classification")
    (_, targets), = list(Batches(task, batch_size=2))
    assert targets.tolist() == [0, 1] and isinstance(task.loss, CrossEntropy)
    assert task.model_dims()["num_classes"] == 2


def test_image_task_batches_equal_the_dataset_batches() -> None:
    data = load_dataset("digits")
    task = as_task(data)
    a = [x for x, _ in Batches(task, np.arange(10), batch_size=4)]
    b = [x for x, _ in Batches(data, np.arange(10), batch_size=4)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert task.features(np.arange(3)).shape == (3, 64) and task.digest([1]) == data.digest([1])


def test_bad_tasks() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        Task(_toy_text(), "translation")
    with pytest.raises(ValueError, match="a causal-lm task needs TextData, but got ImageData"):
        load_task("digits", kind="causal-lm")
    with pytest.raises(ValueError, match="expected a Task, an ImageData or a TextData, but got int"):
        as_task(3)
    assert {"digits", "text-domains"} <= set(available_tasks())


def test_a_custom_loss_is_used() -> None:
    task = Task(_toy_text(), "sequence-classification", loss="torch.nn.functional:cross_entropy")
    assert task.loss is torch.nn.functional.cross_entropy
