"""Token sequences held in memory, and a built-in text set with domains.

:class:`TextData` holds right-padded token ids ``(N, T)``, their attention masks and one
label per sequence: a class (sentiment, topic) for sequence classification, or the
sequence's domain for language modelling, where the Dirichlet splits give each expert its
own mix of domains. It is a :class:`~spsa_mix.data.batches.BatchSource`: a batch is
``({"input_ids", "attention_mask"}, labels)``, the dict passed to a Hugging Face model as
keyword arguments; :class:`~spsa_mix.data.tasks.Task` turns the labels into next-token
targets for a causal language model.

``"text-domains"`` (:func:`load_text_dataset`) is generated, so it needs no file: ten
domains, each a first-order Markov chain over a vocabulary of 64 tokens whose transition
rows are drawn from a sparse Dirichlet (each token is followed by a few likely tokens,
different in every domain), 2000 training and 500 test sequences of 12 to 32 tokens,
balanced over domains. Which domain a sequence comes from is visible in a few tokens, and
a language model trained on one domain predicts the others poorly: the domain shift
weight blending is meant for, at the size of a unit test.

Example
-------
>>> d = load_text_dataset("text-domains")
>>> tuple(d.ids_train.shape), d.num_classes, d.vocab_size
((2000, 32), 10, 64)
>>> d.mask_train[0].sum() >= 12
tensor(True)
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from spsa_mix.blend.losses import IGNORE_INDEX

__all__ = ["TextData", "ChoiceData", "load_text_dataset", "TEXT_DATASETS", "PAD_ID"]

PAD_ID = 0  # the padding token of the built-in sets (token 0 is never generated)
TEXT_DATASETS = ("text-domains",)


@dataclass(frozen=True)
class TextData:
    """Labelled token sequences: ids and masks ``(N, T)`` (right-padded), labels ``(N,)``.

    >>> d = TextData.from_sequences("toy", [[1, 2, 3], [4, 5]], [0, 1], [[1, 2]], [0], vocab_size=6)
    >>> d.ids_train.tolist(), d.mask_train.tolist()
    ([[1, 2, 3], [4, 5, 0]], [[1, 1, 1], [1, 1, 0]])
    """

    name: str
    ids_train: torch.Tensor  # (N, T) int64
    mask_train: torch.Tensor  # (N, T) int64, 1 on real tokens
    y_train: torch.Tensor  # (N,) int64
    ids_test: torch.Tensor  # (M, T) int64
    mask_test: torch.Tensor  # (M, T) int64
    y_test: torch.Tensor  # (M,) int64
    vocab_size: int
    classes: tuple[str, ...]
    source: str
    pad_id: int = PAD_ID

    @classmethod
    def from_sequences(cls, name: str, train: Sequence[Sequence[int]], y_train: Any, test: Sequence[Sequence[int]],
                       y_test: Any, *, vocab_size: int, pad_id: int = PAD_ID, max_length: int | None = None,
                       classes: Sequence[str] | None = None, source: str = "sequences") -> TextData:
        """Pad (on the right) or truncate every sequence to the longest one (or ``max_length``)."""
        length = max_length or max(len(s) for s in [*train, *test])

        def pad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.full((len(seqs), length), pad_id, dtype=torch.int64)
            mask = torch.zeros((len(seqs), length), dtype=torch.int64)
            for i, s in enumerate(seqs):
                s = list(s)[:length]
                if not s:
                    raise ValueError(f"sequence {i} of {name!r} is empty")
                ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.int64)
                mask[i, : len(s)] = 1
            return ids, mask

        ids_train, mask_train = pad(train)
        ids_test, mask_test = pad(test)
        top = int(max(int(ids_train.max()), int(ids_test.max()) if len(test) else 0))
        if top >= vocab_size:
            raise ValueError(f"token ids must be below vocab_size={vocab_size}, but the data holds {top}")
        yt = torch.as_tensor(np.asarray(y_train), dtype=torch.int64)
        ys = torch.as_tensor(np.asarray(y_test), dtype=torch.int64)
        n_classes = int(max(int(y.max()) for y in (yt, ys) if y.numel())) + 1
        names = tuple(classes) if classes is not None else tuple(str(c) for c in range(n_classes))
        return cls(name, ids_train, mask_train, yt, ids_test, mask_test, ys, int(vocab_size), names, source,
                   int(pad_id))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def max_length(self) -> int:
        return int(self.ids_train.shape[1])

    def labels(self, split: str = "train") -> torch.Tensor:
        """The ``(N,)`` labels (classes or domains) of ``split``."""
        return self.y_train if _check_split(split) == "train" else self.y_test

    # ------------------------------------------------------------------ what Batches uses
    def take(self, split: str, indices: Any, device: torch.device) -> tuple[tuple[torch.Tensor, torch.Tensor],
                                                                           torch.Tensor]:
        """``((ids, mask), labels)`` of a subset of ``split``, on ``device``."""
        if _check_split(split) == "train":
            ids, mask, y = self.ids_train, self.mask_train, self.y_train
        else:
            ids, mask, y = self.ids_test, self.mask_test, self.y_test
        if indices is not None:
            ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
            ids, mask, y = ids[ix], mask[ix], y[ix]
        return (ids.to(device), mask.to(device)), y.to(device)

    def collate(self, stored: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor,
                ix: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One batch ``({"input_ids", "attention_mask"}, labels)``."""
        ids, mask = stored
        return {"input_ids": ids[ix], "attention_mask": mask[ix]}, labels[ix]

    # ------------------------------------------------------------------ what the experiments use
    def features(self, indices: Any) -> torch.Tensor:
        """Token frequencies of each sequence, ``(n, vocab_size)`` (SAIL's input features)."""
        ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        ids, mask = self.ids_train[ix], self.mask_train[ix].to(torch.float32)
        counts = torch.zeros(len(ix), self.vocab_size).scatter_add_(1, ids, mask)
        return counts / mask.sum(dim=1, keepdim=True).clamp_min(1.0)

    def digest(self, indices: Any) -> str:
        """SHA-256 of the training sequences ``indices`` (ids, masks, labels)."""
        ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        h = hashlib.sha256()
        for t in (self.ids_train[ix], self.mask_train[ix], self.y_train[ix]):
            h.update(t.contiguous().numpy().tobytes())
        h.update(np.asarray([self.vocab_size, self.pad_id], dtype=np.int64).tobytes())
        return h.hexdigest()

    def model_dims(self) -> dict[str, int]:
        """The sizes a text architecture is built from (:func:`spsa_mix.models.build_model`)."""
        return {"vocab_size": self.vocab_size, "num_classes": self.num_classes, "max_length": self.max_length}

    def describe(self) -> dict[str, Any]:
        """Sizes, for the results file."""
        return {"name": self.name, "source": self.source, "n_train": int(self.ids_train.shape[0]),
                "n_test": int(self.ids_test.shape[0]), "max_length": self.max_length, "vocab_size": self.vocab_size,
                "num_classes": self.num_classes, "classes": list(self.classes)}


