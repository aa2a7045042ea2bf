"""The learned spaces of mergekit's task-vector methods: TIES, DARE, breadcrumbs, DELLA.

``BlendedObjective(..., base=b, space="ties")`` (or ``space=TaskVectorMethod("ties",
{"density": 0.5})``) learns the weights ``w = alpha`` (one simplex, or one per layer group)
and, optionally, ``lambda`` (the space's ``scale``) of

    theta(alpha, s) = b + s * sum_i alpha_i m_i delta'_i / D

the mergekit merge of :mod:`spsa_mix.blend.methods.task_arithmetic`, where ``delta'_i`` is
expert ``i``'s sparsified task vector, ``m_i`` its agreement with the elected sign and ``D``
the disjoint mean's divisor (both only for the methods with a sign consensus, ``D`` only
with ``normalize``).

What is fixed before the search and what each probe recomputes (``consensus``):

* always fixed, computed once when the experts are stacked, in their stored dtype: the
  sparsification (TIES' trim, the DARE and DELLA masks drawn from the seed and the tensor's
  name, breadcrumbs' band), so the stack holds ``delta'_i`` and the base;
* ``consensus="fixed"`` (default; AdaMerging++ fixes TIES' trim and elected sign the same
  way): the elected sign, the masks ``m_i`` and the divisor ``D`` of the uniform weights;
  the stack's rows become ``m_i delta'_i / D`` and a probe is one blend, ``c @ W`` with
  ``c = (s alpha, 1)``, exactly the cost of a task-vector probe. Without a consensus the
  space is exact everywhere (on the simplex ``sum_i alpha_i = 1`` is the divisor); with one
  it is exact at the uniform weights and the merge of their consensus elsewhere;
* ``consensus="per-probe"``: the stack keeps ``delta'_i`` and each probe recomputes the
  elected sign, the masks and the divisor of its own weights (mergekit's merge exactly, a
  few elementwise passes over the ``K x P`` stack per probe instead of one product).

Whichever the search used, the model written (``save_pretrained``, ``blended_model``,
``blended_state_dict``) is mergekit's merge at the final weights, recomputed tensor by tensor
from the experts' files (the same masks), so that mergekit run on the exported
``mergekit.yaml`` writes the same tensors. ``docs/merge_methods.md`` measures what fixing
the consensus costs.

Example
-------
>>> import numpy as np, torch
>>> from spsa_mix.blend import BlendedObjective
>>> base = {"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}
>>> experts = [{"weight": torch.tensor([[1.0, -2.0], [0.5, 3.0]]), "bias": torch.zeros(2)},
...            {"weight": torch.tensor([[3.0, 1.0], [-0.5, 1.0]]), "bias": torch.ones(2)}]
>>> obj = BlendedObjective(torch.nn.Linear(2, 2), experts, base=base, space="ties", device="cpu")
>>> obj.blended_state_dict(np.array([0.5, 0.5]))["weight"].tolist()   # mergekit's TIES at weights (0.5, 0.5)
[[2.0, -2.0], [0.5, 2.0]]
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from spsa_mix.blend.methods.registry import CONSENSUS, LEARNED_SPACES, METHODS, check_parameters
from spsa_mix.blend.methods.task_arithmetic import combine, fixed_rows, sparsified_deltas, tensor_generator

__all__ = ["TaskVectorMethod", "MethodBlend", "CONSENSUS", "as_method", "method_memory"]

_CHUNK = 1 << 18  # columns a per-probe blend mixes at a time: its temporaries stay in cache (1.6x 1 << 20)


@dataclass(frozen=True)
class TaskVectorMethod:
    """A learned space of mergekit's task-vector family (see the module docstring).

    Parameters
    ----------
    name:
        ``"ties"``, ``"dare_ties"``, ``"dare_linear"``, ``"breadcrumbs"``,
        ``"breadcrumbs_ties"``, ``"della"`` or ``"della_linear"``.
    parameters:
        mergekit's parameters of the method: ``density`` (and ``gamma``, ``epsilon``), a
        number or one per expert; ``normalize``, ``rescale``. Defaults: mergekit's
        (:mod:`~spsa_mix.blend.methods.registry`). mergekit's ``lambda`` is the space's
        ``scale``.
    seed:
        Seed of the DARE and DELLA masks (each tensor's generator:
        :func:`~spsa_mix.blend.methods.task_arithmetic.tensor_generator`).
    consensus:
        ``"fixed"`` or ``"per-probe"`` (module docstring).
    start:
        The weights whose consensus ``"fixed"`` keeps (default uniform): the search's start,
        where the blend searched is then exact.
    """

    name: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    consensus: str = "fixed"
    start: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.name not in LEARNED_SPACES:
            raise ValueError(f"a task-vector method space must be one of {list(LEARNED_SPACES)}, but got {self.name!r}")
        if not isinstance(self.parameters, Mapping):
            raise ValueError(f"parameters must be a mapping of mergekit's parameters, but got {self.parameters!r}")
        if "lambda" in self.parameters:
            raise ValueError("lambda is the space's scale: pass scale= (a number or 'learned') instead of "
                             "parameters['lambda']")
        if "weight" in self.parameters:
            raise ValueError("weight is what the space learns (alpha): it is not a parameter of the space")
        check_parameters(self.name, dict(self.parameters), k=1 if not self._lists() else self._lists())
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, but got {self.seed!r}")
        if self.consensus not in CONSENSUS:
            raise ValueError(f"consensus must be one of {list(CONSENSUS)}, but got {self.consensus!r}")
        if self.start is not None and (not isinstance(self.start, tuple) or not self.start
                                       or any(not isinstance(w, float) or not w > 0 for w in self.start)):
            raise ValueError(f"start must be a tuple of positive weights (one per expert), but got {self.start!r}")

    def _lists(self) -> int:
        lengths = {len(v) for v in self.parameters.values() if isinstance(v, (list, tuple))}
        return lengths.pop() if len(lengths) == 1 else 0

    def resolved(self, k: int) -> dict[str, Any]:
        """The parameters for ``k`` experts, completed with mergekit's defaults (``lambda`` 1)."""
        return check_parameters(self.name, dict(self.parameters), k=k)

    def record(self, k: int) -> dict[str, Any]:
        """What a recipe records: the method, its parameters for ``k`` experts (``lambda`` is
        the scale), the consensus and where it is fixed, the masks' seed and how each tensor's
        generator derives from it.

        >>> TaskVectorMethod("dare_linear", {"density": 0.5}).record(2)["parameters"]
        {'density': [0.5, 0.5], 'normalize': False, 'rescale': True}
        """
        params = self.resolved(k)
        out: dict[str, Any] = {"method": self.name, "parameters": {key: list(v) if isinstance(v, tuple) else v
                                                                     for key, v in params.items() if key != "lambda"},
                               "consensus": self.consensus}
        if self.consensus == "fixed" and METHODS[self.name].consensus:
            out["consensus_fixed_at"] = list(self.start) if self.start else "uniform"
        if METHODS[self.name].random:
            out["mask_seed"] = int(self.seed)
            out["mask_generator"] = ("torch.Generator (CPU) seeded per tensor with int.from_bytes(sha256(f'{seed}/"
                                     "{name}')[:8], 'little') % 2**63; masks drawn expert after expert as mergekit "
                                     "draws them")
        return out


