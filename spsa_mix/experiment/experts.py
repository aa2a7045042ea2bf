"""Train the K experts and keep them in a cache, so the expensive part runs once.

Each expert is trained on its split of a task's data (:class:`~spsa_mix.data.tasks.Task`:
images, or token sequences for a language model or a sequence classifier) with Adam and the
task's loss (GLUE 5: lr 1e-3, betas (0.9, 0.999), batch 64, 40 epochs by default) and saved
as soon as it is trained: a ``<key>.safetensors`` file with its weights and a
``<key>.json`` file with everything that determined it (architecture, its parameter
shapes, the task, a SHA-256 of the exact examples it saw, the training hyperparameters and
seeds), its data indices and size, class counts, training losses and test metrics. ``key`` is the SHA-256 of
that specification (:func:`expert_key`), so a later run with the same configuration
loads the file instead of training, a changed configuration trains a new expert, and an
interrupted run keeps every expert finished before the interruption. The JSON is
written last (atomically) and holds the SHA-256 of the weights file, so a file pair
without its JSON is never trusted, and a damaged pair (weights truncated, overwritten or
altered, a record that does not parse) is retrained and overwritten with a warning that
names the file and what is wrong (:meth:`ExpertCache.load`).

Initialisation. By default every expert starts from the same initial weights
(``shared_init=True``, seeded by ``data_seed`` alone), as clients of federated averaging
start from one global model: weight averaging is only meaningful between networks that
share an initialisation (or a pretrained start), since independently initialised networks
differ by permutations of their hidden units. Measured on the built-in digits run
(``docs/glue.md``): with independent initialisations the uniform blend is at chance.
``shared_init=False`` gives each expert its own initialisation.

Randomness: the initialisation seed is ``TrainSpec.init_seed`` if given, else
``expert_seed(data_seed, 0)`` when shared and ``expert_seed(data_seed, index)`` otherwise;
the minibatch order comes from the split's own seeds when it has them
(:class:`~spsa_mix.data.splits.Splits`), else from ``expert_seed(data_seed, index)``. The initialisation runs under
:func:`torch.random.fork_rng`, which restores the global generator afterwards.

Example
-------
>>> import tempfile, numpy as np, torch
>>> from spsa_mix.data.images import ImageData
>>> from spsa_mix.data.tasks import Task
>>> rng = np.random.default_rng(0)
>>> d = Task(ImageData.from_arrays("toy", rng.integers(0, 255, (40, 1, 4, 4)), np.arange(40) % 2,
...                                rng.integers(0, 255, (10, 1, 4, 4)), np.arange(10) % 2, scale=1 / 255),
...          "image-classification")
>>> make = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
>>> cache = ExpertCache(tempfile.mkdtemp())
>>> spec = TrainSpec(epochs=1)
>>> first = train_or_load_experts(make, d, [np.arange(20), np.arange(20, 40)], spec=spec, cache=cache,
...                               arch="linear", progress=False)
>>> again = train_or_load_experts(make, d, [np.arange(20), np.arange(20, 40)], spec=spec, cache=cache,
...                               arch="linear", progress=False)
>>> [e.cached for e in first], [e.cached for e in again]
([False, False], [True, True])
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spsa_mix.blend import evaluate
from spsa_mix.data.batches import Batches
from spsa_mix.data.images import ImageData
from spsa_mix.data.tasks import Task, as_task
from spsa_mix.experiment.training import train_model
from spsa_mix.io import atomic_path, write_json
from spsa_mix.progress import progress_bar

__all__ = [
    "TrainSpec",
    "Expert",
    "ExpertCache",
    "expert_key",
    "expert_seed",
    "model_signature",
    "train_or_load_experts",
    "CACHE_FORMAT",
]

logger = logging.getLogger("spsa_mix.experiment")
CACHE_FORMAT = 2  # bump when the file layout or the training code changes what a key means (2: tasks)


@dataclass(frozen=True)
class TrainSpec:
    """How an expert is trained (GLUE 5 defaults).

    >>> TrainSpec().lr, TrainSpec().betas
    (0.001, (0.9, 0.999))
    """

    epochs: int = 40  # GLUE 5
    lr: float = 1e-3  # GLUE 5: Adam
    betas: tuple[float, float] = (0.9, 0.999)  # GLUE 5
    batch_size: int = 64  # GLUE 5
    data_seed: int = 0  # ours: with the expert's index, seeds its initialisation and order
    shared_init: bool = True  # ours: one initialisation for all experts (federated-averaging style)
    steps: int | None = None  # ours: None trains for `epochs` passes; else this many minibatches drawn with replacement
    min_batch_size: int = 1  # ours: skip smaller batches (2 for BatchNorm in training mode)
    init_seed: int | None = None  # ours: the shared initialisation's seed; None derives it from data_seed

    def __post_init__(self) -> None:
        if self.init_seed is not None and not self.shared_init:
            raise ValueError(f"init_seed={self.init_seed!r} sets the shared initialisation; it needs shared_init=True")


@dataclass
class Expert:
    """One trained expert: the module (eval mode) and its record (the JSON beside it)."""

    index: int
    model: nn.Module
    meta: dict[str, Any]
    cached: bool = False
    path: Path | None = None

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the task's test split (``nan`` when the task has no test split)."""
        value = self.meta.get("test_accuracy")
        return float("nan") if value is None else float(value)


