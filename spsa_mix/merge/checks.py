"""Checks of ``spsa-mix merge`` made before any weight is read, each naming what is wrong.

:func:`~spsa_mix.merge.run.plan_merge` calls them after the config's own checks
(:mod:`spsa_mix.merge.config`):

* :func:`check_apart`: the output (and the files written beside it) is none of the inputs,
  holds none of them and lies inside none of them, so that ``--overwrite`` can never
  replace an expert, the base, the model or the data;
* :func:`check_data_kinds`: ``data.validation`` holds the same kind of data as
  ``data.train`` (text, images, tensors);
* :func:`check_distinct`: no expert is named twice (by two paths, a pattern and a path, or
  through a symbolic link), which would weigh it twice and say nothing;
* :func:`check_free_space`: the output's file system has room for the merged model
  (:func:`output_bytes`: the size of the first expert's weights, or of every adapter's for
  LoRA, which are written side by side), so that a full disk is found before the search,
  not after it;
* :func:`check_options`: the ``options:`` of :func:`spsa_mix.minimize` are none of the
  arguments the merge sets itself (``max_evals`` is ``budget``, ...), are known, and have
  values the method takes (checked by a one-step run of the method on a constant
  function, before any weight is read, instead of a ``TypeError`` after the loading);
* :func:`check_context`: ``data.max_length`` within the model's context (its
  ``config.json``'s ``max_position_embeddings``, ``n_positions``, ...), instead of an
  ``IndexError`` (GPT-2) or an allocation that the kernel kills (a Llama at 100000 tokens);
* after the loading, :func:`check_finite_inputs` (tensor data without NaN or infinite
  inputs) and, at the first evaluation (the reference scores), :func:`check_scores`: a loss
  that is not finite is traced to the expert (or base) whose weights hold NaN or infinite
  values, else to the data, and refused in one line, instead of a search that runs its whole
  budget on NaN;

Example
-------
>>> check_apart(Path("ft/merged"), {"the run's state": Path("ft/merged.state")},
...             [("experts[0]", Path("ft/a")), ("experts[1]", Path("ft/b"))])
>>> check_apart(Path("ft"), {}, [("experts[0]", Path("ft/a"))])
Traceback (most recent call last):
...
ValueError: output 'ft' holds experts[0] 'ft/a': writing it would replace that input; choose an output apart from the experts, base, model and data
"""

from __future__ import annotations

import difflib
import math
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spsa_mix.merge.config import MergeConfig

__all__ = ["check_apart", "check_data_kinds", "check_distinct", "merge_inputs", "output_bytes", "check_free_space", "check_options", "SET_BY_MERGE",
           "check_finite_inputs", "nonfinite_tensor", "check_scores", "check_context", "CONTEXT_KEYS", "head_classes"]


def _real(path: Path) -> Path:
    """``path`` absolute, with every symbolic link and ``~`` resolved (it need not exist)."""
    return Path(os.path.realpath(path.expanduser()))


def check_apart(output: Path, beside: Mapping[str, Path], inputs: Iterable[tuple[str, Path]]) -> None:
    """Refuse an ``output`` that is, holds or lies inside one of ``inputs`` (``(label,
    path)`` pairs), or a file written ``beside`` it (``{name: path}``) that is an input.

    Paths are compared resolved (symbolic links followed), so an output reached through a
    link to an expert's folder is refused too.
    """
    out = _real(output)
    extra = {name: _real(p) for name, p in beside.items()}
    for label, path in inputs:
        real = _real(path)
        why = None
        if real == out:
            why = "is"
        elif real.is_relative_to(out):
            why = "holds"
        elif out.is_relative_to(real):
            why = "lies inside"
        if why is not None:
            raise ValueError(f"output {str(output)!r} {why} {label} {str(path)!r}: writing it would replace that "
                             "input; choose an output apart from the experts, base, model and data")
        for name, p in extra.items():
            if real == p:
                raise ValueError(f"{name} {str(beside[name])!r}, written beside output {str(output)!r}, is "
                                 f"{label}: choose another output")


def check_data_kinds(train: str, validation: str | None) -> None:
    """Refuse (``ValueError``) validation data of another kind than the training data.

    >>> check_data_kinds("t.jsonl", "v.pt")
    Traceback (most recent call last):
    ...
    ValueError: data.validation 'v.pt' holds tensors, but data.train 't.jsonl' holds text: both must be of one kind
    """
    if validation is None:
        return
    from spsa_mix.data.kinds import data_kind

    a, b = data_kind(train), data_kind(validation)
    if a != b:
        raise ValueError(f"data.validation {validation!r} holds {b}, but data.train {train!r} holds {a}: both must be "
                         "of one kind")


def check_distinct(experts: Sequence[Path]) -> None:
    """Refuse (``ValueError``) an expert named twice, compared where the paths lead.

    >>> check_distinct([Path("ft/a"), Path("ft/b"), Path("ft/./a")])
    Traceback (most recent call last):
    ...
    ValueError: experts[2] 'ft/a' is experts[0] 'ft/a' under another name: an expert named twice would be weighed twice
    """
    seen: dict[Path, int] = {}
    for i, p in enumerate(experts):
        real = _real(p)
        if real in seen:
            j = seen[real]
            raise ValueError(f"experts[{i}] {str(p)!r} is experts[{j}] {str(experts[j])!r} under another name: an "
                             "expert named twice would be weighed twice")
        seen[real] = i


