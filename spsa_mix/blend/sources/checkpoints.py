"""Read an expert's tensors lazily: an index of names, shapes and dtypes, then one tensor at a time.

:func:`open_checkpoint` turns any expert source into a :class:`Checkpoint`:

* an ``nn.Module`` (its ``state_dict``) or a mapping of names to tensors;
* a ``.safetensors`` file: only its header (names, dtypes, shapes, byte offsets) is read
  when it is opened; each tensor is then read on request straight from the file into its
  destination (:meth:`Checkpoint.read_into`, no copy of the whole file), or viewed where it
  lies in a private memory map of the file (:meth:`Checkpoint.mapped`: the operating
  system's page cache holds the bytes, the process copies none);
* a PyTorch file ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` holding a state dict, read with
  ``torch.load(..., weights_only=True, mmap=True)`` (memory-mapped: only what is read is
  paged in); a checkpoint dict with a ``"state_dict"``, ``"model_state_dict"`` or
  ``"model"`` entry is unwrapped;
* a Hugging Face model directory: ``model.safetensors``, a sharded
  ``model.safetensors.index.json``, ``pytorch_model.bin`` or a sharded
  ``pytorch_model.bin.index.json`` (every shard the index names must exist).

Names saved from ``DataParallel`` (all starting with ``module.``) can lose that prefix
(:meth:`Checkpoint.strip_prefix`; the stack does it when the architecture has no such
names). Every tensor keeps its stored dtype (bf16 stays bf16). The index is all that the compatibility
checks need, so experts are checked against each other before any weight is read.

Example
-------
>>> import torch
>>> ckpt = open_checkpoint({"w": torch.ones(2, 3)}, label="experts[0]")
>>> list(ckpt.infos), ckpt.infos["w"]
(['w'], TensorInfo(shape=(2, 3), dtype=torch.float32))
>>> ckpt.read("w").sum().item()
6.0
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from spsa_mix.blend.sources.files import HF_WEIGHT_FILES, hf_weight_files, is_hf_directory

__all__ = [
    "TensorInfo",
    "Checkpoint",
    "open_checkpoint",
    "read_safetensors_header",
    "is_hf_directory",
    "hf_weight_files",
    "TORCH_SUFFIXES",
    "SAFETENSORS_DTYPES",
]

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
DATA_PARALLEL_PREFIX = "module."
# The safetensors format's dtype codes (https://github.com/huggingface/safetensors, "Format").
SAFETENSORS_DTYPES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
# Hugging Face's weight files in a model directory, in the order transformers prefers them.

@dataclass(frozen=True)
class TensorInfo:
    """Shape and stored dtype of one tensor (what the compatibility checks compare)."""

    shape: tuple[int, ...]
    dtype: torch.dtype

    def is_floating_point(self) -> bool:
        return self.dtype.is_floating_point

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _info(t: torch.Tensor) -> TensorInfo:
    return TensorInfo(tuple(t.shape), t.dtype)


class Checkpoint:
    """The tensors of one expert: ``infos`` (name -> :class:`TensorInfo`, in stored order)
    and :meth:`read` / :meth:`read_into` for one tensor at a time. ``label`` names the
    expert in errors (``"experts[2]"``)."""

    def __init__(self, label: str, infos: dict[str, TensorInfo]) -> None:
        self.label = label
        self.infos = infos
        self._stored = {n: n for n in infos}  # public name -> name in the source

    def read(self, name: str) -> torch.Tensor:
        """Tensor ``name`` on the CPU, in its stored dtype."""
        raise NotImplementedError

    def read_into(self, name: str, out: torch.Tensor) -> None:
        """Copy tensor ``name`` into ``out`` (same number of elements; cast to ``out``'s dtype)."""
        out.copy_(self.read(name).reshape(out.shape))

    def mapped(self, name: str) -> torch.Tensor:
        """Tensor ``name`` on the CPU, in its stored dtype, without a copy where the source
        allows it: a view of a memory-mapped file (safetensors; a torch file loaded with
        ``mmap=True``) or the tensor itself (modules, state dicts). Read-only by contract:
        writing to it changes no file (safetensors maps are private) but may change an
        expert's own tensor.

        >>> t = torch.ones(2)
        >>> open_checkpoint({"w": t}, label="experts[0]").mapped("w").data_ptr() == t.data_ptr()
        True
        """
        return self.read(name)

    def strip_prefix(self, prefix: str) -> bool:
        """Drop ``prefix`` from every name if every name has it (e.g. ``"module."``, saved
        from ``DataParallel``); returns whether it did.

        >>> ckpt = open_checkpoint({"module.w": torch.ones(1)}, label="experts[0]")
        >>> ckpt.strip_prefix("module."), list(ckpt.infos)
        (True, ['w'])
        """
        names = list(self.infos)
        if not names or not all(n.startswith(prefix) for n in names):
            return False
        cut = len(prefix)
        self.infos = {n[cut:]: info for n, info in self.infos.items()}
        self._stored = {n[cut:]: stored for n, stored in self._stored.items()}
        return True

    def _key(self, name: str) -> str:
        if name not in self._stored:
            raise KeyError(f"{self.label} has no tensor {name!r}")
        return self._stored[name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r}, {len(self.infos)} tensors)"


