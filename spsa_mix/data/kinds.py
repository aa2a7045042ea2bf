"""What a ``data.train`` value names, told from the value alone (no PyTorch: the merge's
checks use it before anything heavy is imported; :mod:`spsa_mix.data.files` reads the data).

Example
-------
>>> data_kind("a.jsonl"), data_kind("x.safetensors"), data_kind("my.pkg:make")
('text', 'tensors', 'reference')
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["TEXT_SUFFIXES", "TENSOR_SUFFIXES", "data_kind"]

TEXT_SUFFIXES = (".jsonl", ".csv", ".tsv", ".txt")
TENSOR_SUFFIXES = (".pt", ".pth", ".safetensors")


def data_kind(path: str) -> str:
    """``"text"``, ``"images"``, ``"tensors"``, ``"torchvision"`` or ``"reference"`` for a ``data.train`` value.

    >>> data_kind("a.jsonl"), data_kind("x.safetensors"), data_kind("my.pkg:make")
    ('text', 'tensors', 'reference')
    """
    if path.startswith("torchvision:"):
        return "torchvision"
    p = Path(path)
    if p.suffix.lower() in TEXT_SUFFIXES:
        return "text"
    if p.suffix.lower() in TENSOR_SUFFIXES:
        return "tensors"
    if p.is_dir():
        return "images"
    if ":" in path and not p.exists():
        return "reference"
    raise ValueError(f"cannot tell what {path!r} holds: expected a {', '.join(TEXT_SUFFIXES)} text file, a folder "
                     f"of images (one subfolder per class), a {', '.join(TENSOR_SUFFIXES)} file of tensors, "
                     "'torchvision:Name:root' or 'package.module:factory'")
