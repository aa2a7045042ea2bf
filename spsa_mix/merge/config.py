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
ValueError: unknown key 'budgte' in the config (did you mean 'budget'?); valid keys: base, baselines, budget, checkpoint_every, consensus, data, density, device, dtype, epsilon, experts, gamma, granularity, loss, max_memory, memory, mergekit, method, model, normalize, options, out_shard_size, output, overwrite, rescale, scale, seed, select, space, strict_base, threads, validate_every
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spsa_mix.cpu_threads import check_threads

__all__ = ["MergeConfig", "DataConfig", "TaskConfig", "load_config", "SPACES", "GRANULARITIES", "DTYPES", "MEMORY_MODES"]

SPACES = ("convex", "task-vectors", "lora", "ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties",
          "della", "della_linear")  # spsa_mix.blend.spaces.SPACES, without importing PyTorch
GRANULARITIES = ("model", "layer")
DTYPES = ("float32", "bfloat16", "float16")
MEMORY_MODES = ("auto", "resident", "streamed")  # spsa_mix.blend.held.memory (listed here: no PyTorch import)


def _unknown(keys: Any, valid: Any, where: str) -> None:
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown key {key!r} in {where}{hint}; valid keys: {', '.join(sorted(valid))}")


def _check_strings(cfg: Any) -> None:
    """The keys that hold a name or a path hold a non-empty string (or nothing)."""
    for key in ("model", "base", "loss", "device"):
        value = getattr(cfg, key)
        if value is not None and not (isinstance(value, str) and value):
            raise ValueError(f"{key} must be a non-empty string (a path or a name), but got {value!r}")


def _check_data_value(value: Any, where: str) -> None:
    """``data:`` is a mapping, a path, or absent."""
    if value is not None and not isinstance(value, (str, dict)):
        raise ValueError(f"data in {where} must be a mapping (train, validation, text_field, ...) or a path, but got "
                         f"{type(value).__name__} {value!r:.60}")


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
        How to blend (:class:`spsa_mix.blend.BlendedObjective`): ``convex``, ``task-vectors``,
        ``lora`` or one of mergekit's task-vector methods (``ties``, ``dare_ties``,
        ``dare_linear``, ``breadcrumbs``, ``breadcrumbs_ties``, ``della``,
        ``della_linear``); one alpha (``model``) or one per layer group (``layer``); the task
        vectors' scale (mergekit's ``lambda``), a number or ``"learned"``.
    density, gamma, epsilon, normalize, rescale, consensus:
        The method space's parameters (:mod:`spsa_mix.merge.methods`; default mergekit's).
    baselines:
        The fixed merges ``select: best`` scores too: ``auto`` (default: every one that
        applies), ``none``, or a list (:data:`spsa_mix.merge.methods.BASELINES`).
    mergekit:
        A mergekit config whose models, base, method, parameters, weights and dtype become
        the space and the starting weights (:mod:`spsa_mix.merge.mergekit`).
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
    threads:
        PyTorch's CPU threads during the merge: ``auto`` (default) chooses them from the work
        of one forward and the free cores (:func:`spsa_mix.cpu_threads.choose_threads`: one
        thread for a small model, whatever the machine), or a number.
    output, overwrite:
        The merged checkpoint's folder (``.safetensors`` file for plain experts); an
        existing non-empty one is refused unless ``overwrite``.
    checkpoint_every, validate_every:
        Steps between writes of the run's state (and at Ctrl-C), and between validation
        evaluations.
    memory, max_memory:
        How the experts are held (:mod:`spsa_mix.blend.held.memory`): ``resident`` (stacked
        on the device), ``streamed`` (memory-mapped from their files and blended module by
        module during each forward: memory independent of the number of experts), or
        ``auto`` (default): resident when the stack fits in half of ``max_memory`` (bytes or
        ``"20GB"``; default 90 % of the memory free), else streamed. The run says what it chose.
    out_shard_size:
        The merged checkpoint's largest safetensors shard (default ``"5GB"``, as
        transformers and mergekit's ``--out-shard-size``); shards are written tensor by tensor.
    select:
        Which blend is written: ``best`` (default), the one of the learned blend, the
        uniform blend and the best single expert with the lowest validation loss (so the
        output is never worse, on the validation data, than a candidate the run scored); or
        ``learned``, the search's answer whatever its score.
    strict_base:
        LoRA: refuse an adapter whose recorded ``base_model_name_or_path`` names neither
        ``base`` (its folder's name) nor a folder of this machine holding the same model
        (default ``true``); ``false`` for the same model under another name.
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
    strict_base: bool = True
    density: Any = None
    gamma: Any = None
    epsilon: Any = None
    normalize: bool | None = None
    rescale: bool | None = None
    consensus: str = "fixed"
    baselines: Any = "auto"
    mergekit: str | None = None
    threads: int | str = "auto"
    memory: str = "auto"
    max_memory: int | str | None = None
    out_shard_size: int | str = "5GB"

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
        _check_strings(self)
        _choice(self.space, "space", SPACES)
        _choice(self.granularity, "granularity", GRANULARITIES)
        if self.dtype is not None:
            _choice(self.dtype, "dtype", DTYPES)
        if isinstance(self.scale, bool) or not (self.scale == "learned" or
                                                (isinstance(self.scale, (int, float)) and self.scale > 0)):
            raise ValueError(f"scale must be a positive number or 'learned', but got {self.scale!r}")
        if self.space in ("convex", "lora") and self.scale != 1.0:
            raise ValueError(f"scale applies to space 'task-vectors' and the method spaces, but got "
                             f"scale={self.scale!r} with space={self.space!r}")
        if self.space != "convex" and not self.base:
            raise ValueError(f"space {self.space!r} needs a base model (base: path/to/base)")
        from spsa_mix.merge.methods import check_baselines, check_method_keys

        check_method_keys(self.space, self.to_dict(), self.consensus)
        check_baselines(self.baselines)
        if self.mergekit is not None and not (isinstance(self.mergekit, str) and self.mergekit):
            raise ValueError(f"mergekit must be the path of a mergekit config, but got {self.mergekit!r}")
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
        check_threads(self.threads)
        _choice(self.memory, "memory", MEMORY_MODES)
        from spsa_mix.io import parse_size

        if self.max_memory is not None:
            parse_size(self.max_memory, "max_memory")
        parse_size(self.out_shard_size, "out_shard_size")
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"overwrite must be true or false, but got {self.overwrite!r}")
        if not isinstance(self.strict_base, bool):
            raise ValueError(f"strict_base must be true or false, but got {self.strict_base!r}")
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
                    raise ValueError(f"experts: no such file or folder {item!r}{hub_hint(item)}")
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
                raise ValueError(f"{name}: no such file or folder {value!r}{hub_hint(value) if name == 'base' else ''}")
        if self.model is not None and _looks_like_path(self.model, Path(".")) and not Path(self.model).exists():
            raise ValueError(f"model: no such folder {self.model!r}{hub_hint(self.model)}")

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


