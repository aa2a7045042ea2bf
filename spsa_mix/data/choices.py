"""Multiple-choice questions: a JSONL of ``{"prompt", "choices", "answer"}`` read and tokenized
as benchmark harnesses score them (no PyTorch: the merge's checks read the files with it).

Each line holds a prompt (a string), two or more choices (strings) and the answer (a
choice's index or its text). A choice is scored by its log-likelihood given the prompt,
``sum_t log p(choice_t | prompt, choice_<t)``: the prompt is tokenized alone (with the
tokenizer's special tokens), the choice's tokens (without them) are appended, and the
sequence keeps its last ``max_length`` tokens (at least one choice token is scored).
:class:`~spsa_mix.data.text.ChoiceData` holds the tokenized questions for
:class:`~spsa_mix.data.batches.Batches`, and
:class:`~spsa_mix.blend.losses.MultipleChoice` is the loss.

Example
-------
>>> import tempfile, pathlib, json
>>> p = pathlib.Path(tempfile.mkdtemp()) / "mc.jsonl"
>>> _ = p.write_text(json.dumps({"prompt": "2 + 2 =", "choices": [" 3", " 4"], "answer": " 4"}) + "\\n")
>>> read_choices(p)
[('2 + 2 =', [' 3', ' 4'], 1)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["MULTIPLE_CHOICE", "read_choices", "encode_choices"]

MULTIPLE_CHOICE = "multiple-choice"  # the loss's name, and the task kind of such data

Question = tuple[str, list[str], int]  # (prompt, choices, answer index)


def read_choices(path: str | os.PathLike[str], *, prompt_field: str = "prompt", choices_field: str = "choices",
                 answer_field: str = "answer") -> list[Question]:
    """``(prompt, choices, answer index)`` of each line of a multiple-choice JSONL file.

    Raises ``ValueError`` naming the file, the line and what is missing or wrong.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "bad.jsonl"
    >>> _ = p.write_text('{"prompt": "a", "choices": ["b", "c"], "answer": 2}\\n')
    >>> read_choices(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ...bad.jsonl:1: 'answer' must be a choice's index or text, but got 2
    """
    from spsa_mix.io import jsonl_rows

    out = []
    p = Path(path)
    for i, row in jsonl_rows(p):
        line = json.dumps(row)
        row = row if isinstance(row, dict) else {}
        prompt, choices, answer = row.get(prompt_field), row.get(choices_field), row.get(answer_field)
        if not isinstance(prompt, str) or not isinstance(choices, list) or len(choices) < 2 \
                or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{p}:{i}: a multiple-choice line needs {prompt_field!r} (a string) and "
                             f"{choices_field!r} (at least two strings), but got {line[:120]!r}")
        if isinstance(answer, str) and answer in choices:
            answer = choices.index(answer)
        if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
            raise ValueError(f"{p}:{i}: {answer_field!r} must be a choice's index or text, but got {answer!r}")
        out.append((prompt, choices, int(answer)))
    if not out:
        raise ValueError(f"{p}: no multiple-choice line")
    return out


def encode_choices(questions: Sequence[Question], tokenizer: Any, *,
                   max_length: int) -> list[list[tuple[list[int], int]]]:
    """Per question, per choice: ``(token ids, number of choice tokens at the end)`` (the
    module docstring); ``ValueError`` for a choice with no token.

    >>> class Words:                                  # a tokenizer: one id per word, 1 = BOS
    ...     def __call__(self, text, add_special_tokens=True):
    ...         return {"input_ids": [1] * add_special_tokens + [len(w) for w in text.split()]}
    >>> encode_choices([("a bb", ["ccc", "d ee"], 0)], Words(), max_length=4)
    [[([1, 1, 2, 3], 1), ([1, 2, 1, 2], 2)]]
    """
    out = []
    for prompt, choices, _ in questions:
        ctx = list(tokenizer(prompt)["input_ids"])
        rows = []
        for c in choices:
            cont = list(tokenizer(c, add_special_tokens=False)["input_ids"])
            if not cont:
                raise ValueError(f"the choice {c!r} (of {prompt[:60]!r}) has no tokens")
            ids = (ctx + cont)[-max_length:]
            rows.append((ids, min(len(cont), len(ids) - 1)))
        out.append(rows)
    return out
