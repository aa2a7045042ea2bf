"""``spsa-mix merge`` with several targets at once (``data: {tasks: [...]}``).

AdaMerging's multi-task setting: one backbone merged for every task, each task scored on
its own data with its own loss (``entropy`` for unlabeled inputs), weight and head. What
:func:`run_tasks` does, after :func:`~spsa_mix.merge.run.run_merge`'s checks and the
run's state handling:

1. each task's data, read as a one-target merge reads it (its minibatches in an order fixed
   by ``seed``; under ``torchrun`` each rank scores its shard of every task's minibatch);
2. one :class:`~spsa_mix.blend.multitask.MultiTaskObjective`: the experts stacked once,
   each task's head kept out of the blend and read from its expert (``expert:``, by default
   the one at the task's position) or from ``head_file``; every head checked against the
   task's architecture from the files' indexes before any weight is read (for plain state
   dicts the architecture is built for the task's own number of classes);
3. reference scores on each task's validation data (its training data when it has none):
   the uniform blend and every expert alone, hence the best single expert by the weighted
   mean loss;
4. the search (``minimize`` on the weighted mean of the tasks' losses, the weighted
   validation loss every ``validate_every`` steps), resumable as a one-target merge;
5. what it writes into ``output``: with heads, one folder per task (``output/<name>/``: the
   blended backbone with that task's head, in the experts' format), else one model;
   ``recipe.json`` with every task's loss and accuracy and their means for the uniform blend,
   every expert, the best single expert and the learned blend; ``mergekit.yaml`` where
   mergekit can express the merge (no heads); ``loss.png``.

Example
-------
>>> print(tasks_table([{"blend": "uniform", "loss": 0.5, "accuracy": 0.75,
...                     "tasks": {"a": {"loss": 0.25, "accuracy": 1.0}, "b": {"loss": 0.75, "accuracy": 0.5}}}],
...                   ["a", "b"], metric="accuracy"))
| blend | a loss | a accuracy (%) | b loss | b accuracy (%) | mean loss | mean accuracy (%) |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| uniform | 0.2500 | 100.00 | 0.7500 | 50.00 | 0.5000 | 75.00 |
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from spsa_mix.merge.config import TaskConfig
from spsa_mix.merge.run import (
    RECIPE_FORMAT,
    MergeOutcome,
    MergePlan,
    _load_data,
    _plain_model,
    _vertex,
    _weights,
    run_record,
    target_kind,
)

__all__ = ["run_tasks", "tasks_table", "task_expert"]


def _percent(value: Any) -> str:
    return "n/a" if value is None or not math.isfinite(float(value)) else f"{100 * float(value):.2f}"


def tasks_table(rows: Sequence[dict[str, Any]], names: Sequence[str], *, metric: str) -> str:
    """A markdown table: one row per blend, each task's loss and metric, then their means
    (the loss weighted as the objective weights it, the metric a plain mean)."""
    head = ["blend"] + [f"{n} {c}" for n in names for c in ("loss", f"{metric} (%)")] + ["mean loss", f"mean {metric} (%)"]
    lines = ["| " + " | ".join(head) + " |", "| --- |" + " ---: |" * (len(head) - 1)]
    for r in rows:
        cells = [r["blend"]]
        for n in names:
            t = r["tasks"][n]
            cells += [f"{t['loss']:.4f}", _percent(t["accuracy"])]
        cells += [f"{r['loss']:.4f}", _percent(r["accuracy"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def task_expert(task: TaskConfig, experts: Sequence[Path]) -> int | None:
    """The index of the expert that task's ``expert:`` names (an index, a path, or the
    expert's file or folder name), ``None`` when it names none (the task's position).

    >>> t = TaskConfig(name="a", train="x", expert="b.pt")
    >>> task_expert(t, [Path("ft/a.pt"), Path("ft/b.pt")])
    1
    """
    e = task.expert
    if e is None:
        return None
    if isinstance(e, int):
        if e >= len(experts):
            raise ValueError(f"task {task.name!r}: expert {e} is out of range: there are {len(experts)} experts "
                             "(indices from 0)")
        return e
    for i, p in enumerate(experts):
        if Path(e).resolve() == p.resolve() or e in (p.name, p.stem):
            return i
    raise ValueError(f"task {task.name!r}: expert {e!r} is none of the experts {[str(p) for p in experts]}")


def _target_plan(plan: MergePlan, task: TaskConfig) -> MergePlan:
    """A one-target plan for ``task``: what ``_load_data`` reads its data with."""
    cfg = dataclasses.replace(plan.config, data=task.data_config(), loss=task.loss or plan.config.loss)
    loss = task.loss or plan.loss
    return dataclasses.replace(plan, config=cfg, loss=loss, task_kind=target_kind(cfg.data, loss, plan.model_dir))


def _objective(plan: MergePlan, loaded: list[tuple[TaskConfig, Any, Any]], shard: Callable[[Any], Any]) -> Any:
    import torch

    from spsa_mix.blend.multitask import MultiTaskObjective, TaskSpec

    cfg = plan.config
    specs = []
    for position, (task, source, train) in enumerate(loaded):
        index = task_expert(task, plan.experts)
        head_from: Any = task.head_file if task.head_file is not None else index
        holder = Path(task.head_file) if task.head_file is not None else plan.experts[index if index is not None else position]
        model = _plain_model(cfg.model, source, holder,  # type: ignore[arg-type]  # built for the task's head
                             str(task.train)) if plan.kind == "file" and task.head else None
        specs.append(TaskSpec(task.name, shard(train), loss=task.loss or plan.loss or "cross-entropy",
                              weight=task.weight, head=task.head, head_from=head_from, model=model))
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    common: dict[str, Any] = dict(device=cfg.device, granularity=cfg.granularity)
    if plan.kind in ("hf", "adapter"):
        return MultiTaskObjective.from_pretrained([str(p) for p in plan.experts], specs, base=cfg.base,
                                                  space=cfg.space, scale=cfg.scale, dtype=dtype, **common)
    extra: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if cfg.space == "task-vectors":
        extra.update(base=cfg.base, space="task-vectors", scale=cfg.scale)
    shared = _plain_model(cfg.model, loaded[0][1], plan.experts[0], str(cfg.data.tasks[0].train))  # type: ignore[arg-type]
    return MultiTaskObjective(shared, [str(p) for p in plan.experts], specs, **common, **extra)


def run_tasks(plan: MergePlan, ranks: Any, say: Callable[[str], None], *, progress: bool,
              start: float, clock: Any) -> MergeOutcome:
    """The multi-task merge of ``plan`` (see the module docstring), on ``ranks``, each phase
    marked on ``clock`` (:class:`~spsa_mix.merge.cost.PhaseClock`); called by
    :func:`~spsa_mix.merge.run.run_merge` once the plan is checked and the state handled."""
    import spsa_mix
    from spsa_mix.core.result import Status
    from spsa_mix.io import write_json

    cfg = plan.config
    loaded, scoring = [], {}
    for task in cfg.data.tasks:
        source, train, val = _load_data(_target_plan(plan, task))
        loaded.append((task, source, train))
        scoring[task.name] = val if val is not None else train
    where = "validation" if all(t.validation for t in cfg.data.tasks) else "validation (training where none)"
    clock.mark("data", hold=True)
    obj = _objective(plan, loaded, ranks.shard)  # heads and experts that do not match fail here, before any weight
    clock.mark("experts")
    names = list(obj.names)
    say(f"{len(plan.experts)} {plan.kind} experts, {len(names)} tasks ({', '.join(names)}), space {cfg.space}, "
        f"method {cfg.method}, budget {cfg.budget}")
    uniform_point = obj.domain.center() if not obj.domain.simplex_only else np.full(obj.shape, 1.0 / obj.k)
    vertices = [_vertex(obj, i) for i in range(obj.k)]
    scores = obj.evaluate(np.stack([np.asarray(uniform_point, dtype=np.float64), *vertices]), scoring)
    uniform, singles = scores[0], scores[1:]
    best = int(np.argmin([m["loss"] for m in singles]))
    say(f"uniform blend: {where} loss {uniform['loss']:.4f}; best single expert: {plan.experts[best].name} "
        f"({singles[best]['loss']:.4f})")

    clock.mark("references", f"{len(plan.experts) + 1} passes over each task's {where} data")

    def val_objective(x: np.ndarray) -> float:
        return float(obj.evaluate(x, scoring)["loss"])

    kwargs: dict[str, Any] = dict(method=cfg.method, max_evals=cfg.budget, seed=cfg.seed, vectorized=True,
                                  show_progress_bar=progress and ranks.is_writer,
                                  val_objective=ranks.same(val_objective), val_every=cfg.validate_every)
    if ranks.world_size == 1:
        kwargs.update(checkpoint=plan.state, checkpoint_every=cfg.checkpoint_every)
    res = spsa_mix.minimize(ranks.wrap(obj), k=obj.shape, **kwargs, **dict(cfg.options))
    ranks.close()
    clock.mark("search", f"{res.nfev} evaluations, {res.get('nval', 0)} validation checks")
    if res.status == Status.INTERRUPTED:
        raise KeyboardInterrupt
    if res.status == Status.NONFINITE:  # as a one-target merge: the last finite point, the finite blends compared
        say(f"warning: the search stopped early on a loss that is not finite ({res.message}); the learned blend is "
            f"its last point with finite losses, after {res.nit} steps")
    elif not res.success:
        raise RuntimeError(f"the search stopped: {res.message}")
    if not ranks.is_writer:
        return MergeOutcome(plan.output, plan.output, {}, "")
    learned = obj.evaluate(res.x, scoring)
    candidates = {"learned": (np.asarray(res.x, dtype=np.float64), learned),
                  "uniform": (np.asarray(uniform_point, dtype=np.float64), uniform),
                  "best single": (vertices[best], singles[best])}
    from spsa_mix.merge.report import choose_blend

    chosen, reason = choose_blend({k: m["loss"] for k, (_, m) in candidates.items()}, cfg.select,
                                  where=f"tasks' {where}")
    say(f"written: the {chosen} blend ({reason})")
    point = candidates[chosen][0]
    alpha, scale = _weights(obj, point, cfg)
    written = obj.save_pretrained(point, plan.output, overwrite=cfg.overwrite)
    metric = "next-token accuracy" if all(_target_plan(plan, t).task_kind == "causal-lm" for t in cfg.data.tasks) \
        else "accuracy"
    rows = [{"blend": "uniform", **uniform}, {"blend": f"best single ({plan.experts[best].name})", **singles[best]},
            {"blend": f"learned ({cfg.method})", **learned}]
    for row, name in zip(rows, ("uniform", "best single", "learned"), strict=True):
        if name == chosen:
            row["blend"] += " (written)"
    table = tasks_table(rows, names, metric=metric)
    out_dir = plan.output if plan.output.is_dir() else plan.output.parent
    learned_alpha, learned_scale = _weights(obj, res.x, cfg)
    recipe = {
        "format": RECIPE_FORMAT,
        "alpha": alpha.tolist(), "scale": None if scale is None else float(scale), "written": chosen,
        "experts": [str(p) for p in plan.experts],
        "tasks": [{"name": t.name, "weight": t.weight, "normalised_weight": float(w), "loss": spec.loss.__class__.__name__
                   if not isinstance(t.loss, str) else t.loss, "head": t.head, "head_from": t.head_file or (
                       str(plan.experts[spec.head_from]) if isinstance(spec.head_from, int) else None),
                   "path": written[t.name]}
                  for t, w, spec in zip(cfg.data.tasks, obj.weights, obj.tasks, strict=True)],
        "method": cfg.method, "budget": cfg.budget, "seed": cfg.seed, "scored_on": where, "metric": metric,
        "uniform": uniform,
        "best_single": {"expert": str(plan.experts[best]), "index": best, **singles[best]},
        "learned": {"alpha": learned_alpha.tolist(), "scale": learned_scale, **learned, "fun": float(res.fun),
                    "nfev": int(res.nfev), "cost": float(res.cost), "nit": int(res.nit), "message": res.message},
        "experts_scores": [{"expert": str(p), **m} for p, m in zip(plan.experts, singles, strict=True)],
        **run_record(res, cfg, start),
        "selection": f"{chosen}: {reason}",
    }
    from spsa_mix.merge import select
    from spsa_mix.merge.report import loss_figure, save_figure

    kit, kit_reason = (None, "each task's head is kept apart: mergekit merges one model") if obj.has_heads else \
        select.mergekit_export(obj.backbone, select.Entry(chosen, chosen, candidates[chosen][1], point=point), plan,
                               alpha, scale, out_dir)
    recipe["mergekit"] = {"written": kit is not None, "file": "mergekit.yaml" if kit is not None else None,
                          "reason": kit_reason}
    write_json(recipe, out_dir / "recipe.json", indent=1)  # first, so that a failing figure loses no result
    if kit is not None:
        import yaml

        from spsa_mix.io import atomic_write_text

        atomic_write_text(out_dir / "mergekit.yaml", yaml.safe_dump(kit, sort_keys=False))
    scale_column = obj.domain.n_weights if obj.domain.positive else None
    save_figure(loss_figure(res.history, title=f"{cfg.method} on {len(plan.experts)} experts, {len(names)} tasks "
                                               f"({cfg.space})",
                            references={"uniform blend": uniform["loss"],
                                        f"best single expert ({plan.experts[best].name})": singles[best]["loss"]},
                            where=f"tasks' {where}", scale_column=scale_column), out_dir / "loss.png")
    clock.mark("write")
    recipe["phases"] = clock.as_dict()
    recipe["seconds"] = recipe["phases"]["total"]
    write_json(recipe, out_dir / "recipe.json", indent=1)
    if plan.state.exists():
        plan.state.unlink()
    from spsa_mix.merge.fingerprint import record_path

    record_path(cfg).unlink(missing_ok=True)
    return MergeOutcome(plan.output, plan.output, recipe, table)
