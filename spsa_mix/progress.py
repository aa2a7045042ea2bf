"""Progress bars through tqdm, an optional dependency (the ``extras`` extra).

The core stays NumPy and SciPy only, so tqdm may be missing. Two rules:

* a bar asked for explicitly, ``spsa_mix.minimize(..., show_progress_bar=True)``, needs
  tqdm: :func:`require_tqdm` raises a ``ValueError`` that says how to install it, before
  any evaluation;
* the bars that long runs show by default (experts, alpha, fine-tuning, the benchmarks,
  the variance grid) are a convenience: without tqdm :func:`progress_bar` returns ``None``,
  the run goes on without a bar, and one warning is logged (once per process).

This module imports neither tqdm nor PyTorch until asked.

Example
-------
>>> progress_bar(10, "steps", enabled=False) is None
True
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any

__all__ = ["INSTALL_HINT", "tqdm_class", "require_tqdm", "progress_enabled", "progress_bar", "write"]

logger = logging.getLogger("spsa_mix")

INSTALL_HINT = "pip install tqdm (or pip install 'spsa-mix[extras]')"
_warned = False  # the missing-tqdm warning was logged


def tqdm_class() -> Any | None:
    """``tqdm.auto.tqdm``, or ``None`` when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def require_tqdm(what: str) -> Any:
    """``tqdm.auto.tqdm``; raises ``ValueError`` naming ``what`` and the fix when it is missing."""
    tqdm = tqdm_class()
    if tqdm is None:
        raise ValueError(f"{what} needs tqdm, which is not installed: {INSTALL_HINT}; "
                         "or leave the progress bar off")
    return tqdm


def progress_enabled(enabled: bool) -> bool:
    """Whether a default-on bar can be shown: ``enabled`` and tqdm installed.

    Logs one warning (the first time in the process) when a bar is wanted and tqdm is missing.
    """
    global _warned
    if not enabled:
        return False
    if tqdm_class() is not None:
        return True
    if not _warned:
        _warned = True
        logger.warning("tqdm is not installed, so no progress bars are shown; to see them: %s", INSTALL_HINT)
    return False


def progress_bar(total: int | None, desc: str, enabled: bool = True, *, unit: str = "it", **kw: Any) -> Any | None:
    """A tqdm bar over ``total`` items, or ``None`` when not ``enabled`` or tqdm is missing.

    ``kw`` goes to tqdm (``leave=False``, ``disable=None`` for no bar off a terminal).
    """
    tqdm = tqdm_class() if progress_enabled(enabled) else None
    if tqdm is None:
        return None
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, **kw)


def write(line: str, file: IO[str] | None = None) -> None:
    """Print ``line`` without breaking a bar on screen (``tqdm.write``; plain print without tqdm)."""
    file = sys.stderr if file is None else file
    tqdm = tqdm_class()
    if tqdm is None:
        print(line, file=file)
    else:
        tqdm.write(line, file=file)
