"""The configuration of ``spsa-mix merge``: a YAML file, every key also a flag.

A config names the experts and the target data, how to blend (``space``, ``granularity``,
``scale``), what to minimise (``loss``, ``method``, ``budget``) and where the merged
checkpoint goes (``output``). Relative paths in a file are relative to the file's folder;
on the command line, to the working directory. :func:`load_config` reads the file, applies
the command line's overrides and checks every key and value (unknown keys are named with
the valid ones and the closest match), all before any expert is read.

Example
-------
>>> cfg = MergeConfig.from_dict({"experts": ["a", "b"], "data": {"train": "t.jsonl"}, "output": "m"})
>>> cfg.space, cfg.budget, cfg.data.batch_size
('convex', 400, 16)
>>> MergeConfig.from_dict({"experts": ["a", "b"], "budgte": 3})
Traceback (most recent call last):
...
ValueError: unknown key 'budgte' in the config (did you mean 'budget'?); valid keys: base, budget, checkpoint_every, data, device, dtype, experts, granularity, loss, method, model, options, output, overwrite, scale, seed, select, space, validate_every
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MergeConfig", "DataConfig", "TaskConfig", "load_config", "SPACES", "GRANULARITIES", "DTYPES"]

SPACES = ("convex", "task-vectors", "lora")
GRANULARITIES = ("model", "layer")
DTYPES = ("float32", "bfloat16", "float16")


def _unknown(keys: Any, valid: Any, where: str) -> None:
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown key {key!r} in {where}{hint}; valid keys: {', '.join(sorted(valid))}")


def _positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, but got {value!r}")
    return value


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, but got {value!r}")
    return str(value)


@dataclass(frozen=True)
class DataConfig:
    """The target data (the ``data:`` block).

    Attributes
    ----------
    train:
        The data alpha is learned on: a JSONL, CSV, TSV or TXT text file (one example per
        line or row), an ImageFolder directory, a ``.pt``/``.safetensors`` file of tensors,
        a torchvision dataset as ``"torchvision:<Name>:<root>"``, or ``"package.module:factory"``.
    validation:
        Held-out data of the same kind, scored for the report (default: none).
    text_field, label_field:
        Fields (JSONL) or columns (CSV/TSV) of the text and, for sequence classification,
        of the label.
    batch_size:
        Examples per objective evaluation.
    max_length:
        Tokens kept per text example (longer ones are truncated).
    image_size:
        Resize images to this size (ImageFolder).
    mean, std:
        Per-channel image normalisation the experts were trained with (default: the
        training images' own statistics).
    tasks:
        Several targets at once (:class:`TaskConfig`, AdaMerging's multi-task setting): each
        with its own files, loss, weight and head; the keys above, given beside ``tasks``,
        are every task's defaults (``train`` and ``validation`` then belong to the tasks).
    """

    train: str | None = None
    validation: str | None = None
    text_field: str = "text"
    label_field: str | None = None
    batch_size: int = 16
    max_length: int = 128
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    tasks: tuple[TaskConfig, ...] = ()

    @classmethod
    def from_dict(cls, values: Any, where: str = "the config's data") -> DataConfig:
        if isinstance(values, str):
            values = {"train": values}
        if not isinstance(values, dict):
            raise ValueError(f"data must be a mapping (train, validation, text_field, ...) or a path, "
                             f"but got {type(values).__name__}")
        _unknown(values, [f.name for f in dataclasses.fields(cls)], where)
        out = dict(values)
        tasks = out.pop("tasks", None)
        for key in ("mean", "std"):
            if out.get(key) is not None:
                v = out[key]
                if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) for x in v):
                    raise ValueError(f"data.{key} must be a list of numbers (one per channel), but got {v!r}")
                out[key] = tuple(float(x) for x in v)
        cfg = cls(**out)
        _positive_int(cfg.batch_size, "data.batch_size")
        _positive_int(cfg.max_length, "data.max_length", 2)
        if cfg.image_size is not None:
            _positive_int(cfg.image_size, "data.image_size")
        for key in ("train", "validation", "text_field", "label_field"):
            value = getattr(cfg, key)
            if value is not None and not (isinstance(value, str) and value):
                raise ValueError(f"data.{key} must be a non-empty string, but got {value!r}")
        if tasks is not None:
            cfg = dataclasses.replace(cfg, tasks=TaskConfig.parse_all(tasks, cfg, where))
        return cfg


@dataclass(frozen=True)
class TaskConfig(DataConfig):
    """One target of a multi-task merge (an entry of ``data.tasks``; see
    ``docs/multitask.md``): its data (the keys of :class:`DataConfig`, default the values
    beside ``tasks``; ``tasks`` itself unused) and

    Attributes
    ----------
    name:
        A unique name (the folder of the task's merged model).
    loss:
        ``entropy`` (unlabeled inputs), any other loss name, or ``"package.module:callable"``;
        default the config's ``loss``.
    weight:
        Its weight in the objective (a positive number; default 1).
    head:
        The prefix (or list of prefixes) of the task's own head, not blended (e.g. ``fc``).
    head_file:
        A ``.safetensors`` / ``.pt`` file holding the head's tensors (default: the task's expert).
    expert:
        The task's expert (its head's source): an index into the experts, or one of their
        paths; default the expert at the task's position.
    """

    name: str = ""
    loss: str | None = None
    weight: float = 1.0
    head: str | tuple[str, ...] | None = None
    head_file: str | None = None
    expert: int | str | None = None

    _OWN = ("name", "loss", "weight", "head", "head_file", "expert")

    @classmethod
    def parse_all(cls, values: Any, shared: DataConfig, where: str) -> tuple[TaskConfig, ...]:
        """The ``data.tasks`` list, each entry over the ``shared`` data keys, checked.

        >>> shared = DataConfig(batch_size=8)
        >>> [t.batch_size for t in TaskConfig.parse_all([{"name": "a", "train": "x"}], shared, "data")]
        [8]
        """
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"data.tasks must be a non-empty list of tasks (name, train, loss, head, weight), "
                             f"but got {values!r:.100}")
        if shared.train is not None or shared.validation is not None:
            raise ValueError("data.train and data.validation belong to each task when data.tasks is given: "
                             "move them into the tasks")
        defaults = {f.name: getattr(shared, f.name) for f in dataclasses.fields(DataConfig)
                    if f.name not in ("train", "validation", "tasks")}
        where = where.removesuffix("'s data")  # "merge.yaml's data.tasks[0]"
        out: list[TaskConfig] = []
        for i, entry in enumerate(values):
            label = f"data.tasks[{i}]"
            if not isinstance(entry, dict):
                raise ValueError(f"{label} must be a mapping (name, train, loss, head, weight), but got {entry!r:.100}")
            _unknown(entry, [f.name for f in dataclasses.fields(cls) if f.name != "tasks"], f"{where}'s {label}")
            name = entry.get("name")
            if not isinstance(name, str) or not name or "/" in name or name.strip() != name:
                raise ValueError(f"{label}: name must be a non-empty string without '/' or surrounding spaces, "
                                 f"but got {name!r}")
            label = f"{label} ({name!r})"
            if name in {t.name for t in out}:
                raise ValueError(f"{label}: the name is used by two tasks; every task needs its own name")
            data = DataConfig.from_dict({**defaults, **{k: v for k, v in entry.items() if k not in cls._OWN}},
                                        where=f"{where}'s {label}")
            if data.train is None:
                raise ValueError(f"{label} has no data: give its train (a file, a folder or package.module:factory)")
            own = {k: entry[k] for k in cls._OWN if k in entry}
            out.append(cls(**own, **{f.name: getattr(data, f.name) for f in dataclasses.fields(DataConfig)
                                     if f.name != "tasks"}).checked(label))
        return tuple(out)

    def checked(self, label: str) -> TaskConfig:
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w > 0):
            raise ValueError(f"{label}: weight must be a positive number, but got {w!r}")
        head = self.head
        if isinstance(head, list):
            head = tuple(head)
        if head is not None and not (isinstance(head, str) and head or isinstance(head, tuple) and head
                                     and all(isinstance(h, str) and h for h in head)):
            raise ValueError(f"{label}: head must be a prefix of tensor names (e.g. fc) or a list of them, "
                             f"but got {self.head!r}")
        if self.head_file is not None and not (isinstance(self.head_file, str) and self.head_file):
            raise ValueError(f"{label}: head_file must be a path, but got {self.head_file!r}")
        if self.head_file is not None and head is None:
            raise ValueError(f"{label}: head_file needs head (the prefix of the head's tensors in the file)")
        e = self.expert
        if e is not None and (isinstance(e, bool) or not (isinstance(e, int) and e >= 0 or isinstance(e, str) and e)):
            raise ValueError(f"{label}: expert must be an index into the experts (>= 0) or one of their paths, "
                             f"but got {e!r}")
        if self.loss is not None and not (isinstance(self.loss, str) and self.loss):
            raise ValueError(f"{label}: loss must be a loss name, but got {self.loss!r}")
        return dataclasses.replace(self, weight=float(w), head=head)

    def data_config(self) -> DataConfig:
        """The task's data as a :class:`DataConfig` (what one target's merge reads)."""
        return DataConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DataConfig) if f.name != "tasks"})


@dataclass(frozen=True)
class MergeConfig:
    """Everything ``spsa-mix merge`` does (see the module docstring and README).

    Attributes
    ----------
    model:
        The architecture: a Hugging Face directory, a name of :func:`spsa_mix.models.available_models`
        (plain ``.pt``/``.safetensors`` experts), or ``"package.module:factory"``. Default: the
        first expert (a Hugging Face directory) or ``base``.
    experts:
        Paths or glob patterns: Hugging Face directories, PEFT adapter directories
        (``space: lora``), or ``.pt``/``.safetensors`` state dicts.
    base:
        The base model for ``task-vectors`` and ``lora``.
    space, granularity, scale:
        How to blend (:class:`spsa_mix.blend.BlendedObjective`): ``convex``, ``task-vectors``
        or ``lora``; one alpha (``model``) or one per layer group (``layer``); the task
        vectors' scale, a number or ``"learned"``.
    data:
        :class:`DataConfig`.
    loss:
        ``cross-entropy``, ``causal-lm``, ``entropy`` or ``"package.module:callable"``;
        default: ``causal-lm`` for a causal language model, else ``cross-entropy``.
    method, budget, seed, options:
        :func:`spsa_mix.minimize`'s ``method``, ``max_evals``, ``seed`` and any other of its
        keyword arguments (``lr``, ``m``, ...).
    device, dtype:
        Where the blend runs (``auto``: CUDA when present) and in which precision (default:
        the experts' stored dtype).
    output, overwrite:
        The merged checkpoint's folder (``.safetensors`` file for plain experts); an
        existing non-empty one is refused unless ``overwrite``.
    checkpoint_every, validate_every:
        Steps between writes of the run's state (and at Ctrl-C), and between validation
        evaluations.
    select:
        Which blend is written: ``best`` (default), the one of the learned blend, the
        uniform blend and the best single expert with the lowest validation loss (so the
        output is never worse, on the validation data, than a candidate the run scored); or
        ``learned``, the search's answer whatever its score.
    """

    experts: tuple[str, ...] = ()
    model: str | None = None
    base: str | None = None
    space: str = "convex"
    granularity: str = "model"
    scale: float | str = 1.0
    data: DataConfig = field(default_factory=DataConfig)
    loss: str | None = None
    method: str = "spsa"
    budget: int = 400
    seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str | None = None
    output: str = "merged"
    overwrite: bool = False
    checkpoint_every: int = 10
    validate_every: int = 10
    select: str = "best"

    @classmethod
    def keys(cls) -> list[str]:
        """The valid top-level keys."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Any, *, where: str = "the config") -> MergeConfig:
        """Build and check a config from a mapping (paths as they are)."""
        if not isinstance(values, dict):
            raise ValueError(f"{where} must be a mapping of keys to values, but got {type(values).__name__}")
        _unknown(values, cls.keys(), where)
        out = dict(values)
        out["data"] = DataConfig.from_dict(out.get("data", {}), where=f"{where}'s data")
        experts = out.get("experts", ())
        if isinstance(experts, str):
            experts = [experts]
        if not isinstance(experts, (list, tuple)) or not all(isinstance(e, str) and e for e in experts):
            raise ValueError(f"experts must be a list of paths or glob patterns, but got {experts!r}")
        out["experts"] = tuple(experts)
        if out.get("options") is None:
            out["options"] = {}
        cfg = cls(**out)
        cfg.check()
        return cfg

    def check(self) -> None:
        """Check every value (not the files: :meth:`check_files`)."""
        _choice(self.space, "space", SPACES)
        _choice(self.granularity, "granularity", GRANULARITIES)
        if self.dtype is not None:
            _choice(self.dtype, "dtype", DTYPES)
        if isinstance(self.scale, bool) or not (self.scale == "learned" or
                                                (isinstance(self.scale, (int, float)) and self.scale > 0)):
            raise ValueError(f"scale must be a positive number or 'learned', but got {self.scale!r}")
        if self.space != "task-vectors" and self.scale != 1.0:
            raise ValueError(f"scale applies to space 'task-vectors', but got scale={self.scale!r} with "
                             f"space={self.space!r}")
        if self.space in ("task-vectors", "lora") and not self.base:
            raise ValueError(f"space {self.space!r} needs a base model (base: path/to/base)")
        if len(self.experts) == 0:
            raise ValueError("experts must name at least two experts (paths or glob patterns)")
        _positive_int(self.budget, "budget")
        _positive_int(self.seed, "seed", 0)
        _positive_int(self.checkpoint_every, "checkpoint_every")
        _positive_int(self.validate_every, "validate_every")
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method must be a method name of spsa_mix.minimize, but got {self.method!r}")
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a mapping of minimize's keyword arguments, but got {self.options!r}")
        if not isinstance(self.output, str) or not self.output:
            raise ValueError(f"output must be a path, but got {self.output!r}")
        _choice(self.select, "select", ("best", "learned"))
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"overwrite must be true or false, but got {self.overwrite!r}")
        if self.data.train is None and not self.data.tasks:
            raise ValueError("data.train must name the target data (a file, a folder or package.module:factory)")

    def expert_paths(self) -> list[Path]:
        """The experts' paths, glob patterns expanded (sorted), in the order given.

        Raises ``ValueError`` naming a path that does not exist or a pattern that matches nothing.
        """
        paths: list[Path] = []
        for item in self.experts:
            if glob.has_magic(item):
                found = sorted(glob.glob(item))
                if not found:
                    raise ValueError(f"experts: the pattern {item!r} matches no file or folder")
                paths += [Path(f) for f in found]
            else:
                if not Path(item).exists():
                    raise ValueError(f"experts: no such file or folder {item!r}")
                paths.append(Path(item))
        if len(paths) < 2:
            raise ValueError(f"experts must name at least two experts, but {list(self.experts)} gives {len(paths)}")
        return paths

    def check_files(self) -> None:
        """Every named file or folder exists (experts, base, model folder, data)."""
        self.expert_paths()
        named = [("base", self.base), ("data.train", self.data.train), ("data.validation", self.data.validation)]
        for i, t in enumerate(self.data.tasks):
            named += [(f"data.tasks[{i}] ({t.name!r}).{key}", getattr(t, key)) for key in ("train", "validation")]
            if t.head_file is not None and not Path(t.head_file).exists():
                raise ValueError(f"data.tasks[{i}] ({t.name!r}).head_file: no such file {t.head_file!r}")
        for name, value in named:
            if value is not None and not _is_reference(value) and not Path(value).exists():
                raise ValueError(f"{name}: no such file or folder {value!r}")
        if self.model is not None and _looks_like_path(self.model, Path(".")) and not Path(self.model).exists():
            raise ValueError(f"model: no such folder {self.model!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every key."""
        out = dataclasses.asdict(self)
        out["experts"] = list(self.experts)
        if not self.data.tasks:
            del out["data"]["tasks"]  # the digest of a one-target config stays what it was
        for task in out["data"].get("tasks", ()):
            del task["tasks"]
        return out

    def digest(self) -> str:
        """SHA-256 of the config (every key, sorted): names the run in its recipe and state."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True, default=str).encode()).hexdigest()

    def state_path(self) -> Path:
        """Where the run's state is kept: ``<output>.state`` beside the output."""
        out = Path(self.output)
        return out.with_name(out.name + ".state")


def _is_reference(value: str) -> bool:
    """``package.module:factory`` or ``torchvision:Name:root`` (not a path)."""
    head, sep, tail = value.partition(":")
    return bool(sep) and not Path(value).exists() and (head == "torchvision" or "." in head or head.isidentifier()) \
        and not (len(head) == 1 and os.name == "nt")


def _looks_like_path(value: str, base: Path) -> bool:
    """A folder (``./base``, ``base/``, an existing path), not an architecture name."""
    return ("/" in value or os.sep in value or value.startswith(".") or (base / value).exists()) \
        and not _is_reference(value)


def load_config(path: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None) -> MergeConfig:
    """Read a YAML config (optional; its relative paths are relative to its folder), apply
    ``overrides`` (the command line's keys, paths relative to the working directory; a
    ``data`` mapping merges into the file's ``data``), check the result.

    Raises
    ------
    ValueError
        For a missing or unreadable file, YAML that is not a mapping, an unknown key (named,
        with the valid keys and the closest match), or a bad value.
    """
    values: dict[str, Any] = {}
    where = "the command line"
    if path is not None:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise ValueError(f"no such config file {str(p)!r}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read the config {str(p)!r}: {e}") from None
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise ValueError(f"the config {str(p)!r} must be a mapping of keys to values, but holds a "
                             f"{type(loaded).__name__}")
        _unknown(loaded, MergeConfig.keys(), p.name)
        if isinstance(loaded.get("data"), dict):
            _unknown(loaded["data"], [f.name for f in dataclasses.fields(DataConfig)], f"{p.name}'s data")
        values = _relative_to(loaded, p.parent)
        where = p.name if not overrides else f"{p.name} and the command line"
    for key, value in (overrides or {}).items():
        if key == "data":
            data = values.get("data") or {}
            data = {"train": data} if isinstance(data, str) else dict(data)
            data.update({k: v for k, v in value.items() if v is not None})
            values["data"] = data
        elif value is not None:
            values[key] = value
    return MergeConfig.from_dict(values, where=where)


def _relative_to(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """A file's values with its relative paths made relative to ``root`` (its folder);
    ``package.module:factory`` names and architecture names left as they are."""

    def fix(value: Any) -> Any:
        if not isinstance(value, str) or _is_reference(value) or Path(value).is_absolute():
            return value
        return str(root / value)

    out = dict(values)
    for key in ("base", "output"):
        out[key] = fix(out.get(key)) if key in out else out.get(key)
        if out[key] is None:
            del out[key]
    if isinstance(out.get("experts"), (list, tuple)):
        out["experts"] = [fix(e) for e in out["experts"]]
    elif isinstance(out.get("experts"), str):
        out["experts"] = [fix(out["experts"])]
    if isinstance(out.get("model"), str) and _looks_like_path(out["model"], root):
        out["model"] = fix(out["model"])
    data = out.get("data")
    if isinstance(data, str):
        out["data"] = {"train": fix(data)}
    elif isinstance(data, dict):
        out["data"] = {**data, **{k: fix(data[k]) for k in ("train", "validation") if k in data}}
        if isinstance(data.get("tasks"), list):
            out["data"]["tasks"] = [{**t, **{k: fix(t[k]) for k in ("train", "validation", "head_file", "expert")
                                             if isinstance(t.get(k), str)}}
                                    if isinstance(t, dict) else t for t in data["tasks"]]
    return out