def as_method(space: Any) -> TaskVectorMethod | None:
    """``space`` as a :class:`TaskVectorMethod` when it names one (``None`` otherwise).

    >>> as_method("dare_ties").parameters, as_method("convex")
    ({}, None)
    """
    if isinstance(space, TaskVectorMethod):
        return space
    if isinstance(space, str) and space in LEARNED_SPACES:
        return TaskVectorMethod(space)
    return None


def method_memory(method: TaskVectorMethod | None, memory: str) -> str:
    """How a space holds its experts: a method space prepares its rows in place
    (:meth:`MethodBlend.prepare`), so it needs the resident stack (``"auto"`` becomes
    ``"resident"``, ``"streamed"`` is refused); any other space keeps ``memory``.

    >>> method_memory(as_method("ties"), "auto"), method_memory(None, "auto")
    ('resident', 'auto')
    """
    if method is None:
        return memory
    if memory == "streamed":
        raise ValueError(f"space={method.name!r} needs the resident stack (its sparsified task vectors are prepared "
                         "in place): pass memory='resident' or 'auto'")
    return "resident"


class MethodBlend:
    """What a task-vector method space adds to the stacked experts: the sparsification done
    once, the fixed consensus or the per-probe one, and the exact merge written at the end.

    Built by :meth:`prepare` from the stack (rows: the ``K`` experts, then the base) and the
    experts' checkpoints (kept to recompute the exact merge tensor by tensor).
    """

    def __init__(self, method: TaskVectorMethod, params: dict[str, Any], k: int,
                 sources: Callable[[], Sequence[Any]]) -> None:
        self.method = method
        self.params = params
        self.k = k
        self._sources = sources  # () -> the experts' and the base's Checkpoints, base last
        self._ckpts: Sequence[Any] | None = None

    @classmethod
    def build(cls, method: TaskVectorMethod, stack: Any, sources: Callable[[], Sequence[Any]]) -> MethodBlend:
        """The blend of ``method`` over ``stack`` (an :class:`~spsa_mix.blend.held.experts.ExpertStack`
        with a base row), its rows prepared in place (:meth:`prepare`)."""
        if not stack.has_base:
            raise ValueError(f"space={method.name!r} needs base= (mergekit's base_model)")
        out = cls(method, method.resolved(stack.k), stack.k, sources)
        out.prepare(stack.weights, stack.layout)
        return out

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def per_probe(self) -> bool:
        return self.method.consensus == "per-probe"

    def record(self) -> dict[str, Any]:
        """What a recipe records (:meth:`TaskVectorMethod.record`)."""
        return self.method.record(self.k)

    def prepare(self, weights: torch.Tensor, layout: Any) -> None:
        """Turn the stack's expert rows into the rows the search blends, tensor by tensor, in
        the stack's dtype: ``delta'_i`` (per-probe), or ``m_i delta'_i / D`` of the uniform
        weights (fixed)."""
        k = self.k
        if self.method.start is not None and len(self.method.start) != k:
            raise ValueError(f"start names {len(self.method.start)} weights, but there are {k} experts")
        start = list(self.method.start) if self.method.start is not None else [1.0 / k] * k
        with torch.no_grad():
            for name, shape, (a, b) in zip(layout.names, layout.shapes, layout.offsets().values(), strict=True):
                block = weights[:, a:b]
                base = block[k].view(shape)
                deltas = sparsified_deltas(self.name, base, [block[i].view(shape) for i in range(k)], self.params,
                                           generator=tensor_generator(self.method.seed, name))
                rows = deltas if self.per_probe else fixed_rows(self.name, deltas, start, self.params)
                block[:k].copy_(rows.reshape(k, -1))

    def mix(self, weights: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor,
            segments: Sequence[tuple[int, int]], dtype: torch.dtype) -> torch.Tensor:
        """One probe's ``(P,)`` parameters by the exact merge (``consensus="per-probe"``):
        ``alpha`` ``(G, K)``, ``scale`` a 0-d tensor, the stack of ``delta'_i`` and the
        base; in the coefficients' dtype, block by block, cast to ``dtype``."""
        params = dict(self.params, **{"lambda": scale})
        out = torch.empty(weights.shape[1], dtype=dtype, device=weights.device)
        acc = alpha.dtype
        parts = []
        for g, (start, stop) in enumerate(segments):
            for a in range(start, stop, _CHUNK):
                b = min(a + _CHUNK, stop)
                block = weights[:, a:b].to(acc)
                parts.append(combine(self.name, block[self.k], block[: self.k], alpha[g], params).to(dtype))
        if not parts:
            return out
        return torch.cat(parts)

    def tensor(self, name: str, alpha: Sequence[float], scale: float, dtype: torch.dtype) -> torch.Tensor:
        """Tensor ``name`` of mergekit's merge at weights ``alpha`` (its group's) and
        ``lambda = scale``, recomputed from the experts' checkpoints in ``dtype`` (the stack's)."""
        if self._ckpts is None:
            self._ckpts = self._sources()
        ckpts = self._ckpts
        base = ckpts[-1].read(name).to(dtype)
        experts = [c.read(name).to(dtype) for c in ckpts[:-1]]
        deltas = sparsified_deltas(self.name, base, experts, self.params,
                                   generator=tensor_generator(self.method.seed, name))
        return combine(self.name, base, deltas, [float(a) for a in alpha], dict(self.params, **{"lambda": float(scale)}))
