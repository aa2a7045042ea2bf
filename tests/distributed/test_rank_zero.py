"""Rank 0 writes; every rank reads what rank 0 read; checksums of alpha."""

from __future__ import annotations

import numpy as np
import pytest

import spsa_mix
from spsa_mix.distributed import (
    DivergenceError,
    ThreadWorld,
    broadcast_object,
    check_consistent,
    consistency_callback,
    is_writer,
    load_checkpoint,
    rank_zero_only,
    save_checkpoint,
)
from spsa_mix.io import write_json


def test_only_rank_zero_writes(tmp_path):
    def rank_main(comm):
        write = rank_zero_only(write_json, group=comm)
        return is_writer(comm), write({"rank": comm.rank}, tmp_path / f"from{comm.rank}.json")

    results = ThreadWorld(3).run(rank_main)
    assert [w for w, _ in results] == [True, False, False]
    assert [p is not None for _, p in results] == [True, False, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["from0.json"]


def test_every_rank_resumes_from_rank_zeros_checkpoint_and_continues_bit_for_bit(tmp_path):
    c = np.array([0.6, 0.3, 0.1])
    f = lambda a: float(((a - c) ** 2).sum())  # noqa: E731
    whole = spsa_mix.minimize(f, k=3, maxiter=20, seed=3, final_eval=False, lr=0.01)  # a constant step
    path = tmp_path / "ckpt.json"

    def rank_main(comm):
        first = spsa_mix.minimize(f, k=3, maxiter=10, seed=3, final_eval=False, lr=0.01)
        save_checkpoint(first.state, path, group=comm)
        state = load_checkpoint(path, group=comm)
        return spsa_mix.minimize(f, k=3, maxiter=10, seed=3, final_eval=False, initial_state=state).x

    for x in ThreadWorld(2).run(rank_main):
        assert np.array_equal(x, whole.x)


def test_a_missing_or_broken_checkpoint_is_an_error_on_every_rank(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    for name, error in (("none.json", FileNotFoundError), ("bad.json", ValueError)):
        results = ThreadWorld(2).run(lambda comm, n=name: load_checkpoint(tmp_path / n, group=comm),
                                     return_exceptions=True)
        assert all(isinstance(e, error) and "on rank 0" in str(e) for e in results)


def test_an_object_travels_from_one_rank_to_all():
    assert ThreadWorld(3).run(lambda comm: broadcast_object(comm.rank * 10, src=2, group=comm)) == [20, 20, 20]
    with pytest.raises(ValueError, match=r"src must be a rank in \[0, 0\], but got 1"):
        broadcast_object(1, src=1)


def test_check_consistent_names_the_ranks_that_differ():
    def rank_main(comm):
        alpha = np.array([0.5, 0.5]) + (1e-15 if comm.rank in (1, 3) else 0.0)
        check_consistent(alpha, group=comm)

    errors = ThreadWorld(4).run(rank_main, return_exceptions=True)
    assert all(isinstance(e, DivergenceError) and e.ranks == [1, 3] for e in errors)
    assert "alpha differs across ranks: ranks 1, 3 differ from rank 0" in str(errors[0])
    assert ThreadWorld(2).run(lambda comm: check_consistent(np.ones(2), group=comm)) == [None, None]


def test_the_callback_checks_alpha_every_few_steps_and_passes_the_result_on():
    seen = []

    def rank_main(comm):
        cb = consistency_callback(4, group=comm, then=lambda r: seen.append(r.nit) if comm.rank == 0 else None)
        return spsa_mix.minimize(lambda a: float(a @ a), k=3, maxiter=8, seed=comm.rank, callback=cb)

    errors = ThreadWorld(2).run(rank_main, return_exceptions=True)  # different seeds: they diverge
    # minimize wraps what a callback raises, keeping the finished steps
    assert all(isinstance(e, spsa_mix.ObjectiveError) for e in errors)
    assert all(isinstance(e.__cause__, DivergenceError) and e.__cause__.ranks == [1] for e in errors)
    assert "alpha after step 4 differs across ranks" in str(errors[0])
    assert all(e.partial_result.nit == 4 for e in errors)  # step 4 is done; its callback failed
    assert seen == [1, 2, 3]  # the check comes first: step 4 never reaches the next callback