_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def hub_hint(value: str) -> str:
    """A hint for a missing path that may be a Hugging Face hub id (``user/model``, the
    folder ``user`` missing too; relative paths of a config file are already joined to its
    folder): merges read local files only, so download it first. ``""`` otherwise.

    >>> hub_hint("meta-llama/Llama-3.2-1B").split(":")[0]
    "; 'meta-llama/Llama-3.2-1B' looks like a Hugging Face hub id"
    >>> hub_hint("./weights/a.safetensors")
    ''
    """
    p = Path(value)
    if p.suffix in _WEIGHT_SUFFIXES or p.parent.exists() or len(p.parts) < 2 or value.endswith("/"):
        return ""
    if not all(re.fullmatch(r"[A-Za-z0-9][\w.-]*", part) for part in p.parts[-2:]):
        return ""
    hub_id = f"{p.parts[-2]}/{p.parts[-1]}"
    return (f"; {hub_id!r} looks like a Hugging Face hub id: spsa-mix merge reads local files only, so download "
            f"it first (huggingface-cli download {hub_id} --local-dir {p.parts[-2]}_{p.parts[-1]}) and name that folder")


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
        p = Path(path)
        loaded = _read_yaml(p)
        loaded = {} if loaded is None else loaded
        if not isinstance(loaded, dict):
            raise ValueError(f"the config {str(p)!r} must be a mapping of keys to values, but holds a "
                             f"{type(loaded).__name__}")
        _unknown(loaded, MergeConfig.keys(), p.name)
        _check_data_value(loaded.get("data"), p.name)
        if isinstance(loaded.get("data"), dict):
            _unknown(loaded["data"], [f.name for f in dataclasses.fields(DataConfig)], f"{p.name}'s data")
        values = _relative_to(_expand_paths(loaded), p.parent)
        where = p.name if not overrides else f"{p.name} and the command line"
    for key, value in _expand_paths(overrides or {}).items():
        if key == "data":
            data = values.get("data") or {}
            data = {"train": data} if isinstance(data, str) else dict(data)
            data.update({k: v for k, v in value.items() if v is not None})
            values["data"] = data
        elif value is not None:
            values[key] = value
    if isinstance(values.get("mergekit"), str):  # a mergekit config: the keys the file and the flags leave unset
        from spsa_mix.merge.mergekit import read_config

        imported = read_config(values["mergekit"])
        imported.pop("start")  # the starting weights: read again by run_merge
        for key, value in imported.items():
            values.setdefault(key, value)
    return MergeConfig.from_dict(values, where=where)


