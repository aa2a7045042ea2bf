"""Ranks as threads of one process: try a layout, or test, without ``torchrun``.

:class:`ThreadWorld` holds ``world_size`` :class:`ThreadCommunicator`\\ s that exchange
vectors through shared memory and a barrier; :meth:`ThreadWorld.run` calls a function once
per rank, each in its own thread, and returns what each returned. The sums of
``all_reduce_sum`` are taken in rank order (``((r0 + r1) + r2) + ...``). When a rank's
function raises, the barrier is broken, so the others fail at their next collective
with :class:`~spsa_mix.distributed.errors.RankFailureError` instead of waiting.

Example
-------
>>> import numpy as np
>>> world = ThreadWorld(3)
>>> world.run(lambda comm: float(comm.all_reduce_sum(np.array([comm.rank + 1.0]), what="x")[0]))
[6.0, 6.0, 6.0]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.validation import check_int, check_positive
from spsa_mix.distributed.errors import RankFailureError

__all__ = ["ThreadWorld", "ThreadCommunicator"]

T = TypeVar("T")
FloatArray = NDArray[np.float64]


class ThreadWorld:
    """``world_size`` ranks in one process (see the module docstring).

    Parameters
    ----------
    world_size:
        Number of ranks.
    timeout:
        Seconds a collective waits for the other threads before it fails.
    """

    def __init__(self, world_size: int, *, timeout: float = 60.0) -> None:
        self.world_size = check_int(world_size, "world_size", minimum=1)
        self.timeout = check_positive(timeout, "timeout")
        self._barrier = threading.Barrier(self.world_size)
        self._slots: list[Any] = [None] * self.world_size

    def communicator(self, rank: int) -> ThreadCommunicator:
        """The communicator of ``rank``."""
        rank = check_int(rank, "rank", minimum=0)
        if rank >= self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size - 1}], but got {rank}")
        return ThreadCommunicator(self, rank)

    def exchange(self, rank: int, value: Any, what: str) -> list[Any]:
        """Every rank's ``value`` in rank order (the one primitive of the collectives)."""
        self._slots[rank] = value
        self._wait(rank, what)
        values = list(self._slots)
        self._wait(rank, what)  # nobody overwrites a slot before everyone has read them all
        return values

    def _wait(self, rank: int, what: str) -> None:
        try:
            self._barrier.wait(self.timeout)
        except threading.BrokenBarrierError:
            raise RankFailureError(f"spsa_mix.distributed: a rank did not answer within {self.timeout:g} s "
                                   f"(or raised); the exchange of {what} failed on rank {rank}",
                                   timeout=self.timeout) from None

    def run(self, fn: Callable[[ThreadCommunicator], T], *, return_exceptions: bool = False) -> list[Any]:
        """``fn(communicator)`` on every rank, each in a thread; the results in rank order.

        With ``return_exceptions`` an exception is returned in its rank's place; otherwise
        the exception of the lowest rank that raised is re-raised.
        """
        results: list[Any] = [None] * self.world_size
        failed: list[BaseException | None] = [None] * self.world_size

        def target(rank: int) -> None:
            try:
                results[rank] = fn(self.communicator(rank))
            except BaseException as e:  # noqa: B036 -- handed back to the caller's thread
                failed[rank] = e
                self._barrier.abort()

        threads = [threading.Thread(target=target, args=(r,), name=f"spsa_mix-rank-{r}", daemon=True)
                   for r in range(self.world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self._barrier.reset()
        if return_exceptions:
            return [failed[r] if failed[r] is not None else results[r] for r in range(self.world_size)]
        for e in failed:
            if e is not None:
                raise e
        return results


class ThreadCommunicator:
    """One rank of a :class:`ThreadWorld` (a :class:`~spsa_mix.distributed.comm.Communicator`)."""

    def __init__(self, world: ThreadWorld, rank: int) -> None:
        self.world = world
        self.rank = rank
        self.world_size = world.world_size
        self.bytes_sent = 0
        self.collectives = 0

    def all_reduce_sum(self, values: FloatArray, *, what: str) -> FloatArray:
        arr = np.array(values, dtype=np.float64, copy=True)
        self._count(arr)
        parts = self.world.exchange(self.rank, arr, what)
        total = parts[0].copy()
        for p in parts[1:]:
            total = total + p  # rank order
        return total

    def all_gather(self, values: FloatArray, *, what: str) -> FloatArray:
        arr = np.array(values, dtype=np.float64, copy=True)
        self._count(arr)
        return np.stack(self.world.exchange(self.rank, arr, what))

    def all_gather_object(self, obj: Any, *, what: str) -> list[Any]:
        self.collectives += 1
        return self.world.exchange(self.rank, obj, what)

    def _count(self, arr: FloatArray) -> None:
        self.collectives += 1
        self.bytes_sent += arr.nbytes

    def __repr__(self) -> str:
        return f"ThreadCommunicator(rank={self.rank}, world_size={self.world_size})"
