"""The thread count comes from the work and the free cores; a block's count is restored after it."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.cpu_threads import (
    FLOPS_PER_THREAD,
    choose_threads,
    forward_flops,
    free_cores,
    resolve_threads,
    torch_threads,
)


@pytest.mark.parametrize(("cores", "load", "env", "expected"), [
    (2, 0.3, {}, 2),                                  # idle: every core (the run itself is not "others")
    (2, 10.0, {}, 1),                                 # a busy shared machine: one
    (16, 5.0, {}, 12),                                # four other processes
    (16, 4.0, {"LOCAL_WORLD_SIZE": "4"}, 4),          # torchrun ranks share the cores
    (16, 0.0, {"OMP_NUM_THREADS": "3"}, 3),           # the user's OMP_NUM_THREADS caps it
    (16, 0.0, {"OMP_NUM_THREADS": "junk"}, 16),       # ... when it is a number
])
def test_free_cores(cores: int, load: float, env: dict, expected: int) -> None:
    assert free_cores(cores=cores, load=load, env=env) == expected


def test_a_tiny_model_gets_one_thread_even_on_an_idle_machine() -> None:
    assert choose_threads(4e7, cores=16, load=0.0, env={})[0] == 1
    assert choose_threads(0.0, cores=16, load=0.0, env={})[0] == 1


def test_a_large_model_gets_the_free_cores_and_says_why() -> None:
    n, why = choose_threads(64 * FLOPS_PER_THREAD, cores=8, load=3.0, env={})
    assert n == 6 and "GFLOP" in why and "6 free cores" in why
    assert choose_threads(3 * FLOPS_PER_THREAD, cores=8, load=0.0, env={})[0] == 3


def test_unknown_work_uses_the_free_cores() -> None:
    n, why = choose_threads(None, cores=4, load=0.0, env={})
    assert n == 4 and "not known" in why


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "many"])
def test_bad_work_is_named(bad) -> None:
    with pytest.raises(ValueError, match="flops must be a finite number >= 0, but got"):
        choose_threads(bad, cores=2, load=0.0, env={})


def test_resolve_threads_counts_auto_and_none() -> None:
    called = []
    assert resolve_threads(2, lambda: called.append(1) or 0.0) == (2, "set to 2") and not called
    assert resolve_threads(None, lambda: 0.0)[0] is None
    assert resolve_threads("auto", lambda: 1e5, device="cpu")[0] == 1
    n, why = resolve_threads("auto", lambda: called.append(1) or 0.0, device="cuda:0")
    assert not called and "not known" in why  # a GPU's forwards do not run on the CPU's threads
    for bad in (0, "two", True, 1.5):
        with pytest.raises(ValueError, match="threads must be 'auto' or an integer >= 1, but got"):
            resolve_threads(bad, lambda: 0.0)


def test_forward_flops_counts_matrix_products() -> None:
    lin = torch.nn.Linear(16, 8, bias=False)
    assert forward_flops(lambda: lin(torch.zeros(4, 16))) == 2 * 4 * 16 * 8
    assert forward_flops(lambda: 1 / 0) is None  # a forward it cannot follow: unknown


def test_torch_threads_restores_the_count_even_on_error() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with pytest.raises(RuntimeError), torch_threads(target) as n:
        assert n == torch.get_num_threads() == target
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(None) as n:
        assert n == before
