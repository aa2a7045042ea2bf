"""A run's state file: written as the run goes, read back to resume it bit for bit.

``minimize(..., checkpoint="run.state")`` opens a :class:`Checkpoint` on that path: if the
file exists, the run resumes from it, otherwise it starts from the beginning (both are
logged on the ``"spsa_mix"`` logger). The :class:`~spsa_mix.core.driver.Run` takes a
snapshot of the state after every step (before the callback) and writes it every
``checkpoint_every`` steps and when the run ends, whatever way (budget, callback,
non-finite loss, Ctrl-C, an error of the objective): a run killed outright (``SIGKILL``,
a power cut) loses at most ``checkpoint_every`` steps, and the last one written is always
a whole step. Every write goes through :func:`spsa_mix.io.write_json`: atomic, so a kill
during a write leaves the previous file.

The file is JSON (no pickle: loading it runs no code); floats round-trip exactly (JSON
keeps Python's shortest ``repr``), NaN and infinities are written ``null`` where they
can occur (the last loss before the first step, the best validation loss before the first
check, missing history entries). Its layout (:data:`FORMAT`, version :data:`VERSION`)::

    {"format": "spsa_mix.checkpoint", "version": 1,
     "fingerprint": {"method": ..., "k": <Domain.to_dict()>, "options": {name: value},
                     "vectorized": ..., "final_eval": ..., "val_objective": <bool>,
                     "val_every": ..., "patience": ..., "seed": <int or null>,
                     "rng": <the generator's state before the run drew from it>},
     "budget": {"max_evals": ..., "maxiter": ...},    # of the call that wrote the file
     "plan": {"max_evals": ..., "maxiter": ...},      # of the run's first call
     "run": {"nit", "nfev", "njev", "cost", "nval", "best_val", "best_val_x",
             "bad_checks", "last_loss"},
     "history": {"rows": nit, "columns": {name: [one value per step]}},
     "method_state": ...,           # the method's (see below)
     "objective_state": ...,        # objective.state_dict(), or null
     "val_objective_state": ...,    # val_objective.state_dict(), or null
     "start": ...}                  # start="best" only: the candidates' scores (below)

The fingerprint's ``"start"`` says how the run began: ``"uniform"`` or ``"auto"`` (at
``x0``) as asked, or ``"best"``; a resumed ``start="auto"`` call goes on as the run began,
even where its larger budget would have chosen another start, and a call that asks for
another start than the run's is refused. A run with ``start="best"``
(:mod:`spsa_mix.core.start`) has ``"start": "best"`` in its fingerprint and the candidates' record (their names and losses, the one chosen) in
``"start"``: a resumed run takes them from the file instead of scoring the candidates again,
so that its objective draws nothing before its state is restored.

The method's state is the optimiser's ``state_dict()`` for the built-in methods; for the
Nevergrad and Optuna adapters, whose libraries' states are not JSON, it is the record of
every round told (``{"told": [{"z": ..., "losses": ...}, ...]}``) and a resumed run
*replays* it: the library is created again with the same seed and asked and told the
recorded losses without calling the objective, each asked candidate checked bit for bit
against the record (see the adapters' ask/tell loop).

What must match to resume is the fingerprint; a mismatch is a ``ValueError`` naming the
key and both values. The budget may grow (a larger ``max_evals`` or ``maxiter`` continues
the run further), never shrink. ``seed`` and ``rng`` may be left out when resuming: the
file's generator state is then used (so a run started without a seed can be resumed).

The objective-state protocol: an objective (or ``val_objective``) with ``state_dict() ->
dict`` (JSON values, a new dict each call) and ``load_state_dict(state)`` has its state
saved with each snapshot and restored on resume, before any evaluation; e.g.
:class:`~spsa_mix.blend.BlendedObjective`, whose state is the number of minibatches drawn.
A ``torch.nn.Module`` is not taken for one (its ``state_dict`` is its weights).

Example
-------
>>> import json, os, tempfile, spsa_mix
>>> path = os.path.join(tempfile.mkdtemp(), "run.state")
>>> f = lambda a: float((a[0] - 0.7) ** 2)
>>> res = spsa_mix.minimize(f, k=2, maxiter=30, seed=0, checkpoint=path)
>>> with open(path) as fh:
...     state = json.load(fh)
>>> state["format"], state["run"]["nit"], sorted(state["fingerprint"])[:3]
('spsa_mix.checkpoint', 30, ['final_eval', 'k', 'method'])
>>> more = spsa_mix.minimize(f, k=2, maxiter=40, seed=0, checkpoint=path)   # 10 more steps
>>> more.resumed_from, more.nit
(30, 40)
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from spsa_mix.io import to_jsonable, write_json

__all__ = ["Checkpoint", "FORMAT", "VERSION", "has_state", "check_state_json"]

logger = logging.getLogger("spsa_mix")

FORMAT = "spsa_mix.checkpoint"
VERSION = 1
_KEYS = ("format", "version", "fingerprint", "budget", "plan", "run", "history", "method_state", "objective_state",
         "val_objective_state")
_BUDGET_KEYS = ("max_evals", "maxiter")
_UNBOUNDED = "not given (no bound)"


def has_state(obj: Any) -> bool:
    """Whether ``obj`` follows the objective-state protocol (``state_dict`` and
    ``load_state_dict``); a ``torch.nn.Module`` does not (its state is its weights).

    >>> class Counter:
    ...     def state_dict(self): return {"n": 0}
    ...     def load_state_dict(self, state): pass
    >>> has_state(Counter()), has_state(lambda a: 0.0)
    (True, False)
    """
    torch = sys.modules.get("torch")  # never imported here: a Module exists only if torch was
    if torch is not None and isinstance(obj, torch.nn.Module):
        return False
    return callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None))


def check_state_json(state: Any, name: str) -> Any:
    """``state``, if it holds only what JSON can hold (after
    :func:`~spsa_mix.io.to_jsonable`), else a ``ValueError`` naming ``name``."""
    try:
        json.dumps(to_jsonable(state), allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must return JSON values (numbers, strings, lists, dicts) to be saved in a "
                         f"checkpoint, but returned {state!r:.100} ({e})") from e
    return state


def _describe(value: Any) -> str:
    return _UNBOUNDED if value is None else repr(value)


def _rng_label(seed: Any, rng: Any) -> str:
    if seed is not None:
        return f"seed={seed}"
    digest = json.dumps(rng, sort_keys=True)
    return f"a generator of state {digest[:80]}{'...' if len(digest) > 80 else ''}"


class Checkpoint:
    """The state file of one run (see the module docstring).

    Made by :meth:`open`; :attr:`loaded` is the file's content when resuming (``None`` for
    a fresh run), :meth:`save` writes a snapshot taken by the run.
    """

    def __init__(self, path: Path, *, every: int, fingerprint: dict[str, Any], budget: dict[str, Any],
                 loaded: dict[str, Any] | None, start: dict[str, Any] | None = None) -> None:
        self.path = path
        self.every = every
        self.fingerprint = fingerprint
        self.budget = budget
        self.loaded = loaded
        self.start = loaded.get("start") if loaded is not None else start
        self.plan: dict[str, Any] = dict(loaded["plan"]) if loaded is not None else dict(budget)

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, every: int, fingerprint: dict[str, Any],
             budget: dict[str, Any], rng: np.random.Generator, rng_given: bool,
             start: dict[str, Any] | None = None) -> tuple[Checkpoint, np.random.Generator]:
        """The checkpoint at ``path`` and the generator the run must use.

        ``fingerprint`` holds what must match to resume (without ``"rng"``: the state of
        ``rng`` is added, taken now, before the run draws from it); ``rng_given`` says
        whether the caller chose the generator (``seed`` or ``rng``): if not, a resumed run
        uses the file's. ``start``: the candidates' record of a ``start="best"`` run, written
        with every snapshot (a resumed run keeps the file's).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"checkpoint must be a path (str or os.PathLike), but got {type(path).__name__}: "
                             f"{path!r:.80}")
        p = Path(path)
        fingerprint = to_jsonable({**fingerprint, "rng": copy.deepcopy(rng.bit_generator.state)})
        fingerprint = json.loads(json.dumps(fingerprint))  # the values as the file will hold them
        budget = to_jsonable(dict(budget))
        if not p.exists():
            logger.info("no checkpoint at %s yet: %s starts from the beginning", p, fingerprint["method"])
            return cls(p, every=every, fingerprint=fingerprint, budget=budget, loaded=None, start=start), rng
        loaded = cls._read(p)
        saved = loaded["fingerprint"]
        if not rng_given:  # continue with the file's generator (a run started without a seed can resume)
            fingerprint["seed"], fingerprint["rng"] = saved.get("seed"), saved.get("rng")
            rng = _generator_from_state(saved.get("rng"), p)
        cls._compare(p, saved, fingerprint)
        cls._compare_budget(p, loaded["budget"], budget)
        fingerprint["start"] = saved.get("start", "auto")  # how the run began (minimize checked the call against it)
        ckpt = cls(p, every=every, fingerprint=fingerprint, budget=budget, loaded=loaded)
        logger.info("%s resumes from checkpoint %s at step %d (%s evaluations done)", fingerprint["method"], p,
                    loaded["run"]["nit"], loaded["run"]["nfev"])
        return ckpt, rng

    @classmethod
    def saved_start(cls, path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """The candidates' record of the ``start="best"`` run saved at ``path``; ``None``
        when there is no file, or one of a run without it (resuming then fails in
        :meth:`open` with the reason)."""
        try:
            p = Path(path)
            return cls._read(p).get("start") if p.is_file() else None
        except (TypeError, ValueError, OSError):
            return None

    @classmethod
    def saved_start_rule(cls, path: str | os.PathLike[str]) -> str | None:
        """The fingerprint's ``"start"`` of the run saved at ``path``: ``"best"``,
        ``"uniform"`` (asked for), ``"auto"`` (which started at ``x0``), ``"unrecorded"``
        (a file of an earlier version, whose run started at ``x0``), or ``None`` when there
        is no readable file."""
        try:
            p = Path(path)
            return str(cls._read(p)["fingerprint"].get("start", "unrecorded")) if p.is_file() else None
        except (TypeError, ValueError, OSError):
            return None

    @staticmethod
    def _read(path: Path) -> dict[str, Any]:
        def bad(reason: str) -> ValueError:
            return ValueError(f"checkpoint {str(path)!r} is not a readable state file of spsa_mix ({reason}); "
                              "delete it (or give another path) to start the run over")

        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise bad(f"not UTF-8 text: {e}") from None
        try:
            state = json.loads(text, parse_constant=_refuse_constant)
        except ValueError as e:
            raise bad(f"truncated or corrupt: {e}") from None
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            found = state.get("format") if isinstance(state, dict) else type(state).__name__
            raise bad(f"its format is {found!r}, not {FORMAT!r}")
        if state.get("version") != VERSION:
            raise bad(f"version {state.get('version')!r}; this spsa_mix reads version {VERSION}")
        missing = [k for k in _KEYS if k not in state]
        if missing:
            raise bad(f"it lacks the keys {missing}")
        for key in ("fingerprint", "budget", "plan", "run"):
            if not isinstance(state[key], dict):
                raise bad(f"{key!r} must be a dict, but is {type(state[key]).__name__}")
        for key in ("nit", "nfev"):
            if not isinstance(state["run"].get(key), int) or state["run"][key] < 0:
                raise bad(f"run[{key!r}] must be an integer >= 0, but is {state['run'].get(key)!r}")
        return state

    @staticmethod
    def _compare(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
        def refuse(key: str, old: Any, new: Any) -> ValueError:
            return ValueError(f"checkpoint {str(path)!r} was written by a run with {key}={old}, but this call has "
                              f"{key}={new}: resume with the settings of that run, or delete the file (or give "
                              "another path) to start over")

        for key in sorted(set(saved) | set(now)):
            if key in ("options", "rng", "seed", "start"):  # start: compared by minimize, which resolves "auto"
                continue
            if saved.get(key) != now.get(key):
                if key == "k":
                    raise refuse("k", _domain_label(saved.get(key)), _domain_label(now.get(key)))
                raise refuse(key, repr(saved.get(key)), repr(now.get(key)))
        old_opts, new_opts = saved.get("options") or {}, now.get("options") or {}
        for name in sorted(set(old_opts) | set(new_opts)):
            if old_opts.get(name) != new_opts.get(name):
                raise refuse(name, _option_label(old_opts, name), _option_label(new_opts, name))
        if saved.get("rng") != now.get("rng"):
            raise ValueError(f"checkpoint {str(path)!r} was written by a run started with "
                             f"{_rng_label(saved.get('seed'), saved.get('rng'))}, but this call has "
                             f"{_rng_label(now.get('seed'), now.get('rng'))}: give the same seed (or rng), or none "
                             "(then the file's generator is used)")

    @staticmethod
    def _compare_budget(path: Path, saved: dict[str, Any], now: dict[str, Any]) -> None:
        for key in _BUDGET_KEYS:
            old, new = saved.get(key), now.get(key)
            if new is not None and (old is None or new < old):
                raise ValueError(
                    f"checkpoint {str(path)!r} was written by a run with {key}={_describe(old)}, but this call has "
                    f"{key}={new}: a resumed run may be given a larger budget, to continue further, not a smaller one")

    # ------------------------------------------------------------------ resuming
    @property
    def resumed_from(self) -> int | None:
        """Steps the file holds when resuming, else ``None``."""
        return None if self.loaded is None else int(self.loaded["run"]["nit"])

    @property
    def method_state(self) -> Any:
        """The method's state in the file (``None`` for a fresh run)."""
        return None if self.loaded is None else self.loaded["method_state"]

    def error(self, message: str) -> ValueError:
        """A ``ValueError`` about the file's content, naming the file."""
        return ValueError(f"checkpoint {str(self.path)!r}: {message}; delete it (or give another path) to start "
                          "the run over")

    # ------------------------------------------------------------------ writing
    def save(self, snapshot: dict[str, Any], history: dict[str, Any]) -> None:
        """Write ``snapshot`` (the run's, see :meth:`Run.snapshot
        <spsa_mix.core.driver.Run>`) and the ``history`` rows it covers, atomically."""
        state = {
            "format": FORMAT,
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "budget": self.budget,
            "plan": self.plan,
            "run": snapshot["run"],
            "history": history,
            "method_state": snapshot["method_state"],
            "objective_state": snapshot["objective_state"],
            "val_objective_state": snapshot["val_objective_state"],
        }
        if self.start is not None:
            state["start"] = self.start
        write_json(state, self.path, indent=None)
        logger.debug("checkpoint %s written at step %d", self.path, snapshot["run"]["nit"])


def _refuse_constant(name: str) -> Any:
    """``json.loads``'s hook for ``NaN`` and ``Infinity``, which strict JSON (what the file
    is written as) has not."""
    raise ValueError(f"{name} is not JSON")


def _generator_from_state(state: Any, path: Path) -> np.random.Generator:
    try:
        bit_generator = getattr(np.random, state["bit_generator"])()
        bit_generator.state = state
    except (TypeError, KeyError, AttributeError, ValueError) as e:
        raise ValueError(f"checkpoint {str(path)!r}: fingerprint['rng'] is not the state of a NumPy bit generator "
                         f"({e}); delete it (or give another path) to start the run over") from None
    return np.random.Generator(bit_generator)


def _domain_label(d: Any) -> str:
    if not isinstance(d, dict):
        return repr(d)
    simplex = d.get("simplex")
    extra = {key: d[key] for key in ("positive", "real") if d.get(key)}
    shape = simplex[0] if isinstance(simplex, list) and len(simplex) == 1 else tuple(simplex or ())
    return repr(shape) if not extra else f"Domain({shape!r}, {', '.join(f'{k}={v}' for k, v in extra.items())})"


def _option_label(options: dict[str, Any], name: str) -> str:
    return repr(options[name]) if name in options else "not given (the default)"
