"""Token sequences in memory and the generated text-domains set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.data.text import TextData, load_text_dataset


@pytest.fixture(scope="module")
def domains() -> TextData:
    return load_text_dataset("text-domains")


def test_sequences_are_right_padded_and_masked() -> None:
    d = TextData.from_sequences("toy", [[3, 1, 2], [4]], [1, 0], [[5, 5]], [1], vocab_size=6)
    assert d.ids_train.tolist() == [[3, 1, 2], [4, 0, 0]] and d.mask_train.tolist() == [[1, 1, 1], [1, 0, 0]]
    (stored, labels) = d.take("train", [1], torch.device("cpu"))
    inputs, y = d.collate(stored, labels, torch.tensor([0]))
    assert inputs["input_ids"].tolist() == [[4, 0, 0]] and y.tolist() == [0]
    with pytest.raises(ValueError, match="token ids must be below vocab_size=5, but the data holds 5"):
        TextData.from_sequences("toy", [[5]], [0], [], [], vocab_size=5)
    with pytest.raises(ValueError, match="sequence 0 of 'toy' is empty"):
        TextData.from_sequences("toy", [[]], [0], [], [], vocab_size=5, max_length=3)


def test_text_domains_is_deterministic_balanced_and_the_domains_differ(domains: TextData) -> None:
    again = load_text_dataset("text-domains")
    assert torch.equal(domains.ids_train, again.ids_train) and torch.equal(domains.y_test, again.y_test)
    assert np.bincount(domains.y_train.numpy()).tolist() == [200] * 10
    lengths = domains.mask_train.sum(1)
    assert int(lengths.min()) >= 12 and int(lengths.max()) <= 32
    assert int(domains.ids_train[domains.mask_train == 1].min()) >= 1  # 0 is padding only
    # token frequencies tell the domains apart: the nearest training-domain profile names the
    # domain of most test sequences (chance: 10 %)
    y = domains.y_train.numpy()
    feats = domains.features(np.arange(2000)).numpy()
    profiles = np.stack([feats[y == d].mean(0) for d in range(10)])  # (10, V)
    ids, mask = domains.ids_test, domains.mask_test.to(torch.float32)
    test = (torch.zeros(len(ids), 64).scatter_add_(1, ids, mask) / mask.sum(1, keepdim=True)).numpy()
    nearest = np.abs(test[:, None, :] - profiles[None]).sum(-1).argmin(1)
    assert (nearest == domains.y_test.numpy()).mean() > 0.5


def test_features_are_token_frequencies_and_the_digest_tracks_the_examples(domains: TextData) -> None:
    f = domains.features([0, 1, 2])
    assert f.shape == (3, 64) and torch.allclose(f.sum(1), torch.ones(3))
    assert domains.digest([0, 1]) == domains.digest([0, 1]) != domains.digest([0, 2])


def test_unknown_text_dataset() -> None:
    with pytest.raises(ValueError, match="unknown text dataset 'wiki'; available: text-domains"):
        load_text_dataset("wiki")


def test_choice_data_batches_keep_a_questions_choices_together() -> None:
    from spsa_mix.data.batches import Batches
    from spsa_mix.data.text import ChoiceData

    questions = [[([1, 5], 1), ([1, 6, 7], 2)], [([1, 2, 8], 1), ([1, 9], 1), ([1, 3], 1)], [([4, 4], 1), ([4, 5], 1)]]
    d = ChoiceData.from_encoded("toy", questions, [1, 2, 0], questions[:1], [0], pad_id=0)
    assert d.choices == 3 and d.labels("test").tolist() == [0] and d.metric == "multiple-choice accuracy"
    (inputs, targets), = list(Batches(d, np.array([0, 2]), batch_size=2))  # at most 2 choices, 3 tokens
    assert inputs["input_ids"].tolist() == [[1, 5, 0], [1, 6, 7], [4, 4, 0], [4, 5, 0]]
    assert inputs["attention_mask"].tolist() == [[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 1, 0]]
    assert targets.tolist() == [[[-100, 5, -100, 0], [-100, 6, 7, 1]], [[-100, 4, -100, 1], [-100, 5, -100, 0]]]
    (inputs, targets), = list(Batches(d, np.array([0]), batch_size=1, split="test"))  # the validation questions
    assert inputs["input_ids"].tolist() == [[1, 5, 0], [1, 6, 7]] and targets[0, :, -1].tolist() == [1, 0]
    (inputs, targets), = list(Batches(d, np.array([0, 1]), batch_size=2))  # a dummy row fills question 0
    assert inputs["input_ids"][2].tolist() == [0, 0, 0] and inputs["attention_mask"][2].tolist() == [1, 0, 0]
    assert targets[0, 2].tolist() == [-100] * 3 + [0] and targets[1, :, -1].tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="choice 0 of question 0 scores 2 of its 2 tokens"):
        ChoiceData.from_encoded("bad", [[([1, 2], 2), ([1, 3], 1)]], [0])