class _TensorsCheckpoint(Checkpoint):
    """Tensors already in memory (a module's state dict, a mapping, a memory-mapped torch file)."""

    def __init__(self, label: str, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__(label, {n: _info(t) for n, t in tensors.items()})
        self._tensors = tensors

    def read(self, name: str) -> torch.Tensor:
        return self._tensors[self._key(name)].detach()

    def mapped(self, name: str) -> torch.Tensor:
        return self.read(name)


@dataclass(frozen=True)
class _Entry:
    file: Path
    begin: int  # absolute byte offset in the file
    stop: int


class _SafetensorsCheckpoint(Checkpoint):
    """One or several ``.safetensors`` files, read tensor by tensor with plain file reads."""

    def __init__(self, label: str, infos: dict[str, TensorInfo], entries: dict[str, _Entry]) -> None:
        super().__init__(label, infos)
        self._entries = entries
        self._maps: dict[Path, mmap.mmap] = {}

    def mapped(self, name: str) -> torch.Tensor:
        entry = self._entries[self._key(name)]
        info = self.infos[name]
        if not info.numel:
            return torch.empty(info.shape, dtype=info.dtype)
        if entry.file not in self._maps:
            with open(entry.file, "rb") as f:  # the map outlives the file object
                # ACCESS_COPY: a private, writable map (torch.frombuffer wants a writable buffer);
                # pages are read from the page cache on first touch, written never.
                self._maps[entry.file] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        flat = torch.frombuffer(self._maps[entry.file], dtype=info.dtype, count=info.numel, offset=entry.begin)
        if entry.begin % itemsize:  # a misaligned tensor (never in files torch or safetensors write): a copy
            flat = flat.clone()
        return flat.view(info.shape)

    def _readinto(self, name: str, dest: torch.Tensor) -> None:
        entry = self._entries[self._key(name)]
        view = dest.reshape(-1).view(torch.uint8).numpy()  # shares dest's memory
        with open(entry.file, "rb") as f:
            f.seek(entry.begin)
            got = f.readinto(memoryview(view))  # type: ignore[arg-type]  # an ndarray is a buffer
        if got != entry.stop - entry.begin:
            raise ValueError(f"{self.label}: {str(entry.file)!r} ends inside tensor {name!r} (truncated file)")

    def read(self, name: str) -> torch.Tensor:
        self._key(name)
        info = self.infos[name]
        out = torch.empty(info.shape, dtype=info.dtype)
        if info.numel:
            self._readinto(name, out)
        return out

    def read_into(self, name: str, out: torch.Tensor) -> None:
        self._key(name)
        info = self.infos[name]
        if (out.device.type == "cpu" and out.dtype == info.dtype and out.is_contiguous()
                and out.numel() == info.numel and info.numel):
            self._readinto(name, out)  # straight from the file into the destination
        else:
            super().read_into(name, out)


def read_safetensors_header(path: Path, label: str) -> tuple[dict[str, TensorInfo], dict[str, _Entry], dict[str, str]]:
    """Names, shapes, dtypes and byte ranges of a ``.safetensors`` file, and its metadata,
    from its header alone (an 8-byte little-endian length, then that many bytes of JSON)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{label}: {str(path)!r} is not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise ValueError(f"{label}: {str(path)!r} is not a safetensors file (header length {n} > file size)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise ValueError(f"{label}: {str(path)!r} is not a safetensors file ({e})") from None
    _check_header(header, path, label)
    metadata = header.pop("__metadata__", None) or {}
    infos: dict[str, TensorInfo] = {}
    entries: dict[str, _Entry] = {}
    start = 8 + n
    for name, spec in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        code = spec["dtype"]
        if code not in SAFETENSORS_DTYPES:
            raise ValueError(f"{label}: tensor {name!r} in {str(path)!r} has dtype {code!r}, which this "
                             f"reader does not support (supported: {sorted(SAFETENSORS_DTYPES)})")
        info = TensorInfo(tuple(int(s) for s in spec["shape"]), SAFETENSORS_DTYPES[code])
        begin, stop = (int(v) for v in spec["data_offsets"])
        itemsize = torch.empty((), dtype=info.dtype).element_size()
        if stop - begin != info.numel * itemsize or start + stop > size:
            raise ValueError(f"{label}: tensor {name!r} in {str(path)!r} has inconsistent byte offsets "
                             f"{[begin, stop]} for shape {info.shape} ({code}) in a file of {size} bytes")
        infos[name] = info
        entries[name] = _Entry(path, start + begin, start + stop)
    return infos, entries, metadata


def _check_header(header: Any, path: Path, label: str) -> None:
    """The header's JSON is what the safetensors format says: an object mapping each name to
    ``{"dtype": str, "shape": [int >= 0, ...], "data_offsets": [begin, stop]}`` (and an
    optional ``"__metadata__"`` object); else ``ValueError`` naming the entry."""

    def bad(why: str) -> ValueError:
        return ValueError(f"{label}: {str(path)!r} is not a safetensors file ({why})")

    if not isinstance(header, dict):
        raise bad(f"its header is a JSON {type(header).__name__}, not an object")
    if not isinstance(header.get("__metadata__") or {}, dict):
        raise bad("its __metadata__ is not an object")
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(spec, dict):
            raise bad(f"the entry of tensor {name!r} is a {type(spec).__name__}, not an object")
        missing = [k for k in ("dtype", "shape", "data_offsets") if k not in spec]
        if missing:
            raise bad(f"the entry of tensor {name!r} has no {', '.join(missing)}")
        shape, offsets = spec["shape"], spec["data_offsets"]
        if not isinstance(spec["dtype"], str):
            raise bad(f"tensor {name!r} has dtype {spec['dtype']!r}, not a name")
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise bad(f"tensor {name!r} has shape {shape!r}, not a list of sizes")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) and not isinstance(
                o, bool) and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
            raise bad(f"tensor {name!r} has data_offsets {offsets!r}, not [begin, end]")


def _unwrap(obj: Any, label: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"{label} must hold a mapping of names to tensors, but holds a {type(obj).__name__}")
    if not all(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in CHECKPOINT_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _unwrap(obj[key], label)
        name, value = next((k, v) for k, v in obj.items() if not isinstance(v, torch.Tensor))
        raise ValueError(
            f"{label} must map names to tensors, but entry {name!r} is a {type(value).__name__} "
            f"(checkpoints are unwrapped from the keys {list(CHECKPOINT_KEYS)})"
        )
    return dict(obj)


def _torch_load(path: Path, label: str) -> dict[str, torch.Tensor]:
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            loaded = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except Exception as e:
        raise ValueError(
            f"{label}: torch.load({str(path)!r}, weights_only=True) failed ({type(e).__name__}): the "
            "file holds more than tensors (e.g. a pickled module); save model.state_dict() instead"
        ) from e
    return _unwrap(loaded, label)


def _open_safetensors(files: list[Path], label: str) -> Checkpoint:
    infos: dict[str, TensorInfo] = {}
    entries: dict[str, _Entry] = {}
    for file in files:
        i, e, _ = read_safetensors_header(file, label)
        infos.update(i)
        entries.update(e)
    return _SafetensorsCheckpoint(label, infos, entries)


def open_checkpoint(source: Any, *, label: str) -> Checkpoint:
    """A :class:`Checkpoint` for one expert source (see the module docstring).

    Raises
    ------
    ValueError
        For a missing file, an unknown suffix, a directory without weights, a sharded
        index naming a missing file, a torch file that ``weights_only=True`` cannot read
        (a pickled module: save its ``state_dict()`` instead), or non-tensor values.

    Examples
    --------
    >>> open_checkpoint("missing.pt", label="experts[3]")
    Traceback (most recent call last):
    ...
    ValueError: experts[3]: no such file 'missing.pt'
    """
    if isinstance(source, Checkpoint):
        return source
    if isinstance(source, nn.Module):
        return _TensorsCheckpoint(label, dict(source.state_dict()))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            kind, files = hf_weight_files(path, label)
            if kind.startswith("model.safetensors"):
                return _open_safetensors(files, label)
            tensors: dict[str, torch.Tensor] = {}
            for file in files:
                tensors.update(_torch_load(file, label))
            return _TensorsCheckpoint(label, tensors)
        if not path.is_file():
            raise ValueError(f"{label}: no such file {str(source)!r}")
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return _open_safetensors([path], label)
        if suffix in TORCH_SUFFIXES:
            return _TensorsCheckpoint(label, _torch_load(path, label))
        raise ValueError(
            f"{label}: unknown checkpoint suffix {path.suffix!r} in {str(source)!r}; "
            f"expected .safetensors or one of {list(TORCH_SUFFIXES)}"
        )
    if isinstance(source, Mapping):
        return _TensorsCheckpoint(label, _unwrap(source, label))
    raise ValueError(
        f"{label} must be an nn.Module, a state_dict or a checkpoint path, but got {type(source).__name__}"
    )
