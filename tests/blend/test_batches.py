"""Minibatch streams: cycling, a fixed batch, input forms, errors."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.blend.batches import BatchStream, is_fixed_batch, iterate_once, split_batch

CPU = torch.device("cpu")


def test_stream_cycles_an_iterable_and_counts_draws():
    batches = [(torch.full((2, 1), float(i)), torch.zeros(2)) for i in range(3)]
    stream = BatchStream(batches, device=CPU)
    firsts = [float(stream.next().args[0][0, 0]) for _ in range(7)]
    assert firsts == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0] and stream.batches_drawn == 7


def test_fixed_batch_is_returned_every_time_and_cast():
    x, y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)
    stream = BatchStream((x, y), device=CPU, dtype=torch.float64)
    a, b = stream.next(), stream.next()
    assert a is b and stream.fixed and a.args[0].dtype == torch.float64 and a.targets.dtype == torch.long


def test_input_forms():
    x = torch.zeros(3, 2)
    assert split_batch(((x, x), torch.zeros(3)), CPU).args == (x, x)
    assert split_batch(({"a": x}, torch.zeros(3)), CPU).kwargs == {"a": x}
    assert split_batch([x, torch.zeros(3)], CPU).size == 3
    assert not is_fixed_batch([x, torch.zeros(3)])  # a list is an iterable of batches
    assert len(list(iterate_once([(x, x)] * 5, CPU, max_batches=2))) == 2


def test_stream_errors():
    with pytest.raises(ValueError, match="data is None"):
        BatchStream(None, device=CPU)
    with pytest.raises(ValueError, match="data must be an iterable of .* but got float"):
        BatchStream(1.0, device=CPU)
    stream = BatchStream((b for b in [(torch.zeros(1), torch.zeros(1))]), device=CPU)
    stream.next()
    with pytest.raises(ValueError, match=r"data yielded no batch: .* \(a generator can be iterated only once\)"):
        stream.next()
    with pytest.raises(ValueError, match="each batch of data must be a pair .* but got a tuple of length 3"):
        split_batch((1, 2, 3), CPU)


def test_dict_batches_split_into_keyword_inputs_and_targets():
    from collections import UserDict

    from spsa_mix.blend.batches import BatchStream, split_batch

    ids = torch.tensor([[3, 4, 5, 0], [6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    cpu = torch.device("cpu")
    b = split_batch(UserDict({"input_ids": ids, "attention_mask": mask}), cpu)  # a tokenizer's BatchEncoding
    assert b.args == () and sorted(b.kwargs) == ["attention_mask", "input_ids"]
    assert b.targets.tolist() == [[3, 4, 5, -100], [6, 7, 8, 9]] and b.size == 2
    labels = torch.tensor([1, 0])
    b = split_batch({"input_ids": ids, "labels": labels, "pixel_values": torch.ones(2, 3, dtype=torch.float64)},
                    cpu, torch.float32)
    assert "labels" not in b.kwargs and b.targets is not None and torch.equal(b.targets, labels)
    assert b.kwargs["pixel_values"].dtype == torch.float32
    assert split_batch({"x": torch.ones(2)}, cpu).targets is None
    stream = BatchStream({"input_ids": ids, "attention_mask": mask}, device=cpu)  # one fixed dict batch
    assert stream.fixed and stream.next() is stream.next()
    stream = BatchStream([{"input_ids": ids}, {"input_ids": ids + 1}], device=cpu)
    assert stream.next().kwargs["input_ids"][0, 0] == 3 and stream.next().kwargs["input_ids"][0, 0] == 4
