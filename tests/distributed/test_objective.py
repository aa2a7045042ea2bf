"""DistributedObjective with ranks as threads: layouts, methods, failures, bytes.

The ``torchrun`` tests (``test_torchrun.py``) check the same on real processes; these run
in one process in a fraction of a second each.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

import spsa_mix
from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.distributed import (
    DistributedObjective,
    DivergenceError,
    Layout,
    PeerError,
    RankFailureError,
    ThreadWorld,
    shard_data,
    shard_weight,
)
from spsa_mix.problems import Quadratic

from .problems import K, SequentialShards, blend, tiny_data

C = np.array([0.5, 0.3, 0.2])


def quadratic(points: np.ndarray) -> np.ndarray:
    return ((np.asarray(points) - C) ** 2).sum(axis=-1)


_FORWARD_AD = threading.Lock()


class OneJvpAtATime:
    """A blend whose ``jvp`` runs in one thread at a time: forward-mode AD levels are
    global to the process, so concurrent ``torch.func.jvp`` calls in threads break."""

    def __init__(self, objective):
        self.objective, self.shape, self.k = objective, objective.shape, objective.k

    def __call__(self, points):
        return self.objective(points)

    def shard_weight(self):
        return shard_weight(self.objective)

    def value_and_grad(self, alpha):
        return self.objective.value_and_grad(alpha)

    def jvp(self, alpha, tangents):
        with _FORWARD_AD:
            return self.objective.jvp(alpha, tangents)


def _blend_run(world: int, groups: int, *, method: str = "spsa", batch: int = 10, **options):
    """``minimize`` of the tiny blend on ``world`` thread ranks; every rank's result."""

    def rank_main(comm):
        lay = Layout(world_size=world, rank=comm.rank, probe_groups=groups)
        local = blend("tiny", "float32", shard_data(tiny_data(batch), rank=lay.data_rank, size=lay.data_size))
        obj = DistributedObjective(OneJvpAtATime(local), probe_groups=groups, group=comm)
        return spsa_mix.minimize(obj, k=K, vectorized=True, method=method, maxiter=6, seed=0, **options), obj

    return ThreadWorld(world).run(rank_main)


