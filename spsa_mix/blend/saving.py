"""Write a blend where the usual loaders read it: transformers, PEFT, or safetensors.

:func:`save_blend` (behind :meth:`BlendedObjective.save_pretrained`) writes, by the kind of
experts the objective was built from (:class:`SaveSource`):

* ``"hf"`` -- a Hugging Face model directory: ``config.json`` (copied as it is, its dtype
  entry updated if another dtype is asked for), ``generation_config.json`` and the tokenizer
  files copied when present, and the weights as ``model.safetensors``, or
  ``model-0000i-of-0000n.safetensors`` shards with ``model.safetensors.index.json`` beyond
  ``max_shard_size``; tied weights are written once (transformers re-ties them on loading);
* ``"lora"`` -- a PEFT adapter directory (written by ``write_adapter``:
  :func:`spsa_mix.blend.lora.write_adapter`);
* ``"state-dict"`` -- one ``.safetensors`` state dict.

Tensors are blended and written one at a time: the header of each shard is written first
(the names, dtypes and shapes are known before any tensor is blended), then each tensor at
its offset as it comes (:func:`write_safetensors_stream`), so the memory held is one tensor,
not a shard (mergekit's writer, like transformers', holds a shard); the output goes to a
temporary folder beside the target, renamed into place at the end, so an interrupted save
leaves nothing half-written. An existing non-empty target is refused unless
``overwrite=True``.

Example
-------
>>> parse_size("5GB"), dtype_name(torch.bfloat16)
(5000000000, 'bfloat16')
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from spsa_mix.blend.sources.checkpoints import SAFETENSORS_DTYPES
from spsa_mix.io import atomic_directory, atomic_path, parse_size

__all__ = ["SaveSource", "save_blend", "save_tensors", "write_safetensors_shards", "write_safetensors_stream",
           "parse_size",
           "COPIED_FILES", "dtype_name"]

# Files copied from the source model directory besides the weights: the configuration and
# every tokenizer or processor file transformers writes (AutoTokenizer.from_pretrained reads them).
COPIED_FILES = (
    "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt", "spiece.model",
    "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json", "preprocessor_config.json",
)


@dataclass(frozen=True)
class SaveSource:
    """Where a blend's non-weight files come from, and in which form it is written.

    Attributes
    ----------
    kind:
        ``"hf"``, ``"lora"`` or ``"state-dict"``.
    config_dir:
        The directory whose ``config.json`` (``"hf"``) and tokenizer files are copied.
    adapter_config:
        LoRA: ``adapter_config.json`` of ``experts[0]``, the template of the one written.
    """

    kind: Literal["hf", "lora", "state-dict"]
    config_dir: Path | None = None
    adapter_config: dict[str, Any] = field(default_factory=dict)


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (as config.json writes it).

    >>> dtype_name(torch.float16)
    'float16'
    """
    return str(dtype).removeprefix("torch.")


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            raise ValueError(f"path {str(path)!r} exists and is not empty: pass overwrite=True to replace it")
    if not path.parent.is_dir():
        raise ValueError(f"path {str(path)!r}: its parent folder does not exist")


def _atomic_file(path: Path, overwrite: bool, write: Callable[[Path], None]) -> None:
    _check_target(path, overwrite)
    with atomic_path(path) as tmp:
        write(tmp)


Entry = tuple[str, torch.dtype, tuple[int, ...]]  # a tensor to write: name, dtype, shape