def merge_inputs(cfg: MergeConfig, experts: Iterable[Path]) -> list[tuple[str, Path]]:
    """Every file or folder a merge reads, labelled as its key: the experts (patterns
    expanded), and ``base``, ``model``, ``data.train`` and ``data.validation`` where they
    name a path (a ``torchvision:Name:root`` dataset: its root)."""
    out = [(f"experts[{i}]", Path(p)) for i, p in enumerate(experts)]
    for label, value in (("base", cfg.base), ("model", cfg.model), ("data.train", cfg.data.train),
                         ("data.validation", cfg.data.validation)):
        if not isinstance(value, str) or not value:
            continue
        if value.startswith("torchvision:") and value.count(":") >= 2:
            value = value.split(":", 2)[2]
        if Path(value).expanduser().exists():
            out.append((label, Path(value)))
    return out


def output_bytes(kind: str, experts: Sequence[Path]) -> int:
    """About the size of the merged model: the first expert's weight files (``kind`` ``"hf"``
    or ``"file"``), or every adapter's (``"adapter"``: the merged adapter holds them side
    by side). The merged model keeps the experts' stored dtype."""
    from spsa_mix.blend.sources.files import hf_weight_files

    def weights(path: Path) -> int:
        if path.is_file():
            return path.stat().st_size
        if kind == "adapter":
            return sum(p.stat().st_size for p in path.glob("adapter_model.*") if p.is_file())
        return sum(f.stat().st_size for f in hf_weight_files(path, str(path))[1])

    return sum(weights(p) for p in experts) if kind == "adapter" else weights(experts[0])


