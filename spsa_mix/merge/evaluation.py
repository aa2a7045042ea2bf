"""``spsa-mix eval``: any checkpoints scored on target data with the code and metrics ``spsa-mix merge`` uses.

A checkpoint is a Hugging Face model directory (an expert, a merged output, mergekit's
output), a PEFT adapter directory (on its base: ``base_model_name_or_path`` of its config, or
``base=``), or a ``.pt``/``.safetensors`` state dict (or a folder holding ``model.safetensors``, as
``spsa-mix merge`` writes a merge of state dicts), with ``model=``, an architecture as for
``spsa-mix merge``. The data are read as ``spsa-mix merge`` reads its validation data
(:func:`spsa_mix.merge.run.plan_merge`'s kinds: text tokenized with the model's own
tokenizer, image folders, tensors), in order, and scored by
:func:`spsa_mix.blend.evaluate` with the merge's losses (``causal-lm``, ``cross-entropy``,
``entropy``, ...): the loss per token for a language model and the accuracy that goes
with it (next-token, or per example).

``loss="multiple-choice"``: a JSONL of ``{"prompt": ..., "choices": [...], "answer": ...}``
(the answer an index or one of the choices) scored as benchmark harnesses score it: each
choice's log-likelihood ``sum_t log p(choice_t | prompt, choice_<t)`` (the prompt tokenized
alone, the choice appended without special tokens), the accuracy of the arg-max, and the
loss ``-log softmax(log-likelihoods)[answer]`` averaged over the questions
(:class:`~spsa_mix.data.text.ChoiceData` batches scored by
:class:`~spsa_mix.blend.losses.MultipleChoice`, what ``spsa-mix merge`` learns its weights
with under ``loss: multiple-choice``).

Example
-------
>>> format_table([{"checkpoint": "a", "loss": 1.5, "accuracy": 0.25, "n": 8}], metric="accuracy").splitlines()[2]
'| a | 1.5000 | 25.00 |'
"""

from __future__ import annotations

import csv
import io
import json
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spsa_mix.data.choices import MULTIPLE_CHOICE, read_choices

__all__ = ["load_checkpoint", "evaluate_checkpoints", "multiple_choice", "read_choices", "format_table",
           "write_results", "MULTIPLE_CHOICE"]


def _kind(path: Path) -> str:
    from spsa_mix.merge.run import expert_kind

    return expert_kind(_state_file(path))


def _state_file(path: Path) -> Path:
    """A folder holding only a state dict (``model.safetensors``, as ``spsa-mix merge`` writes
    a merge of plain experts) stands for that file."""
    if path.is_dir() and not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file() \
            and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    return path


def _adapter_base(path: Path, base: str | None) -> str:
    if base is not None:
        return base
    cfg = json.loads((path / "adapter_config.json").read_text())
    named = cfg.get("base_model_name_or_path")
    if not named or not Path(named).is_dir():
        raise ValueError(f"{path}: a PEFT adapter is scored on its base model: pass --base (its config names "
                         f"{named!r}, which is not a folder here)")
    return str(named)


def check_checkpoints(paths: Sequence[str | os.PathLike[str]], *, model: str | None, base: str | None) -> list[Path]:
    """Each checkpoint exists and is of a kind that can be scored (before any weight is read)."""
    out = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise ValueError(f"no such checkpoint {str(path)!r}")
        kind = _kind(path)
        if kind == "file" and model is None:
            raise ValueError(f"{path}: a .pt/.safetensors state dict needs --model (an architecture name, a Hugging "
                             "Face directory or package.module:factory)")
        if kind == "adapter":
            _adapter_base(path, base)
        out.append(path)
    return out


def model_dir_of(path: Path, *, model: str | None, base: str | None) -> Path | None:
    """The Hugging Face directory whose tokenizer and config describe ``path``'s model."""
    kind = _kind(path)
    if kind == "hf":
        return path
    if kind == "adapter":
        return Path(_adapter_base(path, base))
    if model is not None and Path(model).is_dir():
        return Path(model)
    return None


def load_checkpoint(path: str | os.PathLike[str], *, model: str | None = None, base: str | None = None,
                    source: Any = None, device: Any = "cpu", dtype: Any = None) -> Any:
    """The ``nn.Module`` of one checkpoint (see the module docstring), in eval mode on ``device``."""
    import torch

    from spsa_mix.blend.devices import resolve_device

    p = Path(path)
    kind = _kind(p)
    dev = resolve_device(device)
    if kind in ("hf", "adapter"):
        from spsa_mix.blend.sources.hub import architecture_class, read_config

        root = p if kind == "hf" else Path(_adapter_base(p, base))
        cls = architecture_class(read_config(root, str(root)))
        net = cls.from_pretrained(str(root), local_files_only=True, **({"dtype": dtype} if dtype else {}))
        if kind == "adapter":
            from peft import PeftModel

            net = PeftModel.from_pretrained(net, str(p), is_trainable=False)
        return net.to(dev).eval()
    from spsa_mix.blend.sources.checkpoints import open_checkpoint
    from spsa_mix.merge.run import _plain_model

    state = _state_file(p)
    net = _plain_model(model, source, state, "the target data")  # type: ignore[arg-type]
    ckpt = open_checkpoint(str(state), label=str(p))
    reference = net.state_dict()
    if not any(n.startswith("module.") for n in reference):
        ckpt.strip_prefix("module.")
    net.load_state_dict({n: ckpt.read(n) for n in ckpt.infos}, strict=True)
    if dtype is not None:
        net = net.to(dtype)
    return net.to(dev).eval().requires_grad_(False)


