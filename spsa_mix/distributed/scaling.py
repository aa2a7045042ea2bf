"""How a step scales with the number of ranks: the model behind ``docs/distributed.md``.

A step scores ``n`` probes (``2 m`` for SPSA) on a global minibatch of ``B`` examples with
``N`` ranks in ``P`` probe groups of ``D = N / P`` data ranks
(:class:`~spsa_mix.distributed.layout.Layout`). Every rank waits for the slowest, which
scores ``ceil(n / P)`` probes, each on a shard of ``ceil(B / D)`` examples; then one
all-reduce of ``n + P + 2`` floats, a message so small that only its latency counts::

    T(N) = ceil(n / P) * (t_blend + max(ceil(B / D) * t_example, t_weights)) + t_hop * ceil(log2 N)

``t_blend`` forms theta(alpha) for one probe (reading the ``K`` experts: it does not shrink
with data parallelism), ``t_example`` is one example's forward, ``t_weights`` the floor of a
forward that must read every weight once however small its shard, and ``t_hop`` one round
of a latency-bound all-reduce (recursive doubling or a tree: ``log2 N`` rounds).

Example
-------
>>> model = StepModel(t_example=1e-3, t_blend=2e-3, t_hop=1e-5)
>>> round(model.step_s(probes=2, batch=256, world=1), 4)           # 2 * (2 ms + 256 ms)
0.516
>>> round(model.step_s(probes=2, batch=256, world=8), 4)           # 2 * (2 + 32) ms + 3 hops
0.068
>>> model.best_layout(probes=16, batch=8, world=64)[0]    # 16 groups of 4 ranks: one probe each
16
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spsa_mix.core.validation import check_int

__all__ = ["StepModel"]


@dataclass(frozen=True)
class StepModel:
    """The inputs of the model (seconds; see the module docstring)."""

    t_example: float  #: forward of one example on one rank
    t_blend: float = 0.0  #: forming one probe's blended weights
    t_weights: float = 0.0  #: the least a forward costs (reading every weight once)
    t_hop: float = 0.0  #: one round of a small all-reduce

    def forward_s(self, examples: int) -> float:
        """One probe's forward on ``examples`` examples."""
        return max(examples * self.t_example, self.t_weights)

    def allreduce_s(self, world: int) -> float:
        """Latency of the all-reduce of a few floats over ``world`` ranks.

        >>> StepModel(t_example=0.0, t_hop=1.0).allreduce_s(512)
        9.0
        """
        return self.t_hop * math.ceil(math.log2(world)) if world > 1 else 0.0

    def step_s(self, *, probes: int, batch: int, world: int, probe_groups: int = 1) -> float:
        """Time of one step (the slowest rank's probes, then the all-reduce)."""
        probes = check_int(probes, "probes", minimum=1)
        batch = check_int(batch, "batch", minimum=1)
        world = check_int(world, "world", minimum=1)
        probe_groups = check_int(probe_groups, "probe_groups", minimum=1)
        if world % probe_groups:
            raise ValueError(f"probe_groups must divide world={world}, but got {probe_groups}")
        data = world // probe_groups
        if data > batch:
            raise ValueError(f"{data} data ranks need at least {data} examples per minibatch, but batch={batch}")
        per_rank = math.ceil(probes / probe_groups)
        return per_rank * (self.t_blend + self.forward_s(math.ceil(batch / data))) + self.allreduce_s(world)

    def best_layout(self, *, probes: int, batch: int, world: int) -> tuple[int, float]:
        """The number of probe groups (a divisor of ``world`` with at most ``batch`` data
        ranks) of the fastest step, and that step's time."""
        options = [(self.step_s(probes=probes, batch=batch, world=world, probe_groups=p), p)
                   for p in range(1, world + 1) if world % p == 0 and world // p <= batch]
        if not options:
            raise ValueError(f"no layout of {world} ranks fits a batch of {batch}")
        t, p = min(options)
        return p, t
