"""A MultiTaskObjective under data parallelism: each task's shards weighted apart.

Two tasks whose global minibatches (7 and 5 examples) split unequally over three thread
ranks (3, 2, 2 and 2, 2, 1): the distributed loss, gradient and directional derivatives
equal one process's weighted mean of each task's mean over its whole minibatch, where one
weight per rank (``weight=1.0``, the tasks' losses combined before the reduction) does not.
"""

from __future__ import annotations

import threading

import numpy as np
import spsa_mix
from spsa_mix.blend.multitask import MultiTaskObjective, TaskSpec
from spsa_mix.distributed import DistributedObjective, ThreadWorld, shard_data

from ..blend.blend_helpers import TinyNet, make_tiny_experts
from .problems import tiny_data

SIZES = (7, 5)
CLASSES = (3, 4)
_FORWARD_AD = threading.Lock()


def _experts():
    return [make_tiny_experts(1, seed=10 * i, d_out=c)[0] for i, c in enumerate((3, 4, 3))]


def _objective(rank: int = 0, size: int = 1) -> MultiTaskObjective:
    tasks = [TaskSpec(f"t{i}", shard_data(tiny_data(n, seed=i), rank=rank, size=size), loss=loss, weight=w,
                      head="fc", head_from=i, model=TinyNet(d_out=c))
             for i, (n, c, loss, w) in enumerate(zip(SIZES, CLASSES, ("entropy", "cross-entropy"), (1.0, 3.0),
                                                     strict=True))]
    return MultiTaskObjective(TinyNet(d_out=3), _experts(), tasks, device="cpu", batched=False)


class OneJvpAtATime:
    """The objective with its ``part_jvp`` run in one thread at a time (forward-mode AD
    levels are global to the process)."""

    def __init__(self, objective: MultiTaskObjective) -> None:
        self.objective = objective
        self.shape, self.k, self.weights = objective.shape, objective.k, objective.weights
        self.part_losses, self.part_shard_weights = objective.part_losses, objective.part_shard_weights
        self.part_value_and_grad, self.value_and_grad = objective.part_value_and_grad, objective.value_and_grad

    def __call__(self, points):
        return self.objective(points)

    def part_jvp(self, alpha, tangents):
        with _FORWARD_AD:
            return self.objective.part_jvp(alpha, tangents)

    def jvp(self, alpha, tangents):
        with _FORWARD_AD:
            return self.objective.jvp(alpha, tangents)


POINTS = np.array([[0.2, 0.3, 0.5], [0.6, 0.1, 0.3]])
ALPHA = np.array([0.5, 0.3, 0.2])
TANGENTS = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])


def _calls(obj):
    loss = obj(POINTS)
    value, grad = obj.value_and_grad(ALPHA)
    jv, derivs = obj.jvp(ALPHA, TANGENTS)
    return loss, value, grad, jv, derivs


def test_each_task_is_weighted_by_its_own_shards():
    ref = _calls(_objective())

    def rank_main(comm, weight=None):
        local = OneJvpAtATime(_objective(comm.rank, 3))
        return _calls(DistributedObjective(local, group=comm, weight=weight))

    results = ThreadWorld(3).run(rank_main)
    for got in results:
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)  # float32 means, summed in another order
        for g, first in zip(got, results[0], strict=True):
            assert np.array_equal(g, first)
    naive = ThreadWorld(3).run(lambda comm: rank_main(comm, weight=1.0))  # one weight per rank: another objective
    assert np.abs(naive[0][0] - ref[0]).max() > 1e-3


def test_spsa_on_three_ranks_follows_one_process():
    def run(obj):
        return spsa_mix.minimize(obj, k=obj.shape, vectorized=True, maxiter=6, seed=0, m=2, lr=0.1)

    ref = run(_objective())
    results = ThreadWorld(3).run(lambda comm: run(DistributedObjective(_objective(comm.rank, 3), group=comm)))
    for res in results:
        assert np.array_equal(res.history["x"], results[0].history["x"])
    np.testing.assert_allclose(results[0].history["loss"], ref.history["loss"], rtol=2e-6)
    np.testing.assert_allclose(results[0].x, ref.x, atol=1e-5)
