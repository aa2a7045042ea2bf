"""The exceptions of the optimisers (argument checks are in :mod:`spsa_mix.core.validation`).

Example
-------
>>> from spsa_mix.core.optimizer import SimplexSPSA
>>> opt = SimplexSPSA(3, seed=0)
>>> _ = opt.ask()
>>> try:
...     opt.tell([1.0, float("nan")])
... except NonFiniteLossError as e:
...     e.index, e.value
(1, nan)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spsa_mix.core.result import OptimizeResult

__all__ = ["NonFiniteLossError", "ObjectiveError"]


class NonFiniteLossError(ValueError):
    """A loss told to an optimiser (or returned by an objective) is NaN or infinite.

    ``index`` is the position of the first offending loss in its batch and ``value`` the
    value itself. The optimiser's state is unchanged when this is raised.
    """

    def __init__(self, message: str, *, index: int, value: float) -> None:
        super().__init__(message)
        self.index = index
        self.value = value


class ObjectiveError(RuntimeError):
    """The objective (or ``val_objective``, or the callback: the message says which)
    raised; ``partial_result`` holds everything computed before that.

    The original exception is chained as ``__cause__``.
    """

    def __init__(self, message: str, partial_result: OptimizeResult) -> None:
        super().__init__(message)
        self.partial_result = partial_result
