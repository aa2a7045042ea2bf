"""Train the K experts and keep them in a cache, so the expensive part runs once.

Each expert is trained on its Dirichlet split with Adam (GLUE 5: lr 1e-3, betas
(0.9, 0.999), batch 64, 40 epochs by default) and saved as soon as it is trained: a
``<key>.safetensors`` file with its weights and a ``<key>.json`` file with everything
that determined it (architecture, its parameter shapes, the dataset, a SHA-256 of the
exact images and labels it saw, the training hyperparameters and seed), its data indices
and size, class counts, training losses and test accuracy. ``key`` is the SHA-256 of
that specification (:func:`expert_key`), so a later run with the same configuration
loads the file instead of training, a changed configuration trains a new expert, and an
interrupted run keeps every expert finished before the interruption. The JSON is
written last (atomically), so a file pair without its JSON is never trusted.

Initialisation. By default every expert starts from the same initial weights
(``shared_init=True``, seeded by ``data_seed`` alone), as clients of federated averaging
start from one global model: weight averaging is only meaningful between networks that
share an initialisation (or a pretrained start), since independently initialised networks
differ by permutations of their hidden units. Measured on the built-in digits run
(``docs/glue.md``): with independent initialisations the uniform blend is at chance.
``shared_init=False`` gives each expert its own initialisation.

Randomness: the initialisation seed is ``expert_seed(data_seed, 0)`` when shared, else
``expert_seed(data_seed, index)``; the minibatch order always comes from
``expert_seed(data_seed, index)``. The initialisation runs under
:func:`torch.random.fork_rng`, which restores the global generator afterwards.

Example
-------
>>> import tempfile, numpy as np, torch
>>> from spsa_mix.data.images import ImageData
>>> rng = np.random.default_rng(0)
>>> d = ImageData.from_arrays("toy", rng.integers(0, 255, (40, 1, 4, 4)), np.arange(40) % 2,
...                           rng.integers(0, 255, (10, 1, 4, 4)), np.arange(10) % 2, scale=1 / 255)
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
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spsa_mix.blend import evaluate
from spsa_mix.core.result import atomic_write_text
from spsa_mix.data.batches import Batches
from spsa_mix.data.images import ImageData
from spsa_mix.experiment.training import train_model
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

CACHE_FORMAT = 1  # bump when the file layout or the training code changes what a key means


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
        return float(self.meta["test_accuracy"])


def expert_seed(data_seed: int, index: int) -> int:
    """The seed of expert ``index``: independent streams via ``numpy.random.SeedSequence``.

    >>> expert_seed(0, 1) == expert_seed(0, 1), expert_seed(0, 1) == expert_seed(0, 2)
    (True, False)
    """
    return int(np.random.SeedSequence([int(data_seed), int(index), 0x61E]).generate_state(1)[0])


def _init_seed(spec: TrainSpec, index: int) -> int:
    return expert_seed(spec.data_seed, 0 if spec.shared_init else index)


def model_signature(model: nn.Module) -> list[list[Any]]:
    """``[name, shape, dtype]`` of every entry of the state dict: what must match to load.

    >>> model_signature(torch.nn.Linear(2, 1))
    [['weight', [1, 2], 'float32'], ['bias', [1], 'float32']]
    """
    return [[name, list(t.shape), str(t.dtype).replace("torch.", "")] for name, t in model.state_dict().items()]


def _data_digest(data: ImageData, indices: np.ndarray) -> str:
    ix = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    h = hashlib.sha256()
    h.update(data.x_train[ix].contiguous().numpy().tobytes())
    h.update(data.y_train[ix].contiguous().numpy().tobytes())
    h.update(np.asarray([data.scale], dtype=np.float64).tobytes())
    h.update(data.mean.numpy().tobytes())
    h.update(data.std.numpy().tobytes())
    return h.hexdigest()


def expert_key(spec: dict[str, Any]) -> str:
    """SHA-256 (first 24 hex digits) of a JSON specification, keys sorted.

    >>> expert_key({"a": 1, "b": [2]}) == expert_key({"b": [2], "a": 1})
    True
    """
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _expert_spec(arch: str, model: nn.Module, data: ImageData, indices: np.ndarray, train: TrainSpec,
                 index: int) -> dict[str, Any]:
    return {
        "format": CACHE_FORMAT,
        "arch": arch,
        "module": type(model).__qualname__,
        "signature": model_signature(model),
        "dataset": data.name,
        "data_sha256": _data_digest(data, indices),
        "size": int(len(indices)),
        "train": {**asdict(train), "betas": list(train.betas)},
        "seed": expert_seed(train.data_seed, index),
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
        """Load the weights of ``key`` into ``model`` and return its record, or ``None``."""
        from safetensors.torch import load_model

        weights, meta_path = self.paths(key)
        if not (weights.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("key") != key:
                return None
            load_model(model, str(weights), strict=True)
        except (OSError, ValueError, RuntimeError, json.JSONDecodeError):
            return None  # unreadable or mismatched: retrain and overwrite
        return meta  # type: ignore[no-any-return]

    def save(self, key: str, model: nn.Module, meta: dict[str, Any]) -> Path:
        """Write the weights, then the record; each atomically (temporary file + rename)."""
        from safetensors.torch import save_model

        self.root.mkdir(parents=True, exist_ok=True)
        weights, meta_path = self.paths(key)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".safetensors.tmp")
        os.close(fd)
        try:
            save_model(model, tmp, metadata={"key": key})
            os.replace(tmp, weights)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        atomic_write_text(meta_path, json.dumps({**meta, "key": key}, indent=1))
        return weights


def train_or_load_experts(
    model_fn: Callable[[], nn.Module],
    data: ImageData,
    expert_indices: Sequence[np.ndarray],
    *,
    spec: TrainSpec,
    cache: ExpertCache | None,
    arch: str,
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
    data, expert_indices:
        The dataset and one array of training indices per expert.
    spec:
        Training hyperparameters and the data seed.
    cache:
        Where experts are kept; ``None`` trains without saving.
    arch:
        A name for the architecture, part of the cache key (with the parameter shapes).
    device:
        Where to train.
    eval_batch_size:
        Batch size of the test-accuracy evaluation.
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
    test = Batches(data, split="test", batch_size=eval_batch_size, device=device)
    experts = []
    for index, indices in enumerate(expert_indices):
        seed = expert_seed(spec.data_seed, index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_init_seed(spec, index))  # scoped: fork_rng restores the global generator
            model = model_fn()
        model.to(device)
        key = expert_key(_expert_spec(arch, model, data, indices, spec, index))
        meta = cache.load(key, model) if cache is not None else None
        if meta is not None:
            model.eval()
            expert = Expert(index, model, meta, cached=True, path=cache.paths(key)[0] if cache else None)
        else:
            batches = Batches(data, indices, batch_size=spec.batch_size, shuffle=True, device=device,
                              generator=torch.Generator().manual_seed(seed))
            bar = progress_bar(spec.epochs * len(batches), f"expert {index + 1}/{len(expert_indices)}", progress,
                               unit="batch", leave=False)
            start = time.perf_counter()
            try:
                rows = train_model(model, batches, epochs=spec.epochs, lr=spec.lr, betas=spec.betas, progress=bar)
            finally:
                if bar is not None:
                    bar.close()
            seconds = time.perf_counter() - start
            labels = data.y_train.numpy()[np.asarray(indices)]
            meta = {
                "spec": _expert_spec(arch, model, data, indices, spec, index),
                "index": index,
                "size": int(len(indices)),
                "indices": np.asarray(indices).tolist(),
                "class_counts": np.bincount(labels, minlength=data.num_classes).tolist(),
                "train_loss": [r["train_loss"] for r in rows],
                "train_seconds": seconds,
                "test_accuracy": evaluate(model, test)["accuracy"],
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

