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

Several targets (:func:`evaluate_tasks`, ``spsa-mix eval --tasks merge.yaml``): every task of a
multi-task merge config (``data.tasks``), each scored as the merge scores it (its validation
data, loss and accuracy), a multi-task output folder scoring each task with its own folder
(``output/<task>/``); the means as ``recipe.json`` has them.

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
           "write_results", "MULTIPLE_CHOICE", "task_checkpoints", "plan_tasks", "evaluate_tasks",
           "format_tasks_table", "write_task_results"]


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


def _default_loss(model_dir: Path | None) -> str:
    """The loss ``spsa-mix merge`` scores a model with when none is named: ``causal-lm`` for a
    causal language model, else ``cross-entropy``."""
    from spsa_mix.merge.run import _architecture

    arch = _architecture(model_dir)
    if arch is None:
        return "cross-entropy"
    from spsa_mix.blend.sources.hub import default_loss

    return default_loss(arch)


def _target(data: Any, *, model_dir: Path | None, task_kind: str) -> tuple[Any, Any]:
    """(source, the batches in order) of the data's validation file (its ``train`` where it
    has none), read as ``spsa-mix merge`` reads its validation data."""
    from spsa_mix.merge.config import DataConfig
    from spsa_mix.merge.run import _load_data

    d = DataConfig(**{**data.__dict__, "train": data.train, "validation": data.validation or data.train})
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
        name = loss or _default_loss(model_dir)
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


# ---------------------------------------------------------------------------- several targets (--tasks)
def task_checkpoints(path: Path, names: Sequence[str]) -> dict[str, Path]:
    """The checkpoint that scores each task of ``names``: a multi-task merge's output folder
    (``output/<task name>/`` for each task, as ``spsa-mix merge`` writes tasks with heads)
    gives each task its own folder; any other checkpoint scores every task.

    >>> task_checkpoints(Path("expert.safetensors"), ["a", "b"])
    {'a': PosixPath('expert.safetensors'), 'b': PosixPath('expert.safetensors')}
    """
    alone = path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json",
                                                                       "model.safetensors"))
    if not alone:
        return {n: path for n in names}
    missing = [n for n in names if not (path / n).is_dir()]
    if missing:
        held = sorted(sub.name for sub in path.iterdir() if sub.is_dir())
        raise ValueError(f"{path}: neither a model nor a multi-task merge output holding one folder per task: no "
                         f"folder for task {', '.join(map(repr, missing))} (it holds folders {held})")
    return {n: path / n for n in names}


def plan_tasks(paths: Sequence[str | os.PathLike[str]], config: str | os.PathLike[str]
               ) -> tuple[Any, list[tuple[Path, dict[str, dict[str, Any]]]]]:
    """Every check of ``evaluate_tasks`` that reads no weight: the merge config at ``config``
    (read as ``spsa-mix merge`` reads it) and, per checkpoint, per task: the checkpoint
    that scores it, its data, loss (the task's, else the config's, else the model's default
    as the merge chooses it), the kind of its data and the model folder of its tokenizer.

    Raises
    ------
    ValueError
        For a config without ``data.tasks``, a task's missing file, a checkpoint that is
        missing or a multi-task output without a task's folder, a loss that does not suit
        the data.
    """
    from spsa_mix.blend.losses import resolve_loss
    from spsa_mix.merge.config import _is_reference, load_config
    from spsa_mix.merge.run import target_kind

    cfg = load_config(config)
    if not cfg.data.tasks:
        raise ValueError(f"--tasks {str(config)!r}: the config has no data.tasks (the targets to score on); "
                         "use --data for one target")
    for t in cfg.data.tasks:
        for key in ("train", "validation"):
            value = getattr(t, key)
            if value is not None and not _is_reference(value) and not Path(value).exists():
                raise ValueError(f"task {t.name!r}: {key}: no such file or folder {value!r}")
    names = [t.name for t in cfg.data.tasks]
    planned = []
    for p in paths:
        own = task_checkpoints(Path(p), names)
        check_checkpoints(list(own.values()), model=cfg.model, base=cfg.base)
        per: dict[str, dict[str, Any]] = {}
        for t in cfg.data.tasks:
            model_dir = model_dir_of(own[t.name], model=cfg.model, base=cfg.base)
            loss = t.loss or cfg.loss or _default_loss(model_dir)
            if loss == MULTIPLE_CHOICE:
                raise ValueError(f"task {t.name!r}: loss multiple-choice scores one target's questions, not data.tasks")
            resolve_loss(loss)
            data = t.data_config()
            per[t.name] = {"checkpoint": own[t.name], "data": data, "loss": loss, "model_dir": model_dir,
                           "task_kind": target_kind(data, loss, model_dir)}
        planned.append((Path(p), per))
    return cfg, planned


