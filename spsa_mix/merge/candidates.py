"""The fixed merges that ``select: best`` scores beside the learned blend: mergekit's methods at
their defaults, Model Stock, SLERP, NuSLERP, the base model, and each expert.

A :class:`Candidate` is one fixed merge as mergekit names it (method, weights, parameters);
:func:`candidate_tensors` computes it tensor by tensor from the experts' files with the
functions of :mod:`spsa_mix.blend.methods` (equal to mergekit's own), :func:`score_tensors`
scores the model with the loss and data of the objective (the validation data of
``spsa-mix merge``), and :meth:`spsa_mix.blend.BlendedObjective.save_tensors` writes it when it wins.

Defaults (mergekit's, where it has them): every model's ``weight`` is 1 (mergekit requires a
weight and has no default; its examples use 1), ``lambda`` 1, ``density`` 1 (nothing
dropped), ``gamma`` 0.01, ``epsilon`` 0.15, ``normalize`` and ``rescale`` as the method
says, SLERP's ``t`` 0.5 from the first expert to the second. A ``density`` (``gamma``,
``epsilon``) set in the config applies to every baseline that takes it. Methods that give
the same merge with these parameters (at density 1, ``dare_linear``, ``breadcrumbs`` and
``della_linear`` are ``task_arithmetic``) are scored once; the others are recorded as
``same_as`` it.

Example
-------
>>> [c.name for c in baseline_candidates(("ties", "dare_linear", "task_arithmetic"), k=3, values={})]
['ties', 'dare_linear']
>>> baseline_candidates(("dare_linear", "task_arithmetic"), k=3, values={})[0].same_as
('task_arithmetic',)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["Candidate", "baseline_candidates", "expert_candidate", "candidate_tensors", "score_tensors",
           "open_sources"]


@dataclass
class Candidate:
    """One fixed merge: mergekit's ``method`` (``"base"``: the base model alone, ``"expert"``:
    expert ``index`` alone), the per-model ``weights`` and the ``parameters`` (per-expert
    ones as lists)."""

    name: str
    method: str
    weights: list[float] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)
    index: int | None = None
    same_as: tuple[str, ...] = ()

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method}
        if self.weights:
            out["weights"] = list(self.weights)
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        if self.index is not None:
            out["expert_index"] = self.index
        if self.same_as:
            out["same_merge_as"] = list(self.same_as)
        return out


def _signature(method: str, params: dict[str, Any]) -> tuple[Any, ...]:
    """What decides a task-vector merge with weights 1 (to find methods that coincide)."""
    from spsa_mix.blend.methods.registry import METHODS

    spec = METHODS[method]
    sparse = spec.sparsification if any(d < 1 for d in params.get("density", (1.0,))) else None
    detail = (params.get("rescale"), params.get("density"), params.get("gamma"), params.get("epsilon")) \
        if sparse else ()
    return (spec.consensus, params["normalize"], params["lambda"], sparse, *detail)


def baseline_candidates(names: Sequence[str], *, k: int, values: dict[str, Any]) -> list[Candidate]:
    """The candidates of :data:`spsa_mix.merge.methods.BASELINES` ``names`` for ``k`` experts
    (module docstring); ``values``: the config's ``density``, ``gamma``, ``epsilon``."""
    from spsa_mix.blend.methods.registry import METHODS, check_parameters

    out: list[Candidate] = []
    seen: dict[tuple[Any, ...], Candidate] = {}
    ones = [1.0] * k
    for name in names:
        if name == "base":
            out.append(Candidate("base", "base"))
        elif name == "linear":
            out.append(Candidate("linear", "linear", ones, {"normalize": True}))
        elif name in METHODS:
            given = {key: values[key] for key in METHODS[name].per_expert if values.get(key) is not None}
            params = check_parameters(name, given, k=k)
            sig = _signature(name, params)
            if sig in seen:
                seen[sig].same_as += (name,)
                continue
            shown = {key: (list(v) if isinstance(v, tuple) else v) for key, v in params.items()}
            cand = Candidate(name, name, ones, shown)
            seen[sig] = cand
            out.append(cand)
        elif name == "model_stock":
            out.append(Candidate("model_stock", "model_stock"))
        elif name == "slerp":
            out.append(Candidate("slerp", "slerp", parameters={"t": 0.5}))
        elif name == "nuslerp":
            out.append(Candidate("nuslerp", "nuslerp", [1.0, 1.0]))
        else:
            raise ValueError(f"unknown baseline {name!r}")
    return out


