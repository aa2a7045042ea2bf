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

Tensors are blended and written one at a time (at most one shard is held in memory); the
output goes to a temporary folder beside the target, renamed into place at the end, so an
interrupted save leaves nothing half-written. An existing non-empty target is refused
unless ``overwrite=True``.

Example
-------
>>> parse_size("5GB"), dtype_name(torch.bfloat16)
(5000000000, 'bfloat16')
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from spsa_mix.io import atomic_directory, atomic_path, parse_size

__all__ = ["SaveSource", "save_blend", "save_tensors", "write_safetensors_shards", "parse_size",
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


def write_safetensors_shards(tensors: Iterable[tuple[str, torch.Tensor]], directory: Path, *,
                             max_shard_size: int | str = "5GB", prefix: str = "model") -> list[str]:
    """Write ``(name, tensor)`` pairs as ``{prefix}.safetensors``, or as numbered shards and
    ``{prefix}.safetensors.index.json`` (transformers' layout) when they exceed
    ``max_shard_size``; at most one shard is held. Returns the files written."""
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    shards: list[list[str]] = []
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


def save_blend(blended: Blended, path: str | os.PathLike[str], *, source: SaveSource,
               stored: Mapping[str, torch.dtype], default_dtype: torch.dtype, aliases: Mapping[str, str],
               overwrite: bool, dtype: torch.dtype | None, max_shard_size: int | str,
               write_adapter: Callable[[Path], None] | None = None) -> str:
    """Write a blend to ``path`` (see the module docstring); returns the path.

    ``blended(out_dtype)`` yields its ``(name, tensor)`` pairs in ``state_dict`` order, each
    floating-point tensor in ``out_dtype(name)``: ``dtype``, else the dtype ``stored`` gives
    the name, else ``default_dtype``; ``aliases`` are the tied names (written once for
    Hugging Face); ``write_adapter(folder)`` writes a LoRA blend's adapter files.
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
                        max_shard_size=max_shard_size, aliases=aliases)


def save_tensors(tensors: Iterable[tuple[str, torch.Tensor]], path: str | os.PathLike[str], *, source: SaveSource,
                 overwrite: bool, dtype: torch.dtype | None, max_shard_size: int | str,
                 aliases: Mapping[str, str] | None = None) -> str:
    """Write ``(name, tensor)`` pairs (every tensor of a full model, in ``state_dict`` order)
    as ``source`` says: a Hugging Face directory (``"hf"``; the tied names of ``aliases`` left
    out, ``config.json``'s dtype set to ``dtype`` when given) or a safetensors state dict
    (``"state-dict"``); see the module docstring. Returns the path written."""
    parse_size(max_shard_size)
    if source.kind == "state-dict":
        from safetensors.torch import save_file

        target = Path(path)
        if target.suffix.lower() != ".safetensors":
            with atomic_directory(target, overwrite=overwrite) as tmp:
                write_safetensors_shards(_owned(tensors), tmp, max_shard_size=max_shard_size)
            return str(target)
        state = dict(_owned(tensors))
        _atomic_file(target, overwrite, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        return str(target)
    if source.kind != "hf" or source.config_dir is None:
        raise RuntimeError(f"internal error: cannot write full-model tensors for a {source.kind!r} source without "
                           "the directory of its config")
    skip = aliases or {}
    with atomic_directory(path, overwrite=overwrite) as tmp:
        _copy_config(source.config_dir, tmp, dtype)
        _copy_side_files(source.config_dir, tmp)
        write_safetensors_shards(((n, t) for n, t in tensors if n not in skip), tmp, max_shard_size=max_shard_size)
    return str(Path(path))


def _owned(pairs: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Tied names as copies of their own (a plain state dict loads with ``strict=True``)."""
    seen: set[int] = set()
    for name, tensor in pairs:
        yield name, tensor.clone() if id(tensor) in seen else tensor
        seen.add(id(tensor))