def expert_seed(data_seed: int, index: int) -> int:
    """The seed of expert ``index``: independent streams via ``numpy.random.SeedSequence``.

    >>> expert_seed(0, 1) == expert_seed(0, 1), expert_seed(0, 1) == expert_seed(0, 2)
    (True, False)
    """
    return int(np.random.SeedSequence([int(data_seed), int(index), 0x61E]).generate_state(1)[0])


def initial_model(model_fn: Callable[[], nn.Module], spec: TrainSpec, index: int = 0) -> nn.Module:
    """The weights expert ``index`` starts from (with ``shared_init``, every expert's), built
    as :func:`train_or_load_experts` builds them: ``model_fn()`` under a forked generator
    seeded with the initialisation seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_init_seed(spec, index))
        return model_fn()


def _init_seed(spec: TrainSpec, index: int) -> int:
    if spec.init_seed is not None:
        return int(spec.init_seed)
    return expert_seed(spec.data_seed, 0 if spec.shared_init else index)


def model_signature(model: nn.Module) -> list[list[Any]]:
    """``[name, shape, dtype]`` of every entry of the state dict: what must match to load.

    >>> model_signature(torch.nn.Linear(2, 1))
    [['weight', [1, 2], 'float32'], ['bias', [1], 'float32']]
    """
    return [[name, list(t.shape), str(t.dtype).replace("torch.", "")] for name, t in model.state_dict().items()]


def expert_key(spec: dict[str, Any]) -> str:
    """SHA-256 (first 24 hex digits) of a JSON specification, keys sorted.

    >>> expert_key({"a": 1, "b": [2]}) == expert_key({"b": [2], "a": 1})
    True
    """
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _expert_spec(arch: str, model: nn.Module, task: Task, indices: np.ndarray, train: TrainSpec,
                 index: int, seed: int) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "arch": arch,
        "module": type(model).__qualname__,
        "signature": model_signature(model),
        "dataset": task.name,
        "task": task.kind,
        "loss": repr(task.loss),
        "data_sha256": task.digest(indices),
        "size": int(len(indices)),
        "train": {**asdict(train), "betas": list(train.betas)},
        "seed": seed,
        "init_seed": _init_seed(train, index),
    }


class ExpertCache:
    """A folder of ``<key>.safetensors`` + ``<key>.json`` pairs (see the module docstring).

    >>> import tempfile
    >>> c = ExpertCache(tempfile.mkdtemp())
    >>> c.load("0" * 24, torch.nn.Linear(2, 1)) is None
    True
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()

    def paths(self, key: str) -> tuple[Path, Path]:
        return self.root / f"{key}.safetensors", self.root / f"{key}.json"

    def load(self, key: str, model: nn.Module) -> dict[str, Any] | None:
        """Load the weights of ``key`` into ``model`` and return its record, or ``None``.

        ``None`` when the pair is absent, and also when it cannot be trusted: a record that
        does not parse or names another key, weights whose SHA-256 differs from the one the
        record holds, or a weights file safetensors cannot read (truncated, not safetensors,
        other tensors); each of those logs a warning naming the file and what is wrong, and
        leaves ``model`` as it was, so the caller retrains it and overwrites the pair.
        """
        weights, meta_path = self.paths(key)
        if not (weights.is_file() and meta_path.is_file()):
            return None
        problem, meta = self._check(key, weights, meta_path)
        if problem is None:
            before = {name: t.clone() for name, t in model.state_dict().items()}
            try:
                _load_weights(model, weights)
            except Exception as e:  # safetensors raises its own SafetensorError, torch RuntimeError
                model.load_state_dict(before)  # a partial load must not leak into the retraining
                problem = f"{weights}: {type(e).__name__}: {e}"
        if problem is not None:
            logger.warning("expert cache: %s; retraining it", problem)
            return None
        return meta

    @staticmethod
    def _check(key: str, weights: Path, meta_path: Path) -> tuple[str | None, dict[str, Any]]:
        """What is wrong with the pair of ``key`` before its weights are loaded, or ``None``."""
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as e:  # ValueError: bad JSON or bad UTF-8
            return f"{meta_path}: unreadable record ({type(e).__name__}: {e})", {}
        if not isinstance(meta, dict) or meta.get("key") != key:
            return f"{meta_path}: the record does not name key {key}", {}
        expected = meta.get("weights_sha256")  # absent from records written before 0.2: not checked
        if expected is not None:
            try:
                actual = _sha256(weights)
            except OSError as e:
                return f"{weights}: unreadable ({type(e).__name__}: {e})", meta
            if actual != expected:
                return f"{weights}: SHA-256 {actual[:12]}... differs from the record's {expected[:12]}...", meta
        return None, meta

    def save(self, key: str, model: nn.Module, meta: dict[str, Any]) -> Path:
        """Write the weights, then the record with their SHA-256; each atomically
        (temporary file + rename), so a record always describes whole weights."""
        from safetensors.torch import save_model

        weights, meta_path = self.paths(key)
        with atomic_path(weights) as tmp:
            save_model(model, str(tmp), metadata={"key": key})
            digest = _sha256(tmp)
        write_json({**meta, "key": key, "weights_sha256": digest}, meta_path)
        return weights


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _load_weights(model: nn.Module, path: Path) -> None:
    from safetensors.torch import load_model

    load_model(model, str(path), strict=True)