def write_safetensors_stream(tensors: Iterable[tuple[str, torch.Tensor]], entries: Sequence[Entry],
                             path: Path) -> None:
    """Write one ``.safetensors`` file tensor by tensor: the header from ``entries`` (every
    tensor's name, dtype and shape, known in advance) first, then each tensor's bytes at its
    offset as ``tensors`` yields it (in any order), so that the memory held is one tensor,
    not the file. The layout is safetensors' own: tensors ordered by decreasing element
    size (each aligned), the header padded with spaces to a multiple of 8 bytes.

    >>> import tempfile, safetensors.torch
    >>> path = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> write_safetensors_stream([("b", torch.arange(3)), ("a", torch.ones(2, dtype=torch.bfloat16))],
    ...                          [("a", torch.bfloat16, (2,)), ("b", torch.int64, (3,))], path)
    >>> sorted((k, v.tolist()) for k, v in safetensors.torch.load_file(path).items())
    [('a', [1.0, 1.0]), ('b', [0, 1, 2])]
    """
    codes = {dtype: code for code, dtype in SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    where: dict[str, tuple[int, int, torch.dtype, tuple[int, ...]]] = {}
    pos = 0
    for name, dtype, shape in sorted(entries, key=lambda e: -e[1].itemsize):  # stable: ties keep their order
        nbytes = math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": codes[dtype], "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        where[name] = (pos, nbytes, dtype, tuple(shape))
        pos += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    start = 8 + len(raw)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(start + pos)
        for name, tensor in tensors:
            if name not in where:
                raise RuntimeError(f"internal error: tensor {name!r} is not in the planned header (or came twice)")
            begin, nbytes, dtype, shape = where.pop(name)
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                raise RuntimeError(f"internal error: tensor {name!r} is {tensor.dtype} {tuple(tensor.shape)}, but "
                                   f"the header plans {dtype} {shape}")
            data = memoryview(tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy())
            done = 0
            while done < nbytes:
                done += os.pwrite(f.fileno(), data[done:], start + begin + done)
    if where:
        raise RuntimeError(f"internal error: the tensors {sorted(where)[:3]} were planned but never came")


def write_safetensors_shards(tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, *,
                             max_shard_size: int | str = "5GB", prefix: str = "model",
                             entries: Sequence[Entry] | None = None) -> list[str]:
    """Write ``(name, tensor)`` pairs as ``{prefix}.safetensors``, or as numbered shards and
    ``{prefix}.safetensors.index.json`` (transformers' layout) when they exceed
    ``max_shard_size``. With ``entries`` (every tensor's name, dtype and shape, in the order
    ``tensors`` yields them) each tensor is written as it comes
    (:func:`write_safetensors_stream`: one tensor held); without, one shard is held and
    serialised at once. Returns the files written."""
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    shards: list[list[str]] = []
    if entries is not None:
        planned: list[list[Entry]] = []
        size = 0
        for entry in entries:
            nbytes = math.prod(entry[2]) * entry[1].itemsize
            if not planned or (planned[-1] and size + nbytes > limit):
                planned.append([])
                size = 0
            planned[-1].append(entry)
            size += nbytes
        stream = iter(tensors)
        for i, shard in enumerate(planned):
            write_safetensors_stream(itertools.islice(stream, len(shard)), shard, directory / f".shard{i:05d}")
            shards.append([name for name, _, _ in shard])
        if next(stream, None) is not None:
            raise RuntimeError("internal error: more tensors came than were planned")
        total = sum(math.prod(shape) * dtype.itemsize for _, dtype, shape in entries)
    else:
        current: dict[str, torch.Tensor] = {}
        size = total = 0

        def flush() -> None:
            nonlocal current, size
            if current:
                save_file(current, str(directory / f".shard{len(shards):05d}"), metadata={"format": "pt"})
                shards.append(list(current))
                current, size = {}, 0

        for name, tensor in tensors:
            nbytes = tensor.numel() * tensor.element_size()
            if current and size + nbytes > limit:
                flush()
            current[name] = tensor.detach().contiguous().cpu()
            size += nbytes
            total += nbytes
        flush()
    if len(shards) <= 1:
        final = [f"{prefix}.safetensors"]
        if shards:
            os.replace(directory / ".shard00000", directory / final[0])
        else:
            save_file({}, str(directory / final[0]), metadata={"format": "pt"})
        return final
    n = len(shards)
    final = [f"{prefix}-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for i, file in enumerate(final):
        os.replace(directory / f".shard{i:05d}", directory / file)
    weight_map = {name: final[i] for i, names in enumerate(shards) for name in names}
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / f"{prefix}.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return final + [f"{prefix}.safetensors.index.json"]


def _copy_config(source: Path, directory: Path, dtype: torch.dtype | None) -> None:
    config = source / "config.json"
    if dtype is None:
        shutil.copyfile(config, directory / "config.json")
    else:
        data = json.loads(config.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in data or key == "dtype":
                data[key] = dtype_name(dtype)
        (directory / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _copy_side_files(source: Path | None, directory: Path) -> None:
    if source is None:
        return
    for name in COPIED_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, directory / name)


Blended = Callable[[Callable[[str], torch.dtype]], Iterable[tuple[str, torch.Tensor]]]
Planned = Callable[[Callable[[str], torch.dtype]], list[Entry]]


def save_blend(blended: Blended, path: str | os.PathLike[str], *, source: SaveSource,
               stored: Mapping[str, torch.dtype], default_dtype: torch.dtype, aliases: Mapping[str, str],
               overwrite: bool, dtype: torch.dtype | None, max_shard_size: int | str,
               entries: Planned | None = None, write_adapter: Callable[[Path], None] | None = None) -> str:
    """Write a blend to ``path`` (see the module docstring); returns the path.

    ``blended(out_dtype)`` yields its ``(name, tensor)`` pairs in ``state_dict`` order, each
    floating-point tensor in ``out_dtype(name)``: ``dtype``, else the dtype ``stored`` gives
    the name, else ``default_dtype``; ``entries(out_dtype)`` lists the same names, dtypes and
    shapes in advance, so that each tensor is written as it is blended (else a shard is held);
    ``aliases`` are the tied names (written once for Hugging Face); ``write_adapter(folder)``
    writes a LoRA blend's adapter files.
    """
    parse_size(max_shard_size)  # checked before any work

    def out_dtype(name: str) -> torch.dtype:
        return dtype if dtype is not None else stored.get(name, default_dtype)

    if source.kind == "lora":
        if write_adapter is None:
            raise RuntimeError("internal error: a LoRA blend without its adapter writer")
        with atomic_directory(path, overwrite=overwrite) as tmp:
            write_adapter(tmp)
        return str(Path(path))
    return save_tensors(blended(out_dtype), path, source=source, overwrite=overwrite, dtype=dtype,
                        max_shard_size=max_shard_size, aliases=aliases,
                        entries=entries(out_dtype) if entries is not None else None)


def save_tensors(tensors: Iterable[tuple[str, torch.Tensor]], path: str | os.PathLike[str], *, source: SaveSource,
                 overwrite: bool, dtype: torch.dtype | None, max_shard_size: int | str,
                 aliases: Mapping[str, str] | None = None, entries: Sequence[Entry] | None = None) -> str:
    """Write ``(name, tensor)`` pairs (every tensor of a full model, in ``state_dict`` order)
    as ``source`` says: a Hugging Face directory (``"hf"``; the tied names of ``aliases`` left
    out, ``config.json``'s dtype set to ``dtype`` when given) or a safetensors state dict
    (``"state-dict"``); see the module docstring. With ``entries`` (every pair's name, dtype
    and shape, in order) each tensor is written as it comes, else a shard is held. Returns the
    path written."""
    parse_size(max_shard_size)
    skip = aliases or {}
    if source.kind == "state-dict":
        target = Path(path)
        if target.suffix.lower() != ".safetensors":  # a folder
            with atomic_directory(target, overwrite=overwrite) as tmp:
                write_safetensors_shards(_owned(tensors), tmp, max_shard_size=max_shard_size, entries=entries)
            return str(target)
        if entries is None:
            from safetensors.torch import save_file

            state = dict(_owned(tensors))
            _atomic_file(target, overwrite, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        else:
            _atomic_file(target, overwrite, lambda tmp: write_safetensors_stream(tensors, entries, tmp))
        return str(target)
    if source.kind != "hf" or source.config_dir is None:
        raise RuntimeError(f"internal error: cannot write full-model tensors for a {source.kind!r} source without "
                           "the directory of its config")
    with atomic_directory(path, overwrite=overwrite) as tmp:
        _copy_config(source.config_dir, tmp, dtype)
        _copy_side_files(source.config_dir, tmp)
        kept = None if entries is None else [e for e in entries if e[0] not in skip]
        write_safetensors_shards(((n, t) for n, t in tensors if n not in skip), tmp, max_shard_size=max_shard_size,
                                 entries=kept)
    return str(Path(path))


def _owned(pairs: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Tied names as copies of their own (a plain state dict loads with ``strict=True``)."""
    seen: set[int] = set()
    for name, tensor in pairs:
        yield name, tensor.clone() if id(tensor) in seen else tensor
        seen.add(id(tensor))
