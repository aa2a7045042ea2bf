"""Where each rank sits: ``probe_groups`` groups of ranks that split the probes of a call,
each group's ranks splitting the minibatch (data parallel).

The ``world_size`` ranks form a grid of ``P = probe_groups`` rows and ``D = world_size / P``
columns. Rank ``r`` is in probe group ``r // D`` and holds data shard ``r % D``: the ranks
of a group are contiguous, and data shard ``d`` is the same slice of the minibatch in
every group. ``P = 1`` is pure data parallelism (every rank scores every probe on its
shard), ``P = world_size`` pure probe parallelism (every rank scores its probes on the
whole minibatch).

The ``n`` probes of a call are split into ``P`` contiguous chunks whose sizes differ by at
most one, the larger ones first (``numpy.array_split``'s rule); a minibatch of ``B``
examples into ``D`` shards the same way (:func:`split_bounds`).

Example
-------
>>> layout = Layout(world_size=6, rank=4, probe_groups=2)
>>> layout.data_size, layout.probe_group, layout.data_rank
(3, 1, 1)
>>> layout.probe_chunk(5)                  # group 1 scores probes 3 and 4 of five
(3, 5)
>>> split_bounds(10, 3)                    # 10 examples on 3 data ranks: 4, 3, 3
[0, 4, 7, 10]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.validation import check_int

__all__ = ["Layout", "split_bounds"]


def split_bounds(n: int, parts: int) -> list[int]:
    """Bounds of ``parts`` contiguous chunks of ``range(n)``, sizes differing by at most one,
    the larger first: chunk ``i`` is ``range(bounds[i], bounds[i + 1])``.

    >>> split_bounds(5, 3), split_bounds(2, 3)
    ([0, 2, 4, 5], [0, 1, 2, 2])
    """
    n = check_int(n, "n", minimum=0)
    parts = check_int(parts, "parts", minimum=1)
    q, r = divmod(n, parts)
    bounds = [0]
    for i in range(parts):
        bounds.append(bounds[-1] + q + (1 if i < r else 0))
    return bounds


@dataclass(frozen=True)
class Layout:
    """The grid of ranks (see the module docstring).

    Parameters
    ----------
    world_size:
        Number of ranks.
    rank:
        This rank, in ``[0, world_size)``.
    probe_groups:
        Number of groups that split the probes; must divide ``world_size``. ``1``: data
        parallel only; ``world_size``: probe parallel only.
    """

    world_size: int
    rank: int
    probe_groups: int = 1

    def __post_init__(self) -> None:
        check_int(self.world_size, "world_size", minimum=1)
        check_int(self.rank, "rank", minimum=0)
        check_int(self.probe_groups, "probe_groups", minimum=1)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size - 1}] (world_size={self.world_size}), "
                             f"but got {self.rank}")
        if self.world_size % self.probe_groups:
            raise ValueError(f"probe_groups must divide the world size {self.world_size}, "
                             f"but got {self.probe_groups}")

    @classmethod
    def single(cls) -> Layout:
        """One rank, one group.

        >>> Layout.single().data_size
        1
        """
        return cls(world_size=1, rank=0, probe_groups=1)

    @property
    def data_size(self) -> int:
        """Ranks per probe group ``D``: the number of shards of each minibatch."""
        return self.world_size // self.probe_groups

    @property
    def probe_group(self) -> int:
        """This rank's probe group, in ``[0, probe_groups)``."""
        return self.rank // self.data_size

    @property
    def data_rank(self) -> int:
        """This rank's shard of the minibatch, in ``[0, data_size)``."""
        return self.rank % self.data_size

    def probe_bounds(self, n: int) -> list[int]:
        """Bounds of every group's chunk of ``n`` probes (:func:`split_bounds`)."""
        return split_bounds(n, self.probe_groups)

    def probe_chunk(self, n: int) -> tuple[int, int]:
        """``(lo, hi)``: this rank's group scores probes ``lo .. hi - 1`` of ``n`` (possibly
        none, ``lo == hi``, when ``n < probe_groups``)."""
        bounds = self.probe_bounds(n)
        return bounds[self.probe_group], bounds[self.probe_group + 1]

    def group_of_probes(self, n: int) -> NDArray[np.int64]:
        """The probe group of each of ``n`` probes, shape ``(n,)``.

        >>> Layout(world_size=2, rank=0, probe_groups=2).group_of_probes(3).tolist()
        [0, 0, 1]
        """
        sizes = np.diff(self.probe_bounds(n))
        return np.repeat(np.arange(self.probe_groups, dtype=np.int64), sizes)
