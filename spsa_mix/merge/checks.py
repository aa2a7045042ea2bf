"""Checks of ``spsa-mix merge`` made before any weight is read, each naming what is wrong.

:func:`~spsa_mix.merge.run.plan_merge` calls them after the config's own checks
(:mod:`spsa_mix.merge.config`):

* :func:`check_apart`: the output (and the files written beside it) is none of the inputs,
  holds none of them and lies inside none of them, so that ``--overwrite`` can never
  replace an expert, the base, the model or the data;

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

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spsa_mix.merge.config import MergeConfig

__all__ = ["check_apart", "merge_inputs"]


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
