"""The weight files of a Hugging Face model directory: which kind, and every shard of an
index, checked without reading a tensor (and without PyTorch, so that the merge's checks
run before anything heavy is imported). :mod:`spsa_mix.blend.sources.checkpoints` opens them.

Example
-------
>>> HF_WEIGHT_FILES[0]
'model.safetensors.index.json'
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["HF_WEIGHT_FILES", "hf_weight_files", "is_hf_directory"]

HF_WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                   "pytorch_model.bin")


def is_hf_directory(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding ``config.json`` (a Hugging Face model).

    >>> is_hf_directory(".")
    False
    """
    p = Path(path)
    return p.is_dir() and (p / "config.json").is_file()


def hf_weight_files(directory: Path, label: str) -> tuple[str, list[Path]]:
    """The weight file kind of a model directory and its files (all shards of an index).

    Raises ``ValueError`` for a directory without weights, or an index naming a missing shard.
    """
    for kind in HF_WEIGHT_FILES:
        path = directory / kind
        if not path.is_file():
            continue
        if not kind.endswith(".index.json"):
            return kind, [path]
        try:
            weight_map = json.loads(path.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{label}: {str(path)!r} is not a sharded-checkpoint index "
                             f"(expected a JSON object with a 'weight_map'): {e}") from None
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
            raise ValueError(f"{label}: {str(path)!r} is not a sharded-checkpoint index (its weight_map must map "
                             "tensor names to shard file names)")
        files = sorted(set(weight_map.values()))
        for file in files:
            normal = os.path.normpath(file)
            if os.path.isabs(file) or normal == ".." or normal.startswith(".." + os.sep) or normal.startswith("../"):
                raise ValueError(f"{label}: {kind} names the shard {file!r}, which is outside {str(directory)!r}: "
                                 "refused (a shard must be a file of the model's folder)")
            if not (directory / file).is_file():
                raise ValueError(f"{label}: {kind} names the shard {file!r}, which is not in {str(directory)!r}")
        return kind, [directory / f for f in files]
    found = sorted(p.name for p in directory.iterdir())
    raise ValueError(f"{label}: {str(directory)!r} holds no weights: expected one of {list(HF_WEIGHT_FILES)}, "
                     f"found {found}")