def _relative_to(values: dict[str, Any], root: Path) -> dict[str, Any]:
    """A file's values with its relative paths made relative to ``root`` (its folder);
    ``package.module:factory`` names and architecture names left as they are."""

    def fix(value: Any) -> Any:
        if not isinstance(value, str) or not value or _is_reference(value) or Path(value).is_absolute():
            return value  # an empty path is refused by the checks, not taken for the config's folder
        return str(root / value)

    out = dict(values)
    for key in ("base", "output", "mergekit"):
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


MAX_CONFIG_VALUES = 100_000  # values of a config once its YAML aliases are expanded (a real one holds dozens)


def _read_yaml(p: Path) -> Any:
    """The YAML of the config file ``p``, refusing (``ValueError`` naming the file): a
    folder, a missing or unreadable file, text that is not UTF-8, a key given twice in one
    mapping, and more than :data:`MAX_CONFIG_VALUES` values once aliases are expanded (a
    663-byte "billion laughs" file would otherwise take gigabytes when the config is
    hashed)."""
    import yaml

    if p.is_dir():
        raise ValueError(f"{str(p)!r} is a folder, not a config file (a YAML file such as merge.yaml)")
    if not p.is_file():
        raise ValueError(f"no such config file {str(p)!r}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read the config {str(p)!r}: it is not UTF-8 text (byte {e.start}: "
                         f"{e.reason})") from None
    except OSError as e:
        raise ValueError(f"cannot read the config {str(p)!r}: {e.strerror or e}") from None
    try:
        loaded = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506  # a SafeLoader: no tag runs code
    except yaml.YAMLError as e:
        raise ValueError(f"cannot read the config {str(p)!r}: {' '.join(str(e).split())}") from None
    _check_expanded_size(loaded, p)
    return loaded


def _unique_key_loader() -> Any:
    """``yaml.SafeLoader`` refusing a key given twice in one mapping (YAML keeps the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(None, None, f"the key {key!r} is given twice",
                                                            key_node.start_mark)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _check_expanded_size(value: Any, p: Path) -> None:
    """Count the values of ``value`` as if its shared parts (YAML aliases) were copied,
    stopping at :data:`MAX_CONFIG_VALUES` (so the count itself stays bounded)."""
    stack, n = [value], 0
    while stack:
        v = stack.pop()
        n += 1
        if n > MAX_CONFIG_VALUES:
            raise ValueError(f"the config {str(p)!r} holds more than {MAX_CONFIG_VALUES} values once its aliases "
                             "(*name) are expanded: refused (a YAML alias bomb?)")
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, (list, tuple)):
            stack.extend(v)


def _expand_paths(values: dict[str, Any]) -> dict[str, Any]:
    """``~`` and environment variables (``$HOME``, ``${DATA}``) expanded in the keys that
    hold paths: ``base``, ``model``, ``output``, ``experts`` and ``data``'s ``train`` and
    ``validation``.

    >>> os.environ["SPSA_MIX_DOC"] = "/d"
    >>> _expand_paths({"output": "$SPSA_MIX_DOC/m", "data": {"train": "~/t.jsonl"}, "seed": 1})["output"]
    '/d/m'
    """

    def expand(value: Any) -> Any:
        if isinstance(value, str) and ("~" in value or "$" in value):
            return os.path.expandvars(os.path.expanduser(value))
        if isinstance(value, list):
            return [expand(v) for v in value]
        return value

    out = dict(values)
    for key in ("base", "model", "output", "experts"):
        if key in out:
            out[key] = expand(out[key])
    data = out.get("data")
    if isinstance(data, str):
        out["data"] = expand(data)
    elif isinstance(data, dict):
        out["data"] = {k: expand(v) if k in ("train", "validation") else v for k, v in data.items()}
    return out
