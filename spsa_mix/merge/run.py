"""``spsa-mix merge`` end to end: checks, target data, the blend, the search, the merged checkpoint.

:func:`run_merge` does, in this order:

1. **checks, before any expert is read**: the config (:mod:`spsa_mix.merge.config`), that
   every named file exists, what kind of experts they are (Hugging Face model directories,
   PEFT adapter directories, or ``.pt``/``.safetensors`` state dicts; all of one kind),
   that the method and its options exist, that the budget buys at least one step, and that
   the output can be written (an existing non-empty output is refused unless ``overwrite``;
   an output that is, holds or lies inside an input always: :mod:`spsa_mix.merge.checks`);
2. **the target data** (:mod:`spsa_mix.data.files`): text tokenized with the model's own
   tokenizer, image folders, tensors, or a factory; minibatches of the training data in an
   order fixed by ``seed``, the validation data in order;
3. **the blend**: :meth:`spsa_mix.blend.BlendedObjective.from_pretrained` (Hugging Face
   experts and adapters, read lazily, in their stored dtype) or
   :class:`~spsa_mix.blend.BlendedObjective` of an architecture and state dicts, the
   experts resident or streamed from their files as ``memory`` and ``max_memory`` say (the
   choice is logged and written in ``recipe.json``);
4. **reference scores** on the validation data (the training data when there is none): the
   uniform blend and every expert alone, hence the best single expert, and the fixed
   baselines (``baselines``: mergekit's methods at their defaults, Model Stock, SLERP, the
   base; :mod:`spsa_mix.merge.select`);
5. **the search**: :func:`spsa_mix.minimize` with ``max_evals=budget`` and the validation
   loss every ``validate_every`` steps (not counted in the budget; the returned point is
   the best on validation), the run's state written every ``checkpoint_every`` steps and on
   Ctrl-C, so that ``resume`` continues it;
6. **what it writes**, into ``output``: the merged model in the experts' own format
   (:meth:`~spsa_mix.blend.BlendedObjective.save_pretrained`, written beside the output
   and renamed into place), ``recipe.json`` (the weights, the scores of the uniform blend,
   the best single expert and the learned blend, the history, the versions, the config and
   its hash), ``mergekit.yaml`` where mergekit can express the same merge
   (:mod:`spsa_mix.merge.mergekit`), and ``loss.png``.

Example
-------
>>> summary_table([{"blend": "uniform", "loss": 1.0, "metric": 0.5}], metric="accuracy").splitlines()[2]
'| uniform | 1.0000 | 50.00 |'
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from spsa_mix.data.choices import MULTIPLE_CHOICE
from spsa_mix.merge.config import MergeConfig

__all__ = ["MergePlan", "MergeOutcome", "plan_merge", "run_merge", "summary_table",
           "expert_kind", "target_kind", "run_record",
           "RECIPE_FORMAT"]

logger = logging.getLogger("spsa_mix.merge")
RECIPE_FORMAT = 1
GRADIENT_METHODS = ("backprop", "forward-grad")  # they need the resident stack (value_and_grad, jvp)
_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def expert_kind(path: Path) -> str:
    """``"hf"`` (a model directory), ``"adapter"`` (a PEFT adapter directory) or ``"file"``.

    >>> expert_kind(Path("w.safetensors"))
    'file'
    """
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            return "adapter"
        if (path / "config.json").is_file():
            return "hf"
        raise ValueError(f"{path}: a folder given as an expert must be a Hugging Face model directory "
                         "(config.json and weights) or a PEFT adapter directory (adapter_config.json)")
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors"):
        return "file"
    raise ValueError(f"{path}: an expert must be a Hugging Face or PEFT directory, or a .pt/.safetensors file")


@dataclass(frozen=True)
class MergePlan:
    """What :func:`plan_merge` found: the experts, their kind, where the tokenizer and the
    architecture come from, the loss and the task kind, the paths written."""

    config: MergeConfig
    experts: tuple[Path, ...]
    kind: str
    model_dir: Path | None
    architecture: str | None
    loss: str | None
    task_kind: str
    output: Path
    state: Path
    start: tuple[float, ...] | None = None  # the weights of a mergekit config (--from-mergekit): the start


def _architecture(model_dir: Path | None) -> str | None:
    if model_dir is None or not (model_dir / "config.json").is_file():
        return None
    try:
        archs = json.loads((model_dir / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {model_dir / 'config.json'}: {e}") from None
    return str(archs[0]) if archs else None


def _check_output(output: Path, overwrite: bool, state: Path) -> None:
    from spsa_mix.io import check_outputs

    if output.exists() and not overwrite and (output.is_file() or any(output.iterdir())):
        raise ValueError(f"output {str(output)!r} exists and is not empty: choose another output or pass --overwrite")
    check_outputs({"output": output, "the run's state": state}, folders=("output",))


def plan_merge(cfg: MergeConfig, *, resume: bool = False) -> MergePlan:
    """Every check that needs no expert weights (see the module docstring, step 1);
    ``resume``: the saved run's record must match (:func:`spsa_mix.merge.fingerprint.check_resume`).

    Raises
    ------
    ValueError
        Naming what is wrong: a missing file, experts of different kinds, a space that does
        not suit them, an unknown method or option, a budget too small for one step, an
        output that cannot be written.
    """
    output = Path(cfg.output)
    # first: it needs nothing imported or read (a resumed run may finish writing: checked again below)
    _check_output(output, cfg.overwrite or resume, cfg.state_path())
    from spsa_mix.core.methods import lookup_method
    from spsa_mix.core.minimize import check_method, planned_steps

    from spsa_mix.merge.checks import (check_apart, check_distinct, check_free_space, check_options,
                                       merge_inputs, output_bytes)
    from spsa_mix.merge.fingerprint import check_resume, record_path
    from spsa_mix.merge.guard import check_unlocked, lock_path

    cfg.check_files()
    experts = tuple(cfg.expert_paths())
    check_distinct(experts)
    check_apart(Path(cfg.output), {"the run's state": cfg.state_path(), "its record": record_path(cfg),
                                   "its lock": lock_path(Path(cfg.output))}, merge_inputs(cfg, experts))
    check_unlocked(Path(cfg.output))
    kinds = {expert_kind(p) for p in experts}
    if len(kinds) > 1:
        raise ValueError(f"experts must all be of one kind, but they mix {sorted(kinds)}: "
                         f"{', '.join(f'{p} ({expert_kind(p)})' for p in experts)}")
    kind = kinds.pop()
    if kind == "adapter" and cfg.space != "lora":
        raise ValueError(f"the experts are PEFT adapters: set space: lora (got space: {cfg.space})")
    if cfg.space == "lora" and kind != "adapter":
        raise ValueError(f"space: lora blends PEFT adapter directories, but the experts are {kind} experts")
    if kind == "file" and cfg.model is None:
        raise ValueError("plain .pt/.safetensors experts need model: an architecture name of spsa_mix.models, "
                         "a Hugging Face directory or 'package.module:factory'")
    model_dir: Path | None = None
    for candidate in (cfg.model, cfg.base, str(experts[0]) if kind == "hf" else None):
        if candidate is not None and Path(candidate).is_dir() and (Path(candidate) / "config.json").is_file():
            model_dir = Path(candidate)
            break
    architecture = _architecture(model_dir)
    loss = cfg.loss
    if loss is None and architecture is not None:
        from spsa_mix.blend.sources.hub import default_loss

        loss = default_loss(architecture)  # from the model's task: GPT2LMHeadModel is a causal LM
    targets = [(t.data_config(), t.loss or loss) for t in cfg.data.tasks] or [(cfg.data, loss)]
    task_kind = [target_kind(d, target_loss, model_dir) for d, target_loss in targets][0]
    if cfg.data.tasks:
        check_tasks_plan(cfg)
    check_method(cfg.method, cfg.options)
    check_options(cfg, len(experts))
    if loss is not None and ":" in loss:  # package.module:callable: imported and its signature checked now
        from spsa_mix.blend.losses import resolve_loss

        resolve_loss(loss)
    if cfg.memory == "streamed" and cfg.method in GRADIENT_METHODS:
        raise ValueError(f"method {cfg.method!r} differentiates through the blend, which needs the resident stack: "
                         "use memory: resident or auto (streamed experts score forward probes only)")
    spec = lookup_method(cfg.method)
    cost = spec.cost_per_step({k: v for k, v in cfg.options.items()})
    reserve = 1 if spec.final_eval else 0
    steps = planned_steps(cfg.budget, None, cost, reserve)
    if not steps:
        raise ValueError(f"budget {cfg.budget} buys no step of {cfg.method!r} (a step costs {cost:g} evaluations, "
                         f"{reserve} more is kept to score the answer): raise budget to at least {int(cost) + reserve}")
    from spsa_mix.merge.methods import check_plan

    start = check_plan(cfg, k=len(experts), kind=kind)  # method parameters, baselines, a mergekit file's weights
    output = _followed(Path(cfg.output))
    finishing = check_resume(cfg, experts) if resume else False  # a run stopped writing: its output may be replaced
    _check_output(output, cfg.overwrite or finishing, cfg.state_path())
    check_free_space(output, output_bytes(kind, experts))
    return MergePlan(cfg, experts, kind, model_dir, architecture, loss, task_kind, output, cfg.state_path(), start)


def _followed(output: Path) -> Path:
    """``output``, or where it leads if it is a symbolic link: the merged model is written
    there (the link kept), not in a folder that replaces the link."""
    import os

    return Path(os.path.realpath(output)) if output.is_symlink() else output


def target_kind(d: Any, loss: str | None, model_dir: Path | None) -> str:
    """What the target data ``d`` (a :class:`~spsa_mix.merge.config.DataConfig`) is scored
    as: ``causal-lm``, ``sequence-classification``, ``multiple-choice`` (``loss:
    multiple-choice`` on JSONL questions), ``image-classification``, ``tensors`` or
    ``reference``; raises ``ValueError`` for a validation set of another kind than the
    training data, text without a tokenizer or longer than the model's context, text
    without labels under a loss that needs them, or a question file that is not one
    (naming the file and the line)."""
    from spsa_mix.data.kinds import data_kind
    from spsa_mix.merge.checks import check_context, check_data_kinds

    data = data_kind(d.train or "")
    check_data_kinds(d.train or "", d.validation)
    if loss == MULTIPLE_CHOICE:
        return _choices_kind(d, model_dir)
    if data != "text":
        return "image-classification" if data == "images" else data
    if model_dir is None:
        raise ValueError("text data is tokenized with the model's tokenizer: name a Hugging Face model "
                         "directory (model: or base:)")
    check_context(model_dir, d.max_length)
    task_kind = "sequence-classification" if d.label_field else "causal-lm"
    if task_kind == "causal-lm" and loss not in (None, "causal-lm", "entropy") and ":" not in str(loss):
        raise ValueError(f"text without labels (data.label_field) is scored as a language model; "
                         f"loss {loss!r} needs labels")
    return task_kind


def _choices_kind(d: Any, model_dir: Path | None) -> str:
    """``multiple-choice``, once the question files are read and checked (without PyTorch)."""
    from spsa_mix.data.choices import read_choices
    from spsa_mix.merge.checks import check_context

    files = [f for f in (d.train, d.validation) if f is not None]
    for f in files:
        if Path(f).suffix.lower() != ".jsonl":
            raise ValueError(f"loss: multiple-choice reads a JSONL of {{prompt, choices, answer}} questions, but the "
                             f"data is {f!r}")
    if model_dir is None:
        raise ValueError("loss: multiple-choice scores each choice with a causal language model's tokenizer: name a "
                         "Hugging Face causal-LM model directory (model: or base:, or Hugging Face experts)")
    check_context(model_dir, d.max_length)
    for f in files:
        read_choices(f)
    return MULTIPLE_CHOICE


def check_tasks_plan(cfg: MergeConfig) -> None:
    """Refuse what a merge of several targets (``data.tasks``) does not do: the merge
    methods' spaces, streamed experts, baselines, a mergekit start or multiple-choice
    questions (one target's)."""
    if cfg.space not in ("convex", "task-vectors", "lora"):
        raise ValueError(f"space {cfg.space!r} with data.tasks: several targets are merged in the convex, "
                         "task-vectors or lora space (the merge methods' spaces score one target)")
    if cfg.memory == "streamed":
        raise ValueError("memory: streamed with data.tasks: several targets keep the experts resident "
                         "(use memory: resident or auto)")
    if cfg.mergekit is not None:
        raise ValueError("mergekit (a mergekit config's weights as the start) is for one target, not data.tasks")
    if MULTIPLE_CHOICE in (cfg.loss, *(t.loss for t in cfg.data.tasks)):
        raise ValueError("loss: multiple-choice scores one target's questions, not data.tasks")


# ---------------------------------------------------------------------------- data
def _load_data(plan: MergePlan) -> tuple[Any, Any, Any]:
    """(source for Batches, a Task or TensorData; train batches; validation batches or None)."""
    from spsa_mix.data import files
    from spsa_mix.data.batches import Batches
    from spsa_mix.data.tasks import Task
    from spsa_mix.data.text import ChoiceData

    d = plan.config.data
    kind = files.data_kind(d.train or "")
    if plan.task_kind == MULTIPLE_CHOICE:  # questions: every choice of one in the same batch
        tok = files.load_tokenizer(plan.model_dir)  # type: ignore[arg-type]
        source: Any = files.load_choices(d.train, d.validation, tok, max_length=d.max_length)  # type: ignore[arg-type]
    elif kind == "text":
        tok = files.load_tokenizer(plan.model_dir)  # type: ignore[arg-type]
        train = files.read_texts(d.train, text_field=d.text_field, label_field=d.label_field)  # type: ignore[arg-type]
        val = files.read_texts(d.validation, text_field=d.text_field, label_field=d.label_field) \
            if d.validation else None
        data = files.texts_to_data(Path(d.train).stem, train, val, tok, max_length=d.max_length,  # type: ignore[arg-type]
                                   source=str(d.train), validation_source=str(d.validation),
                                   min_tokens=2 if plan.task_kind == "causal-lm" else 1)
        source = Task(data, plan.task_kind)
    elif kind == "images":
        source = Task(files.load_image_folder(d.train, d.validation, image_size=d.image_size, mean=d.mean,  # type: ignore[arg-type]
                                              std=d.std), "image-classification")
    elif kind == "tensors":
        source = files.load_tensors(d.train, d.validation)  # type: ignore[arg-type]
    elif kind == "torchvision":
        _, name, root = (d.train or "").split(":", 2)
        from spsa_mix.data.images import load_dataset

        source = Task(load_dataset(name, data_root=root, image_size=d.image_size), "image-classification")
    else:
        made = files.load_reference(d.train)()  # type: ignore[arg-type]
        if not hasattr(made, "take"):
            return None, made, None  # an iterable of batches: no validation split
        source = made
    import torch

    gen = torch.Generator().manual_seed(plan.config.seed)
    train_batches = Batches(source, batch_size=d.batch_size, shuffle=True, generator=gen, device="cpu")
    n_val = int(source.labels("test").shape[0])
    rows = source.choices if isinstance(source, ChoiceData) else 1  # forward rows per example
    val_size = max(d.batch_size, 64 // rows)
    val_batches = Batches(source, split="test", batch_size=val_size, device="cpu") if n_val else None
    return source, train_batches, val_batches


# ---------------------------------------------------------------------------- the blend
def _objective(plan: MergePlan, train: Any, source: Any) -> Any:
    import torch

    from spsa_mix.blend import BlendedObjective

    from spsa_mix.merge.methods import space_argument

    cfg = plan.config
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    memory = "resident" if cfg.method in GRADIENT_METHODS and cfg.memory == "auto" else cfg.memory
    common = dict(data=train, device=cfg.device, granularity=cfg.granularity, memory=memory,
                  max_memory=cfg.max_memory)
    space = space_argument(cfg.space, cfg.to_dict(), cfg.consensus, cfg.seed, plan.start)
    if plan.kind in ("hf", "adapter"):
        return BlendedObjective.from_pretrained([str(p) for p in plan.experts],
                                                base=cfg.base if cfg.space != "convex" else None,  # convex: baselines'
                                                space=space,  # type: ignore[arg-type]  # checked by the config
                                                scale=cfg.scale,  # type: ignore[arg-type]
                                                loss=plan.loss, dtype=dtype, strict_base=cfg.strict_base, **common)
    model = _plain_model(cfg.model, source, plan.experts[0], str(cfg.data.train))  # type: ignore[arg-type]
    _in_stored_dtypes(model, plan.experts[0])  # fp16 experts stay fp16 in the stack; dtype: the forward's
    extra: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if cfg.space != "convex":
        extra.update(base=cfg.base, space=space, scale=cfg.scale)
    return BlendedObjective(model, [str(p) for p in plan.experts], loss_fn=plan.loss or "cross-entropy",
                            **common, **extra)


def _in_stored_dtypes(model: Any, expert: Path) -> None:
    """Cast ``model``'s floating-point tensors to the dtypes ``expert`` stores them in (read
    from its index), so that experts saved in float16 or bfloat16 match the architecture
    (built in float32); integer buffers are left as they are."""
    from spsa_mix.blend.sources.checkpoints import DATA_PARALLEL_PREFIX, open_checkpoint

    ckpt = open_checkpoint(expert, label=str(expert))
    if not any(n.startswith(DATA_PARALLEL_PREFIX) for n in model.state_dict()):
        ckpt.strip_prefix(DATA_PARALLEL_PREFIX)
    for prefix, module in model.named_modules():
        for table in (module._parameters, module._buffers):
            for leaf, tensor in table.items():
                info = ckpt.infos.get(f"{prefix}.{leaf}" if prefix else leaf)
                if (tensor is not None and info is not None and tensor.is_floating_point()
                        and info.dtype.is_floating_point and tensor.dtype != info.dtype):
                    tensor.data = tensor.data.to(info.dtype)


def _plain_record(model: str, source: Any, expert: Path, data: str) -> dict[str, Any]:
    """What rebuilds the architecture of plain experts (an architecture of spsa_mix.models sized
    by the data, its head by the experts', a Hugging Face directory's config, or a factory):
    :mod:`spsa_mix.merge.load`."""
    from spsa_mix.merge.checks import head_classes
    from spsa_mix.merge.load import architecture_record
    from spsa_mix.models import available_models

    dims = source.model_dims() if hasattr(source, "model_dims") else {}
    if model in available_models() and "in_channels" in dims:  # an image classifier: the experts' head size
        dims["num_classes"] = head_classes(model, expert, dims["num_classes"], data) or dims["num_classes"]
    return architecture_record(model, dims)


def _plain_model(model: str, source: Any, expert: Path, data: str) -> Any:
    from spsa_mix.merge.load import build_architecture

    return build_architecture(_plain_record(model, source, expert, data))


def _loader(plan: MergePlan) -> str:
    """Python lines that load the merged output (the model card's "Load it")."""
    out = str(plan.output)
    if plan.kind == "adapter":
        return (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM\n\n"
                f"model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({plan.config.base!r}), {out!r})")
    if plan.kind == "hf":
        cls = "AutoModelForCausalLM" if (plan.architecture or "").endswith("ForCausalLM") else "AutoModel"
        return f"from transformers import {cls}\n\nmodel = {cls}.from_pretrained({out!r})"
    return (f"from spsa_mix.merge import load_merged\n\n"
            f"model = load_merged({out!r})  # the architecture from recipe.json, then the merged weights")


# ---------------------------------------------------------------------------- reports
def summary_table(rows: Sequence[dict[str, Any]], *, metric: str) -> str:
    """A markdown table: one row per blend with its loss and metric (percent)."""
    lines = [f"| blend | loss | {metric} (%) |", "| --- | ---: | ---: |"]
    for r in rows:
        m = r.get("metric")
        shown = "n/a" if m is None or not np.isfinite(m) else f"{100 * m:.2f}"
        lines.append(f"| {r['blend']} | {r['loss']:.4f} | {shown} |")
    return "\n".join(lines)


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("spsa-mix", "torch", "transformers", "peft", "numpy", "safetensors"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def run_record(res: Any, cfg: MergeConfig, start: float) -> dict[str, Any]:
    """The part of ``recipe.json`` that records the run: the search's history, the library
    versions, the config and its hash, the seconds since ``start``."""
    return {"history": {k: np.asarray(v).tolist() for k, v in res.history.items()}, "versions": _versions(),
            "config": cfg.to_dict(), "config_sha256": cfg.digest(), "seconds": time.perf_counter() - start}


def _score(obj: Any, point: np.ndarray, data: Any) -> dict[str, float]:
    """Loss and metric of one point over all of ``data``."""
    from spsa_mix.blend import evaluate_blend

    metrics = evaluate_blend(obj, point, data)
    assert isinstance(metrics, dict)  # one point, one dict
    return metrics


def _vertex(obj: Any, index: int) -> np.ndarray:
    """The point of expert ``index`` alone: a one-hot alpha in every group (and a scale of 1)."""
    alpha = np.zeros(obj.domain.simplex)
    alpha[..., index] = 1.0
    return np.asarray(obj.domain.join(alpha), dtype=np.float64)


def _weights(obj: Any, point: np.ndarray, cfg: MergeConfig) -> tuple[np.ndarray, float | None]:
    """alpha (``(K,)`` or ``(groups, K)``) and the task vectors' scale of a point."""
    alpha, positive, _ = obj.domain.split(point)
    if positive.size:
        return np.asarray(alpha), float(positive.reshape(-1)[0])
    return np.asarray(alpha), (float(cfg.scale) if cfg.space not in ("convex", "lora") else None)


def choose_written(select: str, candidates: dict[str, tuple[np.ndarray, dict[str, Any]]], where: str,
                   say: Callable[[str], None]) -> str:
    """Which candidate is written: ``"learned"`` with ``select: learned``, else the one with
    the lowest loss (saying so when it is not the learned blend).

    >>> choose_written("best", {"learned": (None, {"loss": 2.0}), "uniform": (None, {"loss": 1.0})}, "validation", print)
    the uniform blend scores better on the validation data than the learned one (1.0000 against 2.0000): writing it (select: learned writes the learned blend)
    'uniform'
    """
    chosen = "learned" if select == "learned" else min(candidates, key=lambda c: candidates[c][1]["loss"])
    if chosen != "learned":
        say(f"the {chosen} blend scores better on the {where} data than the learned one "
            f"({candidates[chosen][1]['loss']:.4f} against {candidates['learned'][1]['loss']:.4f}): writing it "
            "(select: learned writes the learned blend)")
    return chosen


@dataclass
class MergeOutcome:
    """What :func:`run_merge` produced: the paths, the recipe, the summary table, every file written."""

    output: Path
    model_path: Path
    recipe: dict[str, Any]
    table: str
    files: list[Path] = field(default_factory=list)

    def wrote(self) -> str:
        """The last line of the command: the files written, named inside the output's folder."""
        from spsa_mix.merge.report import wrote_line

        folder = self.output if self.output.is_dir() else self.output.parent
        return wrote_line(folder, self.files)


def run_merge(cfg: MergeConfig, *, resume: bool = False, progress: bool = True,
              log: Callable[[str], None] | None = None, command: str | None = None) -> MergeOutcome:
    """Merge the experts of ``cfg`` (see the module docstring); returns what was written.

    ``resume``: continue the run saved in ``cfg.state_path()`` (with no saved state, start
    from the beginning and say so). The final weights of a resumed run equal those of an
    uninterrupted one on the same machine, bit for bit. ``log`` gets each line of the log
    (each phase with its seconds: :mod:`spsa_mix.merge.cost`). PyTorch's thread count is
    set for the merge (``cfg.threads``) and restored after it. ``command``: the command
    line that ran it, for the model card (default: ``spsa-mix merge`` of the config in
    ``recipe.json``).

    Raises
    ------
    ValueError
        For a bad config, files or experts that do not match (before any evaluation), or an
        output that cannot be written (before any work).
    KeyboardInterrupt
        On Ctrl-C, after the run's state is written.
    spsa_mix.merge.guard.WriteFailed
        When a file cannot be written (a full disk): one line saying how to resume.
    """
    from spsa_mix.merge.fingerprint import record_path
    from spsa_mix.merge.guard import guarded

    command = command or "spsa-mix merge merge.yaml  # merge.yaml: the config of recipe.json, as YAML"
    plan_merge(cfg, resume=resume)  # every check first: the lock goes beside an output that can be written
    with guarded(Path(cfg.output), [cfg.state_path(), record_path(cfg)], cfg.state_path()), \
            contextlib.ExitStack() as stack:
        return _run_merge(cfg, stack, resume=resume, progress=progress, log=log, command=command)


def _import_heavy(plan: MergePlan) -> None:
    """Import what the merge needs (its own phase of the log, so the others time their work)."""
    import importlib

    names = ["torch", "spsa_mix.blend", "spsa_mix.data.files", "matplotlib"]
    if plan.kind in ("hf", "adapter") or plan.task_kind in ("causal-lm", "sequence-classification", MULTIPLE_CHOICE):
        names.append("transformers")
    if plan.kind == "adapter":
        names.append("peft")
    for name in names:
        importlib.import_module(name)


def _threads(cfg: MergeConfig, obj: Any, source: Any, point: np.ndarray, shards: int) -> tuple[int | None, str]:
    """The thread count of the merge and why (:func:`spsa_mix.cpu_threads.resolve_threads`):
    the work is one forward on a training batch (its share on one of ``shards`` ranks)."""
    from spsa_mix.blend import evaluate_blend
    from spsa_mix.cpu_threads import forward_flops, resolve_threads, torch_threads
    from spsa_mix.data.batches import Batches

    def flops() -> float | None:
        if not hasattr(source, "take"):
            return None  # batches from a factory: drawing one would change the run's data
        batch = Batches(source, batch_size=cfg.data.batch_size, device="cpu")  # in order: no generator drawn
        with torch_threads(1):
            total = forward_flops(lambda: evaluate_blend(obj, point, batch, max_batches=1))
        return None if total is None else total / shards

    return resolve_threads(cfg.threads, flops, device=obj.device)


def _run_merge(cfg: MergeConfig, stack: contextlib.ExitStack, *, resume: bool, progress: bool,
               log: Callable[[str], None] | None, command: str) -> MergeOutcome:
    start = time.perf_counter()
    import spsa_mix
    from spsa_mix.core.result import Status
    from spsa_mix.io import write_json
    from spsa_mix.merge.checks import check_finite_inputs, check_scores
    from spsa_mix.merge.cost import PhaseClock
    from spsa_mix.merge.fingerprint import fingerprint, read_record, record_path, write_record
    from spsa_mix.merge.report import choose_blend, kept_line, loss_figure, model_card, save_figure

    say = log or logger.info
    plan = plan_merge(cfg, resume=resume)
    clock = PhaseClock(say, start=start)
    clock.mark("checks", hold=True)  # held until the experts are read: a bad expert fails in one line
    _import_heavy(plan)
    from spsa_mix.blend import evaluate_experts
    from spsa_mix.cpu_threads import torch_threads
    from spsa_mix.distributed.merging import MergeRanks

    ranks = MergeRanks.start(cfg.device)  # under torchrun: data parallel, rank 0 logs and writes
    say = clock.say = say if ranks.is_writer else (lambda line: None)
    clock.mark("imports", hold=True)
    if resume and ranks.world_size > 1:
        ranks.close()
        raise ValueError("--resume is not supported under torchrun with several processes: their runs do not "
                         "write a state yet (docs/distributed.md)")
    if plan.task_kind == MULTIPLE_CHOICE and ranks.world_size > 1:
        ranks.close()
        raise ValueError("loss: multiple-choice is not supported under torchrun with several processes yet: a rank's "
                         "shard would split a question's choices")
    if resume and not plan.state.exists():
        say(f"no saved state at {plan.state}: starting from the beginning")
    elif not resume and plan.state.exists():
        say(f"a saved state exists at {plan.state}; starting again (pass --resume to continue it)")
        if ranks.is_writer:
            plan.state.unlink()
    record = fingerprint(cfg, plan.experts)  # what --resume will compare, written before anything is read
    phase = (read_record(record_path(cfg)) or {}).get("phase", "search") if resume and plan.state.exists() else "search"
    if ranks.is_writer:
        write_record(record_path(cfg), record, phase)
    if cfg.data.tasks:  # several targets at once: spsa_mix.merge.multitask
        from spsa_mix.merge.multitask import run_tasks

        return run_tasks(plan, ranks, say, progress=progress, start=start, clock=clock)
    source, train, val = _load_data(plan)
    check_finite_inputs(source, {"train": f"data.train {cfg.data.train!r}",
                                 "test": f"data.validation {cfg.data.validation!r}"})
    ranks.check_same_data(source)  # under torchrun each rank reads its own files
    clock.mark("data", hold=True)
    obj = _objective(plan, ranks.shard(train), source)  # experts that do not match fail here, before any evaluation
    scoring = val if val is not None else train
    where = "validation" if val is not None else "training"
    uniform_point = obj.domain.center() if not obj.domain.simplex_only else np.full(obj.shape, 1.0 / obj.k)
    threads, why = _threads(cfg, obj, source, uniform_point, ranks.world_size)
    threads = stack.enter_context(torch_threads(threads))  # restored when the merge returns or raises
    clock.mark("experts")
    say(f"{len(plan.experts)} {plan.kind} experts, space {cfg.space}, method {cfg.method}, budget {cfg.budget}")
    say(obj.memory_choice)
    say(f"threads: {threads} ({why})")
    uniform = _score(obj, uniform_point, scoring)
    from spsa_mix.merge import select
    from spsa_mix.merge.methods import baseline_names, start_point

    # a method space's vertices are sparsified task vectors, not the experts: those are scored as models
    singles = evaluate_experts(obj, scoring) if cfg.space in ("convex", "task-vectors", "lora") else None
    baselines, singles = select.baseline_entries(obj, plan, names=baseline_names(cfg, len(plan.experts), plan.kind),
                                                 singles=singles, scoring=scoring, log=say) \
        if ranks.is_writer else ([], singles or [uniform] * len(plan.experts))
    weights = [(f"experts[{i}]", p) for i, p in enumerate(plan.experts)] + [("base", Path(b)) for b in [cfg.base] if b]
    check_scores(uniform["loss"], [m["loss"] for m in singles], weights,  # a NaN found at the first evaluation
                 f"the {where} data {(cfg.data.validation if val is not None else cfg.data.train)!r}")
    best = int(np.argmin([m["loss"] for m in singles]))
    say(f"uniform blend: {where} loss {uniform['loss']:.4f}; best single expert: {plan.experts[best].name} "
        f"({singles[best]['loss']:.4f})")
    clock.mark("references", f"{len(plan.experts) + 1} passes over the {where} data")

    def val_objective(x: np.ndarray) -> float:
        return float(_score(obj, x, scoring)["loss"])

    options = dict(cfg.options)
    kwargs: dict[str, Any] = dict(method=cfg.method, max_evals=cfg.budget, seed=cfg.seed, vectorized=True,
                                  show_progress_bar=progress and ranks.is_writer, val_objective=ranks.same(val_objective),
                                  val_every=cfg.validate_every)
    if ranks.world_size == 1:  # under torchrun every rank would write the one state file: not yet supported
        kwargs.update(checkpoint=plan.state, checkpoint_every=cfg.checkpoint_every)
    if plan.start is not None and "x0" not in options:  # a mergekit config's weights: where the search starts
        kwargs["x0"] = start_point(obj.domain, plan.start, cfg.scale)
    if cfg.space not in ("convex", "task-vectors", "lora") and "start" not in options:
        kwargs["start"] = "uniform"  # a method space's vertices are not the experts (select.consensus_fixed)
    res = spsa_mix.minimize(ranks.wrap(obj), k=obj.shape, **kwargs, **options)
    ranks.close()
    clock.mark("search", f"{res.nfev} evaluations, {res.get('nval', 0)} validation checks")
    if res.status == Status.INTERRUPTED:
        raise KeyboardInterrupt
    stopped: list[str] = []  # the reference scores were finite: a blend far from the experts, or one training minibatch
    if res.status == Status.NONFINITE:
        stopped = [f"the search stopped early on a loss that is not finite ({res.message}); the learned blend is its "
                   f"last point with finite losses, after {res.nit} steps. A blend far from the experts (a large "
                   "scale, a sparsified space) or a minibatch of the training data with no example that has a target "
                   "gives one"]
        say(f"warning: {stopped[0]}")
    if not res.success and not stopped:
        raise RuntimeError(f"the search stopped: {res.message}")
    if not ranks.is_writer:  # the search is the same on every rank; rank 0 scores and writes alone
        return MergeOutcome(plan.output, plan.output, {}, "")
    write_record(record_path(cfg), record, "write")  # from here, a resumed run writes the output again
    learned_entry, uniform_entry = select.learned_entries(obj, cfg, learned=(res.x, _score(obj, res.x, scoring)),
                                                          uniform=(uniform_point, uniform), scoring=scoring)
    learned, uniform = learned_entry.metrics, uniform_entry.metrics
    if cfg.space in ("convex", "task-vectors", "lora"):
        single_entry = select.Entry("best single", f"best single ({plan.experts[best].name})", singles[best],
                                    point=_vertex(obj, best))
    else:
        from spsa_mix.merge.candidates import expert_candidate

        single_entry = select.Entry("best single", f"best single ({plan.experts[best].name})", singles[best],
                                    candidate=expert_candidate(best, plan.experts[best].name, len(plan.experts)))
    entries = {e.key: e for e in (uniform_entry, single_entry, *baselines, learned_entry)}
    say(kept_line(res, where, validate_every=cfg.validate_every))
    chosen, reason = choose_blend({k: e.metrics["loss"] for k, e in entries.items()}, cfg.select, where=where)
    say(f"written: {entries[chosen].label} ({reason})")
    unvalidated = [] if val is not None or cfg.select != "best" else [
        "no validation data (data.validation): the written blend was chosen on the training data the weights were "
        "learned on, not held out; its scores are training scores"]
    for w in unvalidated:
        say(f"warning: {w}")
    warnings = stopped + unvalidated  # every warning said, in recipe.json and the model card
    point = entries[chosen].point
    alpha, scale = _weights(obj, point if point is not None else uniform_point, cfg)
    clock.mark("final")
    model_path = select.write(obj, entries[chosen], plan, overwrite=cfg.overwrite or phase == "write",
                              max_shard_size=cfg.out_shard_size)
    rows: list[dict[str, Any]] = [{"blend": e.label + (" (written)" if e.key == chosen else ""),
                                   "loss": e.metrics["loss"], "metric": e.metrics["accuracy"]}
                                  for e in entries.values()]
    metric = getattr(source, "metric", "accuracy")
    table = summary_table(rows, metric=metric)
    out_dir = plan.output if plan.output.is_dir() else plan.output.parent
    kit, kit_reason = select.mergekit_export(obj, entries[chosen], plan, alpha, scale, out_dir)
    recipe = {
        "format": RECIPE_FORMAT,
        "alpha": alpha.tolist() if point is not None else None,
        "scale": None if scale is None or point is None else float(scale),
        "groups": obj.groups,
        "written": chosen,
        "start": None if "x0" not in kwargs else np.asarray(kwargs["x0"]).tolist(),
        "written_dtype": str(select.written_dtype(obj, cfg)).removeprefix("torch."),
        "experts": [str(p) for p in plan.experts],
        "method": cfg.method, "budget": cfg.budget, "seed": cfg.seed,
        "scored_on": where,
        "memory": {"mode": obj.memory_mode, "choice": obj.memory_choice},
        "uniform": {"loss": uniform["loss"], metric: uniform["accuracy"]},
        "best_single": {"expert": str(plan.experts[best]), "index": best, "loss": singles[best]["loss"],
                        metric: singles[best]["accuracy"]},
        "learned": {"alpha": _weights(obj, res.x, cfg)[0].tolist(), "scale": _weights(obj, res.x, cfg)[1],
                    "loss": learned["loss"], metric: learned["accuracy"], "fun": float(res.fun),
                    "nfev": int(res.nfev), "cost": float(res.cost), "nit": int(res.nit), "message": res.message},
        "experts_scores": [{"expert": str(p), "loss": m["loss"], metric: m["accuracy"]}
                           for p, m in zip(plan.experts, singles, strict=True)],
        "candidates": {e.key: {"loss": e.metrics["loss"], metric: e.metrics["accuracy"],
                               **({"search_loss": e.search_metrics["loss"]} if e.search_metrics else {}),
                               **(e.candidate.record() if e.candidate is not None else {})}
                       for e in entries.values()},
        "space": select.space_record(obj, plan),
        "mergekit": {"written": kit is not None, "file": "mergekit.yaml" if kit is not None else None,
                     "reason": kit_reason, "note": select.mergekit_note(cfg, entries[chosen])},
        **run_record(res, cfg, start),
        "threads": threads,
        "selection": f"{chosen}: {reason}",
        "warnings": warnings,
        "command": command,
    }
    if learned_entry.search_metrics is not None:
        recipe["learned"]["search_loss"] = learned_entry.search_metrics["loss"]
    architecture = plan.architecture
    if plan.kind == "file":  # what rebuilds the module the weights go in (spsa_mix.merge.load_merged)
        recipe["architecture"] = built = _plain_record(cfg.model, source, plan.experts[0],  # type: ignore[arg-type]
                                                       str(cfg.data.train))
        arguments = ", ".join(f"{k}={v!r}" for k, v in built.get("kwargs", {}).items())
        architecture = f"{built['model']}({arguments})"
    write_json(recipe, out_dir / "recipe.json", indent=1)  # first, so that a failing figure loses no result
    from spsa_mix.io import atomic_write_text

    if kit is not None:
        import yaml

        atomic_write_text(out_dir / "mergekit.yaml", yaml.safe_dump(kit, sort_keys=False))
    card = out_dir / "README.md" if plan.output.is_dir() else model_path.with_suffix(".md")  # never beside a file
    atomic_write_text(card, model_card(
        name=plan.output.name, model=architecture, experts=[str(p) for p in plan.experts], base=cfg.base,
        alpha=alpha, scale=scale, space=cfg.space, method=cfg.method, budget=cfg.budget, table=table, written=chosen,
        reason=reason, command=command, scored_on=where, loader=_loader(plan), warnings=warnings))
    scale_column = obj.domain.n_weights if obj.domain.positive else None  # a learned scale follows the weights
    save_figure(loss_figure(res.history, title=f"{cfg.method} on {len(plan.experts)} experts ({cfg.space})",
                            references={"uniform blend": uniform["loss"],
                                        f"best single expert ({plan.experts[best].name})": singles[best]["loss"]},
                            where=where, scale_column=scale_column), out_dir / "loss.png")
    clock.mark("write")
    recipe["phases"] = clock.as_dict()
    recipe["seconds"] = recipe["phases"]["total"]
    write_json(recipe, out_dir / "recipe.json", indent=1)  # again: with how long the writes took
    if plan.state.exists():
        plan.state.unlink()  # the run is complete: its state is in recipe.json
    record_path(cfg).unlink(missing_ok=True)
    ours = [out_dir / n for n in ("recipe.json", "mergekit.yaml", "loss.png")] + [card]
    weights = sorted(f for f in plan.output.iterdir() if f not in ours) if plan.output.is_dir() else [model_path]
    files = weights + [card] + [f for f in ours[:-1] if f.exists()]
    return MergeOutcome(plan.output, model_path, recipe, table, files)