@dataclass(frozen=True)
class ChoiceData:
    """Multiple-choice questions, tokenized (:mod:`spsa_mix.data.choices`), as a
    :class:`~spsa_mix.data.batches.BatchSource` whose examples are the questions.

    Each split holds its questions' choices as right-padded rows ``(N, C, T)``: token ids,
    attention masks and labels (the choice's token ids where they are scored, ``-100``
    elsewhere); a question with fewer than ``C`` choices is filled with dummy rows (one
    padding token, attended, no label); and the answers ``(N,)``. A batch of ``q``
    questions is ``({"input_ids", "attention_mask"}, targets)``: the inputs ``(q * c, t)``,
    every choice of every question one row, and the targets ``(q, c, t + 1)``, the labels
    then a last column that is 1 on the answer's row (``c`` and ``t``: the most choices and
    tokens of the batch's questions), what :class:`~spsa_mix.blend.losses.MultipleChoice`
    scores. All the choices of a question are in the same batch.

    >>> d = ChoiceData.from_encoded("toy", [[([1, 5], 1), ([1, 6, 7], 2)], [([1, 8], 1), ([1, 9], 1)]], [1, 0])
    >>> inputs, targets = d.collate(*d.take("train", None, torch.device("cpu")), torch.tensor([0]))
    >>> inputs["input_ids"].tolist(), targets.tolist()
    ([[1, 5, 0], [1, 6, 7]], [[[-100, 5, -100, 0], [-100, 6, 7, 1]]])
    """

    name: str
    splits: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]  # ids, mask, labels, answers
    source: str = "questions"
    metric = "multiple-choice accuracy"  # what the accuracy of these questions is (the merge's summary)

    @classmethod
    def from_encoded(cls, name: str, train: Sequence[Sequence[tuple[Sequence[int], int]]], answers: Sequence[int],
                     test: Sequence[Sequence[tuple[Sequence[int], int]]] = (), test_answers: Sequence[int] = (), *,
                     pad_id: int = PAD_ID, source: str = "questions") -> ChoiceData:
        """From :func:`~spsa_mix.data.choices.encode_choices`' ``(ids, scored tokens)`` per choice
        of each question, and the answers' indices."""

        def pack(questions: Sequence[Sequence[tuple[Sequence[int], int]]], answer: Sequence[int]) -> tuple[
                torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            c = max((len(q) for q in questions), default=1)
            t = max((len(ids) for q in questions for ids, _ in q), default=1)
            ids = torch.full((len(questions), c, t), pad_id, dtype=torch.int64)
            mask = torch.zeros_like(ids)
            mask[:, :, 0] = 1  # a dummy row attends to its one padding token
            labels = torch.full_like(ids, IGNORE_INDEX)
            for i, q in enumerate(questions):
                for j, (s, n) in enumerate(q):
                    if not 1 <= n < len(s):
                        raise ValueError(f"{name}: choice {j} of question {i} scores {n} of its {len(s)} tokens; "
                                         "a choice scores at least one token and follows at least one")
                    row = torch.as_tensor(list(s), dtype=torch.int64)
                    ids[i, j, : len(s)] = row
                    mask[i, j, : len(s)] = 1
                    labels[i, j, len(s) - n: len(s)] = row[len(s) - n:]
            return ids, mask, labels, torch.as_tensor(list(answer), dtype=torch.int64)

        if len(train) != len(answers) or len(test) != len(test_answers):
            raise ValueError(f"{name}: one answer per question, but got {len(train)} and {len(answers)} answers "
                             f"(validation: {len(test)} and {len(test_answers)})")
        return cls(name, {"train": pack(train, answers), "test": pack(test, test_answers)}, source)

    @property
    def choices(self) -> int:
        """The most choices of a question (over both splits)."""
        return max(int(self.splits[s][0].shape[1]) for s in ("train", "test"))

    def labels(self, split: str = "train") -> torch.Tensor:
        """The ``(N,)`` answers of ``split``."""
        return self.splits[_check_split(split)][3]

    def take(self, split: str, indices: Any, device: torch.device) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """``((ids, mask, labels), answers)`` of a subset of ``split``'s questions, on ``device``."""
        *stored, answers = self.splits[_check_split(split)]
        if indices is not None:
            ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
            stored, answers = [t[ix] for t in stored], answers[ix]
        return tuple(t.to(device) for t in stored), answers.to(device)

    def collate(self, stored: tuple[torch.Tensor, ...], answers: torch.Tensor,
                ix: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """One batch of questions (see the class docstring)."""
        ids, mask, labels = (t[ix] for t in stored)
        c = int((labels != IGNORE_INDEX).any(dim=-1).sum(dim=-1).max())  # the choices are the first rows
        t = int(mask.sum(dim=-1).max())
        ids, mask, labels = ids[:, :c, :t], mask[:, :c, :t], labels[:, :c, :t]
        answer = torch.nn.functional.one_hot(answers[ix], c).to(labels.dtype)[..., None]  # (q, c, 1)
        return {"input_ids": ids.reshape(-1, t), "attention_mask": mask.reshape(-1, t)}, torch.cat([labels, answer], -1)

    def describe(self) -> dict[str, Any]:
        """Sizes, for the results file."""
        return {"name": self.name, "source": self.source, "n_train": int(self.labels("train").shape[0]),
                "n_test": int(self.labels("test").shape[0]), "choices": self.choices}


def _check_split(split: Any) -> str:
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', but got {split!r}")
    return str(split)


def load_text_dataset(name: str, *, seed: int = 0) -> TextData:
    """A built-in text set by name (:data:`TEXT_DATASETS`; see the module docstring).

    >>> load_text_dataset("wiki")
    Traceback (most recent call last):
    ...
    ValueError: unknown text dataset 'wiki'; available: text-domains
    """
    if name != "text-domains":
        raise ValueError(f"unknown text dataset {name!r}; available: {', '.join(TEXT_DATASETS)}")
    return _text_domains(seed=seed)


def _text_domains(*, seed: int, domains: int = 10, vocab: int = 64, n_train: int = 2000, n_test: int = 500,
                  min_len: int = 12, max_len: int = 32) -> TextData:
    rng = np.random.default_rng([seed, 0x7E47])
    tokens = np.arange(1, vocab)  # token 0 is padding
    # each domain: a start distribution and sparse transition rows (a few likely successors)
    start = rng.dirichlet(np.full(len(tokens), 0.3), size=domains)  # (D, V-1)
    trans = rng.dirichlet(np.full(len(tokens), 0.05), size=(domains, len(tokens)))  # (D, V-1, V-1)

    def draw(n: int) -> tuple[list[list[int]], np.ndarray]:
        labels = np.arange(n) % domains
        rng.shuffle(labels)
        seqs = []
        for d in labels:
            length = int(rng.integers(min_len, max_len + 1))
            t = rng.choice(len(tokens), p=start[d])
            seq = [t]
            for _ in range(length - 1):
                t = rng.choice(len(tokens), p=trans[d, t])
                seq.append(t)
            seqs.append([int(tokens[i]) for i in seq])
        return seqs, labels

    train, y_train = draw(n_train)
    test, y_test = draw(n_test)
    return TextData.from_sequences(
        "text-domains", train, y_train, test, y_test, vocab_size=vocab, max_length=max_len,
        classes=[f"domain {d}" for d in range(domains)],
        source=f"generated: {domains} Markov-chain domains over {vocab} tokens (seed {seed})")
