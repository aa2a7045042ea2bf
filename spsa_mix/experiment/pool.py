"""An expert pool: a task's data, its split, K trained (and cached) experts, target sets.

:func:`build_pool` is the one way this package builds experts to blend: it loads the task
(:func:`spsa_mix.data.tasks.load_task`), splits its training set (by default
:func:`spsa_mix.data.splits.make_splits`: an IID target set, an IID held-out target split
and K Dirichlet expert splits; any other :class:`~spsa_mix.data.splits.Splits` through
``splits=``), trains each expert or loads it from the cache
(:func:`~spsa_mix.experiment.experts.train_or_load_experts`) and returns an
:class:`ExpertPool`, which makes the target, held-out and test minibatches and the
blended objective. ``spsa-mix experiment``, ``spsa-mix bench compare --problem network``
and ``spsa-mix bench variance --problem network`` all build their experts here.

Example
-------
>>> import tempfile, numpy as np
>>> spec = PoolSpec(k=3, per_expert=20, target_size=60, holdout_size=30, train=TrainSpec(epochs=1))
>>> pool = build_pool(spec, cache=None, progress=False)
>>> pool.k, len(pool.splits.target), pool.task.kind
(3, 60, 'image-classification')
>>> obj = pool.objective(data=pool.target_batches(32, seed=0))
>>> obj(np.full((2, 3), 1 / 3)).shape
(2,)
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from spsa_mix.blend import BlendedObjective, resolve_device
from spsa_mix.data.batches import Batches
from spsa_mix.data.splits import Splits, make_splits
from spsa_mix.data.tasks import Task, load_task
from spsa_mix.experiment.experts import Expert, ExpertCache, TrainSpec, train_or_load_experts

__all__ = ["PoolSpec", "ExpertPool", "build_pool", "load_pool_task", "default_model_fn", "default_splits"]


@dataclass(frozen=True)
class PoolSpec:
    """What a pool is built from: the data, the split and the training of its experts.

    ``dataset``, ``kind``, ``data_root``, ``image_size``, ``standardize``, ``test_size`` go to
    :func:`~spsa_mix.data.tasks.load_task`; ``k``, ``per_expert``, ``target_size``,
    ``holdout_size``, ``concentration``, ``target_concentration`` and ``data_seed`` to
    :func:`~spsa_mix.data.splits.make_splits` (unless ``build_pool`` is given its own
    ``splits``); ``arch`` names the architecture (:func:`spsa_mix.models.build_model`) and
    keys the cache with ``train``.

    >>> PoolSpec().k, PoolSpec().train.epochs
    (10, 40)
    """

    dataset: str = "digits"
    kind: str | None = None
    data_root: str | None = None
    image_size: int | None = None
    standardize: bool = True
    test_size: int | None = None
    arch: str = "small-cnn"
    k: int = 10
    per_expert: int | tuple[int, ...] = 80
    target_size: int = 300
    holdout_size: int = 100
    concentration: float = 0.5
    data_seed: int = 0
    train: TrainSpec = field(default_factory=TrainSpec)
    target_concentration: float | None = None  # None: IID target (GLUE 5); else a label-shifted target domain
    target_used: int | None = None  # None: the whole target set; N: a random N of it (nested in N), experts unchanged


@dataclass
class ExpertPool:
    """K experts of one architecture trained on splits of one task (see :func:`build_pool`).

    Attributes
    ----------
    task, splits, experts, model_fn, device
    """

    task: Task
    splits: Splits
    experts: list[Expert]
    model_fn: Callable[[], nn.Module]
    device: torch.device

    @property
    def k(self) -> int:
        """Number of experts."""
        return len(self.experts)

    @property
    def models(self) -> list[nn.Module]:
        """The experts' modules, in index order."""
        return [e.model for e in self.experts]

    def target_batches(self, batch_size: int, *, seed: int | None = None) -> Batches:
        """Minibatches of the target set: shuffled by ``seed`` (each pass a new order), or
        in index order with ``seed=None``."""
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        return Batches(self.task, self.splits.target, batch_size=batch_size, shuffle=seed is not None,
                       generator=gen, device=self.device)

    def holdout_batches(self, batch_size: int) -> Batches:
        """The held-out target split, in order."""
        return Batches(self.task, self.splits.holdout, batch_size=batch_size, device=self.device)

    def test_batches(self, batch_size: int) -> Batches:
        """The task's test split (the target domain's part of it, ``splits.test``, for a
        shifted target), in order."""
        return Batches(self.task, self.splits.test, split="test", batch_size=batch_size, device=self.device)

    def whole(self, part: str) -> tuple[Any, Any]:
        """All of ``"target"``, ``"holdout"`` or ``"test"`` as one batch ``(inputs, targets)``."""
        if part == "test":
            ix = self.splits.test
            n = int(self.task.labels("test").shape[0]) if ix is None else len(ix)
            batches = Batches(self.task, ix, split="test", batch_size=max(n, 1), device=self.device)
        elif part in ("target", "holdout"):
            ix = getattr(self.splits, part)
            batches = Batches(self.task, ix, batch_size=max(len(ix), 1), device=self.device)
        else:
            raise ValueError(f"part must be 'target', 'holdout' or 'test', but got {part!r}")
        return next(iter(batches))

    def objective(self, *, data: Any = None, **kwargs: Any) -> BlendedObjective:
        """A :class:`~spsa_mix.blend.BlendedObjective` of the experts with the task's loss
        on ``data`` (e.g. :meth:`target_batches`); ``kwargs`` go to it (``loss_fn`` instead of the
        task's, ``dtype``, ``granularity``, ``simplex_atol``, ...)."""
        loss_fn = kwargs.pop("loss_fn", self.task.loss)
        return BlendedObjective(self.model_fn(), self.models, loss_fn=loss_fn, data=data,
                                device=kwargs.pop("device", self.device), **kwargs)


