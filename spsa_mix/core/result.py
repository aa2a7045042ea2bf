"""The one result type returned by every method, and the per-step history it carries.

:class:`OptimizeResult` is a ``dict`` with attribute access, like
``scipy.optimize.OptimizeResult``. Fields set by every method:

``x``
    the returned point, shape ``(k,)`` or ``(groups, k)``;
``fun``
    the objective at ``x`` as the method last evaluated it (see each method);
``nit``
    steps (ask/tell rounds) completed;
``nfev``
    objective evaluations (points scored) spent, validation excluded;
``success``, ``status``, ``message``
    how the run ended (:class:`Status`);
``method``
    the ``method`` string;
``history``
    a dict of NumPy arrays with one entry per step (see :class:`History`).

Example
-------
>>> r = OptimizeResult(x=[0.5, 0.5], fun=1.0, nit=3)
>>> r.fun, r["nit"]
(1.0, 3)
"""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from spsa_mix.io import to_jsonable

__all__ = ["OptimizeResult", "Status", "History"]


class Status(enum.IntEnum):
    """Why a run ended. ``success`` is true for the first three."""

    BUDGET = 0  #: max_evals or maxiter reached
    CONVERGED = 1  #: validation stopped improving for ``patience`` checks
    COMPLETED = 2  #: a method with a fixed amount of work finished it
    CALLBACK = 99  #: the callback raised StopIteration (as scipy: success is False)
    NONFINITE = 3  #: the objective returned NaN or infinity
    INTERRUPTED = 4  #: KeyboardInterrupt (Ctrl-C)
    ERROR = 5  #: the objective raised (only in ObjectiveError.partial_result)

    @property
    def success(self) -> bool:
        return self in (Status.BUDGET, Status.CONVERGED, Status.COMPLETED)


class OptimizeResult(dict[str, Any]):
    """Dict with attribute access (``res.x`` is ``res["x"]``), as in scipy.

    >>> OptimizeResult(x=1).x
    1
    """

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError as e:
            raise AttributeError(name) from e

    def __repr__(self) -> str:
        if not self:
            return f"{type(self).__name__}()"
        keys = [k for k in self if k != "history"]
        width = max(map(len, keys)) + 1
        lines = [f"{k.rjust(width)}: {_short(self[k])}" for k in keys]
        if "history" in self:
            hist = self["history"]
            n = len(next(iter(hist.values()))) if hist else 0
            lines.append(f"{'history'.rjust(width)}: {n} steps of {sorted(hist)}")
        return "\n".join(lines)

    def __dir__(self) -> list[str]:
        return list(self.keys())

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable copy: arrays become lists, NaN and infinities ``None``,
        the status its name; the optimiser ``state`` is left out.

        >>> OptimizeResult(x=np.array([0.5, 0.5]), status=Status.BUDGET).to_json()
        {'x': [0.5, 0.5], 'status': 'BUDGET'}
        """
        return {k: to_jsonable(v) for k, v in self.items() if k != "state"}


class History:
    """Accumulates one row per step; :meth:`as_arrays` returns a dict of arrays.

    >>> h = History()
    >>> h.append(step=0, loss=1.0)
    >>> h.append(step=1, loss=0.5)
    >>> h.as_arrays()["loss"].tolist()
    [1.0, 0.5]
    """

    def __init__(self) -> None:
        self._rows: dict[str, list[Any]] = {}
        self._n = 0

    def __len__(self) -> int:
        return self._n

    def append(self, **row: Any) -> None:
        for key, value in row.items():
            column = self._rows.setdefault(key, [np.nan] * self._n)
            column.append(value)
        self._n += 1
        for column in self._rows.values():  # keys missing from this row
            if len(column) < self._n:
                column.append(np.nan)

    def set_last(self, **row: Any) -> None:
        """Add or overwrite values of the last row."""
        for key, value in row.items():
            column = self._rows.setdefault(key, [np.nan] * self._n)
            column[-1] = value

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {key: np.asarray(column) for key, column in self._rows.items()}

    def to_dict(self, n: int | None = None) -> dict[str, Any]:
        """The first ``n`` rows (default all) as JSON values, for a checkpoint:
        ``{"rows": n, "columns": {key: [...]}}``, arrays as lists and NaN as ``None``;
        :meth:`from_dict` inverts it (floats exactly: JSON keeps their ``repr``).

        >>> h = History()
        >>> h.append(step=0, x=np.array([0.25, 0.75]), loss=0.5)
        >>> h.set_last(val_loss=0.125)
        >>> h.append(step=1, x=np.array([0.5, 0.5]), loss=0.25)
        >>> d = h.to_dict()
        >>> d["columns"]["val_loss"]
        [0.125, None]
        >>> back = History.from_dict(d).as_arrays()
        >>> back["x"].tolist(), back["val_loss"].tolist()
        ([[0.25, 0.75], [0.5, 0.5]], [0.125, nan])
        """
        n = self._n if n is None else n
        if not 0 <= n <= self._n:
            raise ValueError(f"n must be in [0, {self._n}], but got {n!r}")
        return {"rows": n, "columns": {key: to_jsonable(column[:n]) for key, column in self._rows.items()}}

    @classmethod
    def from_dict(cls, d: Any, *, name: str = "history") -> History:
        """The history of :meth:`to_dict`'s output (``None`` entries become NaN, lists
        arrays); a malformed ``d`` raises ``ValueError`` naming ``name``."""
        if not isinstance(d, dict) or not isinstance(d.get("rows"), int) or not isinstance(d.get("columns"), dict):
            raise ValueError(f"{name} must be a dict with an integer 'rows' and a dict 'columns', but got {d!r:.100}")
        h = cls()
        h._n = d["rows"]
        for key, column in d["columns"].items():
            if not isinstance(column, list) or len(column) != h._n:
                raise ValueError(f"{name}['columns'][{key!r}] must be a list of {h._n} values, but got {column!r:.100}")
            h._rows[key] = [_from_json(v) for v in column]
        return h


def _from_json(v: Any) -> Any:
    """A history entry back from JSON: ``None`` is NaN, a list a float array."""
    if v is None:
        return np.nan
    if isinstance(v, list):
        return np.asarray([np.nan if e is None else e for e in v] if None in v else v, dtype=np.float64)
    return v


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return f"<dict with keys {sorted(map(str, v))}>"
    if isinstance(v, np.ndarray):
        return np.array2string(v, precision=4, threshold=20)
    if isinstance(v, enum.Enum):
        return f"{v.name} ({v.value})" if isinstance(v, enum.IntEnum) else v.name
    return repr(v)
