"""Target data from files: text (JSONL, CSV, TSV, TXT), image folders, tensors, factories.

What a user of ``spsa-mix merge`` points ``data.train`` (and ``data.validation``) at:

==========================  ===========================================================
``*.jsonl``                 one JSON object per line; the text in ``text_field``, the
                            label (sequence classification) in ``label_field``; or,
                            under ``loss: multiple-choice``, one question per line,
                            ``{"prompt", "choices", "answer"}`` (:func:`load_choices`)
``*.csv``, ``*.tsv``        a header row, then one example per row (same fields)
``*.txt``                   one example per non-empty line
a folder                    ``torchvision.datasets.ImageFolder``: one subfolder per class
``*.pt``, ``*.safetensors`` tensors: ``inputs`` (or ``x``) and ``targets`` (or ``y``,
                            ``labels``); ``*.pt`` read with ``weights_only=True``
``torchvision:Name:root``   a torchvision dataset present under ``root`` (``download=False``)
``package.module:factory``  ``factory()`` returns the :class:`~spsa_mix.data.tasks.Task`,
                            or an iterable of ``(inputs, targets)`` batches
==========================  ===========================================================

Text is tokenized with the model's own tokenizer (``transformers.AutoTokenizer`` from the
model directory, offline), truncated to ``max_length`` tokens and padded on the right.
Labels that are not integers are numbered in sorted order (the classes are recorded).

Example
-------
>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
>>> _ = p.write_text('{"text": "a b", "label": "pos"}\\n{"text": "c", "label": "neg"}\\n')
>>> read_texts(p, text_field="text", label_field="label")
(['a b', 'c'], ['pos', 'neg'])
"""

from __future__ import annotations

import csv
import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spsa_mix.data.images import ImageData
from spsa_mix.data.kinds import TENSOR_SUFFIXES, TEXT_SUFFIXES, data_kind
from spsa_mix.data.text import ChoiceData, TextData
from spsa_mix.io import jsonl_rows

__all__ = ["TEXT_SUFFIXES", "TENSOR_SUFFIXES", "read_texts", "jsonl_rows", "load_tokenizer", "texts_to_data",
           "load_choices", "load_image_folder",
           "TensorData", "load_tensors", "load_reference", "data_kind"]

