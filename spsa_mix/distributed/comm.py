"""The wire: collectives of float64 vectors, with timeouts and errors that name ranks.

A :class:`Communicator` is what :class:`~spsa_mix.distributed.DistributedObjective` talks
to: ``all_reduce_sum`` and ``all_gather`` of one small float64 vector per call, and
``all_gather_object`` on the rare paths (errors, checkpoints). Three implementations:

* :class:`TorchCommunicator` -- ``torch.distributed`` (gloo on CPUs, NCCL on GPUs: the
  vector travels on the device that the group's backend needs, :func:`wire_device`);
  every collective waits at most ``timeout`` seconds, then raises
  :class:`~spsa_mix.distributed.errors.RankFailureError` naming the ranks that did not
  answer (found through the process group's key-value store);
* :class:`LocalCommunicator` -- one process, no communication;
* :class:`~spsa_mix.distributed.threads.ThreadCommunicator` -- ranks as threads of one
  process (tests, trying a layout without ``torchrun``).

Example
-------
>>> import numpy as np
>>> comm = LocalCommunicator()
>>> comm.all_reduce_sum(np.array([1.5, 2.0]), what="an example").tolist(), comm.world_size
([1.5, 2.0], 1)
>>> backend_for_device("cuda:1"), backend_for_device("cpu")
('nccl', 'gloo')
"""

from __future__ import annotations

import datetime
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.distributed as dist
from numpy.typing import NDArray

from spsa_mix.core.validation import check_positive
from spsa_mix.distributed.errors import RankFailureError

__all__ = [
    "Communicator",
    "LocalCommunicator",
    "TorchCommunicator",
    "resolve_communicator",
    "backend_for_device",
    "wire_device",
    "DEFAULT_TIMEOUT_S",
]

logger = logging.getLogger("spsa_mix")
FloatArray = NDArray[np.float64]

DEFAULT_TIMEOUT_S = 600.0  # ours: longer than any forward of one shard we expect, far shorter than gloo's 30 min
GRACE_S = 5.0  # after a failure, how long a rank waits for the others to report theirs
_INSTANCES = itertools.count()  # communicators made in the same order on every rank share an id


@runtime_checkable
class Communicator(Protocol):
    """Collectives over ``world_size`` ranks; every rank must make the same calls in the
    same order. ``what`` says what is being exchanged, for error messages."""

    rank: int
    world_size: int

    def all_reduce_sum(self, values: FloatArray, *, what: str) -> FloatArray:
        """The element-wise sum over ranks of ``values`` (same shape on every rank)."""
        ...

    def all_gather(self, values: FloatArray, *, what: str) -> FloatArray:
        """Every rank's ``values``, stacked in rank order: shape ``(world_size, *values.shape)``."""
        ...

    def all_gather_object(self, obj: Any, *, what: str) -> list[Any]:
        """Every rank's picklable ``obj``, in rank order."""
        ...


class LocalCommunicator:
    """One rank, nothing sent: the communicator of a single process.

    >>> LocalCommunicator().all_gather(np.zeros(2), what="x").shape
    (1, 2)
    """

    rank = 0
    world_size = 1

    def all_reduce_sum(self, values: FloatArray, *, what: str) -> FloatArray:
        return np.array(values, dtype=np.float64, copy=True)

    def all_gather(self, values: FloatArray, *, what: str) -> FloatArray:
        return np.array(values, dtype=np.float64, copy=True)[None]

    def all_gather_object(self, obj: Any, *, what: str) -> list[Any]:
        return [obj]

    def __repr__(self) -> str:
        return "LocalCommunicator()"


def backend_for_device(device: str | torch.device) -> str:
    """The ``torch.distributed`` backend for a compute device: NCCL for CUDA, gloo otherwise.

    >>> backend_for_device(torch.device("cuda", 0)), backend_for_device("mps")
    ('nccl', 'gloo')
    """
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def wire_device(backend: str, *, cuda_index: int | None = None) -> torch.device:
    """Where the vectors must be to travel through ``backend``: a CUDA device for NCCL
    (``cuda_index``, by default the current device), the CPU for gloo, MPI and a mixed
    backend such as ``"cpu:gloo,cuda:nccl"`` (CPU tensors go through its gloo part).

    >>> wire_device("nccl", cuda_index=3), wire_device("gloo"), wire_device("cpu:gloo,cuda:nccl")
    (device(type='cuda', index=3), device(type='cpu'), device(type='cpu'))
    """
    name = str(backend).lower()
    if "nccl" in name and "cpu:" not in name:
        return torch.device("cuda", torch.cuda.current_device() if cuda_index is None else cuda_index)
    return torch.device("cpu")


def _default_store() -> Any:
    """The default group's key-value store, or ``None`` (the accessor is private to PyTorch)."""
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # not initialised, or the private accessor moved
        return None


