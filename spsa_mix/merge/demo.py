"""Experts to merge, built from data this package generates: the three examples of ``spsa-mix merge``.

Each builder writes, under a folder, what a user of ``spsa-mix merge`` would have: a
pretrained model, K experts fine-tuned from it on shifted data, and target data of a new
domain; then the commands of ``examples/merge/*.yaml`` merge them. Everything comes from
data shipped with the package, so nothing needs downloading, and the whole build takes
seconds to a minute on a CPU.

``"lm"`` (full fine-tunes of a causal language model)
    a ``tiny-llama`` pretrained on all ten domains of the generated ``text-domains``
    (:mod:`spsa_mix.data.text`; its tokens written as words ``w1 w2 ...``, a word-level
    tokenizer saved beside the model), then fine-tuned into K=3 experts on two domains each
    (0-1, 2-3, 4-5), saved as Hugging Face directories; the target is a new mix, domains 1
    and 2 (half from the first expert's domains, half from the second's), as JSONL; a second
    target, domains 3 and 4 (``target_b/``), is what ``lm_tasks.yaml`` merges for at once.
``"lora"``
    the same base, with K=3 PEFT LoRA adapters (rank 4 on the attention projections)
    trained on the same domains instead of full fine-tunes.
``"vision"`` (experts fine-tuned from one pretrained model on shifted data)
    a ``small-cnn`` pretrained on scikit-learn's digits, fine-tuned into K=3 experts on
    shifted digits (Gaussian noise, the image mirrored, lowered contrast), saved as
    ``.safetensors`` state dicts; the target is digits of lowered contrast with some noise (a
    shift between two experts), as tensor files, blended as task vectors over the
    pretrained model with a learned scale.

Example
-------
>>> sorted(DEMOS)
['lm', 'lora', 'vision']
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["DEMOS", "build_demo", "word_tokenizer"]

DEMOS = ("lm", "lora", "vision")
_LM_DOMAINS = ((0, 1), (2, 3), (4, 5))  # the experts' domains
_LM_TARGET = (1, 2)  # the target mixes one domain of expert 0 and one of expert 1
_LM_TARGET_B = (3, 4)  # a second target (lm_tasks.yaml): one domain of expert 1 and one of expert 2


def word_tokenizer(vocab_size: int) -> Any:
    """A word-level tokenizer for ``w1 ... w{vocab_size - 1}``, padding ``[PAD]`` (id 0),
    unknown words ``[UNK]`` (id ``vocab_size``), as a ``transformers`` fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, **{f"w{i}": i for i in range(1, vocab_size)}, "[UNK]": vocab_size}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


def _words(ids: torch.Tensor, mask: torch.Tensor) -> str:
    return " ".join(f"w{int(t)}" for t, m in zip(ids, mask, strict=True) if m)


def _write_jsonl(path: Path, texts: list[str]) -> None:
    from spsa_mix.io import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({"text": t}) + "\n" for t in texts))


def _lm_task() -> Any:
    from spsa_mix.data.tasks import Task
    from spsa_mix.data.text import load_text_dataset

    return Task(load_text_dataset("text-domains"), "causal-lm")


def _train(model: Any, task: Any, indices: np.ndarray, *, epochs: int, lr: float, seed: int) -> None:
    from spsa_mix.data.batches import Batches
    from spsa_mix.experiment.training import train_model

    batches = Batches(task, indices, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(seed))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        train_model(model, batches, epochs=epochs, lr=lr, loss_fn=task.loss)


def _build_lm(root: Path, *, lora: bool, seed: int) -> dict[str, Any]:
    from spsa_mix.models import build_model

    task = _lm_task()
    data = task.data
    labels = data.y_train.numpy()
    rng = np.random.default_rng(seed)
    vocab = data.vocab_size + 1  # the tokens, [PAD] = 0, and [UNK]
    tok = word_tokenizer(data.vocab_size)
    base_dir = root / "base"
    if not (base_dir / "config.json").is_file():
        base: Any = build_model("tiny-llama", vocab_size=vocab, max_length=data.max_length, seed=seed)
        _train(base, task, np.arange(len(labels)), epochs=3, lr=3e-3, seed=seed)
        base.save_pretrained(base_dir)
        tok.save_pretrained(base_dir)
    experts = []
    for i, domains in enumerate(_LM_DOMAINS):
        out = root / ("adapters" if lora else "experts") / f"domains_{domains[0]}_{domains[1]}"
        experts.append(out)
        if (out / ("adapter_config.json" if lora else "config.json")).is_file():
            continue
        from transformers import AutoModelForCausalLM

        model: Any = AutoModelForCausalLM.from_pretrained(base_dir, local_files_only=True)
        idx = np.flatnonzero(np.isin(labels, domains))
        if lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                     lora_dropout=0.0))
            _train(model, task, idx, epochs=4, lr=1e-2, seed=seed + 1 + i)
            model.save_pretrained(out)
        else:
            _train(model, task, idx, epochs=3, lr=3e-3, seed=seed + 1 + i)
            model.save_pretrained(out)
            tok.save_pretrained(out)
    target, target_b = root / "target", root / "target_b"
    for folder, domains in ((target, _LM_TARGET), (target_b, _LM_TARGET_B)):
        if not (folder / "train.jsonl").is_file():
            pick = np.flatnonzero(np.isin(labels, domains))
            rng.shuffle(pick)
            test_pick = np.flatnonzero(np.isin(data.y_test.numpy(), domains))
            _write_jsonl(folder / "train.jsonl", [_words(data.ids_train[i], data.mask_train[i]) for i in pick[:240]])
            _write_jsonl(folder / "validation.jsonl", [_words(data.ids_test[i], data.mask_test[i]) for i in test_pick])
    return {"base": str(base_dir), "experts": [str(e) for e in experts], "target": str(target),
            "target_b": str(target_b)}


