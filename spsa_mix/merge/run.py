"""``spsa-mix merge`` end to end: checks, target data, the blend, the search, the merged checkpoint.

:func:`run_merge` does, in this order:

1. **checks, before any expert is read**: the config (:mod:`spsa_mix.merge.config`), that
   every named file exists, what kind of experts they are (Hugging Face model directories,
   PEFT adapter directories, or ``.pt``/``.safetensors`` state dicts; all of one kind),
   that the method and its options exist, that the budget buys at least one step, and that
   the output can be written (an existing non-empty output is refused unless ``overwrite``);
2. **the target data** (:mod:`spsa_mix.data.files`): text tokenized with the model's own
   tokenizer, image folders, tensors, or a factory; minibatches of the training data in an
   order fixed by ``seed``, the validation data in order;
3. **the blend**: :meth:`spsa_mix.blend.BlendedObjective.from_pretrained` (Hugging Face
   experts and adapters, read lazily, in their stored dtype) or
   :class:`~spsa_mix.blend.BlendedObjective` of an architecture and state dicts;
4. **reference scores** on the validation data (the training data when there is none): the
   uniform blend and every expert alone, hence the best single expert;
5. **the search**: :func:`spsa_mix.minimize` with ``max_evals=budget`` and the validation
   loss every ``validate_every`` steps (not counted in the budget; the returned point is
   the best on validation), the run's state written every ``checkpoint_every`` steps and on
   Ctrl-C, so that ``resume`` continues it;
6. **what it writes**, into ``output``: the merged model in the experts' own format
   (:meth:`~spsa_mix.blend.BlendedObjective.save_pretrained`, written beside the output
   and renamed into place), ``recipe.json`` (the weights, the scores of the uniform blend,
   the best single expert and the learned blend, the history, the versions, the config and
   its hash), ``mergekit.yaml`` where mergekit can express the same merge, and ``loss.png``.

Example
-------
>>> summary_table([{"blend": "uniform", "loss": 1.0, "metric": 0.5}], metric="accuracy").splitlines()[2]
'| uniform | 1.0000 | 50.00 |'
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spsa_mix.merge.config import MergeConfig

__all__ = ["MergePlan", "MergeOutcome", "plan_merge", "run_merge", "summary_table", "mergekit_config",
           "expert_kind", "target_kind", "RECIPE_FORMAT"]

logger = logging.getLogger("spsa_mix.merge")
RECIPE_FORMAT = 1
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


def plan_merge(cfg: MergeConfig) -> MergePlan:
    """Every check that needs no expert weights (see the module docstring, step 1).

    Raises
    ------
    ValueError
        Naming what is wrong: a missing file, experts of different kinds, a space that does
        not suit them, an unknown method or option, a budget too small for one step, an
        output that cannot be written.
    """
    from spsa_mix.core.methods import lookup_method
    from spsa_mix.core.minimize import check_method, planned_steps

    cfg.check_files()
    experts = tuple(cfg.expert_paths())
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
        loss = "causal-lm" if architecture.endswith("ForCausalLM") else "cross-entropy"
    targets = [(t.data_config(), t.loss or loss) for t in cfg.data.tasks] or [(cfg.data, loss)]
    task_kind = [target_kind(d, target_loss, model_dir) for d, target_loss in targets][0]
    check_method(cfg.method, cfg.options)
    spec = lookup_method(cfg.method)
    cost = spec.cost_per_step({k: v for k, v in cfg.options.items()})
    reserve = 1 if spec.final_eval else 0
    steps = planned_steps(cfg.budget, None, cost, reserve)
    if not steps:
        raise ValueError(f"budget {cfg.budget} buys no step of {cfg.method!r} (a step costs {cost:g} evaluations, "
                         f"{reserve} more is kept to score the answer): raise budget to at least {int(cost) + reserve}")
    output = Path(cfg.output)
    _check_output(output, cfg.overwrite, cfg.state_path())
    return MergePlan(cfg, experts, kind, model_dir, architecture, loss, task_kind, output, cfg.state_path())


def target_kind(d: Any, loss: str | None, model_dir: Path | None) -> str:
    """What the target data ``d`` (a :class:`~spsa_mix.merge.config.DataConfig`) is scored
    as: ``causal-lm``, ``sequence-classification``, ``image-classification``, ``tensors``
    or ``reference``; raises ``ValueError`` for text without a tokenizer, or text without
    labels under a loss that needs them."""
    from spsa_mix.data.files import data_kind

    data = data_kind(d.train or "")
    if data != "text":
        return "image-classification" if data == "images" else data
    if model_dir is None:
        raise ValueError("text data is tokenized with the model's tokenizer: name a Hugging Face model "
                         "directory (model: or base:)")
    task_kind = "sequence-classification" if d.label_field else "causal-lm"
    if task_kind == "causal-lm" and loss not in (None, "causal-lm", "entropy") and ":" not in str(loss):
        raise ValueError(f"text without labels (data.label_field) is scored as a language model; "
                         f"loss {loss!r} needs labels")
    return task_kind


# ---------------------------------------------------------------------------- data
def _load_data(plan: MergePlan) -> tuple[Any, Any, Any]:
    """(source for Batches, a Task or TensorData; train batches; validation batches or None)."""
    from spsa_mix.data import files
    from spsa_mix.data.batches import Batches
    from spsa_mix.data.tasks import Task

    d = plan.config.data
    kind = files.data_kind(d.train or "")
    if kind == "text":
        tok = files.load_tokenizer(plan.model_dir)  # type: ignore[arg-type]
        train = files.read_texts(d.train, text_field=d.text_field, label_field=d.label_field)  # type: ignore[arg-type]
        val = files.read_texts(d.validation, text_field=d.text_field, label_field=d.label_field) \
            if d.validation else None
        data = files.texts_to_data(Path(d.train).stem, train, val, tok, max_length=d.max_length,  # type: ignore[arg-type]
                                   source=str(d.train))
        source: Any = Task(data, plan.task_kind)
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
    val_batches = Batches(source, split="test", batch_size=max(d.batch_size, 64), device="cpu") if n_val else None
    return source, train_batches, val_batches


# ---------------------------------------------------------------------------- the blend
def _objective(plan: MergePlan, train: Any, source: Any) -> Any:
    import torch

    from spsa_mix.blend import BlendedObjective

    cfg = plan.config
    dtype = getattr(torch, cfg.dtype) if cfg.dtype else None
    common = dict(data=train, device=cfg.device, granularity=cfg.granularity)
    if plan.kind in ("hf", "adapter"):
        return BlendedObjective.from_pretrained([str(p) for p in plan.experts], base=cfg.base,
                                                space=cfg.space,  # type: ignore[arg-type]  # checked by the config
                                                scale=cfg.scale,  # type: ignore[arg-type]
                                                loss=plan.loss, dtype=dtype, **common)
    model = _plain_model(cfg.model, source)  # type: ignore[arg-type]
    extra: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    if cfg.space == "task-vectors":
        extra.update(base=cfg.base, space="task-vectors", scale=cfg.scale)
    return BlendedObjective(model, [str(p) for p in plan.experts], loss_fn=plan.loss or "cross-entropy",
                            **common, **extra)


def _plain_model(model: str, source: Any) -> Any:
    from spsa_mix.data.files import load_reference
    from spsa_mix.models import available_models, build_model

    if model in available_models():
        dims = source.model_dims() if hasattr(source, "model_dims") else {}
        return build_model(model, **dims)
    if Path(model).is_dir():
        from transformers import AutoConfig, AutoModel

        config = AutoConfig.from_pretrained(model, local_files_only=True)
        return AutoModel.from_config(config)
    made = load_reference(model)
    return made() if callable(made) and not hasattr(made, "state_dict") else made


# ---------------------------------------------------------------------------- reports
def summary_table(rows: Sequence[dict[str, Any]], *, metric: str) -> str:
    """A markdown table: one row per blend with its loss and metric (percent)."""
    lines = [f"| blend | loss | {metric} (%) |", "| --- | ---: | ---: |"]
    for r in rows:
        m = r.get("metric")
        shown = "n/a" if m is None or not np.isfinite(m) else f"{100 * m:.2f}"
        lines.append(f"| {r['blend']} | {r['loss']:.4f} | {shown} |")
    return "\n".join(lines)


def mergekit_config(plan: MergePlan, alpha: np.ndarray, scale: float | None, dtype: str | None) -> dict[str, Any] | None:
    """The same merge as a mergekit config, where mergekit can express it: ``linear`` for a
    convex blend, ``task_arithmetic`` (weights ``alpha_i``, ``lambda = s``) for task vectors,
    of Hugging Face experts with one weight per expert; ``None`` otherwise (layer-wise
    weights, LoRA adapters, plain state dicts).

    >>> import types
    >>> plan = types.SimpleNamespace(kind="hf", experts=(Path("a"), Path("b")), config=MergeConfig.from_dict(
    ...     {"experts": ["a", "b"], "data": "t.jsonl"}))
    >>> mergekit_config(plan, np.array([0.25, 0.75]), None, None)["models"][1]
    {'model': 'b', 'parameters': {'weight': 0.75}}
    """
    cfg = plan.config
    if plan.kind != "hf" or alpha.ndim != 1:
        return None
    models = [{"model": str(p), "parameters": {"weight": float(a)}} for p, a in zip(plan.experts, alpha, strict=True)]
    out: dict[str, Any]
    if cfg.space == "convex":
        out = {"merge_method": "linear", "models": models, "parameters": {"normalize": False}}
    else:
        out = {"merge_method": "task_arithmetic", "base_model": str(cfg.base), "models": models,
               "parameters": {"normalize": False, "lambda": float(scale if scale is not None else 1.0)}}
    if dtype:
        out["dtype"] = dtype
    return out


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


def _plot(history: dict[str, np.ndarray], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from spsa_mix.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
    cost = np.asarray(history.get("cost", []), dtype=float)
    loss = np.asarray(history.get("loss", []), dtype=float)
    if cost.size:
        ax.plot(cost, loss, lw=1.2, label="training minibatch loss (per step)")
    val = np.asarray(history.get("val_loss", []), dtype=float)
    if val.size == cost.size and np.isfinite(val).any():
        keep = np.isfinite(val)
        ax.plot(cost[keep], val[keep], "o", ms=4, label="validation loss")
    ax.set_xlabel("objective evaluations")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


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
    return np.asarray(alpha), (float(cfg.scale) if cfg.space == "task-vectors" else None)


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
    """What :func:`run_merge` produced: the paths, the recipe, the summary table."""

    output: Path
    model_path: Path
    recipe: dict[str, Any]
    table: str


def run_merge(cfg: MergeConfig, *, resume: bool = False, progress: bool = True,
              log: Callable[[str], None] | None = None) -> MergeOutcome:
    """Merge the experts of ``cfg`` (see the module docstring); returns what was written.

    ``resume``: continue the run saved in ``cfg.state_path()`` (with no saved state, start
    from the beginning and say so). The final weights of a resumed run equal those of an
    uninterrupted one on the same machine, bit for bit.

    Raises
    ------
    ValueError
        For a bad config, files or experts that do not match (before any evaluation), or an
        output that cannot be written (before any work).
    KeyboardInterrupt
        On Ctrl-C, after the run's state is written.
    """
    import spsa_mix
    from spsa_mix.blend import evaluate_experts
    from spsa_mix.core.result import Status
    from spsa_mix.distributed.merging import MergeRanks
    from spsa_mix.io import write_json

    say = log or logger.info
    start = time.perf_counter()
    plan = plan_merge(cfg)
    ranks = MergeRanks.start(cfg.device)  # under torchrun: data parallel, rank 0 logs and writes
    say = say if ranks.is_writer else (lambda line: None)
    if resume and ranks.world_size > 1:
        ranks.close()
        raise ValueError("--resume is not supported under torchrun with several processes: their runs do not "
                         "write a state yet (docs/distributed.md)")
    if resume and not plan.state.exists():
        say(f"no saved state at {plan.state}: starting from the beginning")
    elif not resume and plan.state.exists():
        say(f"a saved state exists at {plan.state}; starting again (pass --resume to continue it)")
        if ranks.is_writer:
            plan.state.unlink()
    if cfg.data.tasks:  # several targets at once: spsa_mix.merge.multitask
        from spsa_mix.merge.multitask import run_tasks

        return run_tasks(plan, ranks, say, progress=progress, start=start)
    source, train, val = _load_data(plan)
    obj = _objective(plan, ranks.shard(train), source)  # experts that do not match fail here, before any evaluation
    say(f"{len(plan.experts)} {plan.kind} experts, space {cfg.space}, method {cfg.method}, budget {cfg.budget}")
    scoring = val if val is not None else train
    where = "validation" if val is not None else "training"
    uniform_point = obj.domain.center() if not obj.domain.simplex_only else np.full(obj.shape, 1.0 / obj.k)
    uniform = _score(obj, uniform_point, scoring)
    singles = evaluate_experts(obj, scoring)
    best = int(np.argmin([m["loss"] for m in singles]))
    say(f"uniform blend: {where} loss {uniform['loss']:.4f}; best single expert: {plan.experts[best].name} "
        f"({singles[best]['loss']:.4f})")

    def val_objective(x: np.ndarray) -> float:
        return float(_score(obj, x, scoring)["loss"])

    options = dict(cfg.options)
    kwargs: dict[str, Any] = dict(method=cfg.method, max_evals=cfg.budget, seed=cfg.seed, vectorized=True,
                                  show_progress_bar=progress and ranks.is_writer, val_objective=ranks.same(val_objective),
                                  val_every=cfg.validate_every)
    if ranks.world_size == 1:  # under torchrun every rank would write the one state file: not yet supported
        kwargs.update(checkpoint=plan.state, checkpoint_every=cfg.checkpoint_every)
    res = spsa_mix.minimize(ranks.wrap(obj), k=obj.shape, **kwargs, **options)
    ranks.close()
    if res.status == Status.INTERRUPTED:
        raise KeyboardInterrupt
    if not res.success:
        raise RuntimeError(f"the search stopped: {res.message}")
    if not ranks.is_writer:  # the search is the same on every rank; rank 0 scores and writes alone
        return MergeOutcome(plan.output, plan.output, {}, "")
    learned = _score(obj, res.x, scoring)
    candidates = {"learned": (np.asarray(res.x, dtype=np.float64), learned),
                  "uniform": (np.asarray(uniform_point, dtype=np.float64), uniform),
                  "best single": (_vertex(obj, best), singles[best])}
    chosen = choose_written(cfg.select, candidates, where, say)
    point = candidates[chosen][0]
    alpha, scale = _weights(obj, point, cfg)
    model_path = Path(obj.save_pretrained(point, plan.output, overwrite=cfg.overwrite))
    rows: list[dict[str, Any]] = [{"blend": "uniform", "loss": uniform["loss"], "metric": uniform["accuracy"]},
            {"blend": f"best single ({plan.experts[best].name})", "loss": singles[best]["loss"],
             "metric": singles[best]["accuracy"]},
            {"blend": f"learned ({cfg.method})", "loss": learned["loss"], "metric": learned["accuracy"]}]
    for row, name in zip(rows, ("uniform", "best single", "learned"), strict=True):
        if name == chosen:
            row["blend"] += " (written)"
    metric = getattr(source, "metric", "accuracy")
    table = summary_table(rows, metric=metric)
    out_dir = plan.output if plan.output.is_dir() else plan.output.parent
    recipe = {
        "format": RECIPE_FORMAT,
        "alpha": alpha.tolist(),
        "scale": None if scale is None else float(scale),
        "written": chosen,
        "experts": [str(p) for p in plan.experts],
        "method": cfg.method, "budget": cfg.budget, "seed": cfg.seed,
        "scored_on": where,
        "uniform": {"loss": uniform["loss"], metric: uniform["accuracy"]},
        "best_single": {"expert": str(plan.experts[best]), "index": best, "loss": singles[best]["loss"],
                        metric: singles[best]["accuracy"]},
        "learned": {"alpha": _weights(obj, res.x, cfg)[0].tolist(), "scale": _weights(obj, res.x, cfg)[1],
                    "loss": learned["loss"], metric: learned["accuracy"], "fun": float(res.fun),
                    "nfev": int(res.nfev), "cost": float(res.cost), "nit": int(res.nit), "message": res.message},
        "experts_scores": [{"expert": str(p), "loss": m["loss"], metric: m["accuracy"]}
                           for p, m in zip(plan.experts, singles, strict=True)],
        **run_record(res, cfg, start),
    }
    write_json(recipe, out_dir / "recipe.json", indent=1)
    mk = mergekit_config(plan, alpha, recipe["scale"], cfg.dtype)
    if mk is not None:
        import yaml

        from spsa_mix.io import atomic_write_text

        atomic_write_text(out_dir / "mergekit.yaml", yaml.safe_dump(mk, sort_keys=False))
    _plot(res.history, out_dir / "loss.png", title=f"{cfg.method} on {len(plan.experts)} experts ({cfg.space})")
    if plan.state.exists():
        plan.state.unlink()  # the run is complete: its state is in recipe.json
    return MergeOutcome(plan.output, model_path, recipe, table)
