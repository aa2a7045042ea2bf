"""``MultiTaskObjective``: one blended backbone scored on several targets at once.

AdaMerging's setting (Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task
Learning", ICLR 2024): K experts fine-tuned from one pretrained model on K tasks, each with
its own classification head, merged into one backbone that serves every task; the
coefficients are learned on unlabeled inputs by minimising the entropy of the predictions.
Here each target ``t`` (a :class:`TaskSpec`) has its own minibatch stream, loss, weight
``w_t`` and, optionally, its own head (tensors under a prefix, not blended, taken from the
task's expert or from a file), and one evaluation is the weighted mean

    L(alpha) = sum_t w_t L_t(theta(alpha); B_t) / sum_t w_t

with every task's stream advancing once per call, so that all probes of a step see the same
minibatches ``B_1, ..., B_T``.

How it is held: the experts are stacked **once** (a :class:`~spsa_mix.blend.BlendedObjective`
over the backbone, every head prefix kept out of the blend); each task gets a *view*
(:meth:`MultiTaskObjective.task`), a ``BlendedObjective`` that shares the stack and the one
blended buffer and differs only by its head tensors, its architecture (a head of another
shape) and its loss and data. A looped probe is blended once into the shared buffer and
then run through every task's network, so the blend is not repeated per task; the memory
beyond one ``BlendedObjective`` is each task's head and a weightless copy of the
architecture per task with a head.

``value_and_grad`` and ``jvp`` (``method="backprop"``, ``"forward-grad"``) differentiate the
same weighted mean. Under ``torchrun`` (:class:`~spsa_mix.distributed.DistributedObjective`)
each task's shard weight is counted apart (:meth:`MultiTaskObjective.part_losses` and
:meth:`~MultiTaskObjective.part_shard_weights`), so the loss is the weighted mean of each
task's mean over its whole global minibatch, as in one process.

Every check that needs no expert weight runs first (each a ``ValueError`` naming the task):
no tasks, a task without data, duplicated or empty names, weights that are not positive
finite numbers, a head prefix that matches no tensor of the task's architecture or of its
head source, a head tensor whose shape differs between the two, a task architecture whose
backbone differs from the shared one.

Example
-------
>>> import numpy as np, torch, spsa_mix
>>> gen = torch.Generator().manual_seed(0)
>>> def net(classes):
...     return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, classes))
>>> experts = [net(3), net(5)]                      # each fine-tuned on its task, its own head "2"
>>> tasks = [TaskSpec("a", torch.randn(16, 4, generator=gen), head="2", head_from=0, model=net(3)),
...          TaskSpec("b", torch.randn(16, 4, generator=gen), head="2", head_from=1, model=net(5), weight=2)]
>>> obj = MultiTaskObjective(net(3), experts, tasks, device="cpu")   # entropy on unlabeled inputs
>>> obj.k, obj.names, obj(np.full((2, 2), 0.5)).shape
(2, ('a', 'b'), (2,))
>>> res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, max_evals=40, seed=0)
>>> obj.task("b").blended_model(res.x)[2].weight.shape    # task b's network: the blend and b's head
torch.Size([5, 8])
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from spsa_mix.blend.batches import Batch, BatchStream
from spsa_mix.blend.sources.checkpoints import DATA_PARALLEL_PREFIX, Checkpoint, open_checkpoint
from spsa_mix.blend.scoring import Metrics, evaluate_blend
from spsa_mix.blend.held.experts import ExpertSource, check_expert_list, matches_prefix
from spsa_mix.blend.held.functional import bind_to_buffer, blend_into
from spsa_mix.blend.losses import CausalLM, CrossEntropy, Entropy, LossFn, correct_counts, logits_of, resolve_loss
from spsa_mix.blend.objective import DEFAULT_SIMPLEX_ATOL, BlendedObjective
from spsa_mix.blend.saving import SaveSource
from spsa_mix.blend.skeleton import skeleton_of

__all__ = ["TaskSpec", "MultiTaskObjective", "check_tasks", "WithAccuracy", "summarize_tasks"]

FloatArray = NDArray[np.float64]
HeadSource = int | ExpertSource


@dataclass(frozen=True)
class TaskSpec:
    """One target of a :class:`MultiTaskObjective`.

    Attributes
    ----------
    name:
        A unique, non-empty name (the task's folder in a saved merge).
    data:
        Its minibatches: a ``DataLoader`` or any iterable of batches, or one fixed batch
        (see :class:`~spsa_mix.blend.BlendedObjective`); a bare tensor is one fixed batch of
        unlabeled inputs.
    loss:
        ``"entropy"`` (default: unlabeled inputs, AdaMerging's objective), any name of
        :func:`~spsa_mix.blend.losses.resolve_loss` or a callable.
    weight:
        Its weight in the objective, a positive number (default 1).
    head:
        The prefix (or prefixes) of ``state_dict`` names of the task's own head, kept out of
        the blend; ``None``: the task runs the blended network as it is.
    head_from:
        Where the head's tensors come from: an expert's index, or a source of its own (a
        ``.safetensors`` / ``.pt`` file, a state dict or a module holding the tensors under
        ``head``). Default: the expert at the task's position, when there are as many tasks
        as experts.
    model:
        The task's architecture when its head differs in shape from the shared one (its
        backbone must be the shared one's); default the shared architecture.
    """

    name: str
    data: Any
    loss: str | LossFn = "entropy"
    weight: float = 1.0
    head: str | Sequence[str] | None = None
    head_from: HeadSource | None = None
    model: nn.Module | None = None


def _prefixes(head: Any, label: str) -> tuple[str, ...]:
    heads = (head,) if isinstance(head, str) else tuple(head) if isinstance(head, Sequence) else None
    if not heads or not all(isinstance(h, str) and h for h in heads):
        raise ValueError(f"{label}: head must be a non-empty string or a list of them (state_dict prefixes), "
                         f"but got {head!r}")
    return heads


def check_tasks(tasks: Any, k: int) -> list[TaskSpec]:
    """``tasks`` checked (see the module docstring), each head's source resolved: an
    expert's index or a source of its own, the task's position by default.

    >>> check_tasks([TaskSpec("a", 0, weight=0)], k=2)
    Traceback (most recent call last):
    ...
    ValueError: task 'a': weight must be a positive finite number, but got 0
    >>> [t.head_from for t in check_tasks([TaskSpec("a", 0, head="fc"), TaskSpec("b", 0, head="fc")], k=2)]
    [0, 1]
    """
    if isinstance(tasks, (TaskSpec, str, Mapping)) or not isinstance(tasks, Sequence) or not tasks:
        raise ValueError(f"tasks must be a non-empty list of TaskSpec, but got {tasks!r:.100}")
    out: list[TaskSpec] = []
    seen: set[str] = set()
    for i, task in enumerate(tasks):
        if not isinstance(task, TaskSpec):
            raise ValueError(f"tasks[{i}] must be a TaskSpec, but got {type(task).__name__}")
        if not isinstance(task.name, str) or not task.name or task.name.strip() != task.name or "/" in task.name:
            raise ValueError(f"tasks[{i}]: name must be a non-empty string without '/' or surrounding spaces, "
                             f"but got {task.name!r}")
        label = f"task {task.name!r}"
        if task.name in seen:
            raise ValueError(f"{label}: the name is used by two tasks; every task needs its own name")
        seen.add(task.name)
        if task.data is None:
            raise ValueError(f"{label} has no data: pass its minibatches (data=...)")
        w = task.weight
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not (math.isfinite(w) and w > 0):
            raise ValueError(f"{label}: weight must be a positive finite number, but got {w!r}")
        if not callable(task.loss) and not isinstance(task.loss, str):
            raise ValueError(f"{label}: loss must be a loss name or a callable, but got {task.loss!r}")
        if task.model is not None and not isinstance(task.model, nn.Module):
            raise ValueError(f"{label}: model must be an nn.Module (the task's architecture), but got "
                             f"{type(task.model).__name__}")
        head_from = task.head_from
        if task.head is None:
            if head_from is not None:
                raise ValueError(f"{label}: head_from={head_from!r} needs head= (the prefix of the head's tensors)")
        else:
            _prefixes(task.head, label)
            if head_from is None:
                if len(tasks) != k:
                    raise ValueError(f"{label}: name the expert its head comes from (head_from=<index> or a file): "
                                     f"with {len(tasks)} tasks and {k} experts the task's position names none")
                head_from = i
            elif isinstance(head_from, numbers.Integral) and not isinstance(head_from, bool) \
                    and not 0 <= int(head_from) < k:
                raise ValueError(f"{label}: head_from must be an expert index in [0, {k - 1}] or a file, "
                                 f"but got {head_from!r}")
            elif isinstance(head_from, bool):
                raise ValueError(f"{label}: head_from must be an expert index or a file, but got {head_from!r}")
        out.append(dataclasses.replace(task, weight=float(w), head_from=head_from,
                                       head=None if task.head is None else _prefixes(task.head, label)))
    without = [t.name for t in out if t.head is None]
    if without and len(without) < len(out):
        raise ValueError(f"task {without[0]!r} has no head, but other tasks do: give every task its head (or none)")
    return out


def _open_head(source: HeadSource, experts: Sequence[Any], reference: Mapping[str, Any], label: str) -> Checkpoint:
    """The checkpoint the head is read from (an expert's, or its own), ``module.`` stripped
    as for the experts; only its index is read."""
    is_index = isinstance(source, numbers.Integral) and not isinstance(source, bool)
    src = experts[int(source)] if is_index else source
    ckpt = open_checkpoint(src, label=f"experts[{int(source)}]" if is_index else f"{label}'s head file")
    if not any(n.startswith(DATA_PARALLEL_PREFIX) for n in reference):
        ckpt.strip_prefix(DATA_PARALLEL_PREFIX)
    return ckpt


def _check_head_tensors(task: TaskSpec, reference: Mapping[str, Any], ckpt: Checkpoint) -> list[str]:
    """The names under the task's head, each present in the head's source with the
    architecture's shape; raises ``ValueError`` naming the first that is not."""
    label = f"task {task.name!r}"
    names = []
    for h in task.head or ():
        under = [n for n in reference if matches_prefix(n, (h,))]
        if not under:
            tops = sorted({n.split(".")[0] for n in reference})
            raise ValueError(f"{label}: head {h!r} matches no tensor of the architecture; its top-level names are {tops}")
        if not any(matches_prefix(n, (h,)) for n in ckpt.infos):
            raise ValueError(f"{label}: head {h!r} matches no tensor of {ckpt.label}")
        for n in under:
            if n not in ckpt.infos:
                raise ValueError(f"{label}: {ckpt.label} has no head tensor {n!r}")
            got, want = tuple(ckpt.infos[n].shape), tuple(reference[n].shape)
            if got != want:
                raise ValueError(f"{label}: head tensor {n!r} has shape {got} in {ckpt.label}, but the task's "
                                 f"architecture has {want}")
        names += under
    return names


def _check_backbone(task: TaskSpec, shared: Mapping[str, Any], own: Mapping[str, Any], heads: Sequence[str]) -> None:
    """A task's own architecture must have the shared backbone (names and shapes)."""
    label = f"task {task.name!r}"
    for name, t in shared.items():
        if matches_prefix(name, heads):
            continue
        if name not in own:
            raise ValueError(f"{label}: its architecture has no tensor {name!r} of the shared backbone")
        if tuple(own[name].shape) != tuple(t.shape):
            raise ValueError(f"{label}: its architecture's tensor {name!r} has shape {tuple(own[name].shape)}, but "
                             f"the shared backbone has {tuple(t.shape)}")
    extra = [n for n in own if n not in shared and not matches_prefix(n, heads)]
    if extra:
        raise ValueError(f"{label}: its architecture has a tensor {extra[0]!r} that the shared backbone does not have")


def summarize_tasks(per_task: Mapping[str, Metrics], weights: Mapping[str, float]) -> dict[str, Any]:
    """``{"tasks", "loss", "accuracy"}`` of per-task metrics, in ``weights``' order: the loss
    weighted by ``weights`` (over the tasks given), the accuracy a plain mean over the tasks
    that report one (``nan`` if none). What :meth:`MultiTaskObjective.summarize` and
    ``spsa-mix eval --tasks`` report.

    >>> out = summarize_tasks({"a": {"loss": 1.0, "accuracy": 0.5}, "b": {"loss": 4.0, "accuracy": 1.0}},
    ...                       {"a": 1, "b": 3})
    >>> out["loss"], out["accuracy"], out["tasks"]["b"]
    (3.25, 0.75, {'loss': 4.0, 'accuracy': 1.0})
    """
    names = [n for n in weights if n in per_task]
    total = sum(float(weights[n]) for n in names)
    loss = sum(float(weights[n]) * float(per_task[n]["loss"]) for n in names) / total if names else math.nan
    accs = [float(per_task[n]["accuracy"]) for n in names if math.isfinite(float(per_task[n]["accuracy"]))]
    return {"tasks": {n: dict(per_task[n]) for n in names}, "loss": loss,
            "accuracy": float(np.mean(accs)) if accs else math.nan}


class WithAccuracy:
    """A task's loss that also reports an accuracy where the loss itself has none: the
    entropy (AdaMerging's label-free objective) of inputs that do carry labels is scored
    with the arg-max accuracy of class logits, or the next-token accuracy of ``(B, T, V)``
    logits. Used to report per-task accuracy on labeled validation or test data.

    >>> scored = WithAccuracy(Entropy())
    >>> logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0])
    >>> round(float(scored(logits, labels)), 4), [int(v) for v in scored.correct(logits, labels)]
    (0.3653, [1, 2])
    """

    def __init__(self, loss: LossFn) -> None:
        self.loss = loss

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        return self.loss(outputs, targets)

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        hits, count = correct_counts(self.loss, outputs, targets)
        if count or targets is None or not isinstance(self.loss, Entropy):
            return hits, count
        metric = CausalLM() if logits_of(outputs).ndim == 3 else CrossEntropy()
        return correct_counts(metric, outputs, targets)

    def __repr__(self) -> str:
        return f"WithAccuracy({self.loss!r})"


class MultiTaskObjective:
    """Weighted mean of several targets' losses of one blended backbone (see the module docstring).

    Parameters
    ----------
    model:
        The shared architecture (an ``nn.Module``), as for :class:`~spsa_mix.blend.BlendedObjective`.
    experts:
        The K experts (modules, state dicts, ``.pt`` / ``.safetensors`` files); their heads
        may differ in shape.
    tasks:
        :class:`TaskSpec` s, at least one.
    device, dtype, granularity, batched, simplex_atol, base, space, scale, stack_dtype:
        As for :class:`~spsa_mix.blend.BlendedObjective` (one stack for every task).

    Attributes
    ----------
    k, shape, domain, groups, names, weights (the normalised task weights), backbone (the
    ``BlendedObjective`` holding the stack), tasks (the checked :class:`TaskSpec` s)
    """

    def __init__(self, model: nn.Module, experts: Sequence[ExpertSource], tasks: Sequence[TaskSpec], *,
                 device: str | torch.device | None = None, dtype: torch.dtype = torch.float32,
                 granularity: str = "model", batched: Any = "auto",
                 simplex_atol: float | None = DEFAULT_SIMPLEX_ATOL, base: ExpertSource | None = None,
                 space: str = "convex", scale: float | str = 1.0, stack_dtype: torch.dtype | None = None) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module (the architecture), but got {type(model).__name__}")
        expert_list = check_expert_list(experts)
        checked = check_tasks(tasks, len(expert_list))
        shared = model.state_dict()
        heads = self._head_union(checked)
        own = {}
        for task in checked:  # checked from the files' indexes, before any weight is read
            ref = shared if task.model is None else task.model.state_dict()
            if task.model is not None:
                _check_backbone(task, shared, ref, heads)
            if task.head is not None:
                _check_head_tensors(task, ref, _open_head(task.head_from, expert_list, ref,  # type: ignore[arg-type]
                                                          f"task {task.name!r}"))
            own[task.name] = ref
        donor = next((int(t.head_from) for t in checked if isinstance(t.head_from, numbers.Integral)  # type: ignore[arg-type]
                      and t.model is None), None)
        backbone = BlendedObjective(model, expert_list, loss_fn=checked[0].loss, data=None, device=device,
                                    dtype=dtype, granularity=granularity,  # type: ignore[arg-type]
                                    head=heads or None, head_from=donor if heads else None, batched=batched,
                                    simplex_atol=simplex_atol, base=base, space=space,  # type: ignore[arg-type]
                                    scale=scale, stack_dtype=stack_dtype,  # type: ignore[arg-type]
                                    memory="resident")  # the tasks' networks read one blended buffer
        archs = {t.name: None if t.model is None else skeleton_of(t.model, device=backbone.device, dtype=backbone.dtype)
                 for t in checked}
        self._build(backbone, checked, expert_list, own, archs, sources={})

    @classmethod
    def from_pretrained(cls, experts: Sequence[str | os.PathLike[str]], tasks: Sequence[TaskSpec], *,
                        base: str | os.PathLike[str] | None = None, space: str = "convex", scale: float | str = 1.0,
                        device: str | torch.device | None = "auto", dtype: torch.dtype | None = None,
                        stack_dtype: torch.dtype | None = None, granularity: str = "model", batched: Any = "auto",
                        simplex_atol: float | None = DEFAULT_SIMPLEX_ATOL, model_class: Any = None,
                        strict_base: bool = True) -> MultiTaskObjective:
        """Hugging Face model directories (or PEFT adapters with ``space="lora"``, for tasks
        without heads), as :meth:`BlendedObjective.from_pretrained
        <spsa_mix.blend.BlendedObjective.from_pretrained>`. Every task runs the experts'
        architecture (its heads of one shape); a task's head comes from its expert (whose
        directory's config is written with that task's merged model) or from a file.

        Examples
        --------
        The whole round trip on two Hugging Face directories (a runnable version with tiny
        models is in ``tests/blend/test_multitask.py``)::

            tasks = [TaskSpec("stories", story_batches), TaskSpec("code", code_batches, loss="causal-lm")]
            obj = MultiTaskObjective.from_pretrained(["ft/a", "ft/b"], tasks)
            res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, max_evals=400)
            obj.save_pretrained(res.x, "merged/")
        """
        from spsa_mix.blend.pretrained import (
            architecture_class,
            build_skeleton,
            check_directories,
            read_config,
        )

        expert_list = check_expert_list(experts)
        checked = check_tasks(tasks, len(expert_list))
        heads = cls._head_union(checked)
        if any(t.model is not None for t in checked):
            raise ValueError("from_pretrained builds every task's architecture from the experts' config: leave "
                             "TaskSpec.model unset")
        if heads and space == "lora":
            raise ValueError("space='lora' blends adapters over one base: tasks with heads are not supported there")
        sources: dict[str, SaveSource] = {}
        own: dict[str, Any] = {}
        if heads:
            paths = check_directories(expert_list, "experts", adapters=False)
            config = read_config(paths[0], "experts[0]")
            ref = build_skeleton(config, architecture_class(config, model_class), dtype=torch.float32,
                                 device=torch.device("cpu")).state_dict()  # meta tensors: shapes only
            for task in checked:
                if task.head is not None:
                    _check_head_tensors(task, ref, _open_head(task.head_from, paths, ref,  # type: ignore[arg-type]
                                                              f"task {task.name!r}"))
                    if isinstance(task.head_from, numbers.Integral):
                        sources[task.name] = SaveSource("hf", config_dir=paths[int(task.head_from)])
                own[task.name] = ref
        donor = next((int(t.head_from) for t in checked if isinstance(t.head_from, numbers.Integral)), None)  # type: ignore[arg-type]
        backbone = BlendedObjective.from_pretrained(
            expert_list, base=base, space=space, scale=scale, data=None,  # type: ignore[arg-type]
            loss=checked[0].loss, device=device, dtype=dtype, stack_dtype=stack_dtype,
            granularity=granularity, head=heads or None,  # type: ignore[arg-type]
            head_from=donor if heads else None, batched=batched, simplex_atol=simplex_atol,
            model_class=model_class, strict_base=strict_base, memory="resident")
        obj = cls.__new__(cls)
        obj._build(backbone, checked, expert_list, own, {t.name: None for t in checked}, sources=sources)
        return obj

    @staticmethod
    def _head_union(tasks: Sequence[TaskSpec]) -> tuple[str, ...]:
        out: list[str] = []
        for t in tasks:
            for h in t.head or ():
                if h not in out:
                    out.append(h)
        return tuple(out)

    def _build(self, backbone: BlendedObjective, tasks: list[TaskSpec], experts: Sequence[Any],
               references: Mapping[str, Any], archs: Mapping[str, nn.Module | None],
               sources: Mapping[str, SaveSource]) -> None:
        self.backbone = backbone
        self.tasks = tuple(tasks)
        self.names = tuple(t.name for t in tasks)
        w = np.array([t.weight for t in tasks], dtype=np.float64)
        self.weights: FloatArray = w / w.sum()
        self._views = {t.name: self._view(t, experts, references.get(t.name), archs[t.name], sources.get(t.name))
                       for t in tasks}
        self.domain = backbone.domain
        self.shape = backbone.shape
        self.last_task_losses: FloatArray | None = None  # (T, n) of the last call

    def _view(self, task: TaskSpec, experts: Sequence[Any], reference: Any, arch: nn.Module | None,
              source: SaveSource | None) -> BlendedObjective:
        """The task's ``BlendedObjective``: the backbone's stack and blended buffer, the
        task's head, architecture, loss and data (a shallow copy of the backbone)."""
        bb = self.backbone
        view = copy.copy(bb)
        view.loss_fn = resolve_loss(task.loss)
        data = [(task.data, None)] if isinstance(task.data, torch.Tensor) else task.data  # unlabeled inputs
        view._stream = BatchStream(data, device=bb.device, dtype=bb.dtype)
        view.last_batch = None
        view._vmap = dict(bb._vmap)
        view._grad_model = None
        if task.head is None:  # no task has a head (check_tasks): the backbone's network as it is
            return view
        st = bb._stack
        head_names = set(_check_head_tensors(task, reference, ckpt := _open_head(
            task.head_from, experts, reference, f"task {task.name!r}")))  # type: ignore[arg-type]
        constants = {n: t for n, t in st.constants.items() if not matches_prefix(n, bb.head)}
        for name in head_names:
            t = ckpt.read(name).to(bb.device)
            constants[name] = t.to(bb.dtype) if t.is_floating_point() else t
        arch = arch.eval().requires_grad_(False) if arch is not None else bb._arch  # eval mode, as the backbone's
        view._stack = dataclasses.replace(st, constants=constants)
        view._arch = arch
        view._model = bind_to_buffer(copy.deepcopy(arch), st.layout, bb._theta, constants, st.aliases)
        view.head = bb.head
        if source is not None:
            view._source = source
        return view

    # ------------------------------------------------------------------ properties
    @property
    def k(self) -> int:
        """Number of experts ``K``."""
        return self.backbone.k

    @property
    def groups(self) -> list[str]:
        """The parameter groups of a layer-wise blend (heads excluded)."""
        return self.backbone.groups

    @property
    def batches_drawn(self) -> int:
        """Calls that drew minibatches (every task draws one per call)."""
        return max(v.batches_drawn for v in self._views.values())

    def task(self, name: str) -> BlendedObjective:
        """Task ``name``'s own ``BlendedObjective`` (the shared stack, its head, loss and data):
        for :meth:`~spsa_mix.blend.BlendedObjective.blended_model`,
        :meth:`~spsa_mix.blend.BlendedObjective.save_pretrained`,
        :func:`~spsa_mix.blend.evaluate_blend`. Calling it draws from that task's stream alone."""
        if name not in self._views:
            raise ValueError(f"no task {name!r}; the tasks are {list(self.names)}")
        return self._views[name]

    def memory(self) -> dict[str, int]:
        """Bytes held on the device: the backbone's (stack, blended buffer, constants) and
        every task's head (the heads that are not the backbone's own).

        >>> MultiTaskObjective._example().memory()
        {'stack': 2048, 'blended': 1024, 'constants': 24, 'heads': 36}
        """
        out = dict(self.backbone.memory())
        own = {id(t) for t in self.backbone._stack.constants.values()}
        out["heads"] = sum(t.numel() * t.element_size() for v in self._views.values()
                           for t in v._stack.constants.values() if id(t) not in own)
        return out

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Minibatches drawn per task (for ``minimize(..., checkpoint=...)``).

        >>> obj = MultiTaskObjective._example()
        >>> _ = obj(np.full(2, 0.5)); obj.state_dict()
        {'batches_drawn': {'a': 1, 'b': 1}}
        """
        return {"batches_drawn": {n: v.batches_drawn for n, v in self._views.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue each task's minibatches where :meth:`state_dict` left them (each task's
        data built again as the first time; see :meth:`BlendedObjective.load_state_dict
        <spsa_mix.blend.BlendedObjective.load_state_dict>`)."""
        drawn = state.get("batches_drawn") if isinstance(state, dict) else None
        if not isinstance(drawn, dict) or set(drawn) != set(self.names):
            raise ValueError(f"state must be {{'batches_drawn': {{task: count}}}} for the tasks {list(self.names)}, "
                             f"but got {state!r:.100}")
        for name, n in drawn.items():
            self._views[name].load_state_dict({"batches_drawn": n})

    # ------------------------------------------------------------------ the objective
    def _batches(self) -> list[Batch]:
        return [v._next_batch() for v in self._views.values()]

    def part_losses(self, points: ArrayLike) -> FloatArray:
        """``(T, n)`` losses of ``n`` points for each task, on one minibatch per task (each
        stream advances once); forward only. Looped probes blend once into the shared
        buffer and run every task's network on it; batched probes
        (:meth:`BlendedObjective.uses_vmap <spsa_mix.blend.BlendedObjective.uses_vmap>`)
        go task by task."""
        bb = self.backbone
        pts, _ = bb._check_points(points)
        batches = self._batches()
        views = list(self._views.values())
        with torch.inference_mode():
            points_t = bb._as_points(pts)
            if bb.uses_vmap(len(pts)):
                rows = [v._probe(points_t, b, v._score_loss)[0] for v, b in zip(views, batches, strict=True)]
            else:
                segments = bb._stack.segments if bb.granularity == "layer" else None
                per_task: list[list[torch.Tensor]] = [[] for _ in views]
                for c in bb._coefficients(points_t):
                    blend_into(bb._theta, bb._stack.weights, c, segments)  # every view's network reads this buffer
                    for out, v, b in zip(per_task, views, batches, strict=True):
                        out.append(v._check_loss(v.loss_fn(v._model(*b.args, **b.kwargs), b.targets)))
                rows = [torch.stack(r) for r in per_task]
            losses = torch.stack(rows).to(torch.float64).cpu().numpy()  # (T, n)
        self.last_task_losses = losses
        for t, view in enumerate(views):
            view._check_finite(losses[t], pts, f"loss of task {self.names[t]!r}")
        return losses

    def part_shard_weights(self) -> FloatArray:
        """``(T,)``: what each task's loss divided by in the last call (its examples or
        scored tokens, :func:`~spsa_mix.distributed.weights.shard_weight`)."""
        from spsa_mix.distributed.weights import shard_weight

        return np.array([shard_weight(v) for v in self._views.values()], dtype=np.float64)

    def __call__(self, points: ArrayLike) -> FloatArray | float:
        """Weighted mean over the tasks of the losses of ``n`` points (``(n, *shape)``; one
        point gives a float), each task on its next minibatch.

        >>> obj = MultiTaskObjective._example()
        >>> obj(np.array([[1.0, 0.0], [0.5, 0.5]])).round(4).tolist()
        [0.3466, 0.3314]
        """
        _, single = self.backbone._check_points(points)
        values = self.weights @ self.part_losses(points)  # (n,)
        return float(values[0]) if single else values

    def part_value_and_grad(self, alpha: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Each task's loss ``(T,)`` and its gradient with respect to the point
        ``(T, *point_shape)``, by autograd, on each task's next minibatch (one blend, one
        forward and one backward per task)."""
        bb = self.backbone
        point = bb._check_point(alpha)
        batches = self._batches()
        a = bb._as_points(point).requires_grad_(True)
        values, grads = [], []
        with torch.enable_grad():
            theta = bb._blend(a[None])[0]
            views = list(self._views.values())
            for t, (v, b) in enumerate(zip(views, batches, strict=True)):
                loss = v._loss(v._gradient_model(), theta, b)
                (g,) = torch.autograd.grad(loss, a, retain_graph=t < len(views) - 1)
                values.append(float(loss.detach()))
                grads.append(g.to(torch.float64).cpu().numpy())
        out_v, out_g = np.array(values), np.stack(grads)
        for t, name in enumerate(self.names):
            bb._check_finite(out_v[t:t + 1], point[None], f"loss of task {name!r}")
            bb._check_finite(np.array([np.abs(out_g[t]).sum()]), point[None], f"gradient of task {name!r}")
        return out_v, out_g

    def value_and_grad(self, alpha: ArrayLike) -> tuple[float, FloatArray]:
        """The weighted mean's value and gradient at ``alpha`` (``method="backprop"``).

        >>> loss, grad = MultiTaskObjective._example().value_and_grad(np.array([0.5, 0.5]))
        >>> round(loss, 4), grad.shape
        (0.3314, (2,))
        """
        values, grads = self.part_value_and_grad(alpha)
        return float(self.weights @ values), np.tensordot(self.weights, grads, axes=1)

    def part_jvp(self, alpha: ArrayLike, tangents: ArrayLike) -> tuple[FloatArray, FloatArray]:
        """Each task's loss ``(T,)`` and its directional derivatives along ``tangents``
        ``(T, m)``, by forward-mode AD, on each task's next minibatch."""
        bb = self.backbone
        point = bb._check_point(alpha)
        shape = bb.domain.point_shape
        tan = np.asarray(tangents, dtype=np.float64)
        if tan.ndim != len(shape) + 1 or tan.shape[1:] != shape or tan.shape[0] < 1:
            raise ValueError(f"tangents must have shape (m, {', '.join(map(str, shape))}), but got shape {tan.shape}")
        if not np.all(np.isfinite(tan)):
            raise ValueError("tangents must be finite")
        batches = self._batches()
        views = list(self._views.values())
        a, t = bb._as_points(point), bb._as_points(tan)

        def losses_at(x: torch.Tensor) -> torch.Tensor:
            theta = bb._blend(x[None])[0]
            return torch.stack([v._loss(v._gradient_model(), theta, b) for v, b in zip(views, batches, strict=True)])

        def along(direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = torch.func.jvp(losses_at, (a,), (direction,))
            return out[0], out[1]  # (T,) each

        from spsa_mix.blend.objective import _math_attention

        with torch.no_grad(), _math_attention():
            losses, derivs = bb._map("jvp", along, t)  # (m, T) each
        values = losses[0].to(torch.float64).cpu().numpy()
        d = derivs.to(torch.float64).cpu().numpy().T  # (T, m)
        for i, name in enumerate(self.names):
            bb._check_finite(values[i:i + 1], point[None], f"loss of task {name!r}")
            bb._check_finite(d[i], np.repeat(point[None], d.shape[1], axis=0), f"directional derivative of task {name!r}")
        return values, d

    def jvp(self, alpha: ArrayLike, tangents: ArrayLike) -> tuple[float, FloatArray]:
        """The weighted mean's value and directional derivatives (``method="forward-grad"``).

        >>> obj = MultiTaskObjective._example()
        >>> _, grad = obj.value_and_grad(np.array([0.5, 0.5]))
        >>> _, d = MultiTaskObjective._example().jvp(np.array([0.5, 0.5]), np.array([[1.0, -1.0]]))
        >>> bool(np.isclose(d[0], grad[0] - grad[1]))
        True
        """
        values, derivs = self.part_jvp(alpha, tangents)
        return float(self.weights @ values), self.weights @ derivs

    # ------------------------------------------------------------------ scores and output
    def evaluate(self, alpha: ArrayLike, data: Mapping[str, Any], *, max_batches: int | None = None
                 ) -> dict[str, Any]:
        """Each task's loss and accuracy over all of its ``data[name]`` (tasks missing from
        ``data`` are skipped), and their means: ``{"tasks": {name: metrics}, "loss":
        weighted mean loss, "accuracy": mean accuracy over the tasks that report one}``. An
        entropy task with labels reports the arg-max (or next-token) accuracy
        (:class:`WithAccuracy`). One point, or ``(n, *shape)`` points (a list of such dicts).

        >>> obj = MultiTaskObjective._example()
        >>> x, y = torch.eye(2), torch.tensor([0, 1])
        >>> out = obj.evaluate(np.array([0.0, 1.0]), {"a": (x, y), "b": (x, y)})
        >>> sorted(out), out["tasks"]["a"]["accuracy"]
        (['accuracy', 'loss', 'tasks'], 1.0)
        """
        unknown = sorted(set(data) - set(self.names))
        if unknown:
            raise ValueError(f"data names a task {unknown[0]!r} that the objective does not have; its tasks are "
                             f"{list(self.names)}")
        pts, single = self.backbone._check_points(alpha, "alpha")
        per_task: dict[str, list[Metrics]] = {}
        for name in self.names:
            if name in data:
                view = copy.copy(self._views[name])
                view.loss_fn = WithAccuracy(view.loss_fn)
                out = evaluate_blend(view, pts, data[name], max_batches=max_batches)
                per_task[name] = out if isinstance(out, list) else [out]
        results = [self.summarize({n: m[i] for n, m in per_task.items()}) for i in range(len(pts))]
        return results[0] if single else results  # type: ignore[return-value]

    def summarize(self, per_task: Mapping[str, Metrics]) -> dict[str, Any]:
        """``{"tasks", "loss", "accuracy"}`` of per-task metrics: the loss weighted as the
        objective weights it (over the tasks given), the accuracy a plain mean over the
        tasks that report one (``nan`` if none).

        >>> MultiTaskObjective._example().summarize({"a": {"loss": 1.0, "accuracy": 0.5},
        ...                                          "b": {"loss": 4.0, "accuracy": float("nan")}})
        {'tasks': {'a': {'loss': 1.0, 'accuracy': 0.5}, 'b': {'loss': 4.0, 'accuracy': nan}}, 'loss': 2.5, 'accuracy': 0.5}
        """
        return summarize_tasks(per_task, dict(zip(self.names, self.weights, strict=True)))

    @property
    def has_heads(self) -> bool:
        """Whether the tasks have heads of their own (then each task is saved apart)."""
        return bool(self.backbone.head)

    def save_pretrained(self, alpha: ArrayLike, path: str | os.PathLike[str], *, overwrite: bool = False,
                        dtype: torch.dtype | None = None, max_shard_size: int | str = "5GB") -> dict[str, str]:
        """Write the merged model(s); returns ``{task: path written}``.

        Tasks with heads: one folder per task, ``path/<name>/``, each what
        :meth:`BlendedObjective.save_pretrained <spsa_mix.blend.BlendedObjective.save_pretrained>`
        writes for that task's network (the blended backbone and the task's head: a Hugging
        Face directory, or ``model.safetensors`` of a state dict), all written into a
        temporary folder beside ``path`` and renamed into place. Tasks without heads share
        one network: it is written at ``path`` itself (every task maps to it).

        >>> import tempfile, safetensors.torch
        >>> out = MultiTaskObjective._example().save_pretrained(np.array([0.5, 0.5]), tempfile.mkdtemp() + "/m")
        >>> sorted(out), safetensors.torch.load_file(out["b"] + "/model.safetensors")["1.weight"].tolist()
        (['a', 'b'], [[1.0, -1.0]])
        """
        from spsa_mix.io import atomic_directory

        point = self.backbone._check_point(alpha)
        target = Path(path)
        if not self.has_heads:
            written = self.backbone.save_pretrained(point, target, overwrite=overwrite, dtype=dtype,
                                                    max_shard_size=max_shard_size)
            return {name: written for name in self.names}
        with atomic_directory(target, overwrite=overwrite) as tmp:
            for name, view in self._views.items():
                view.save_pretrained(point, tmp / name, dtype=dtype, max_shard_size=max_shard_size)
        return {name: str(target / name) for name in self.names}

    @classmethod
    def _example(cls) -> MultiTaskObjective:
        """Two experts with heads "1" of their own (task b's of one class: its entropy is 0),
        unlabeled inputs, for the docstrings."""
        experts = [{"0.weight": torch.zeros(2, 2), "0.bias": torch.zeros(2),
                    "1.weight": torch.eye(2), "1.bias": torch.zeros(2)},
                   {"0.weight": torch.eye(2), "0.bias": torch.zeros(2),
                    "1.weight": torch.tensor([[1.0, -1.0]]), "1.bias": torch.zeros(1)}]

        def net(classes: int) -> nn.Module:
            return nn.Sequential(nn.Linear(2, 2), nn.Linear(2, classes))

        x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        tasks = [TaskSpec("a", x, head="1", model=net(2)), TaskSpec("b", x, head="1", model=net(1), weight=1.0)]
        return cls(net(2), experts, tasks, device="cpu")

    def __repr__(self) -> str:
        return (f"MultiTaskObjective(tasks={list(self.names)}, weights={np.round(self.weights, 4).tolist()}, "
                f"backbone={self.backbone!r})")