class TorchCommunicator:
    """Collectives of ``torch.distributed`` with a timeout and failures that name ranks.

    Parameters
    ----------
    group:
        A process group; ``None`` for the default one (``torch.distributed`` must be
        initialised, e.g. by :func:`~spsa_mix.distributed.init_distributed`).
    timeout:
        Seconds each collective may wait for the other ranks (the slowest rank's forward
        included) before it fails with :class:`RankFailureError`.
    store:
        The key-value store of the group, through which the ranks that still run report a
        failure, so that the error can name the ranks that did not; default: the default
        group's store. Without one the error cannot name them.
    grace:
        After a failure, seconds to wait for the other ranks' reports (default
        ``GRACE_S = 5``, at most ``timeout``).

    Every collective sends a float64 tensor on :func:`wire_device` of the group's backend;
    ``bytes_sent`` and ``collectives`` count what this rank put on the wire.
    """

    def __init__(self, group: Any = None, *, timeout: float = DEFAULT_TIMEOUT_S, store: Any = None,
                 grace: float = GRACE_S) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("TorchCommunicator needs an initialised torch.distributed process group: call "
                             "spsa_mix.distributed.init_distributed() (under torchrun) or "
                             "torch.distributed.init_process_group() first")
        self.group = group
        self.timeout = check_positive(timeout, "timeout")
        self.grace = min(check_positive(grace, "grace"), self.timeout)
        self.rank = int(dist.get_rank(group))
        self.world_size = int(dist.get_world_size(group))
        self.backend = str(dist.get_backend(group))
        self.device = wire_device(self.backend)
        self.store = store if store is not None else _default_store()
        self.bytes_sent = 0
        self.collectives = 0
        self._id = next(_INSTANCES)

    # ------------------------------------------------------------------ collectives
    def all_reduce_sum(self, values: FloatArray, *, what: str) -> FloatArray:
        t = torch.tensor(np.asarray(values, dtype=np.float64), dtype=torch.float64, device=self.device)
        self._run(lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group, async_op=True),
                  "all-reduce", what, t.numel() * 8)
        return t.cpu().numpy()

    def all_gather(self, values: FloatArray, *, what: str) -> FloatArray:
        t = torch.tensor(np.asarray(values, dtype=np.float64), dtype=torch.float64, device=self.device)
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        self._run(lambda: dist.all_gather(out, t, group=self.group, async_op=True), "all-gather", what, t.numel() * 8)
        return np.stack([o.cpu().numpy() for o in out])

    def all_gather_object(self, obj: Any, *, what: str) -> list[Any]:
        out: list[Any] = [None] * self.world_size
        self._run(lambda: dist.all_gather_object(out, obj, group=self.group), "all-gather of objects", what, 0)
        return out

    def _run(self, op: Callable[[], Any], kind: str, what: str, nbytes: int) -> None:
        self.collectives += 1
        self.bytes_sent += nbytes
        start = time.monotonic()
        try:
            work = op()
            if work is not None:
                work.wait(timeout=datetime.timedelta(seconds=self.timeout))
        except Exception as e:
            raise self._failure(kind, what, e, time.monotonic() - start) from e

    # ------------------------------------------------------------------ failures
    def _failure(self, kind: str, what: str, error: Exception, elapsed: float) -> RankFailureError:
        missing, late = self._unreported()
        cause = f"{type(error).__name__}: {str(error).strip()[:300]}"
        when = (f"within {self.timeout:g} s" if elapsed >= 0.95 * self.timeout
                else f"(the connection broke after {elapsed:.1f} s)")
        if missing is None:
            who = f"a rank did not answer {when}; it may have died or hung (the store is out of reach to say which)"
        elif late:
            who = (f"the other ranks had given up on this collective before rank {self.rank} reached it (its "
                   f"objective took longer than the timeout of {self.timeout:g} s?)")
        elif missing:
            many = len(missing) > 1
            who = (f"rank{'s' if many else ''} {', '.join(map(str, missing))} did not answer {when}; "
                   f"{'they' if many else 'it'} may have died or hung, or made a different call (every rank must "
                   "call the objective the same way, in the same order)")
        else:
            who = "every rank reached the collective and saw it fail (a network or backend error)"
        message = (f"spsa_mix.distributed: {who}. The {kind} of {what} failed on rank {self.rank} of "
                   f"{self.world_size} after {elapsed:.1f} s. Cause: {cause}")
        logger.error(message)
        return RankFailureError(message, ranks=missing, timeout=self.timeout)

    def _unreported(self) -> tuple[list[int] | None, bool]:
        """Post this rank's report of the failure in the store and wait (at most
        ``grace`` seconds) for the others'. Returns the ranks that did not report (``None`` if
        the store is out of reach) and whether all had reported before this one (it came late)."""
        if self.store is None:
            return None, False
        prefix = f"spsa_mix/failure/{self._id}/{self.collectives}/"
        try:
            others = [r for r in range(self.world_size) if r != self.rank]
            late = bool(others) and all(self.store.check([prefix + str(r)]) for r in others)
            self.store.set(prefix + str(self.rank), "1")
            missing = others
            deadline = time.monotonic() + self.grace
            while True:
                missing = [r for r in missing if not self.store.check([prefix + str(r)])]
                if not missing or time.monotonic() >= deadline:
                    return missing, late
                time.sleep(0.05)
        except Exception:  # the store's host is gone too
            return None, False

    def __repr__(self) -> str:
        return (f"TorchCommunicator(rank={self.rank}, world_size={self.world_size}, backend={self.backend!r}, "
                f"device={str(self.device)!r}, timeout={self.timeout:g})")


def resolve_communicator(group: Any = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> Communicator:
    """The communicator for ``group``: a :class:`Communicator` as it is; a process group (or
    ``None`` with ``torch.distributed`` initialised) through :class:`TorchCommunicator`;
    ``None`` in a single process, :class:`LocalCommunicator`.

    >>> resolve_communicator(None)            # torch.distributed not initialised here
    LocalCommunicator()
    """
    if isinstance(group, Communicator):
        return group
    if dist.is_available() and dist.is_initialized():
        return TorchCommunicator(group, timeout=timeout)
    if group is None:
        return LocalCommunicator()
    raise ValueError(f"group={group!r} needs an initialised torch.distributed (call init_distributed() first), "
                     "or pass a Communicator")
