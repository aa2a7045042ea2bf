"""What ``select: best`` chooses from, and how the chosen merge is written and exported.

The candidates of a run (:class:`Entry`): the learned blend, the uniform blend, the best
single expert, and the fixed baselines of the config (:mod:`spsa_mix.merge.candidates`:
mergekit's methods at their defaults, Model Stock, SLERP, NuSLERP, the base model). Each is
scored on the validation data (the training data when there is none) with the merge's loss:
points of the learned space through the objective, fixed merges as models built from their
tensors (:func:`~spsa_mix.merge.candidates.score_tensors`). For a method space whose sign
consensus was fixed for the search, the learned and uniform points are scored as the merge
that is written (mergekit's at those weights), and the search's own figure is kept beside it
(``search_loss``). :func:`write` writes the chosen one in the written dtype;
:func:`mergekit_export` gives its mergekit config, or the reason there is none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Entry", "consensus_fixed", "mergekit_note", "space_record", "learned_entries", "baseline_entries", "write", "mergekit_export", "written_dtype", "tensor_groups"]


@dataclass
class Entry:
    """One candidate: its key in the recipe, its table label, its scores, and either a
    ``point`` of the learned space or a fixed ``candidate`` merge."""

    key: str
    label: str
    metrics: dict[str, float]
    point: np.ndarray | None = None
    candidate: Any = None
    search_metrics: dict[str, float] | None = None


def space_record(obj: Any, plan: Any) -> dict[str, Any]:
    """The learned space in the recipe: its name, the layer groups the weights' rows are, and
    for a method space its parameters, consensus and mask seed."""
    from spsa_mix.merge.methods import space_argument

    cfg = plan.config
    out: dict[str, Any] = {"name": cfg.space, "granularity": cfg.granularity, "groups": obj.groups}
    space = space_argument(cfg.space, cfg.to_dict(), cfg.consensus, cfg.seed, plan.start)
    if not isinstance(space, str):
        out.update(space.record(obj.k))
    return out


def written_dtype(obj: Any, cfg: Any) -> Any:
    """The dtype the merge is written in: ``dtype`` of the config, else the experts' stored one."""
    import torch

    return getattr(torch, cfg.dtype) if cfg.dtype else obj.stack_dtype


def consensus_fixed(cfg: Any) -> bool:
    """A method space searched with its sign consensus fixed: the blend searched is the merge
    written only at the weights it was fixed at (the start).

    The search of every method space starts at that point (``start="uniform"``) instead of
    scoring the vertices first: a vertex is one sparsified task vector alone (the experts
    themselves are scored as models), amplified by up to K with a fixed disjoint mean, and on
    the ``vision`` example such extreme merges give BatchNorm variances below zero (a
    non-finite loss).
    """
    from spsa_mix.blend.methods.registry import LEARNED_SPACES, METHODS

    return cfg.space in LEARNED_SPACES and cfg.consensus == "fixed" and METHODS[cfg.space].consensus


def learned_entries(obj: Any, cfg: Any, *, learned: tuple[np.ndarray, dict[str, float]],
                    uniform: tuple[np.ndarray, dict[str, float]], scoring: Any) -> list[Entry]:
    """The learned and uniform points, scored as written (module docstring)."""
    from spsa_mix.merge.candidates import score_tensors

    out = []
    for key, label, (point, metrics) in (("learned", f"learned ({cfg.method})", learned), ("uniform", "uniform",
                                                                                            uniform)):
        entry = Entry(key, label, metrics, point=np.asarray(point, dtype=np.float64))
        if consensus_fixed(cfg):
            entry.search_metrics = metrics
            entry.metrics = score_tensors(obj, obj.blended_state_dict(point), scoring)
        out.append(entry)
    return out


def baseline_entries(obj: Any, plan: Any, *, names: tuple[str, ...], singles: list[dict[str, float]] | None,
                     scoring: Any, log: Callable[[str], None]) -> tuple[list[Entry], list[dict[str, float]]]:
    """The fixed baselines ``names`` scored (and each expert, when ``singles`` is ``None``:
    a method space, whose vertices are not the experts); returns them and every expert's scores."""
    import torch

    from spsa_mix.merge.candidates import (
        baseline_candidates,
        candidate_tensors,
        expert_candidate,
        open_sources,
        score_tensors,
    )

    cfg = plan.config
    k = len(plan.experts)
    if singles is not None and not names:
        return [], singles
    template = obj.blended_state_dict(np.asarray(obj.domain.center() if not obj.domain.simplex_only
                                                 else np.full(obj.shape, 1.0 / k)))
    sources = open_sources([str(p) for p in plan.experts], cfg.base, list(template))
    has_base = cfg.base is not None
    entries: list[Entry] = []

    def scored(cand: Any) -> dict[str, float]:
        with torch.no_grad():
            state = dict(candidate_tensors(cand, template, sources, has_base=has_base, dtype=obj.stack_dtype,
                                           seed=cfg.seed))
        return score_tensors(obj, state, scoring)

    if singles is None:
        singles = [scored(expert_candidate(i, plan.experts[i].name, k)) for i in range(k)]
    for cand in baseline_candidates(names, k=k, values=cfg.to_dict()):
        metrics = scored(cand)
        same = f" (= {', '.join(cand.same_as)})" if cand.same_as else ""
        log(f"baseline {cand.name}{same}: loss {metrics['loss']:.4f}")
        entries.append(Entry(cand.name, f"{cand.name} (mergekit defaults){same}" if cand.method not in
                             ("base", "model_stock", "slerp", "nuslerp") else cand.name, metrics, candidate=cand))
    return entries, singles