def train_or_load_experts(
    model_fn: Callable[[], nn.Module],
    task: Task | ImageData,
    expert_indices: Sequence[np.ndarray],
    *,
    spec: TrainSpec,
    cache: ExpertCache | None,
    arch: str,
    seeds: Sequence[int] | None = None,
    device: str | torch.device = "cpu",
    eval_batch_size: int = 1000,
    progress: bool = True,
    on_expert: Callable[[Expert], None] | None = None,
) -> list[Expert]:
    """Load each expert from ``cache`` or train it and save it at once.

    Parameters
    ----------
    model_fn:
        Builds a fresh, untrained module (same architecture for every expert).
    task, expert_indices:
        The task (data, loss, metric; an :class:`~spsa_mix.data.images.ImageData` is image
        classification) and one array of training indices per expert.
    spec:
        Training hyperparameters and the data seed.
    cache:
        Where experts are kept; ``None`` trains without saving.
    arch:
        A name for the architecture, part of the cache key (with the parameter shapes).
    seeds:
        One seed per expert for its minibatch order (default ``expert_seed(spec.data_seed, i)``).
    device:
        Where to train.
    eval_batch_size:
        Batch size of the test evaluation (skipped when the task has no test split).
    progress:
        Show a tqdm bar over each expert's training batches (where tqdm is installed).
    on_expert:
        Called with each expert as soon as it is ready (the pipeline writes partial results).

    Returns
    -------
    list of Expert
        In index order, each in eval mode on ``device``.
    """
    device = torch.device(device)
    task = as_task(task)
    if seeds is not None and len(seeds) != len(expert_indices):
        raise ValueError(f"seeds must give one seed per expert ({len(expert_indices)}), but got {len(seeds)}")
    has_test = int(task.labels("test").shape[0]) > 0
    test = Batches(task, split="test", batch_size=eval_batch_size, device=device) if has_test else None
    experts = []
    for index, indices in enumerate(expert_indices):
        seed = int(seeds[index]) if seeds is not None else expert_seed(spec.data_seed, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_init_seed(spec, index))  # scoped: fork_rng restores the global generator
            model = model_fn()
        model.to(device)
        key = expert_key(_expert_spec(arch, model, task, indices, spec, index, seed))
        meta = cache.load(key, model) if cache is not None else None
        if meta is not None:
            model.eval()
            expert = Expert(index, model, meta, cached=True, path=cache.paths(key)[0] if cache else None)
        else:
            gen = torch.Generator().manual_seed(seed)
            if spec.steps is None:
                batches = Batches(task, indices, batch_size=spec.batch_size, shuffle=True, device=device,
                                  generator=gen, min_batch_size=spec.min_batch_size)
                epochs = spec.epochs
            else:
                batches = Batches(task, indices, batch_size=spec.batch_size, replacement=True,
                                  num_batches=spec.steps, device=device, generator=gen,
                                  min_batch_size=spec.min_batch_size)
                epochs = 1
            bar = progress_bar(epochs * len(batches), f"expert {index + 1}/{len(expert_indices)}", progress,
                               unit="batch", leave=False)
            start = time.perf_counter()
            try:
                rows = train_model(model, batches, epochs=epochs, lr=spec.lr, betas=spec.betas, loss_fn=task.loss,
                                   progress=bar)
            finally:
                if bar is not None:
                    bar.close()
            seconds = time.perf_counter() - start
            labels = task.labels().numpy()[np.asarray(indices)]
            metrics = evaluate(model, test, loss_fn=task.loss) if test is not None else None
            meta = {
                "spec": _expert_spec(arch, model, task, indices, spec, index, seed),
                "index": index,
                "size": int(len(indices)),
                "indices": np.asarray(indices).tolist(),
                "class_counts": np.bincount(labels, minlength=task.data.num_classes).tolist(),
                "train_loss": [r["train_loss"] for r in rows],
                "train_seconds": seconds,
                "test_accuracy": None if metrics is None else metrics["accuracy"],
                "test_loss": None if metrics is None else metrics["loss"],
                "device": str(device),
                "torch": torch.__version__,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            path = cache.save(key, model, meta) if cache is not None else None
            meta = {**meta, "key": key}
            expert = Expert(index, model, meta, cached=False, path=path)
        if on_expert is not None:
            on_expert(expert)
        experts.append(expert)
    return experts