def evaluate_tasks(paths: Sequence[str | os.PathLike[str]], config: str | os.PathLike[str], *,
                   device: Any = "cpu", dtype: Any = None, log: Any = None
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    """Score each checkpoint of ``paths`` on every task of the merge config at ``config``
    (``data.tasks``), as ``spsa-mix merge`` scores a multi-task blend: each task's
    validation data (its training data where it has none), its loss, the accuracy that goes
    with it (an entropy task's arg-max or next-token accuracy). A multi-task merge's output
    folder scores each task with its own folder (:func:`task_checkpoints`).

    Returns ``(rows, tasks, metric)``: one row per checkpoint (``checkpoint``, ``kind``,
    ``tasks``: each task's ``loss``, ``accuracy``, ``n``, ``checkpoint``, ``scored_with``;
    ``loss``: their mean weighted by the tasks' weights; ``accuracy``: their plain mean, as
    ``recipe.json`` has them); the tasks (``name``, ``weight``, ``normalised_weight``,
    ``scored_on``, ``data``); the accuracy's name.
    """
    from spsa_mix.blend import evaluate
    from spsa_mix.blend.losses import resolve_loss
    from spsa_mix.blend.multitask import WithAccuracy, summarize_tasks

    cfg, planned = plan_tasks(paths, config)
    total = sum(t.weight for t in cfg.data.tasks)
    tasks = [{"name": t.name, "weight": t.weight, "normalised_weight": t.weight / total,
              "scored_on": "validation" if t.validation else "training (no validation data)",
              "data": str(t.validation or t.train)} for t in cfg.data.tasks]
    weights = {t.name: t.weight for t in cfg.data.tasks}
    loaded: dict[tuple[str, str, str], tuple[Any, Any]] = {}
    rows = []
    for path, per in planned:
        scores: dict[str, dict[str, Any]] = {}
        for name, job in per.items():
            key = (name, str(job["model_dir"]), job["task_kind"])
            if key not in loaded:
                loaded[key] = _target(job["data"], model_dir=job["model_dir"], task_kind=job["task_kind"])
            source, batches = loaded[key]
            net = load_checkpoint(job["checkpoint"], model=cfg.model, base=cfg.base, source=source, device=device,
                                  dtype=dtype)
            m = evaluate(net, batches, loss_fn=WithAccuracy(resolve_loss(job["loss"])), device=device)
            del net
            scores[name] = {"loss": m["loss"], "accuracy": m["accuracy"], "n": m["n"],
                            "checkpoint": str(job["checkpoint"]), "scored_with": job["loss"]}
            if log:
                log(f"{job['checkpoint']} on task {name!r}: loss {m['loss']:.4f}")
        rows.append({"checkpoint": str(path), "kind": _kind(per[next(iter(per))]["checkpoint"]),
                     **summarize_tasks(scores, weights)})
    causal = all(job["task_kind"] == "causal-lm" for _, per in planned for job in per.values())
    return rows, tasks, "next-token accuracy" if causal else "accuracy"


def format_tasks_table(rows: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]], *, metric: str) -> str:
    """A markdown table: one row per checkpoint, each task's loss and metric (percent) and
    their means, as the multi-task merge's summary; then the data each task was scored on.

    >>> row = {"checkpoint": "m/", "loss": 1.0, "accuracy": 0.5, "tasks": {"a": {"loss": 1.0, "accuracy": 0.5}}}
    >>> print(format_tasks_table([row], [{"name": "a", "normalised_weight": 1.0, "scored_on": "validation",
    ...                                   "data": "a/val.pt"}], metric="accuracy"))
    | checkpoint | a loss | a accuracy (%) | mean loss | mean accuracy (%) |
    | --- | ---: | ---: | ---: | ---: |
    | m/ | 1.0000 | 50.00 | 1.0000 | 50.00 |
    <BLANKLINE>
    Each task scored on: a: validation (a/val.pt, weight 1.000). Mean loss: weighted by the tasks' weights; mean accuracy: plain mean over the tasks.
    """
    from spsa_mix.merge.multitask import tasks_table

    table = tasks_table([{**r, "blend": r["checkpoint"]} for r in rows], [t["name"] for t in tasks], metric=metric)
    where = "; ".join(f"{t['name']}: {t['scored_on']} ({t['data']}, weight {t['normalised_weight']:.3f})"
                      for t in tasks)
    return (table.replace("| blend |", "| checkpoint |", 1) + f"\n\nEach task scored on: {where}. Mean loss: "
            "weighted by the tasks' weights; mean accuracy: plain mean over the tasks.")


def write_task_results(rows: Sequence[dict[str, Any]], tasks: Sequence[dict[str, Any]],
                       path: str | os.PathLike[str], *, metric: str) -> None:
    """``evaluate_tasks``' rows as JSON (``{"metric", "tasks", "rows"}``) or CSV (``.csv``: one
    line per checkpoint, each task's loss, accuracy and examples, then the means)."""
    from spsa_mix.io import atomic_write_text, write_json

    p = Path(path)
    if p.suffix.lower() != ".csv":
        write_json({"metric": metric, "tasks": list(tasks), "rows": list(rows)}, p, indent=1)
        return
    names = [t["name"] for t in tasks]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["checkpoint", "kind"] + [f"{n} {c}" for n in names for c in ("loss", "accuracy", "n")]
                    + ["mean loss", "mean accuracy"])
    for r in rows:
        writer.writerow([r["checkpoint"], r["kind"]] + [r["tasks"][n][c] for n in names for c in ("loss", "accuracy", "n")]
                        + [r["loss"], r["accuracy"]])
    atomic_write_text(p, buf.getvalue())