# ---------------------------------------------------------------------------- text
def read_texts(path: str | os.PathLike[str], *, text_field: str = "text",
               label_field: str | None = None) -> tuple[list[str], list[Any] | None]:
    """The texts (and labels) of a JSONL, CSV, TSV or TXT file.

    Raises ``ValueError`` naming the file, the line and the missing field.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    texts: list[str] = []
    labels: list[Any] = []
    try:
        if suffix == ".txt":
            texts = [line.rstrip("\n") for line in p.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        elif suffix == ".jsonl":
            for n, row in jsonl_rows(p):
                _take(row, text_field, label_field, texts, labels, f"{p}: line {n}")
        elif suffix in (".csv", ".tsv"):
            with p.open(newline="", encoding="utf-8-sig") as fh:  # a byte-order mark is no part of the header
                reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
                for n, row in enumerate(reader, start=2):
                    _take(row, text_field, label_field, texts, labels, f"{p}: row {n}")
        else:
            raise ValueError(f"{p}: a text file must end in {', '.join(TEXT_SUFFIXES)}")
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read {str(p)!r}: it is not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ValueError(f"cannot read {str(p)!r}: {e}") from None
    if not texts:
        raise ValueError(f"{p} holds no examples")
    return texts, (labels if label_field is not None else None)


def _take(row: Any, text_field: str, label_field: str | None, texts: list[str], labels: list[Any], where: str) -> None:
    if not isinstance(row, dict) or text_field not in row:
        fields = sorted(row) if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"{where} has no field {text_field!r} (data.text_field); it has {fields}")
    if row[text_field] is None:  # JSON null, or a CSV row shorter than its header
        raise ValueError(f"{where} has no value in its field {text_field!r} (data.text_field)")
    texts.append(str(row[text_field]))
    if label_field is not None:
        if label_field not in row:
            raise ValueError(f"{where} has no field {label_field!r} (data.label_field); it has {sorted(row)}")
        if row[label_field] is None:
            raise ValueError(f"{where} has no value in its field {label_field!r} (data.label_field)")
        labels.append(row[label_field])


def load_tokenizer(model_dir: str | os.PathLike[str]) -> Any:
    """The tokenizer saved in a Hugging Face model directory (offline), with a padding token.

    Raises ``ValueError`` when the folder holds none.
    """
    try:
        from transformers import AutoTokenizer
    except ImportError as e:
        raise ValueError("text data needs transformers for the model's tokenizer (pip install 'spsa-mix[hf]')") from e
    try:
        tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"no tokenizer in {str(model_dir)!r} (text data is tokenized with the model's own "
                         f"tokenizer: tokenizer.json or tokenizer.model beside config.json): {e}") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def texts_to_data(name: str, train: tuple[list[str], list[Any] | None], validation: tuple[list[str], list[Any] | None]
                  | None, tokenizer: Any, *, max_length: int, source: str, min_tokens: int = 1,
                  validation_source: str = "the validation data") -> TextData:
    """Tokenize texts (and number their labels) into a :class:`~spsa_mix.data.text.TextData`
    whose test split is the validation data.

    ``min_tokens``: examples with fewer tokens (after truncation) are left out; 2 for a
    language model, whose loss needs a next token (a one-word line has none: a batch of
    them would score 0 / 0). ``ValueError`` naming ``source`` (or ``validation_source``)
    when none is left.
    """
    val_texts, val_labels = validation if validation is not None else ([], None)
    labels_train, labels_val = train[1], val_labels
    classes: list[str] | None = None
    if labels_train is not None:
        values = list(labels_train) + list(labels_val or [])
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            y_train, y_val = [int(v) for v in labels_train], [int(v) for v in (labels_val or [])]
        else:
            classes = sorted({str(v) for v in values})
            index = {c: i for i, c in enumerate(classes)}
            y_train = [index[str(v)] for v in labels_train]
            y_val = [index[str(v)] for v in (labels_val or [])]
    else:
        y_train, y_val = [0] * len(train[0]), [0] * len(val_texts)

    def encode(texts: Sequence[str]) -> list[list[int]]:
        if not texts:
            return []
        out = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
        return [ids if ids else [tokenizer.pad_token_id] for ids in out]

    seq_train, y_train = _long_enough(encode(train[0]), y_train, min_tokens, source)
    seq_val, y_val = _long_enough(encode(val_texts), y_val, min_tokens, validation_source) if val_texts else ([], [])
    return TextData.from_sequences(name, seq_train, y_train, seq_val, y_val,
                                   vocab_size=max(len(tokenizer), 1), pad_id=int(tokenizer.pad_token_id),
                                   max_length=max_length, classes=classes, source=source)


def _long_enough(seqs: list[list[int]], labels: list[int], min_tokens: int, source: str) -> tuple[list[list[int]], list[int]]:
    """The sequences of ``min_tokens`` tokens or more, and their labels."""
    keep = [i for i, s in enumerate(seqs) if len(s) >= min_tokens]
    if not keep:
        longest = max((len(s) for s in seqs), default=0)
        raise ValueError(f"{source}: no example has {min_tokens} tokens or more (the longest has {longest}): a "
                         "language model's loss needs a next token to predict")
    return [seqs[i] for i in keep], [labels[i] for i in keep]


def load_choices(train: str | os.PathLike[str], validation: str | os.PathLike[str] | None, tokenizer: Any, *,
                 max_length: int) -> ChoiceData:
    """Multiple-choice JSONL files (:mod:`spsa_mix.data.choices`) tokenized into a
    :class:`~spsa_mix.data.text.ChoiceData` whose test split is the validation questions."""
    from spsa_mix.data.choices import encode_choices, read_choices

    splits = [read_choices(f) if f is not None else [] for f in (train, validation)]
    encoded = [encode_choices(q, tokenizer, max_length=max_length) for q in splits]
    answers = [[a for _, _, a in q] for q in splits]
    return ChoiceData.from_encoded(Path(train).stem, encoded[0], answers[0], encoded[1], answers[1],
                                   pad_id=int(tokenizer.pad_token_id), source=str(train))


# ---------------------------------------------------------------------------- images
def load_image_folder(train: str | os.PathLike[str], validation: str | os.PathLike[str] | None = None, *,
                      image_size: int | None = None, mean: Sequence[float] | None = None,
                      std: Sequence[float] | None = None) -> ImageData:
    """Images of ``torchvision.datasets.ImageFolder`` folders (one subfolder per class) as an
    :class:`~spsa_mix.data.images.ImageData`; the validation folder is its test split and must
    have the same classes."""
    from torchvision.datasets import ImageFolder

    from spsa_mix.data.images import images_to_arrays, resize_transform

    def read(folder: str | os.PathLike[str]) -> tuple[Any, np.ndarray, np.ndarray]:
        try:
            ds = ImageFolder(str(folder), transform=resize_transform(image_size))
        except (FileNotFoundError, OSError, RuntimeError) as e:
            raise ValueError(f"{folder}: not an image folder (one subfolder of images per class): {e}") from None
        ds.loader = _naming_loader(ds.loader)
        x, y = images_to_arrays(ds, image_size)
        return ds, x, y

    ds, x_train, y_train = read(train)
    if validation is not None:
        vds, x_val, y_val = read(validation)
        if vds.classes != ds.classes:
            raise ValueError(f"{validation}: its classes {vds.classes} differ from {train}'s {ds.classes}")
    else:
        x_val, y_val = x_train[:0], y_train[:0]
    return ImageData.from_arrays(Path(train).name, x_train, y_train, x_val, y_val, scale=1 / 255, classes=ds.classes,
                                 source=f"ImageFolder({str(train)!r})", mean=mean, std=std)


def _naming_loader(load: Callable[[str], Any]) -> Callable[[str], Any]:
    """``load`` with its errors (a truncated or corrupt image) as ``ValueError`` naming the file."""

    def named(path: str) -> Any:
        try:
            return load(path)
        except Exception as e:  # PIL raises OSError, SyntaxError, its DecompressionBombError...
            raise ValueError(f"cannot read the image {path!r} ({type(e).__name__}: {e})") from None

    return named


# ---------------------------------------------------------------------------- tensors
class TensorData:
    """Examples held as tensors: ``inputs`` (a tensor or a dict of tensors, first axis the
    example) and ``targets``; the validation tensors are its test split.

    >>> d = TensorData("t", torch.zeros(4, 2), torch.arange(4), torch.zeros(1, 2), torch.arange(1))
    >>> from spsa_mix.data.batches import Batches
    >>> [tuple(x.shape) for x, _ in Batches(d, batch_size=3)]
    [(3, 2), (1, 2)]
    """

    def __init__(self, name: str, inputs: Any, targets: torch.Tensor, val_inputs: Any = None,
                 val_targets: torch.Tensor | None = None) -> None:
        self.name = name
        self._splits = {"train": (inputs, targets), "test": (val_inputs, val_targets)}
        n = int(targets.shape[0])
        for key, value in _items(inputs):
            if int(value.shape[0]) != n:
                raise ValueError(f"{name}: inputs{key} has {int(value.shape[0])} examples but targets has {n}")

    def labels(self, split: str = "train") -> torch.Tensor:
        targets = self._splits[split][1]
        return targets if targets is not None else torch.zeros(0, dtype=torch.int64)

    def take(self, split: str, indices: Any, device: torch.device) -> tuple[Any, torch.Tensor]:
        inputs, targets = self._splits[split]
        if targets is None:
            raise ValueError(f"{self.name} has no validation tensors")
        ix = None if indices is None else torch.as_tensor(np.asarray(indices, dtype=np.int64))

        def pick(t: torch.Tensor) -> torch.Tensor:
            return (t if ix is None else t[ix]).to(device)

        moved = {k: pick(v) for k, v in inputs.items()} if isinstance(inputs, dict) else pick(inputs)
        return moved, pick(targets)

    def collate(self, stored: Any, labels: torch.Tensor, ix: torch.Tensor) -> tuple[Any, Any]:
        inputs = {k: v[ix] for k, v in stored.items()} if isinstance(stored, dict) else stored[ix]
        return inputs, labels[ix]

    def model_dims(self) -> dict[str, int]:
        """For images ``(N, C, H, W)`` with class labels: ``num_classes`` (the largest label
        plus one, over both splits), ``in_channels`` and ``image_size``, as
        :func:`spsa_mix.models.build_model` takes them.

        >>> TensorData("t", torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 4, 2])).model_dims()
        {'num_classes': 5, 'in_channels': 3, 'image_size': 8}
        """
        inputs, targets = self._splits["train"]
        if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or targets is None or targets.is_floating_point():
            raise ValueError(f"{self.name}: an architecture by name needs images (N, C, H, W) and class labels; "
                             "give model: package.module:factory for other data")
        labels = [t for t in (targets, self._splits["test"][1]) if t is not None and t.numel()]
        return {"num_classes": int(max(int(t.max()) for t in labels)) + 1, "in_channels": int(inputs.shape[1]),
                "image_size": int(inputs.shape[-1])}


def _items(inputs: Any) -> list[tuple[str, torch.Tensor]]:
    if isinstance(inputs, dict):
        return [(f"[{k!r}]", v) for k, v in inputs.items()]
    return [("", inputs)]


def load_tensors(train: str | os.PathLike[str], validation: str | os.PathLike[str] | None = None) -> TensorData:
    """A :class:`TensorData` from ``.pt`` / ``.safetensors`` files holding ``inputs``/``x`` and
    ``targets``/``y``/``labels`` (``.pt`` read with ``weights_only=True``: no code runs)."""

    def read(path: str | os.PathLike[str]) -> tuple[Any, torch.Tensor]:
        p = Path(path)
        try:
            if p.suffix == ".safetensors":
                from safetensors.torch import load_file

                obj: Any = load_file(str(p))
            else:
                obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as e:  # safetensors and torch raise their own types for corrupt files
            raise ValueError(f"cannot read tensors from {str(p)!r}: {_reason(e)}") from None
        if isinstance(obj, (tuple, list)) and len(obj) == 2:
            pair = _tensor(obj[0], f"{p}: the inputs"), _tensor(obj[1], f"{p}: the targets")
            _check_targets(pair[1], f"{p}: the targets")
            return pair
        if not isinstance(obj, dict):
            raise ValueError(f"{p} must hold a dict of tensors (inputs, targets) or a pair, but holds "
                             f"{type(obj).__name__}")
        targets_key = next((k for k in ("targets", "y", "labels") if k in obj), None)
        if targets_key is None:
            raise ValueError(f"{p} has no 'targets' (or 'y', 'labels') tensor; it has {sorted(obj)}")
        targets = _tensor(obj[targets_key], f"{p}: {targets_key!r}")
        inputs_key = next((k for k in ("inputs", "x") if k in obj), None)
        inputs = obj[inputs_key] if inputs_key is not None else {k: v for k, v in obj.items() if k != targets_key}
        inputs = ({k: _tensor(v, f"{p}: {k!r}") for k, v in inputs.items()} if isinstance(inputs, dict)
                  else _tensor(inputs, f"{p}: {inputs_key!r}"))
        _check_targets(targets, f"{p}: {targets_key!r}")
        return inputs, targets

    inputs, targets = read(train)
    val = read(validation) if validation is not None else (None, None)
    return TensorData(Path(train).stem, inputs, targets, *val)


def _reason(e: Exception) -> str:
    """One line for a failed tensor load; torch's refusal of a pickle that would run code is
    said as such (its own message advises loading without ``weights_only``: not done here).

    >>> _reason(RuntimeError("Weights only load failed. In PyTorch 2.6, ..."))
    'torch.load(weights_only=True) refused it (RuntimeError): it holds objects other than tensors, or is not a PyTorch file'
    """
    first = (str(e).strip().splitlines() or [""])[0]
    if "Weights only load failed" in first:
        return (f"torch.load(weights_only=True) refused it ({type(e).__name__}): it holds objects other than "
                "tensors, or is not a PyTorch file")
    return f"{type(e).__name__}: {first}"


def _tensor(value: Any, where: str) -> torch.Tensor:
    """``value`` as a tensor (a list or an array of numbers is converted), else ``ValueError``."""
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{where} must be a tensor (or a list of numbers), but holds a {type(value).__name__} "
                         f"({e})") from None


def _check_targets(targets: torch.Tensor, where: str) -> None:
    """Class labels are ``0 ... C-1`` (``-100``: ignored, as torch's cross-entropy does).

    >>> _check_targets(torch.tensor([0, -1]), "t.pt")
    Traceback (most recent call last):
    ...
    ValueError: t.pt: example 1 has the target -1; class labels are 0, 1, ... (or -100, ignored)
    """
    if targets.ndim == 0:
        raise ValueError(f"{where} must hold one target per example, but holds a single number")
    if targets.is_floating_point() or targets.dtype == torch.bool or not targets.numel():
        return
    bad = (targets < 0) & (targets != -100)
    if bool(bad.any()):
        i = int(bad.reshape(targets.shape[0], -1).any(dim=1).nonzero()[0, 0])
        value = int(targets.reshape(targets.shape[0], -1)[i][bad.reshape(targets.shape[0], -1)[i]][0])
        raise ValueError(f"{where}: example {i} has the target {value}; class labels are 0, 1, ... (or -100, ignored)")


# ---------------------------------------------------------------------------- references
def load_reference(spec: str) -> Callable[..., Any]:
    """The object named by ``"package.module:attribute"``.

    >>> load_reference("math:sqrt")(4.0)
    2.0
    """
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected 'package.module:name', but got {spec!r}")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{spec!r}: cannot import {module!r} ({e})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{spec!r}: {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]