def _megabytes(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def check_free_space(output: Path, needed: int) -> None:
    """Refuse (``ValueError``) an ``output`` whose file system has less than ``needed``
    bytes (and 1 MB for the recipe and the figure) free.

    >>> check_free_space(Path("."), 1)
    """
    folder = output.expanduser().absolute()
    while not folder.exists():
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if free < needed + 10**6:
        raise ValueError(f"not enough free space for the merged model: it needs about {_megabytes(needed)}, but "
                         f"{str(folder)!r} has {_megabytes(free)} free; free some space or choose another output")


# The arguments of minimize that the merge sets itself, and what sets them.
SET_BY_MERGE = {
    "objective": "the merge (the blended loss)", "k": "the experts", "method": "the config key method",
    "max_evals": "the config key budget", "seed": "the config key seed", "rng": "the config key seed",
    "vectorized": "the merge (always true)", "val_objective": "the merge (the validation loss)",
    "val_every": "the config key validate_every", "checkpoint": "the merge (<output>.state)",
    "checkpoint_every": "the config key checkpoint_every", "show_progress_bar": "the flag --no-progress",
    "callback": "no config (it is a Python function)", "initial_state": "--resume",
}


class _Flat:
    """A loss of 0 everywhere, with the gradient interfaces the gradient methods ask for:
    what :func:`check_options` runs one step of."""

    def __call__(self, x: Any) -> float:
        return 0.0

    def value_and_grad(self, x: Any) -> tuple[float, Any]:
        import numpy as np

        return 0.0, np.zeros(np.shape(x))

    def jvp(self, x: Any, tangents: Any) -> tuple[float, Any]:
        import numpy as np

        return 0.0, np.zeros(np.shape(tangents)[0])


def check_options(cfg: MergeConfig, k: int) -> None:
    """Refuse (``ValueError``) an option of ``cfg.options`` that the merge sets itself, that
    :func:`spsa_mix.minimize` does not know, or whose value the method refuses (see the
    module docstring); ``k``: the number of experts.

    >>> from spsa_mix.merge.config import MergeConfig
    >>> check_options(MergeConfig.from_dict({"experts": ["a", "b"], "data": "t.jsonl", "options": {"lrr": 0.1}}), 2)
    Traceback (most recent call last):
    ...
    ValueError: options: unknown key 'lrr' (did you mean 'lr'?); minimize takes backward_cost, betas, ...
    """
    import inspect

    from spsa_mix.core.minimize import minimize

    params = [n for n in inspect.signature(minimize).parameters if n not in SET_BY_MERGE]
    for key in cfg.options:
        if key in SET_BY_MERGE:
            raise ValueError(f"options: {key!r} is set by {SET_BY_MERGE[key]}, not by options")
        if key not in params:
            close = difflib.get_close_matches(str(key), params, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"options: unknown key {key!r}{hint}; minimize takes {', '.join(sorted(params))}")
    from spsa_mix.blend.spaces import BlendSpace

    layer = cfg.granularity == "layer"  # the number of layer groups is known once the experts are read
    shape = BlendSpace(cfg.space, k, 2 if layer else 1, cfg.scale, layer).shape
    dry = {name: value for name, value in cfg.options.items() if not (layer and name == "x0")}
    dry["maxiter"] = 1
    try:
        minimize(_Flat(), shape, method=cfg.method, seed=0, val_objective=lambda x: 0.0,
                 val_every=cfg.validate_every, **dry)
    except (TypeError, ValueError) as e:
        raise ValueError(f"options: {e}") from None


def check_finite_inputs(source: Any, names: Mapping[str, str]) -> None:
    """Refuse tensor data (:class:`~spsa_mix.data.files.TensorData`) whose floating-point
    inputs hold NaN or infinity, naming the split's file (``names``: split -> label) and
    the first such example; other data is left as it is (images and tokens are finite)."""
    import torch

    from spsa_mix.data.files import TensorData

    if not isinstance(source, TensorData):
        return
    for split, label in names.items():
        if not int(source.labels(split).shape[0]):
            continue
        inputs, _ = source.take(split, None, torch.device("cpu"))
        for key, t in (inputs.items() if isinstance(inputs, dict) else [("", inputs)]):
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                bad = int((~torch.isfinite(t.reshape(t.shape[0], -1))).any(dim=1).nonzero()[0, 0])
                raise ValueError(f"{label}: input{f' {key!r}' if key else 's'} of example {bad} hold NaN or "
                                 "infinite values")


def nonfinite_tensor(path: Path) -> str | None:
    """The name of the first floating-point tensor of the expert at ``path`` (a model or
    adapter folder, or a weight file) holding NaN or infinity, or ``None``."""
    import torch

    from spsa_mix.blend.sources.checkpoints import open_checkpoint

    if path.is_dir() and (path / "adapter_config.json").is_file():
        path = next((p for p in (path / "adapter_model.safetensors", path / "adapter_model.bin") if p.is_file()), path)
    ckpt = open_checkpoint(path, label=str(path))
    for name, info in ckpt.infos.items():
        if info.dtype.is_floating_point and not bool(torch.isfinite(ckpt.read(name)).all()):
            return name
    return None


def check_scores(uniform: float, singles: Sequence[float], inputs: Sequence[tuple[str, Path]], data: str) -> None:
    """At the first evaluation: refuse losses that are not finite, naming the input
    (``(label, path)``: the experts, the base) whose weights hold NaN or infinity, or else
    ``data`` (the data scored), which then gives it.

    >>> check_scores(1.0, [1.2, 0.9], [], "the validation data")
    >>> check_scores(float("nan"), [1.2, float("nan")], [], "the validation data 'v.pt'")
    Traceback (most recent call last):
    ...
    ValueError: the loss on the validation data 'v.pt' is not finite (nan for the uniform blend) although no expert's weights hold NaN or infinity: the data gives it (NaN or infinite inputs, or no example with a target)
    """
    if all(math.isfinite(v) for v in (uniform, *singles)):
        return
    for label, path in inputs:
        name = nonfinite_tensor(path)
        if name is not None:
            raise ValueError(f"{label} {str(path)!r} holds NaN or infinite weights (tensor {name!r}), so every blend "
                             f"scores a loss that is not finite on {data}: repair or remove it")
    what = (f"{uniform} for the uniform blend" if not math.isfinite(uniform) else
            f"{next(v for v in singles if not math.isfinite(v))} for an expert alone")
    raise ValueError(f"the loss on {data} is not finite ({what}) although no expert's weights hold NaN or infinity: "
                     "the data gives it (NaN or infinite inputs, or no example with a target)")


# config.json entries that give a model's context, in tokens (Llama, GPT-2, GPT-J, others)
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def check_context(model_dir: Path, max_length: int) -> None:
    """Refuse (``ValueError``) a ``max_length`` beyond the context of the model in
    ``model_dir`` (the first of :data:`CONTEXT_KEYS` in its ``config.json``); a config
    naming none is not checked."""
    import json

    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # read and reported by the loading
    for key in CONTEXT_KEYS:
        value = config.get(key) if isinstance(config, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            if max_length > value:
                raise ValueError(f"data.max_length is {max_length}, but the model in {str(model_dir)!r} takes at most "
                                 f"{value} tokens ({key} in its config.json): set max_length to {value} or less")
            return


def head_classes(model: str, expert: Path, labels: int | None, data: str) -> int | None:
    """The classes of the experts' head: rows of ``<head>.weight`` of architecture
    ``model`` (:func:`spsa_mix.models.head_name`) in ``expert``, so that a target with
    fewer classes (labels 0-6 of a 10-class task) builds the experts' architecture;
    ``None`` when the expert has no such tensor. Refuses (``ValueError``) ``labels``
    (the target's number of classes, from its largest label) beyond the head.
    """
    from spsa_mix.blend.sources.checkpoints import open_checkpoint
    from spsa_mix.models import head_name

    info = open_checkpoint(expert, label=str(expert)).infos.get(f"{head_name(model)}.weight")  # the index only
    if info is None or not info.shape:
        return None
    classes = int(info.shape[0])
    if labels is not None and labels > classes:
        raise ValueError(f"{data} has labels up to {labels - 1}, but the experts' head ({head_name(model)}.weight "
                         f"of {str(expert)!r}) has {classes} classes")
    return classes
