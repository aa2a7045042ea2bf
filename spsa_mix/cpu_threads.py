"""How many CPU threads PyTorch uses: chosen from the work and the free cores, set and restored.

PyTorch's default (one intra-op thread per core) makes every operation wait for all its
threads. A tiny model's operations take microseconds, so the threads cost more than they
save; on a busy machine a thread that the scheduler has parked makes each operation wait
for it (54 ms per ``linear`` of a 260K-parameter Llama on a 2-core machine at load 10,
against microseconds on one thread). :func:`choose_threads` takes the smaller of

* **the work**: one thread per :data:`FLOPS_PER_THREAD` floating-point operations of one
  forward (at least one), so a tiny model runs on one thread;
* **the free cores**: the cores this process may use (its CPU affinity, shared between
  the ``torchrun`` ranks of this machine, ``LOCAL_WORLD_SIZE``), less the load the
  other processes put on them (the 1-minute load average less this run's own ranks),
  and ``OMP_NUM_THREADS`` when it is set.

:func:`forward_flops` measures the work (PyTorch's FLOP counter over one forward);
:func:`torch_threads` sets a count for a block and restores the previous one. The merge
(``threads: auto``, :mod:`spsa_mix.merge`), the experiment (``--threads``,
:mod:`spsa_mix.experiment`) and the examples' builders use them. Thread counts change
the order of some floating-point sums: set ``threads`` to a number where runs must
agree bit for bit across machines or loads. ``benchmarks/merge_cost.py`` measures what
the choice saves.

Example
-------
>>> choose_threads(4e7, cores=16, load=0.0, env={})            # a tiny model: one thread
(1, 'a forward is 0.04 GFLOP, one thread per 1 GFLOP')
>>> choose_threads(2e10, cores=16, load=1.0, env={})[0]         # a large one on an idle machine
16
>>> choose_threads(2e10, cores=2, load=10.0, env={})[0]         # ... on a busy one
1
>>> import torch
>>> with torch_threads(1):
...     torch.get_num_threads()
1
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

__all__ = ["FLOPS_PER_THREAD", "choose_threads", "free_cores", "forward_flops", "torch_threads", "resolve_threads",
           "check_threads"]

# ours: floating-point operations of one forward per intra-op thread. A forward holds tens of
# operations; a parallel region costs 5-20 us on idle cores, a parked thread milliseconds, so a
# thread must bring about a millisecond of work per forward (~1 GFLOP at 20-50 GFLOP/s a core)
# before it pays: an estimate, not a measured crossover. What was measured (benchmarks/merge_cost.py,
# docs/merge_cost.md, this project's shared 2-core machine): the README's three examples and
# stories260K, 0.02 to 0.53 GFLOP a forward, took 1.3 to 6.6 times as long on two threads as on one.
FLOPS_PER_THREAD = 1e9


def free_cores(*, cores: int | None = None, load: float | None = None, env: Mapping[str, str] | None = None) -> int:
    """The cores this process can expect to have: its share of the machine's usable cores
    less the other processes' load (see the module docstring); at least 1.

    >>> free_cores(cores=16, load=0.0, env={})
    16
    >>> free_cores(cores=16, load=4.0, env={"LOCAL_WORLD_SIZE": "4"})   # four ranks, nothing else running
    4
    >>> free_cores(cores=2, load=9.7, env={})
    1
    """
    env = os.environ if env is None else env
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    ranks = _env_int(env, "LOCAL_WORLD_SIZE") or 1
    others = max(0.0, load - ranks)  # the load of the other processes: this run's ranks are running too
    free = max(1, round((cores - others) / ranks))
    omp = _env_int(env, "OMP_NUM_THREADS")
    return min(free, omp) if omp else free


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    try:
        value = int(env.get(name, ""))
    except ValueError:
        return None
    return value if value >= 1 else None


def choose_threads(flops: float | None, *, cores: int | None = None, load: float | None = None,
                   env: Mapping[str, str] | None = None) -> tuple[int, str]:
    """The intra-op thread count for forwards of ``flops`` operations each, and why.

    ``flops=None`` (the work is not known): the free cores alone.
    """
    free = free_cores(cores=cores, load=load, env=env)
    if flops is None:
        return free, f"{free} free core{'s' if free > 1 else ''} (the work of a forward is not known)"
    if not (isinstance(flops, (int, float)) and math.isfinite(flops) and flops >= 0):
        raise ValueError(f"flops must be a finite number >= 0, but got {flops!r}")
    by_work = max(1, int(flops // FLOPS_PER_THREAD))
    why = f"a forward is {flops / 1e9:.2g} GFLOP, one thread per {FLOPS_PER_THREAD / 1e9:g} GFLOP"
    if by_work > free:
        why += f"; {free} free core{'s' if free > 1 else ''}"
    return min(by_work, free), why


def resolve_threads(setting: int | str | None, flops: Callable[[], float | None], *,
                    device: Any = None) -> tuple[int | None, str]:
    """A ``threads`` setting as a count and the reason, for a run on ``device``.

    ``setting``: a count (kept), ``None`` (PyTorch's own setting: ``(None, ...)``) or
    ``"auto"``: :func:`choose_threads` of ``flops()`` (called only then; not on CUDA, whose
    forwards do not run on the CPU's threads: the free cores).

    >>> resolve_threads(3, lambda: 1.0)
    (3, 'set to 3')
    >>> resolve_threads("auto", lambda: 1e6, device="cpu")[0]
    1
    """
    if setting is None:
        return None, "PyTorch's own setting"
    if check_threads(setting) == "auto":
        on_cuda = device is not None and str(getattr(device, "type", device)).startswith("cuda")
        return choose_threads(None if on_cuda else flops())
    return setting, f"set to {setting}"


def check_threads(setting: Any) -> int | str:
    """``setting`` if it is ``"auto"`` or an integer >= 1; else ``ValueError`` naming it.

    >>> check_threads(0)
    Traceback (most recent call last):
    ...
    ValueError: threads must be 'auto' or an integer >= 1, but got 0
    """
    if setting != "auto" and (isinstance(setting, bool) or not isinstance(setting, int) or setting < 1):
        raise ValueError(f"threads must be 'auto' or an integer >= 1, but got {setting!r}")
    return setting


def forward_flops(fn: Callable[[], Any]) -> float | None:
    """Floating-point operations of ``fn()`` (one forward) as PyTorch's FLOP counter counts
    them (matrix products and convolutions); ``None`` when it cannot count them.

    >>> import torch
    >>> forward_flops(lambda: torch.nn.Linear(8, 4)(torch.zeros(2, 8)))   # 2 rows x 8 x 4, twice
    128.0
    """
    try:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            fn()
        return float(counter.get_total_flops())
    except Exception:  # noqa: BLE001 -- a model the counter cannot follow: the work is unknown
        return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run a block on ``threads`` intra-op threads (``None``: as they are), then restore
    the previous count; yields the count in force."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
