"""Rank 0 writes, every rank reads the same: results, checkpoints, and a check that the
ranks still agree.

* :func:`is_writer` and :func:`rank_zero_only` -- make any writer (``spsa_mix.io``'s,
  ``torch.save``, a report) run on rank 0 alone, a no-op returning ``None`` elsewhere;
* :func:`save_checkpoint` / :func:`load_checkpoint` -- rank 0 writes a state (JSON,
  atomically); to resume, rank 0 reads it and sends it to every rank, so all ranks start
  from the same state even when the file is on rank 0's disk only;
* :func:`broadcast_object` -- any picklable object from one rank to all;
* :func:`check_consistent` and :func:`consistency_callback` -- compare a checksum of an
  array (alpha) across ranks and raise
  :class:`~spsa_mix.distributed.errors.DivergenceError` naming the ranks that differ.

Every function takes ``group``: a process group, a
:class:`~spsa_mix.distributed.comm.Communicator`, or ``None`` (the default group, or a
single process, where each is trivially rank 0).

Example
-------
>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from spsa_mix.distributed import ThreadWorld
>>> path = Path(tempfile.mkdtemp()) / "state.json"
>>> def rank_main(comm):
...     written = save_checkpoint({"beta": np.array([0.5, -0.5]), "step": 3}, path, group=comm)
...     return written is not None, load_checkpoint(path, group=comm)["step"]
>>> ThreadWorld(2).run(rank_main)                        # rank 0 wrote it; both read it
[(True, 3), (False, 3)]
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch.distributed as dist
from numpy.typing import ArrayLike

from spsa_mix.core.validation import check_int
from spsa_mix.distributed.comm import Communicator, resolve_communicator
from spsa_mix.distributed.errors import DivergenceError
from spsa_mix.distributed.objective import points_digest
from spsa_mix.io import write_json

__all__ = [
    "current_rank",
    "is_writer",
    "rank_zero_only",
    "broadcast_object",
    "save_checkpoint",
    "load_checkpoint",
    "check_consistent",
    "consistency_callback",
]

R = TypeVar("R")


def current_rank(group: Any = None) -> int:
    """This process's rank in ``group`` (0 in a single process).

    >>> current_rank()
    0
    """
    if isinstance(group, Communicator):
        return group.rank
    if dist.is_available() and dist.is_initialized():
        return int(dist.get_rank(group))
    return 0


def is_writer(group: Any = None) -> bool:
    """Whether this rank writes files: rank 0, or the only process.

    >>> is_writer()
    True
    """
    return current_rank(group) == 0


def rank_zero_only(fn: Callable[..., R], *, group: Any = None) -> Callable[..., R | None]:
    """``fn`` on rank 0; elsewhere a no-op that returns ``None``.

    >>> import tempfile
    >>> from spsa_mix.io import write_json
    >>> write = rank_zero_only(write_json)
    >>> write({"ok": True}, Path(tempfile.mkdtemp()) / "r.json").name      # the only process is rank 0
    'r.json'
    """

    @functools.wraps(fn)
    def on_rank_zero(*args: Any, **kwargs: Any) -> R | None:
        return fn(*args, **kwargs) if is_writer(group) else None

    return on_rank_zero


def broadcast_object(obj: Any, *, src: int = 0, group: Any = None) -> Any:
    """Rank ``src``'s ``obj`` on every rank (the others' ``obj`` is ignored; pass ``None``).

    >>> broadcast_object({"step": 3})
    {'step': 3}
    """
    comm = resolve_communicator(group)
    src = check_int(src, "src", minimum=0)
    if src >= comm.world_size:
        raise ValueError(f"src must be a rank in [0, {comm.world_size - 1}], but got {src}")
    return comm.all_gather_object(obj if comm.rank == src else None, what=f"an object from rank {src}")[src]


def save_checkpoint(state: Any, path: str | os.PathLike[str], *, group: Any = None) -> Path | None:
    """Write ``state`` (anything :func:`spsa_mix.io.to_jsonable` takes: an optimiser's
    ``state_dict()`` between steps) to ``path`` as JSON, atomically, on rank 0 only.

    Returns
    -------
    pathlib.Path or None
        The path on rank 0, ``None`` elsewhere.
    """
    return write_json(state, path) if is_writer(group) else None


def load_checkpoint(path: str | os.PathLike[str], *, group: Any = None) -> Any:
    """The JSON state at ``path`` as rank 0 reads it, on every rank.

    Raises
    ------
    FileNotFoundError, ValueError
        On every rank, when rank 0 cannot read or parse the file.
    """
    comm = resolve_communicator(group)
    payload: tuple[str, Any] | None = None
    if comm.rank == 0:
        try:
            payload = ("ok", json.loads(Path(path).read_text()))
        except FileNotFoundError:
            payload = ("missing", f"no checkpoint at {os.fspath(path)!r} (on rank 0)")
        except (OSError, ValueError) as e:
            payload = ("bad", f"cannot read the checkpoint {os.fspath(path)!r} on rank 0: {type(e).__name__}: {e}")
    status, value = comm.all_gather_object(payload, what="a checkpoint from rank 0")[0]
    if status == "missing":
        raise FileNotFoundError(value)
    if status == "bad":
        raise ValueError(value)
    return value


def check_consistent(value: ArrayLike, *, name: str = "alpha", group: Any = None) -> None:
    """Raise :class:`DivergenceError`, on every rank, if ``value`` is not the same array
    (bit for bit) on every rank; the error names the ranks that differ from rank 0.

    >>> check_consistent(np.array([0.25, 0.75]))            # one process: trivially
    """
    comm = resolve_communicator(group)
    digest = points_digest(value, tag=name, world_size=comm.world_size)
    digests = comm.all_gather(np.array([float(digest)]), what=f"the checksums of {name}")[:, 0]
    differ = [r for r in range(comm.world_size) if digests[r] != digests[0]]
    if differ:
        raise DivergenceError(
            f"spsa_mix.distributed: {name} differs across ranks: rank{'s' if len(differ) > 1 else ''} "
            f"{', '.join(map(str, differ))} differ{'' if len(differ) > 1 else 's'} from rank 0. Every rank must build the optimiser with the "
            "same seed and options, start from the same state and get the same losses",
            ranks=differ,
        )


def consistency_callback(every: int = 10, *, group: Any = None,
                         then: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """A ``callback`` for :func:`spsa_mix.minimize` that checks ``intermediate_result.x``
    across ranks every ``every`` steps (:func:`check_consistent`), then calls ``then``.

    >>> import spsa_mix
    >>> res = spsa_mix.minimize(lambda a: float(a @ a), k=3, maxiter=20, callback=consistency_callback(5))
    >>> res.nit
    20
    """
    every = check_int(every, "every", minimum=1)
    count = {"steps": 0}

    def callback(intermediate_result: Any) -> Any:
        count["steps"] += 1
        if count["steps"] % every == 0:
            check_consistent(intermediate_result.x, name=f"alpha after step {count['steps']}", group=group)
        return then(intermediate_result) if then is not None else None

    return callback