def _target(data: Any, *, model_dir: Path | None, task_kind: str) -> tuple[Any, Any]:
    """(source, the batches in order) of the data, read as ``spsa-mix merge`` reads its validation data."""
    from spsa_mix.merge.config import DataConfig
    from spsa_mix.merge.run import _load_data

    d = DataConfig(**{**data.__dict__, "train": data.train, "validation": data.train})
    plan = types.SimpleNamespace(config=types.SimpleNamespace(data=d, seed=0), model_dir=model_dir,
                                 task_kind=task_kind)
    source, _, batches = _load_data(plan)  # type: ignore[arg-type]
    return source, batches


def multiple_choice(model: Any, tokenizer: Any, examples: Sequence[tuple[str, list[str], int]], *,
                    batch_size: int = 16, max_length: int = 512, device: Any = None) -> dict[str, float]:
    """Accuracy and loss of ``model`` on multiple-choice ``examples`` (``(prompt, choices,
    answer index)``, as :func:`~spsa_mix.data.choices.read_choices` reads them) by the
    log-likelihood of each choice (module docstring), ``batch_size`` questions per forward
    pass; ``n`` questions. The merge scores a blend the same way (``loss: multiple-choice``)."""
    from spsa_mix.blend import evaluate
    from spsa_mix.blend.losses import MultipleChoice
    from spsa_mix.data.batches import Batches
    from spsa_mix.data.choices import encode_choices
    from spsa_mix.data.text import ChoiceData

    questions = ChoiceData.from_encoded("questions", encode_choices(examples, tokenizer, max_length=max_length),
                                        [answer for _, _, answer in examples], pad_id=int(tokenizer.pad_token_id))
    dev = device or next(model.parameters()).device
    return evaluate(model, Batches(questions, batch_size=batch_size, device=dev), loss_fn=MultipleChoice(), device=dev)


def evaluate_checkpoints(paths: Sequence[str | os.PathLike[str]], data: Any, *, loss: str | None = None,
                         model: str | None = None, base: str | None = None, device: Any = "cpu", dtype: Any = None,
                         choice_fields: tuple[str, str, str] = ("prompt", "choices", "answer"),
                         log: Any = None) -> tuple[list[dict[str, Any]], str]:
    """Score each checkpoint of ``paths`` on ``data`` (a :class:`~spsa_mix.merge.config.DataConfig`
    whose ``train`` is the file to score); returns one row per checkpoint (``checkpoint``,
    ``kind``, ``loss``, ``accuracy``, ``n``) and the name of the accuracy."""
    from spsa_mix.blend import evaluate
    from spsa_mix.blend.losses import resolve_loss
    from spsa_mix.data.files import load_tokenizer
    from spsa_mix.data.kinds import data_kind

    checked = check_checkpoints(paths, model=model, base=base)
    rows = []
    if loss == MULTIPLE_CHOICE:
        examples = read_choices(data.train, prompt_field=choice_fields[0], choices_field=choice_fields[1],
                                answer_field=choice_fields[2])
        for p in checked:
            tok = load_tokenizer(model_dir_of(p, model=model, base=base))  # type: ignore[arg-type]
            net = load_checkpoint(p, model=model, base=base, device=device, dtype=dtype)
            m = multiple_choice(net, tok, examples, batch_size=data.batch_size, max_length=data.max_length)
            rows.append({"checkpoint": str(p), "kind": _kind(p), **m})
            if log:
                log(f"{p}: loss {m['loss']:.4f}, accuracy {100 * m['accuracy']:.2f} %")
        return rows, "multiple-choice accuracy"
    kind = data_kind(data.train)
    for p in checked:
        model_dir = model_dir_of(p, model=model, base=base)
        name = loss
        if name is None:
            arch = None
            if model_dir is not None and (model_dir / "config.json").is_file():
                arch = (json.loads((model_dir / "config.json").read_text()).get("architectures") or [None])[0]
            name = "causal-lm" if arch and arch.endswith("ForCausalLM") else "cross-entropy"
        task_kind = ("sequence-classification" if data.label_field else "causal-lm") if kind == "text" else (
            "image-classification" if kind == "images" else kind)
        source, batches = _target(data, model_dir=model_dir, task_kind=task_kind)
        net = load_checkpoint(p, model=model, base=base, source=source, device=device, dtype=dtype)
        m = evaluate(net, batches, loss_fn=resolve_loss(name), device=device)
        rows.append({"checkpoint": str(p), "kind": _kind(p), "loss": m["loss"], "accuracy": m["accuracy"],
                     "n": m["n"]})
        if log:
            log(f"{p}: loss {m['loss']:.4f}")
    metric = "next-token accuracy" if kind == "text" and not data.label_field else "accuracy"
    return rows, metric


def format_table(rows: Sequence[dict[str, Any]], *, metric: str) -> str:
    """A markdown table: one row per checkpoint, its loss and metric (percent), as the merge's summary."""
    from spsa_mix.merge.run import summary_table

    table = summary_table([{"blend": r["checkpoint"], "loss": r["loss"], "metric": r["accuracy"]} for r in rows],
                          metric=metric)
    return table.replace("| blend |", "| checkpoint |", 1)


def write_results(rows: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, metric: str) -> None:
    """``rows`` as JSON (``.json``: ``{"metric": ..., "rows": [...]}``) or CSV (``.csv``)."""
    from spsa_mix.io import atomic_write_text, write_json

    p = Path(path)
    if p.suffix.lower() == ".csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["checkpoint", "kind", "loss", "accuracy", "n"])
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k) for k in writer.fieldnames})
        atomic_write_text(p, buf.getvalue())
    else:
        write_json({"metric": metric, "rows": list(rows)}, p, indent=1)
