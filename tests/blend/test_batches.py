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