def write(obj: Any, entry: Entry, plan: Any, *, overwrite: bool, max_shard_size: int | str = "5GB") -> Path:
    """Write ``entry``'s model to the output, in the written dtype (replacing what is there
    with ``overwrite``), in shards of at most ``max_shard_size``; returns the path written."""
    import torch

    from spsa_mix.merge.candidates import candidate_tensors, open_sources

    cfg = plan.config
    dtype = written_dtype(obj, cfg)
    if entry.point is not None:
        return Path(obj.save_pretrained(entry.point, plan.output, overwrite=overwrite, dtype=dtype,
                                         max_shard_size=max_shard_size))
    template = obj.blended_state_dict(np.asarray(obj.domain.center() if not obj.domain.simplex_only
                                                 else np.full(obj.shape, 1.0 / obj.k)))
    sources = open_sources([str(p) for p in plan.experts], cfg.base, list(template))
    with torch.no_grad():
        tensors = candidate_tensors(entry.candidate, template, sources, has_base=cfg.base is not None,
                                    dtype=obj.stack_dtype, seed=cfg.seed, out_dtype=lambda name: dtype)
        return Path(obj.save_tensors(tensors, plan.output, overwrite=overwrite, dtype=dtype,
                                     max_shard_size=max_shard_size))


def tensor_groups(obj: Any) -> dict[str, int]:
    """Each floating-point tensor's name and the index of its layer group (a tied name: its
    source's group)."""
    groups = {g: i for i, g in enumerate(obj.groups)}
    state = obj.blended_state_dict(np.asarray(obj.domain.center() if not obj.domain.simplex_only
                                              else np.full(obj.shape, 1.0 / obj.k)))
    first: dict[int, int] = {}
    out = {}
    for name, t in state.items():
        if not t.is_floating_point():
            continue
        module = name.rpartition(".")[0]
        if module in groups:
            first.setdefault(id(t), groups[module])
            out[name] = groups[module]
        elif id(t) in first:
            out[name] = first[id(t)]
    return out


def mergekit_note(cfg: Any, entry: Entry) -> str | None:
    """What a user of the exported file must know: mergekit draws its own DARE and DELLA masks."""
    from spsa_mix.blend.methods.registry import METHODS

    method = entry.candidate.method if entry.candidate is not None else cfg.space
    if method in METHODS and METHODS[method].random:
        return ("mergekit draws its own random masks (from torch's global generator, in the order its graph runs): "
                "mergekit-yaml on this file gives another draw of the same method; spsa_mix's masks come from "
                "space.mask_seed (each tensor's generator: space.mask_generator)")
    return None


def mergekit_export(obj: Any, entry: Entry, plan: Any, alpha: np.ndarray, scale: float | None,
                    root: Path) -> tuple[dict[str, Any] | None, str | None]:
    """``entry``'s mergekit config (paths relative to ``root``), or ``None`` and why not."""
    from spsa_mix.blend.saving import dtype_name
    from spsa_mix.merge.methods import space_argument
    from spsa_mix.merge.mergekit import export_config

    cfg = plan.config
    record = None
    space = space_argument(cfg.space, cfg.to_dict(), cfg.consensus, cfg.seed, plan.start)
    if not isinstance(space, str):
        record = space.record(obj.k)
    layer = entry.point is not None and alpha.ndim == 2
    stack = dtype_name(obj.stack_dtype)
    compute = stack if (record is not None or entry.candidate is not None) else (
        "float64" if stack == "float64" else "float32")
    return export_config(kind=plan.kind, space=cfg.space, experts=plan.experts, base=cfg.base, root=root,
                         alpha=alpha.tolist(), scale=scale, method_record=record, candidate=entry.candidate,
                         per_tensor=tensor_groups(obj) if layer else None, dtype=compute,
                         out_dtype=dtype_name(written_dtype(obj, cfg)))
