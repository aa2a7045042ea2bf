"""Shard weights: combining shard means by them gives the mean over the whole batch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.blend.losses import CausalLM, CrossEntropy, Entropy
from spsa_mix.distributed import loss_weight, shard_batch, shard_weight

from .problems import CausalLM64


def _combined(loss_fn, outputs, targets, size):
    """Shard means weighted by ``loss_weight``, as the ranks combine them."""
    sums, weights = [], []
    for r in range(size):
        out, tgt = shard_batch((outputs, targets), rank=r, size=size)
        w = loss_weight(loss_fn, tgt, len(out))
        sums.append(float(loss_fn(out, tgt)) * w)
        weights.append(w)
    return math.fsum(sums) / math.fsum(weights)


def _logits_and_labels(ignore: bool):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(11, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 4, (11,), generator=gen)
    if ignore:
        labels[[0, 1, 2, 7]] = -100  # three of them in the first shard
    return logits, labels


@pytest.mark.parametrize("loss_fn", [F.cross_entropy, CrossEntropy(), nn.CrossEntropyLoss(),
                                     nn.CrossEntropyLoss(weight=torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64))],
                         ids=["F.cross_entropy", "CrossEntropy", "nn.CrossEntropyLoss", "class-weights"])
@pytest.mark.parametrize("ignore", [False, True])
def test_cross_entropy_shards_recombine_to_the_whole_batch_mean(loss_fn, ignore):
    logits, labels = _logits_and_labels(ignore)
    whole = float(loss_fn(logits, labels))
    for size in (2, 3):
        assert _combined(loss_fn, logits, labels, size) == pytest.approx(whole, rel=1e-14)


def test_causal_lm_shards_are_weighted_by_their_scored_tokens():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(5, 6, 7, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 7, (5, 6), generator=gen)
    labels[0, 2:] = -100  # one scored token in sequence 0, five in the others
    labels[1, 3:] = -100
    for loss_fn, rel in ((CausalLM64(), 1e-14), (CausalLM(), 1e-6)):  # the stock loss computes in float32
        whole = float(loss_fn(logits, labels))
        for size in (2, 3):
            assert _combined(loss_fn, logits, labels, size) == pytest.approx(whole, rel=rel)
    # the test has teeth: weighting by sequences instead of tokens is far off
    out = [shard_batch((logits, labels), rank=r, size=2) for r in range(2)]
    by_sequences = sum(float(CausalLM64()(o, t)) * len(o) for o, t in out) / 5
    assert abs(by_sequences - float(CausalLM64()(logits, labels))) > 1e-3


def test_entropy_counts_real_tokens_when_given_them_and_examples_otherwise():
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    assert loss_weight(Entropy(), labels, 2) == 3.0
    assert loss_weight(Entropy(), None, 4) == 4.0


def test_a_loss_may_say_its_own_weight_and_other_losses_count_examples():
    class Weighted:
        def __call__(self, outputs, targets):
            return outputs.mean()

        def reduction_weight(self, targets):
            return 2.5

    assert loss_weight(Weighted(), torch.zeros(3), 3) == 2.5
    assert loss_weight(F.mse_loss, torch.zeros(3, 2), 3) == 3.0
    assert loss_weight(F.cross_entropy, torch.rand(3, 4), 3) == 3.0  # class probabilities: per example


def test_losses_that_are_not_means_are_refused():
    with pytest.raises(ValueError, match=r"reduction='sum' is not a mean; data parallelism needs reduction='mean'"):
        loss_weight(nn.CrossEntropyLoss(reduction="sum"), torch.tensor([0, 1]), 2)
    with pytest.raises(ValueError, match=r"causal-lm targets must be labels of shape \(B, T\)"):
        loss_weight(CausalLM(), torch.tensor([1, 2]), 2)


def test_shard_weight_asks_the_objective_and_says_what_to_do_when_it_cannot():
    class Counted:
        def shard_weight(self):
            return 7

    assert shard_weight(Counted()) == 7.0
    with pytest.raises(ValueError, match=r"pass weight=1.0 to DistributedObjective if every rank's shard has the same"):
        shard_weight(lambda p: np.zeros(len(p)))
