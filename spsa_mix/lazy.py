"""A package's names imported on first use (PEP 562): ``import spsa_mix.data.splits`` or the
merge's checks need no PyTorch although the package also exports PyTorch code.

Example
-------
>>> getattr_, dir_ = lazy_exports("spsa_mix.core", {"Domain": "domain"}, ["Domain"])
>>> getattr_("Domain").__name__, dir_()
('Domain', ['Domain'])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, where: Mapping[str, str], names: Sequence[str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``'s ``__init__``: name ``n`` comes from the
    submodule ``where[n]`` (relative to the package), or is that submodule where ``where[n] ==
    n``. No exported name may be the name of another submodule: once imported, the submodule
    would replace it (``tests/blend/test_layers.py`` checks :mod:`spsa_mix.blend`)."""

    def __getattr__(name: str) -> Any:
        if name in where:
            module = importlib.import_module(f"{package}.{where[name]}")
            return module if where[name] == name else getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