def load_pool_task(spec: PoolSpec, cache_dir: str | os.PathLike[str] | None = None) -> Task:
    """The task of ``spec`` (its data loaded into memory)."""
    return load_task(spec.dataset, kind=spec.kind, data_root=spec.data_root, cache_dir=cache_dir,
                     image_size=spec.image_size, standardize=spec.standardize, test_size=spec.test_size)


def default_model_fn(arch: str, task: Task) -> Callable[[], nn.Module]:
    """``build_model(arch, **task.model_dims())`` as a function of nothing (drawn from the
    global generator, which :func:`build_pool` seeds per expert)."""
    from spsa_mix.models import available_models, build_model

    if arch not in available_models():
        raise ValueError(f"unknown architecture {arch!r}; available: {available_models()} "
                         "(any nn.Module through the Python API: model_fn=...)")
    dims = task.model_dims()
    with torch.random.fork_rng(devices=[]):  # leaves the global generator as it was
        build_model(arch, **dims)  # fail now, not after the data is split, if the sizes do not suit it
    return lambda: build_model(arch, **dims)


def default_splits(spec: PoolSpec, task: Task) -> Splits:
    """:func:`~spsa_mix.data.splits.make_splits` with ``spec``'s sizes and
    ``numpy.random.default_rng(spec.data_seed)`` (and the test split's labels, for a shifted
    target); with ``spec.target_used = N``, the target set is N of the drawn one, at random
    and nested (the N of a smaller N are among those of a larger), so that the experts, the
    held-out and the test sets are the same for every N: a target-size curve."""
    sizes = spec.per_expert if isinstance(spec.per_expert, int) else list(spec.per_expert)
    test_labels = task.labels("test").numpy() if spec.target_concentration is not None else None
    split = make_splits(task.labels().numpy(), k=spec.k, per_expert=sizes, target_size=spec.target_size,
                        holdout_size=spec.holdout_size, concentration=spec.concentration,
                        rng=np.random.default_rng(spec.data_seed), target_concentration=spec.target_concentration,
                        test_labels=test_labels)
    if spec.target_used is None:
        return split
    if not 1 <= spec.target_used <= len(split.target):
        raise ValueError(f"target_used must be in [1, target_size={len(split.target)}], but got {spec.target_used}")
    order = np.random.default_rng([spec.data_seed, 7]).permutation(split.target)  # one order: smaller N nested
    return dataclasses.replace(split, target=np.sort(order[: spec.target_used]))


def build_pool(
    spec: PoolSpec,
    *,
    task: Task | None = None,
    splits: Splits | Callable[[Task], Splits] | None = None,
    model_fn: Callable[[], nn.Module] | None = None,
    cache: ExpertCache | None,
    device: str | torch.device | None = "cpu",
    eval_batch_size: int = 1000,
    progress: bool = True,
    on_expert: Callable[[Expert], None] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> ExpertPool:
    """Load the task, split it, train or load the K experts; the expert pool.

    Parameters
    ----------
    spec:
        Data, split and training (:class:`PoolSpec`).
    task:
        The task, if already loaded (default: :func:`load_pool_task`).
    splits:
        A :class:`~spsa_mix.data.splits.Splits`, or a function of the task returning one
        (default: :func:`~spsa_mix.data.splits.make_splits` with ``spec``'s sizes and
        ``numpy.random.default_rng(spec.data_seed)``). Its ``seeds``, when set, order each
        expert's minibatches.
    model_fn:
        Builds a fresh module (default: :func:`default_model_fn` of ``spec.arch``).
    cache:
        Where experts are kept (``None``: train without saving).
    device:
        Where the experts are trained and kept, and the batches made.
    eval_batch_size, progress, on_expert:
        As :func:`~spsa_mix.experiment.experts.train_or_load_experts`.
    cache_dir:
        The cache folder whose ``data`` subfolder is searched for dataset files.

    Raises
    ------
    ValueError
        For an unknown dataset or architecture, missing data, or sizes the data cannot hold
        (before any training).
    """
    dev = resolve_device(device)
    task = task if task is not None else load_pool_task(spec, cache_dir)
    fn = model_fn if model_fn is not None else default_model_fn(spec.arch, task)
    if splits is None:
        split = default_splits(spec, task)
    elif isinstance(splits, Splits):
        split = splits
    else:
        split = splits(task)
    experts = train_or_load_experts(fn, task, split.experts, spec=spec.train, cache=cache, arch=spec.arch,
                                    seeds=split.seeds, device=dev, eval_batch_size=eval_batch_size,
                                    progress=progress, on_expert=on_expert)
    return ExpertPool(task, split, experts, fn, dev)
