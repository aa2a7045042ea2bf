"""Problems and scenarios shared by the in-process tests and the torchrun worker.

A scenario is a small run (a few steps of ``minimize`` on a tiny blend) that every rank
executes through :class:`~spsa_mix.distributed.DistributedObjective`; it returns plain
numbers and lists (JSON), so that the ``torchrun`` ranks can hand them back to the test.
:func:`reference` computes what one process gets on the same global minibatches: the
plain :class:`~spsa_mix.blend.BlendedObjective`, or its shards scored one after the other
and combined with correctly rounded sums (:class:`SequentialShards`).
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import spsa_mix
from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.losses import CausalLM
from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.distributed import (
    DistributedObjective,
    Layout,
    TorchCommunicator,
    load_checkpoint,
    save_checkpoint,
    shard_data,
    shard_weight,
)

from ..blend.blend_helpers import make_tiny_experts

K = 3
STEPS = 8
LR = 0.05
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def tiny_data(batch: int, *, batches: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``batches`` global minibatches of ``batch`` examples (5 features, 3 classes)."""
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 5, generator=gen), torch.randint(0, 3, (batch,), generator=gen))
            for _ in range(batches)]


class TinyLM(nn.Module):
    """Embedding -> tanh -> linear: next-token logits ``(B, T, V)``."""

    def __init__(self, vocab: int = 7, hidden: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.embed(input_ids)))


def lm_experts(k: int = K) -> list[dict[str, torch.Tensor]]:
    experts = []
    for i in range(k):
        torch.manual_seed(100 + i)
        experts.append(TinyLM().state_dict())
    return experts


