"""The weightless architecture: no weight copied, buffers kept, ties kept."""

from __future__ import annotations

import torch
from torch import nn

from spsa_mix.blend.skeleton import meta_tensors, parameters_on_meta, skeleton_of, tie


class WithRotary(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.out = nn.Linear(4, 10, bias=False)
        self.out.weight = self.emb.weight  # tied
        self.bn = nn.BatchNorm1d(4)
        self.register_buffer("freq", torch.arange(4.0), persistent=False)


def test_skeletons_hold_no_weights_but_keep_buffers_and_ties():
    net = WithRotary()
    sk = skeleton_of(net, device=torch.device("cpu"), dtype=torch.float64)
    assert sk.emb.weight.is_meta and sk.bn.running_mean.is_meta and not net.emb.weight.is_meta
    assert sk.out.weight is sk.emb.weight
    assert sk.freq.dtype == torch.float64 and torch.equal(sk.freq, torch.arange(4.0, dtype=torch.float64))
    assert set(meta_tensors(sk)) == {"emb.weight", "out.weight", "bn.weight", "bn.bias", "bn.running_mean",
                                     "bn.running_var", "bn.num_batches_tracked"}
    with parameters_on_meta():
        built = WithRotary()
    assert built.emb.weight.is_meta and not built.freq.is_meta and not built.bn.running_mean.is_meta
    assert not nn.Linear(2, 2).weight.is_meta  # the patch is gone
    loose = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    assert tie(loose, {"1.weight": "0.weight"})[1].weight is loose[0].weight