# ---------------------------------------------------------------------------- vision
def _shift(x: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Shifted uint8 digits ``(n, 1, 8, 8)`` with values 0..16."""
    x = x.astype(np.float64)
    if kind == "noise":
        x = x + rng.normal(0.0, 4.0, x.shape)
    elif kind == "mirror":
        x = x[..., ::-1]
    elif kind == "contrast":
        x = 4.0 + 0.4 * x
    elif kind == "noise+contrast":
        x = 4.0 + 0.4 * x + rng.normal(0.0, 2.0, x.shape)
    else:
        raise ValueError(f"unknown shift {kind!r}")
    return np.clip(np.round(x), 0, 16).astype(np.uint8)


_VISION_SHIFTS = ("noise", "mirror", "contrast")
_VISION_TARGET = "noise+contrast"


def _build_vision(root: Path, *, seed: int) -> dict[str, Any]:
    from safetensors.torch import load_file, save_file

    from spsa_mix.data.images import ImageData, load_dataset
    from spsa_mix.data.tasks import Task
    from spsa_mix.models import build_model

    digits = load_dataset("digits")
    rng = np.random.default_rng(seed)
    n = len(digits.y_train)
    base_path = root / "base.safetensors"
    dims = digits.model_dims()

    def shifted(kind: str, idx: np.ndarray, split: str = "train") -> Task:
        x = (digits.x_train if split == "train" else digits.x_test).numpy()[idx]
        y = (digits.y_train if split == "train" else digits.y_test).numpy()[idx]
        # the pretraining's normalisation, so the shifted images are scored as the experts were trained
        return Task(ImageData.from_arrays(kind, _shift(x, kind, rng), y, x[:0], y[:0], scale=digits.scale,
                                          mean=digits.mean.tolist(), std=digits.std.tolist()), "image-classification")

    if not base_path.is_file():
        base = build_model("small-cnn", **dims, seed=seed)
        _train(base, Task(digits, "image-classification"), np.arange(n), epochs=15, lr=3e-3, seed=seed)
        _save_state(base, base_path, save_file)
    experts = []
    order = rng.permutation(n)
    for i, kind in enumerate(_VISION_SHIFTS):
        out = root / "experts" / f"{kind}.safetensors"
        experts.append(out)
        if out.is_file():
            continue
        model = build_model("small-cnn", **dims)
        model.load_state_dict(load_file(str(base_path)))
        part = order[i * (n // 3):(i + 1) * (n // 3)]
        task = shifted(kind, part)
        _train(model, task, np.arange(len(part)), epochs=8, lr=2e-3, seed=seed + 1 + i)
        _save_state(model, out, save_file)
    target = root / "target"
    if not (target / "train.pt").is_file():
        train_part = rng.choice(n, size=300, replace=False)
        for name, task in (("train", shifted(_VISION_TARGET, train_part)),
                           ("validation", shifted(_VISION_TARGET, np.arange(len(digits.y_test)), split="test"))):
            d = task.data
            assert isinstance(d, ImageData)
            x = d.normalize(d.x_train)
            _save_tensors({"inputs": x, "targets": d.y_train}, target / f"{name}.pt")
    return {"base": str(base_path), "experts": [str(e) for e in experts], "target": str(target),
            "mean": digits.mean.tolist(), "std": digits.std.tolist()}


def _save_state(model: Any, path: Path, save_file: Any) -> None:
    from spsa_mix.io import atomic_path

    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from spsa_mix.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(tensors, tmp)


def build_demo(kind: str, root: str | os.PathLike[str], *, seed: int = 0) -> dict[str, Any]:
    """Build the base, the experts and the target data of demo ``kind`` under ``root``
    (what is already there is kept); returns their paths.

    Raises ``ValueError`` for an unknown kind.
    """
    if kind not in DEMOS:
        raise ValueError(f"kind must be one of {', '.join(DEMOS)}, but got {kind!r}")
    out = Path(root)
    out.mkdir(parents=True, exist_ok=True)
    from spsa_mix.cpu_threads import torch_threads

    with torch_threads(1):  # tiny models train fastest on one thread
        if kind == "vision":
            return _build_vision(out, seed=seed)
        return _build_lm(out, lora=kind == "lora", seed=seed)
