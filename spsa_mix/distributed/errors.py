"""The exceptions of :mod:`spsa_mix.distributed`: what went wrong on which ranks.

Every rank raises at the same call, so that a job stops as a whole instead of hanging: a
rank that dies or stops answering (:class:`RankFailureError`, after the timeout), a rank
whose objective raised (:class:`PeerError` on the others; the rank itself raises its own
exception), ranks whose optimisers no longer agree (:class:`DivergenceError`).

Example
-------
>>> e = DivergenceError("alpha differs across ranks", ranks=[2])
>>> isinstance(e, DistributedError), e.ranks
(True, [2])
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DistributedError", "RankFailureError", "PeerError", "DivergenceError"]


class DistributedError(RuntimeError):
    """Base class: a collective of :mod:`spsa_mix.distributed` could not give every rank
    the same answer. ``ranks`` names the ranks at fault (``None`` when unknown)."""

    def __init__(self, message: str, *, ranks: Sequence[int] | None = None) -> None:
        super().__init__(message)
        self.ranks = None if ranks is None else sorted(int(r) for r in ranks)


class RankFailureError(DistributedError):
    """A collective failed or timed out: a rank died, hung, or made a different call.

    ``ranks`` are the ranks that did not report after the failure (``None`` when the
    process group's store could not be reached to find out); ``timeout`` the seconds a
    collective was allowed.
    """

    def __init__(self, message: str, *, ranks: Sequence[int] | None = None, timeout: float | None = None) -> None:
        super().__init__(message, ranks=ranks)
        self.timeout = timeout


class PeerError(DistributedError):
    """The objective raised on other ranks; ``messages`` maps each such rank to its error
    (``"TypeName: message"``). The failing rank raises its own exception instead."""

    def __init__(self, message: str, *, ranks: Sequence[int], messages: dict[int, str]) -> None:
        super().__init__(message, ranks=ranks)
        self.messages = dict(messages)


class DivergenceError(DistributedError):
    """The ranks scored different points (or hold different values of a checked array):
    their optimisers are no longer in the same state. ``ranks`` are those that differ from
    rank 0."""
