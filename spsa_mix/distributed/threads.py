"""Ranks as threads of one process: try a layout, or test, without ``torchrun``.

:class:`ThreadWorld` holds ``world_size`` :class:`ThreadCommunicator`\\ s that exchange
vectors through shared memory and a barrier; :meth:`ThreadWorld.run` calls a function once
per rank, each in its own thread, and returns what each returned. The sums of
``all_reduce_sum`` are taken in rank order (``((r0 + r1) + r2) + ...``). When a rank's
function returns or raises, the ranks waiting for it in a collective fail with
:class:`~spsa_mix.distributed.errors.RankFailureError` naming it, instead of waiting.

The ranks share the process: PyTorch's intra-op threads, the GIL, and global state such
as forward-mode AD's levels (``torch.func.jvp`` calls in two threads at once break each
other: run ``method="forward-grad"`` under ``torchrun``, or one ``jvp`` at a time).

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
        self._cond = threading.Condition()
        self._entered = [0] * self.world_size  # exchanges each rank has entered
        self._slots: dict[int, list[Any]] = {}  # exchange -> each rank's value
        self._arrived: dict[int, int] = {}
        self._read: dict[int, int] = {}
        self._gone: set[int] = set()

    def communicator(self, rank: int) -> ThreadCommunicator:
        """The communicator of ``rank``."""
        rank = check_int(rank, "rank", minimum=0)
        if rank >= self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size - 1}], but got {rank}")
        return ThreadCommunicator(self, rank)

    def exchange(self, rank: int, value: Any, what: str) -> list[Any]:
        """Every rank's ``value`` in rank order (the one primitive of the collectives).

        Raises :class:`RankFailureError` naming the ranks that have not reached this
        exchange when they are gone (their function returned or raised) or after the timeout.
        """
        with self._cond:
            n = self._entered[rank]
            self._entered[rank] += 1
            self._slots.setdefault(n, [None] * self.world_size)[rank] = value
            self._arrived[n] = self._arrived.get(n, 0) + 1
            self._cond.notify_all()

            def missing() -> list[int]:
                return [r for r in range(self.world_size) if self._entered[r] <= n]

            done = self._cond.wait_for(
                lambda: self._arrived[n] == self.world_size or any(r in self._gone for r in missing()),
                self.timeout)
            if self._arrived[n] < self.world_size:
                absent = missing()
                reason = "left" if done else f"did not answer within {self.timeout:g} s"
                raise RankFailureError(f"spsa_mix.distributed: rank{'s' if len(absent) > 1 else ''} "
                                       f"{', '.join(map(str, absent))} {reason}; the exchange of {what} failed "
                                       f"on rank {rank}", ranks=absent, timeout=self.timeout)
            values = list(self._slots[n])
            self._read[n] = self._read.get(n, 0) + 1
            if self._read[n] == self.world_size:
                del self._slots[n], self._arrived[n], self._read[n]
            return values

    def _leave(self, rank: int) -> None:
        with self._cond:
            self._gone.add(rank)
            self._cond.notify_all()

    def run(self, fn: Callable[[ThreadCommunicator], T], *, return_exceptions: bool = False) -> list[Any]:
        """``fn(communicator)`` on every rank, each in a thread; the results in rank order.

        With ``return_exceptions`` an exception is returned in its rank's place; otherwise
        the exception of the lowest rank that raised is re-raised. A world runs once.
        """
        results: list[Any] = [None] * self.world_size
        failed: list[BaseException | None] = [None] * self.world_size

        def target(rank: int) -> None:
            try:
                results[rank] = fn(self.communicator(rank))
            except BaseException as e:  # noqa: B036 -- handed back to the caller's thread
                failed[rank] = e
            finally:
                self._leave(rank)

        threads = [threading.Thread(target=target, args=(r,), name=f"spsa_mix-rank-{r}", daemon=True)
                   for r in range(self.world_size)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
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
