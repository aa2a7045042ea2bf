"""Experts fine-tuned from one pretrained model, saved as a user saves them, and cached.

What a user of ``spsa-mix merge`` starts from: a pretrained model and K fine-tunes of it on
different data. :func:`finetune_expert` makes one, with the package's training loop
(:func:`spsa_mix.experiment.training.train_model`: Adam on every trainable weight), and
writes it where the blending code and the usual loaders read it:

=========================================  ==================  ===========================================
base                                       ``spec.kind``       written (``FinetunedExpert.path``)
=========================================  ==================  ===========================================
a Hugging Face model directory             ``"full"``          a model directory (``save_pretrained``, the
                                                               base's tokenizer files beside it)
a Hugging Face model directory             ``"lora"``          a PEFT adapter directory
                                                               (``get_peft_model(...).save_pretrained``)
a function returning an ``nn.Module``      ``"full"``          ``model.safetensors``: the state dict
=========================================  ==================  ===========================================

Each expert is cached under ``cache_dir/<key>`` with ``cache_dir/<key>.json``, where
``key`` is the SHA-256 of everything that determined it (:func:`finetune_key`): the
:class:`FinetuneSpec`, a SHA-256 of the base's weights and one of the exact training
examples. The JSON is written last, atomically, so a folder without its JSON is never
trusted; a later call with the same inputs returns the cached expert without training.

Randomness: the minibatch order of every epoch and the LoRA initialisation come from
``spec.seed`` (a forked global generator, restored afterwards); dropout is whatever the
model has (none in stories260K, the CIFAR ResNets, or PEFT with ``lora_dropout=0``).

Example
-------
>>> import tempfile, torch
>>> from torch import nn
>>> x, y = torch.randn(32, 4, generator=torch.Generator().manual_seed(0)), torch.arange(32) % 2
>>> def make():                       # the pretrained model (here a fixed linear layer)
...     net = nn.Linear(4, 2)
...     with torch.no_grad():
...         _ = net.weight.fill_(0.1); _ = net.bias.zero_()
...     return net
>>> cache = tempfile.mkdtemp()
>>> first = finetune_expert(make, (x, y), spec=FinetuneSpec(epochs=1, batch_size=8), cache_dir=cache)
>>> again = finetune_expert(make, (x, y), spec=FinetuneSpec(epochs=1, batch_size=8), cache_dir=cache)
>>> first.cached, again.cached, again.path == first.path, first.path.name
(False, True, True, 'model.safetensors')
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from spsa_mix.core.validation import check_int
from spsa_mix.experiment.training import train_model
from spsa_mix.io import atomic_directory, write_json

__all__ = ["FinetuneSpec", "FinetunedExpert", "finetune_expert", "finetune_key", "tensors_digest", "Examples",
           "LORA_TARGETS", "TOKENIZER_FILES"]

#: ``(inputs, targets)``: a tensor or a dict of tensors whose first axis is the example, and
#: a tensor of targets (class labels, or token labels with ``-100`` on padding).
Examples = tuple[Any, torch.Tensor]

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")  # Llama's projections
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json")
FORMAT = 1  # bump when what is written changes


@dataclass(frozen=True)
class FinetuneSpec:
    """How an expert is fine-tuned (every field goes into the cache key).

    >>> FinetuneSpec(kind="lora", lora_r=4).lora_alpha
    16
    """

    kind: Literal["full", "lora"] = "full"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3  # Adam, as the package's experts (GLUE section 5)
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    seed: int = 0  # minibatch order and LoRA initialisation
    lora_r: int = 8
    lora_alpha: int = 16  # PEFT's scaling is lora_alpha / lora_r
    lora_targets: tuple[str, ...] = field(default=LORA_TARGETS)

    def __post_init__(self) -> None:
        if self.kind not in ("full", "lora"):
            raise ValueError(f"kind must be 'full' or 'lora', but got {self.kind!r}")
        check_int(self.epochs, "epochs", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.lora_r, "lora_r", minimum=1)
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, but got {self.lr!r}")
        check_int(self.lora_alpha, "lora_alpha", minimum=1)
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))


@dataclass
class FinetunedExpert:
    """A fine-tuned expert on disk: ``path`` is what to pass to the blending code."""

    path: Path
    key: str
    cached: bool
    meta: dict[str, Any]


def tensors_digest(*parts: Any) -> str:
    """SHA-256 of tensors (or dicts / tuples of them, in order), their shapes and dtypes included.

    >>> tensors_digest(torch.zeros(2)) == tensors_digest(torch.zeros(2)), tensors_digest(torch.zeros(2)) == tensors_digest(torch.zeros(3))
    (True, False)
    """
    h = hashlib.sha256()

    def feed(obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            h.update(f"{tuple(obj.shape)}{t.dtype}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for k in sorted(obj):
                h.update(str(k).encode())
                feed(obj[k])
        elif isinstance(obj, (tuple, list)):
            for o in obj:
                feed(o)
        else:
            h.update(repr(obj).encode())

    for p in parts:
        feed(p)
    return h.hexdigest()


def _file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _base_digest(base: Any) -> tuple[str, str, nn.Module | None]:
    """``(kind, digest, module)`` of the base: ``"hf"``, a digest of its config and weight
    files and ``None``; or ``"module"``, a digest of the module ``base()`` returns (its state
    dict), and that module, which is the one trained."""
    if isinstance(base, (str, os.PathLike)):
        from spsa_mix.blend.sources.checkpoints import hf_weight_files

        path = Path(base)
        if not (path / "config.json").is_file():
            raise ValueError(f"base {str(base)!r} is not a Hugging Face model directory (no config.json)")
        _, files = hf_weight_files(path, "base")
        return "hf", _file_digest([path / "config.json", *sorted(files)]), None
    if callable(base):
        model = base()
        if not isinstance(model, nn.Module):
            raise ValueError(f"base() must return an nn.Module, but returned {type(model).__name__}")
        return "module", tensors_digest(dict(model.state_dict())), model
    raise ValueError(f"base must be a Hugging Face model directory or a function returning an nn.Module, but got "
                     f"{type(base).__name__}")


def finetune_key(spec: FinetuneSpec, base_digest: str, data_digest: str, *, name: str = "") -> str:
    """The cache key: the first 24 hex digits of the SHA-256 of everything that determines the expert.

    >>> len(finetune_key(FinetuneSpec(), "b", "d")), finetune_key(FinetuneSpec(), "b", "d") == finetune_key(FinetuneSpec(lr=1e-4), "b", "d")
    (24, False)
    """
    blob = {"format": FORMAT, "spec": asdict(spec), "base_sha256": base_digest, "data_sha256": data_digest,
            "name": name, "torch": torch.__version__.split("+")[0]}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:24]


class _EpochBatches:
    """``(inputs, targets)`` minibatches of the examples in a new seeded order each epoch."""

    def __init__(self, examples: Examples, batch_size: int, seed: int) -> None:
        self.inputs, self.targets = examples
        self.n = int(self.targets.shape[0])
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Any, torch.Tensor]]:
        order = torch.randperm(self.n, generator=self.generator)
        for start in range(0, self.n, self.batch_size):
            ix = order[start: start + self.batch_size]
            inputs = ({k: v[ix] for k, v in self.inputs.items()} if isinstance(self.inputs, dict)
                      else self.inputs[ix])
            yield inputs, self.targets[ix]


def _check_examples(data: Any) -> Examples:
    if not (isinstance(data, tuple) and len(data) == 2 and isinstance(data[1], torch.Tensor)):
        raise ValueError("data must be a pair (inputs, targets) of tensors (inputs may be a dict of tensors), "
                         f"but got {type(data).__name__}")
    inputs, targets = data
    n = int(targets.shape[0])
    tensors = inputs.values() if isinstance(inputs, dict) else [inputs]
    for t in tensors:
        if not isinstance(t, torch.Tensor) or int(t.shape[0]) != n:
            raise ValueError(f"every input must be a tensor with one row per target ({n}), but got "
                             f"{type(t).__name__} {tuple(getattr(t, 'shape', ()))}")
    return inputs, targets


def _default_loss(model: nn.Module) -> Callable[[Any, Any], torch.Tensor]:
    from spsa_mix.blend.losses import resolve_loss
    from spsa_mix.blend.sources.hub import default_loss

    wrapped = getattr(model, "base_model", None)  # PEFT: base_model is the LoraModel, its .model the HF model
    candidates = (model, getattr(wrapped, "model", None))
    causal = any(m is not None and default_loss(type(m)) == "causal-lm" for m in candidates)
    return resolve_loss("causal-lm" if causal else "cross-entropy")


def finetune_expert(base: str | os.PathLike[str] | Callable[[], nn.Module], data: Examples, *,
                    spec: FinetuneSpec, cache_dir: str | os.PathLike[str], name: str = "",
                    loss_fn: Callable[[Any, Any], torch.Tensor] | None = None) -> FinetunedExpert:
    """Fine-tune ``base`` on ``data`` as ``spec`` says, save it (see the module docstring), cache it.

    Parameters
    ----------
    base:
        A Hugging Face model directory (loaded with the class its config names), or a
        function returning the pretrained ``nn.Module`` (called once: the module it returns
        is digested for the key, then trained).
    data:
        ``(inputs, targets)`` (:data:`Examples`): for a language model ``inputs`` is a dict
        (``input_ids``, ``attention_mask``) and ``targets`` the labels, ``-100`` on padding.
    spec:
        The :class:`FinetuneSpec`.
    cache_dir:
        Where experts are kept (``<key>/`` and ``<key>.json``).
    name:
        A label stored in the JSON (and in the key, so two domains with equal data stay apart).
    loss_fn:
        Default: next-token cross-entropy for a causal LM, else cross-entropy.

    Returns
    -------
    FinetunedExpert
        ``path`` (the directory, or ``model.safetensors`` for a module), ``key``,
        ``cached``, and ``meta`` (the JSON: spec, digests, training losses, seconds).
    """
    import time

    if not isinstance(spec, FinetuneSpec):
        raise ValueError(f"spec must be a FinetuneSpec, but got {type(spec).__name__}")
    examples = _check_examples(data)
    kind, base_sha, module = _base_digest(base)
    if kind == "module" and spec.kind == "lora":
        raise ValueError("spec.kind='lora' needs a Hugging Face base directory (PEFT adapters); a module base is "
                         "fine-tuned with kind='full'")
    key = finetune_key(spec, base_sha, tensors_digest(examples), name=name)
    root = Path(cache_dir)
    folder, meta_file = root / key, root / f"{key}.json"
    out_path = folder / "model.safetensors" if kind == "module" else folder
    if meta_file.is_file() and folder.is_dir():
        return FinetunedExpert(out_path, key, True, json.loads(meta_file.read_text()))

    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = module.requires_grad_(True) if module is not None else _load_trainable(base, spec)
        loss = loss_fn if loss_fn is not None else _default_loss(model)
        rows = train_model(model, _EpochBatches(examples, spec.batch_size, spec.seed), epochs=spec.epochs,
                           lr=spec.lr, betas=spec.betas, loss_fn=loss)
    seconds = time.perf_counter() - t0
    with atomic_directory(folder, overwrite=True) as tmp:
        _save(model, base, kind, tmp)
    meta = {"format": FORMAT, "name": name, "key": key, "base": str(base) if kind == "hf" else "module",
            "base_sha256": base_sha, "data_sha256": tensors_digest(examples), "examples": int(examples[1].shape[0]),
            "spec": asdict(spec), "train_loss": [r["train_loss"] for r in rows], "seconds": seconds,
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    write_json(meta, meta_file)
    return FinetunedExpert(out_path, key, False, json.loads(meta_file.read_text()))  # as a cached one reads it


def _load_trainable(base: Any, spec: FinetuneSpec) -> nn.Module:
    from spsa_mix.blend.sources.hub import architecture_class, read_config

    config = read_config(base, "base")
    cls = architecture_class(config)
    model = cls.from_pretrained(str(base), local_files_only=True)  # type: ignore[attr-defined]
    if spec.kind == "full":
        return model.requires_grad_(True)  # type: ignore[no-any-return]
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=spec.lora_r, lora_alpha=spec.lora_alpha, target_modules=list(spec.lora_targets),
                      lora_dropout=0.0, bias="none")
    return get_peft_model(model, lora)  # type: ignore[no-any-return]


def _save(model: nn.Module, base: Any, kind: str, folder: Path) -> None:
    if kind == "module":
        from safetensors.torch import save_file

        state = {n: t.detach().contiguous().clone() for n, t in model.state_dict().items()}
        save_file(state, str(folder / "model.safetensors"))
        return
    model.save_pretrained(str(folder))  # type: ignore[operator]
    if (folder / "config.json").is_file():  # a full model: beside it the base's tokenizer, as a hub repo has
        for file in TOKENIZER_FILES:
            src = Path(base) / file
            if src.is_file() and not (folder / file).exists():
                shutil.copyfile(src, folder / file)
