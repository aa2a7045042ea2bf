"""build_pool: a task, its split, trained and cached experts; what an ExpertPool gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.data.splits import Splits
from spsa_mix.experiment.experts import ExpertCache, TrainSpec
from spsa_mix.experiment.pool import PoolSpec, build_pool

SPEC = PoolSpec(k=3, per_expert=30, target_size=60, holdout_size=30, train=TrainSpec(epochs=1))


def test_default_split_and_everything_a_pool_gives(tmp_path) -> None:
    pool = build_pool(SPEC, cache=ExpertCache(tmp_path), progress=False)
    assert pool.k == 3 and [len(e) for e in pool.splits.experts] == [30, 30, 30]
    x, y = pool.whole("target")
    assert x.shape == (60, 1, 8, 8) and y.shape == (60,)
    assert pool.whole("holdout")[1].shape == (30,) and pool.whole("test")[1].shape == (500,)
    a = [yy for _, yy in pool.target_batches(16, seed=3)]
    b = [yy for _, yy in pool.target_batches(16, seed=3)]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True)) and sum(len(t) for t in a) == 60
    obj = pool.objective(data=(x, y))
    losses = obj(np.eye(3))
    assert losses.shape == (3,) and np.all(np.isfinite(losses))
    again = build_pool(SPEC, cache=ExpertCache(tmp_path), progress=False)
    assert all(e.cached for e in again.experts)
    with pytest.raises(ValueError, match="part must be 'target', 'holdout' or 'test'"):
        pool.whole("train")


def test_given_splits_and_their_seeds_order_the_training() -> None:
    def split(seeds):
        return lambda task: Splits(target=np.arange(20), holdout=np.arange(20, 30),
                                   experts=[np.arange(30, 60), np.arange(30, 60)], seeds=seeds)

    same = build_pool(SPEC, splits=split((7, 7)), cache=None, progress=False)
    other = build_pool(SPEC, splits=split((7, 8)), cache=None, progress=False)
    w = [m.state_dict()["fc.weight"] for m in same.models]
    v = [m.state_dict()["fc.weight"] for m in other.models]
    assert torch.equal(w[0], w[1])  # same data, same initialisation, same order: the same expert
    assert torch.equal(w[0], v[0]) and not torch.equal(v[0], v[1])


def test_steps_of_minibatches_drawn_with_replacement() -> None:
    spec = PoolSpec(k=2, per_expert=30, target_size=20, holdout_size=10, train=TrainSpec(steps=3, batch_size=8))
    pool = build_pool(spec, cache=None, progress=False)
    assert [len(e.meta["train_loss"]) for e in pool.experts] == [1, 1]  # one pass of 3 steps


def test_bad_pools_fail_before_training() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vgg'"):
        build_pool(PoolSpec(arch="vgg"), cache=None)
    with pytest.raises(ValueError, match="the training split holds 1297 images but the sizes need"):
        build_pool(PoolSpec(k=20, per_expert=100), cache=None)
    with pytest.raises(ValueError, match="init_seed=3 sets the shared initialisation; it needs shared_init=True"):
        TrainSpec(init_seed=3, shared_init=False)
