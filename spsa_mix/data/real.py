"""Real data for experts of real pretrained models, and the text domains built from it.

The files are those of ``../shared/data`` (its README gives their provenance and licences):
CIFAR-10 as JPEG in a zip, SST-2's TSV files, the stories260K Llama and the pretrained
CIFAR-10 ResNets. Nothing here downloads anything; :func:`find_shared` says where a file
is, or ``None`` (a checkout without ``../shared`` has none: callers skip or say so).

* :func:`read_cifar10_zip` -- images of ``cifar10-jpeg.zip`` read member by member (the
  zip is only read), ``per_class`` images of each class from ``offset`` on, so that
  disjoint subsets are easy to draw;
* :func:`read_sst2` -- SST-2 sentences and labels (1 positive, 0 negative);
* :func:`arithmetic_texts` -- short word problems from templates, a text domain the
  project generates (seeded);
* :func:`sample_texts` -- text sampled from a causal language model (e.g. TinyStories-like
  stories from stories260K), seeded;
* :func:`causal_lm_examples`, :func:`as_batches` -- texts as tokenized examples and
  minibatches (dicts for Hugging Face models, pairs for the others).

Example
-------
>>> arithmetic_texts(2, seed=0)
['Anna had 2 cookies. Then Anna found 1 more cookies. Now Anna has 3 cookies.', 'Anna had 15 flowers. Then Anna lost 13 flowers. Now Anna has 2 flowers.']
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spsa_mix.data.images import CIFAR10_JPEG_ZIP as CIFAR10_ZIP  # one name for the file

__all__ = ["find_shared", "read_cifar10_zip", "read_sst2", "arithmetic_texts", "sample_texts", "causal_lm_examples",
           "as_batches", "CIFAR10_CLASSES", "CIFAR10_ZIP", "IMAGENET_MEAN", "IMAGENET_STD"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
# The normalisation the pretrained CIFAR-10 ResNets of ../shared/data were trained with
# (akamaster/pytorch_resnet_cifar10: ImageNet's channel statistics).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def find_shared(relative: str | os.PathLike[str]) -> Path | None:
    """The first existing ``root / relative`` among
    :func:`~spsa_mix.data.images.default_data_roots` (``$SPSA_MIX_DATA``, ``../shared/data``,
    the cache's ``data`` folder), or ``None``.

    >>> find_shared("no-such-file-here") is None
    True
    """
    from spsa_mix.data.images import default_data_roots

    for root in default_data_roots():
        path = root / relative
        if path.exists():
            return path
    return None


def read_cifar10_zip(path: str | os.PathLike[str], split: str = "train", *, per_class: int,
                     offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` images of each CIFAR-10 class, the ``offset``-th on (members sorted by name),
    from a zip in ImageFolder layout (``<top>/<split>/<class>/NNNN.jpg``).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        uint8 images ``(10 per_class, 3, 32, 32)``, class by class in
        :data:`CIFAR10_CLASSES` order, and their int64 labels.

    Raises
    ------
    ValueError
        For a missing zip, an unknown split, or a class with fewer images than asked.
    """
    from spsa_mix.data.images import decode_members, image_folder_members  # Pillow is imported when used

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', but got {split!r}")
    if per_class < 1 or offset < 0:
        raise ValueError(f"per_class must be >= 1 and offset >= 0, but got per_class={per_class}, offset={offset}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"no such file {str(p)!r} (CIFAR-10 as JPEG: see ../shared/data/README.md)")
    images: list[np.ndarray] = []
    labels: list[int] = []
    with zipfile.ZipFile(p) as z:
        by_class = image_folder_members(z, split)
        for label, cls in enumerate(CIFAR10_CLASSES):
            found = [m for m in by_class.get(cls, []) if m.endswith(".jpg")]
            members = found[offset: offset + per_class]
            if len(members) < per_class:
                raise ValueError(f"{p}: class {cls!r} of split {split!r} has {len(found)} images, fewer "
                                 f"than offset {offset} + per_class {per_class}")
            images += decode_members(z, members)
            labels += [label] * len(members)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return x, torch.tensor(labels, dtype=torch.int64)


def read_sst2(folder: str | os.PathLike[str], split: str = "train") -> tuple[list[str], list[int]]:
    """SST-2's sentences (stripped) and labels (1 positive, 0 negative) of ``train.tsv`` or ``dev.tsv``."""
    from spsa_mix.data.files import read_texts

    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', but got {split!r}")
    texts, labels = read_texts(Path(folder) / f"{split}.tsv", text_field="sentence", label_field="label")
    return [t.strip() for t in texts], [int(v) for v in labels or []]


_NAMES = ("Lily", "Tom", "Ben", "Sue", "Max", "Mia", "Sam", "Anna", "Tim", "Lucy")
_THINGS = ("apples", "balls", "toys", "cookies", "flowers", "cars", "books", "stars", "cats", "hats")


def arithmetic_texts(n: int, *, seed: int) -> list[str]:
    """``n`` word problems with their answers from three templates (adding, taking away,
    counting two kinds), numbers 1 to 20: a domain of digits and rigid phrasing, unlike the
    stories the models were trained on. Seeded by ``seed`` alone.

    >>> len(arithmetic_texts(5, seed=1)), arithmetic_texts(3, seed=1) == arithmetic_texts(3, seed=1)
    (5, True)
    """
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        name, friend = rng.choice(_NAMES, size=2, replace=False)
        thing, other = rng.choice(_THINGS, size=2, replace=False)
        a, b = (int(v) for v in rng.integers(1, 21, size=2))
        kind = int(rng.integers(3))
        if kind == 0:
            out.append(f"{name} had {a} {thing}. Then {name} found {b} more {thing}. Now {name} has {a + b} {thing}.")
        elif kind == 1:
            a, b = max(a, b), min(a, b)
            out.append(f"{name} had {a} {thing}. Then {name} lost {b} {thing}. Now {name} has {a - b} {thing}.")
        else:
            out.append(f"{name} saw {a} {thing} and {friend} saw {b} {other}. Together they saw {a + b} things.")
    return out


def sample_texts(model: Any, tokenizer: Any, n: int, *, seed: int, max_new_tokens: int = 64,
                 temperature: float = 1.0, batch_size: int = 64, prompts: Sequence[str] = ("",)) -> list[str]:
    """``n`` texts sampled from a causal LM (``model.generate``, multinomial sampling at
    ``temperature``, no top-k), each from the beginning-of-sequence token and one of
    ``prompts`` in turn; decoded without special tokens and stripped. The global generator
    is forked and seeded with ``seed`` (and restored after), so the texts depend on ``seed``,
    ``n`` and ``batch_size`` (and on the model and the PyTorch build).
    """
    bos = tokenizer.bos_token_id
    out: list[str] = []
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        torch.manual_seed(seed)
        model.eval()
        while len(out) < n:
            m = min(batch_size, n - len(out))
            prompt = prompts[(len(out) // batch_size) % len(prompts)]
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
            start = torch.tensor([[bos, *ids]] * m)
            gen = model.generate(start, attention_mask=torch.ones_like(start), do_sample=True,
                                 temperature=temperature, top_k=0, max_new_tokens=max_new_tokens,
                                 pad_token_id=tokenizer.eos_token_id)
            out += [t.strip() for t in tokenizer.batch_decode(gen, skip_special_tokens=True)]
    return out


def causal_lm_examples(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> tuple[dict[str, torch.Tensor],
                                                                                           torch.Tensor]:
    """Texts as causal-LM examples: ``({"input_ids", "attention_mask"}, labels)``, each text
    with the tokenizer's special tokens, truncated to ``max_length`` tokens and padded on the
    right with the padding token (the end-of-sequence token when there is none); ``labels``
    is ``input_ids`` with ``-100`` on the padding, Hugging Face's convention.
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    rows = tokenizer(list(texts), truncation=True, max_length=max_length, add_special_tokens=True)["input_ids"]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad), dtype=torch.int64)
    mask = torch.zeros((len(rows), width), dtype=torch.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r, dtype=torch.int64)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask}, ids.masked_fill(mask == 0, -100)


def as_batches(examples: tuple[Any, torch.Tensor], batch_size: int, *, seed: int | None = None,
               trim: bool = True) -> list[Any]:
    """``examples`` ``(inputs, targets)`` as a list of minibatches, in order or shuffled by
    ``seed``: a dict ``{**inputs, "labels": targets}`` when ``inputs`` is a dict (what
    :class:`~spsa_mix.blend.BlendedObjective` passes to a Hugging Face model), else a pair
    ``(inputs, targets)``. With ``trim``, token batches lose the columns that are padding in
    every row.

    >>> x, y = torch.arange(10.0).view(5, 2), torch.arange(5)
    >>> [tuple(b[0].shape) for b in as_batches((x, y), 2)]
    [(2, 2), (2, 2), (1, 2)]
    """
    inputs, targets = examples
    n = int(targets.shape[0])
    order = torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    out: list[Any] = []
    for start in range(0, n, batch_size):
        ix = order[start: start + batch_size]
        if isinstance(inputs, dict):
            batch = {k: v[ix] for k, v in inputs.items()}
            batch["labels"] = targets[ix]
            if trim and "attention_mask" in batch:
                width = int(batch["attention_mask"].sum(dim=1).max())
                batch = {k: v[:, :width] if v.ndim == 2 else v for k, v in batch.items()}
            out.append(batch)
        else:
            out.append((inputs[ix], targets[ix]))
    return out