def expert_candidate(index: int, name: str, k: int) -> Candidate:
    """Expert ``index`` alone (mergekit: ``linear`` with a weight of 1 on it, 0 elsewhere)."""
    weights = [0.0] * k
    weights[index] = 1.0
    return Candidate(name, "expert", weights, index=index)


def _merge(cand: Candidate, name: str, base: torch.Tensor | None, experts: list[torch.Tensor],
           seed: int) -> torch.Tensor:
    from spsa_mix.blend.methods import interpolation
    from spsa_mix.blend.methods.registry import METHODS
    from spsa_mix.blend.methods.task_arithmetic import merge_tensor, tensor_generator

    m = cand.method
    if m == "base":
        assert base is not None
        return base
    if m == "expert":
        return experts[int(cand.index or 0)]
    if m == "linear":
        return interpolation.linear(experts, cand.weights, normalize=bool(cand.parameters.get("normalize", True)))
    if m in METHODS:
        assert base is not None
        params = {key: tuple(v) if isinstance(v, list) else v for key, v in cand.parameters.items()}
        return merge_tensor(m, base, experts, cand.weights, params, generator=tensor_generator(seed, name))
    if m == "model_stock":
        assert base is not None
        return interpolation.model_stock(base, experts)
    if m == "slerp":
        return interpolation.slerp(float(cand.parameters["t"]), experts[0], experts[1])
    if m == "nuslerp":
        return interpolation.nuslerp(experts, cand.weights, base=base)
    raise ValueError(f"unknown merge {m!r}")


def open_sources(experts: Sequence[Any], base: Any, names: Sequence[str]) -> list[Any]:
    """Lazy checkpoints of the experts and (last, when given) the base, as the stack opens them."""
    from spsa_mix.blend.held.experts import open_experts

    return open_experts(list(experts), dict.fromkeys(names), base)


def candidate_tensors(cand: Candidate, template: dict[str, torch.Tensor], sources: Sequence[Any], *,
                      has_base: bool, dtype: torch.dtype, seed: int,
                      out_dtype: Any = None) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of ``cand``'s merge for every tensor of ``template`` (a state dict of
    the architecture, in order): its floating-point tensors merged from ``sources`` (the
    experts' checkpoints, then the base's) in ``dtype`` and cast to ``out_dtype(name)``
    (default ``dtype``); tied names (one tensor under two names in ``template``) share the
    merged tensor; the other tensors (integer counters) as ``template`` has them."""
    ckpts = list(sources)
    expert_ckpts, base_ckpt = (ckpts[:-1], ckpts[-1]) if has_base else (ckpts, None)
    done: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for name, t in template.items():
            if id(t) in done:
                yield name, done[id(t)]
                continue
            if not t.is_floating_point() or any(name not in c.infos for c in ckpts):
                yield name, t
                continue
            experts = [c.read(name).to(device=t.device, dtype=dtype) for c in expert_ckpts]
            base = base_ckpt.read(name).to(device=t.device, dtype=dtype) if base_ckpt is not None else None
            merged = _merge(cand, name, base, experts, seed).to(out_dtype(name) if out_dtype else dtype)
            done[id(t)] = merged
            yield name, merged


def score_tensors(obj: Any, tensors: dict[str, torch.Tensor], data: Any) -> dict[str, float]:
    """Loss and metric of the model holding ``tensors`` (every tensor of ``obj``'s
    architecture) over ``data``, with ``obj``'s loss, on its device."""
    from spsa_mix.blend import evaluate

    net = obj.model_holding({n: t.to(obj.dtype) if t.is_floating_point() else t for n, t in tensors.items()})
    metrics = evaluate(net, data, loss_fn=obj.loss_fn, device=obj.device, dtype=obj.dtype)
    return {k: (float(v) if not isinstance(v, int) else v) for k, v in metrics.items() if np.isscalar(v)}