def test_one_process_is_a_pass_through_bit_for_bit():
    plain, wrapped = blend("tiny", "float32", tiny_data(10)), DistributedObjective(blend("tiny", "float32", tiny_data(10)))
    points = np.array([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert np.array_equal(plain(points), wrapped(points))
    assert plain(points[0]) == wrapped(points[0])
    a = np.array([0.2, 0.3, 0.5])
    for got, want in zip(wrapped.value_and_grad(a), plain.value_and_grad(a), strict=True):
        assert np.array_equal(got, want)
    for got, want in zip(wrapped.jvp(a, np.eye(3) - 1 / 3), plain.jvp(a, np.eye(3) - 1 / 3), strict=True):
        assert np.array_equal(got, want)
    assert (wrapped.k, wrapped.point_shape, wrapped.world_size, wrapped.layout.data_size) == (3, (3,), 1, 1)


def test_value_and_grad_and_jvp_exist_only_when_the_wrapped_objective_has_them():
    obj = DistributedObjective(quadratic)
    assert not hasattr(obj, "value_and_grad") and not hasattr(obj, "jvp")
    with pytest.raises(ValueError, match=r"method='backprop' needs an objective with a value_and_grad\(\) method"):
        spsa_mix.minimize(obj, k=3, vectorized=True, method="backprop", maxiter=2)
    q = DistributedObjective(Quadratic.random(3, rng=0))
    assert callable(q.value_and_grad) and callable(q.jvp)


@pytest.mark.parametrize("world,groups", [(4, 2), (6, 3), (6, 2)])
def test_a_two_dimensional_layout_is_the_sequential_shards_of_each_group(world, groups):
    results = _blend_run(world, groups, m=3)
    data_size = world // groups
    ref = spsa_mix.minimize(SequentialShards([blend("tiny", "float32", shard_data(tiny_data(10), rank=r, size=data_size))
                                              for r in range(data_size)]),
                            k=K, vectorized=True, maxiter=6, seed=0, m=3)
    for res, _ in results:
        assert np.array_equal(res.history["x"], results[0][0].history["x"])
    if data_size <= 2:  # the threads add in rank order: exact for two data ranks (and zeros)
        assert np.array_equal(results[0][0].history["loss"], ref.history["loss"])
    np.testing.assert_allclose(results[0][0].history["loss"], ref.history["loss"], rtol=1e-15)


@pytest.mark.parametrize("method", ["backprop", "forward-grad"])
def test_gradient_methods_with_probe_groups_count_the_data_ranks_of_group_zero_once(method):
    opts = {"m": 3} if method == "forward-grad" else {}
    results = _blend_run(4, 2, method=method, **opts)
    ref = spsa_mix.minimize(SequentialShards([blend("tiny", "float32", shard_data(tiny_data(10), rank=r, size=2))
                                              for r in range(2)]),
                            k=K, vectorized=True, method=method, maxiter=6, seed=0, **opts)
    for res, _ in results:
        assert np.array_equal(res.history["x"], ref.history["x"])


@pytest.mark.parametrize("method,options", [("nevergrad:NGOpt", {"batch_size": 4}), ("optuna:cmaes", {"batch_size": 3})])
def test_the_adapters_batches_are_split_over_the_ranks_bit_for_bit(method, options):
    q = Quadratic.random(3, rng=1)

    def run(obj):
        return spsa_mix.minimize(obj, k=3, vectorized=True, method=method, max_evals=13, seed=0, options=options)

    ref = run(q)
    results = ThreadWorld(3).run(lambda comm: run(DistributedObjective(q, probe_groups="all", group=comm)))
    for res in results:
        assert np.array_equal(res.x, ref.x) and res.fun == ref.fun and res.nfev == ref.nfev


def test_an_idle_probe_group_still_draws_its_minibatch():
    def rank_main(comm):
        local = blend("tiny", "float32", tiny_data(10))
        obj = DistributedObjective(local, probe_groups="all", group=comm)
        obj(np.full((1, 3), 1 / 3))  # one point, three groups: two are idle
        obj(np.full((2, 3), 1 / 3))
        return local.batches_drawn

    assert ThreadWorld(3).run(rank_main) == [2, 2, 2]


@pytest.mark.parametrize("check_every,floats", [(1, 2 * 2 + 3), (None, 2 * 2 + 1)])
def test_a_data_parallel_spsa_step_sends_2m_plus_1_floats_and_two_for_the_checksum(check_every, floats):
    def rank_main(comm):
        obj = DistributedObjective(quadratic, group=comm, weight=1.0, check_every=check_every)
        spsa_mix.minimize(obj, k=3, vectorized=True, m=2, maxiter=5, final_eval=False, seed=0)
        return obj.bytes_sent, obj.collectives

    assert ThreadWorld(2).run(rank_main) == [(5 * floats * 8, 5)] * 2


def test_a_nan_on_one_rank_raises_nonfinite_everywhere():
    def rank_main(comm):
        def objective(points):
            out = quadratic(points)
            return np.where(np.arange(len(out)) == 1, np.nan, out) if comm.rank == 1 else out

        return DistributedObjective(objective, group=comm, weight=1.0)(np.full((3, 3), 1 / 3))

    for e in ThreadWorld(2).run(rank_main, return_exceptions=True):
        assert isinstance(e, NonFiniteLossError) and e.index == 1


def test_an_error_on_one_rank_is_raised_there_and_named_everywhere_else():
    def rank_main(comm):
        def objective(points):
            if comm.rank == 2:
                raise KeyError("no such expert")
            return quadratic(points)

        return DistributedObjective(objective, group=comm, weight=1.0)(np.full((2, 3), 1 / 3))

    e0, e1, e2 = ThreadWorld(3).run(rank_main, return_exceptions=True)
    assert isinstance(e2, KeyError)
    for e in (e0, e1):
        assert isinstance(e, PeerError) and e.ranks == [2] and "KeyError: 'no such expert'" in e.messages[2]
        assert "the objective raised on rank 2 at call 0 (2 points)" in str(e)


def test_divergence_is_caught_at_the_first_checked_call_and_names_the_rank():
    def rank_main(comm):
        obj = DistributedObjective(quadratic, group=comm, weight=1.0, check_every=3)
        points = np.full((2, 3), 1 / 3)
        for call in range(4):
            shifted = points + (1e-12 if comm.rank == 1 and call >= 1 else 0.0)
            try:
                obj(shifted)
            except DivergenceError as e:
                return call, e.ranks
        return None

    assert ThreadWorld(3).run(rank_main) == [(3, [1])] * 3  # calls 1 and 2 are not checked


def test_a_rank_that_is_gone_makes_the_others_fail_instead_of_waiting():
    def rank_main(comm):
        obj = DistributedObjective(quadratic, group=comm, weight=1.0)
        if comm.rank == 1:
            raise SystemExit("rank 1 stops")
        return obj(np.full((2, 3), 1 / 3))

    e0, e1 = ThreadWorld(2, timeout=30).run(rank_main, return_exceptions=True)
    assert isinstance(e0, RankFailureError) and isinstance(e1, SystemExit)


def test_weights_can_be_given_and_bad_ones_are_errors():
    def rank_main(comm):
        obj = DistributedObjective(lambda p: np.full(len(p), float(comm.rank)), group=comm,
                                   weight=lambda: 3.0 if comm.rank == 0 else 1.0)
        return obj(np.zeros((1, 2)))

    assert ThreadWorld(2).run(rank_main) == [0.25, 0.25]  # (0 * 3 + 1 * 1) / 4

    def bad(comm):
        return DistributedObjective(quadratic, group=comm, weight=lambda: math.inf)(np.full((1, 3), 0.5))

    errors = ThreadWorld(2).run(bad, return_exceptions=True)
    assert all(isinstance(e, ValueError) for e in errors)
    assert "finite non-negative number, but got inf" in str(errors[0])


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"reduction must be one of \['all-reduce', 'all-gather'\], but got 'sum'"):
        DistributedObjective(quadratic, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"probe_groups must be a positive integer or 'all', but got 'some'"):
        DistributedObjective(quadratic, probe_groups="some")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"probe_groups must divide the world size 1, but got 2"):
        DistributedObjective(quadratic, probe_groups=2)
    with pytest.raises(ValueError, match=r"weight must be None, a finite non-negative number or a callable"):
        DistributedObjective(quadratic, weight=-1.0)
    with pytest.raises(ValueError, match=r"check_every must be an integer >= 1, but got 0"):
        DistributedObjective(quadratic, check_every=0)
    obj = DistributedObjective(quadratic, shape=3)
    with pytest.raises(ValueError, match=r"points must have shape \(3,\) or \(n, 3\), but got shape \(2, 4\)"):
        obj(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"the objective must return 2 losses for points of shape \(2, 3\)"):
        DistributedObjective(lambda p: 0.0)(np.zeros((2, 3)))