def lm_data(batch: int, *, batches: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Sequences of length 6 with 1 to 5 real tokens (padding labelled -100): the shards
    hold very different numbers of scored tokens."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(batches):
        ids = torch.randint(1, 7, (batch, 6), generator=gen)
        lengths = torch.randint(2, 7, (batch,), generator=gen)
        labels = ids.clone()
        labels[torch.arange(6)[None, :] >= lengths[:, None]] = -100
        out.append((ids, labels))
    return out


class CausalLM64(CausalLM):
    """:class:`~spsa_mix.blend.losses.CausalLM` in the logits' own precision (the stock loss
    computes in float32), so that float64 runs can be compared to rounding."""

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        logits, labels = self._shifted(outputs, targets)
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def blend(kind: str, dtype: str, data: Any) -> BlendedObjective:
    """The blended objective of problem ``kind`` ("tiny" or "lm") on ``data``."""
    if kind == "lm":
        return BlendedObjective(TinyLM(), lm_experts(), loss_fn=CausalLM64(), data=data, device="cpu",
                                dtype=DTYPES[dtype], batched=False)
    experts = make_tiny_experts(K, dtype=DTYPES[dtype])
    return BlendedObjective(experts[0], experts, data=data, device="cpu", dtype=DTYPES[dtype], batched=False)


def global_data(kind: str, batch: int) -> Any:
    return lm_data(batch) if kind == "lm" else tiny_data(batch)


class SequentialShards:
    """One process scoring the ``size`` shards of each minibatch one after the other and
    combining them as the ranks do, with correctly rounded sums (:func:`math.fsum`)."""

    def __init__(self, objectives: list[BlendedObjective]) -> None:
        self.objectives = objectives
        self.shape = objectives[0].shape
        self.k = objectives[0].k

    def _combine(self, parts: list[np.ndarray], weights: list[float]) -> np.ndarray:
        stacked = np.stack(parts)
        return np.array([math.fsum(stacked[:, j] * weights) for j in range(stacked.shape[1])]) / math.fsum(weights)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        parts, weights = [], []
        for obj in self.objectives:
            parts.append(np.asarray(obj(points), dtype=np.float64))
            weights.append(shard_weight(obj))
        return self._combine(parts, weights)

    def value_and_grad(self, alpha: np.ndarray) -> tuple[float, np.ndarray]:
        parts, weights = [], []
        for obj in self.objectives:
            loss, grad = obj.value_and_grad(alpha)
            parts.append(np.concatenate([[loss], grad.ravel()]))
            weights.append(shard_weight(obj))
        out = self._combine(parts, weights)
        return float(out[0]), out[1:].reshape(alpha.shape)

    def jvp(self, alpha: np.ndarray, tangents: np.ndarray) -> tuple[float, np.ndarray]:
        parts, weights = [], []
        for obj in self.objectives:
            loss, derivs = obj.jvp(alpha, tangents)
            parts.append(np.concatenate([[loss], derivs]))
            weights.append(shard_weight(obj))
        out = self._combine(parts, weights)
        return float(out[0]), out[1:]


class Sabotaged:
    """An objective that fails on purpose at call ``at``: ``"raise"`` a ValueError,
    ``"nonfinite"`` a NonFiniteLossError (as BlendedObjective does on a NaN loss), or
    ``"hang"`` for ``seconds``."""

    def __init__(self, objective: BlendedObjective, *, at: int, mode: str, seconds: float = 0.0) -> None:
        self.objective, self.at, self.mode, self.seconds = objective, at, mode, seconds
        self.shape, self.k, self.calls = objective.shape, objective.k, 0

    def shard_weight(self) -> float:
        return shard_weight(self.objective)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        out = self.objective(points)
        self.calls += 1
        if self.calls == self.at:
            if self.mode == "raise":
                raise ValueError("sabotaged on purpose")
            if self.mode == "nonfinite":
                raise NonFiniteLossError("the loss of the blended network is nan at probe 1", index=1, value=math.nan)
            if self.mode == "hang":
                time.sleep(self.seconds)
        return out


# ---------------------------------------------------------------------- scenarios
# name -> settings; "probe_groups" may be "all"; "world" restricts a scenario to one world size.
SCENARIOS: dict[str, dict[str, Any]] = {
    "spsa-data": dict(method="spsa", probe_groups=1, reduction="all-reduce", batch=10, m=2),
    "spsa-data-gather": dict(method="spsa", probe_groups=1, reduction="all-gather", batch=10, m=2),
    "spsa-probe": dict(method="spsa", probe_groups="all", reduction="all-reduce", batch=10, m=2),
    "spsa-data-float64": dict(method="spsa", probe_groups=1, reduction="all-reduce", batch=11, m=1, dtype="float64"),
    "lm-data-float64": dict(method="spsa", probe_groups=1, reduction="all-gather", batch=7, m=1, dtype="float64",
                            kind="lm"),
    "forward-grad-data": dict(method="forward-grad", probe_groups=1, reduction="all-gather", batch=10, m=2),
    "forward-grad-probe": dict(method="forward-grad", probe_groups="all", reduction="all-reduce", batch=10, m=3),
    "backprop-data": dict(method="backprop", probe_groups=1, reduction="all-gather", batch=10),
    "optuna-probe": dict(method="optuna:tpe", probe_groups="all", reduction="all-reduce", batch=10, batch_size=4),
    "divergence": dict(method="spsa", probe_groups=1, reduction="all-reduce", batch=10, m=1, seed_of_last_rank=1),
    "peer-error": dict(method="spsa", probe_groups=1, reduction="all-reduce", batch=10, m=1, sabotage="raise"),
    "nonfinite": dict(method="spsa", probe_groups=1, reduction="all-reduce", batch=10, m=1, sabotage="nonfinite"),
    "checkpoint": dict(method="checkpoint", probe_groups=1, reduction="all-reduce", batch=10, m=1),
    # last: a rank that stops answering leaves the process group unusable
    "hang": dict(method="spsa", probe_groups=1, reduction="all-reduce", batch=10, m=1, sabotage="hang",
                 timeout=1.5, seconds=4.0, world=2),
}


def _minimize(objective: Any, settings: dict[str, Any], *, seed: int = 0, **extra: Any) -> spsa_mix.OptimizeResult:
    method = settings["method"]
    kwargs: dict[str, Any] = dict(k=K, vectorized=True, method=method, seed=seed)
    if method in ("spsa", "checkpoint"):
        kwargs.update(method="spsa", m=settings["m"], maxiter=STEPS, lr=LR)
    elif method == "forward-grad":
        kwargs.update(m=settings["m"], maxiter=STEPS, lr=LR)
    elif method == "backprop":
        kwargs.update(maxiter=STEPS, lr=LR)
    else:
        kwargs.update(max_evals=3 * settings["batch_size"] + 1, options={"batch_size": settings["batch_size"]})
    kwargs.update(extra)
    return spsa_mix.minimize(objective, **kwargs)


def _summary(res: spsa_mix.OptimizeResult) -> dict[str, Any]:
    return {"x": res.x.tolist(), "fun": res.fun, "nit": res.nit, "nfev": res.nfev, "status": int(res.status),
            "history_x": np.asarray(res.history["x"]).tolist(), "history_loss": np.asarray(res.history["loss"]).tolist()}


def _error(e: BaseException) -> dict[str, Any]:
    cause = e.__cause__ if e.__cause__ is not None else e
    return {"error": type(e).__name__, "cause": type(cause).__name__, "message": str(e),
            "ranks": getattr(cause, "ranks", None)}


def run_scenario(name: str, group: Any, *, world_size: int, rank: int, workdir: Path) -> dict[str, Any]:
    """Run scenario ``name`` on this rank (``group``: a communicator or process group)."""
    s = SCENARIOS[name]
    layout = Layout(world_size=world_size, rank=rank,
                    probe_groups=world_size if s["probe_groups"] == "all" else s["probe_groups"])
    kind, dtype = s.get("kind", "tiny"), s.get("dtype", "float32")
    data = shard_data(global_data(kind, s["batch"]), rank=layout.data_rank, size=layout.data_size)
    local: Any = blend(kind, dtype, data)
    last = rank == world_size - 1
    if s.get("sabotage") and last:
        local = Sabotaged(local, at=2, mode=s["sabotage"], seconds=s.get("seconds", 0.0))
    if "timeout" in s and isinstance(group, TorchCommunicator):  # a wire of its own, with a short timeout
        group = TorchCommunicator(group.group, timeout=s["timeout"], store=group.store)
    obj = DistributedObjective(local, probe_groups=s["probe_groups"], group=group, reduction=s["reduction"])
    seed = s.get("seed_of_last_rank", 0) if last else 0
    out: dict[str, Any] = {"rank": rank}
    try:
        if s["method"] == "checkpoint":
            out.update(_checkpoint(obj, s, group, workdir))
        else:
            out.update(_summary(_minimize(obj, s, seed=seed)))
    except Exception as e:
        out.update(_error(e))
    out.update(bytes_sent=obj.bytes_sent, collectives=obj.collectives, calls=obj.calls)
    return out


def _checkpoint(obj: DistributedObjective, s: dict[str, Any], group: Any, workdir: Path) -> dict[str, Any]:
    """Five steps, a checkpoint written by rank 0 and read by all, five more."""
    first = _minimize(obj, s, maxiter=5, final_eval=False)
    path = workdir / "checkpoint.json"
    wrote = save_checkpoint(first.state, path, group=group) is not None
    state = load_checkpoint(path, group=group)
    second = _minimize(obj, s, maxiter=5, final_eval=False, initial_state=state)
    return {"wrote": wrote, "first_x": np.asarray(first.history["x"]).tolist(),
            "second_x": np.asarray(second.history["x"]).tolist()}


@functools.cache  # several tests compare with one reference (never modified)
def reference(name: str, world_size: int, *, plain: bool = False) -> dict[str, Any]:
    """Scenario ``name`` in one process on the same global minibatches: the data-parallel
    shards scored one after the other (:class:`SequentialShards`), or with ``plain`` (and
    for probe parallelism) the plain objective on whole minibatches."""
    s = SCENARIOS[name]
    kind, dtype = s.get("kind", "tiny"), s.get("dtype", "float32")
    full = global_data(kind, s["batch"])
    if plain or s["probe_groups"] == "all":
        objective: Any = blend(kind, dtype, full)
    else:
        objective = SequentialShards([blend(kind, dtype, shard_data(full, rank=r, size=world_size))
                                      for r in range(world_size)])
    if s["method"] == "checkpoint":
        return {"x": np.asarray(_minimize(objective, s, maxiter=10, final_eval=False).history["x"]).tolist()}
    return _summary(_minimize(objective, s))
