"""Where the time of a merge goes: each phase timed as it runs, and a model that predicts them.

A merge (:func:`spsa_mix.merge.run.run_merge`) runs in phases, each logged with its
seconds as it ends (:class:`PhaseClock`) and recorded in ``recipe.json`` (``phases``):

``checks``      the config, the files, the output (no weight is read)
``imports``     PyTorch, transformers, PEFT, matplotlib
``data``        the target data read and tokenized
``experts``     the experts read and stacked; the thread count chosen
``references``  the uniform blend and each expert alone, over the validation data
``search``      the budget's evaluations (start candidates included) and the validation checks
``final``       the answer scored over the validation data, the blend to write chosen
``write``       the merged model, ``recipe.json``, ``README.md``, ``mergekit.yaml``, ``loss.png``

:func:`predict_phases` is the cost model of ``docs/merge_cost.md``: from unit costs measured
on the machine where it runs (:class:`UnitCosts`: one evaluation on a training batch, one
pass over the validation data, the imports, the reads, the writes) and the counts the
config fixes (:func:`planned_counts`), the seconds of each phase::

    search     = evaluations x evaluation + validations x validation pass
    references = (K + 1) x validation pass
    final      = validation pass

``benchmarks/merge_cost.py`` measures the unit costs on the spot, predicts, runs the merge
and compares.

Example
-------
>>> lines = []
>>> clock = PhaseClock(lines.append)
>>> _ = clock.mark("checks")
>>> lines[0].startswith("checks: ") and list(clock.seconds) == ["checks"]
True
>>> c = planned_counts(budget=200, k=3, validate_every=10)
>>> c["evaluations"], c["validations"]
(200, 12)
>>> u = UnitCosts(imports=2.0, data=0.5, experts=0.5, evaluation=0.01, validation=0.1, write=1.0)
>>> p = predict_phases(u, c, k=3)
>>> round(p["search"], 2), round(p["references"], 2), round(p["total"], 2)
(3.2, 0.4, 7.7)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["PHASES", "PhaseClock", "UnitCosts", "planned_counts", "predict_phases"]

PHASES = ("checks", "imports", "data", "experts", "references", "search", "final", "write")


class PhaseClock:
    """Seconds of each phase since the previous mark, logged by ``say`` as each ends
    (or, with ``hold``, with the next mark that is not held: a run whose input turns out
    bad in a later phase then prints its one-line error alone)."""

    def __init__(self, say: Callable[[str], None], *, start: float | None = None) -> None:
        self.say = say
        self.start = time.perf_counter() if start is None else start
        self._last = self.start
        self._held: list[str] = []
        self.seconds: dict[str, float] = {}

    def mark(self, phase: str, detail: str = "", *, hold: bool = False) -> float:
        """End ``phase`` now; log ``"<phase>: <seconds> s (<detail>)"``; return its seconds."""
        now = time.perf_counter()
        took = now - self._last
        self._last = now
        self.seconds[phase] = self.seconds.get(phase, 0.0) + took
        self._held.append(f"{phase}: {took:.2f} s" + (f" ({detail})" if detail else ""))
        if not hold:
            for line in self._held:
                self.say(line)
            self._held.clear()
        return took

    def as_dict(self) -> dict[str, float]:
        """Every phase's seconds and ``total`` (since the clock started)."""
        return {**self.seconds, "total": time.perf_counter() - self.start}


@dataclass(frozen=True)
class UnitCosts:
    """Seconds of the units a merge is made of, measured where it runs.

    Attributes
    ----------
    imports, data, experts:
        Importing PyTorch and the rest; reading the target data; reading the experts.
    evaluation:
        One objective evaluation: the blend of the experts at one point and a forward and
        loss on one training batch (a step of two-point SPSA makes two).
    validation:
        One pass over the validation data at one point (the training data without any).
    write:
        Writing the merged model, its recipe, card and figure.
    checks:
        The config and file checks.
    """

    imports: float
    data: float
    experts: float
    evaluation: float
    validation: float
    write: float
    checks: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def planned_counts(*, budget: int, k: int, validate_every: int, cost_per_step: float = 2.0, reserve: int = 1,
                   validated: bool = True) -> dict[str, int]:
    """The evaluations and validation passes a merge of ``budget`` makes with ``k`` experts.

    ``evaluations``: the budget (every evaluation of the search and its start candidates
    counts in it). ``validations``: the check of the start, one every ``validate_every``
    steps, the final iterate when the last step was not a check, and the start candidate
    against the answer (:mod:`spsa_mix.core.start`); the steps are those the budget buys
    after the ``k + 1`` candidates are scored and ``reserve`` evaluations are kept to score
    the answer (SPSA's ``final_eval``). None without validation data (``validated=False``).
    """
    from spsa_mix.core.start import check_repeats

    scored = (k + 1) * check_repeats(k + 1, budget)[0]
    steps = max(0, math.floor((budget - scored - reserve) / cost_per_step))
    checks = 0
    if validated:
        checks = 1 + steps // validate_every + (1 if steps % validate_every else 0) + 1
    return {"evaluations": int(budget), "steps": int(steps), "validations": int(checks)}


def predict_phases(units: UnitCosts, counts: dict[str, int], *, k: int) -> dict[str, float]:
    """Seconds of each phase of :data:`PHASES` (and ``total``) by the model of the module docstring."""
    out = {
        "checks": units.checks,
        "imports": units.imports,
        "data": units.data,
        "experts": units.experts,
        "references": (k + 1) * units.validation,
        "search": counts["evaluations"] * units.evaluation + counts["validations"] * units.validation,
        "final": units.validation,
        "write": units.write,
    }
    out["total"] = sum(out.values())
    return out


def ratio_line(measured: dict[str, Any], predicted: dict[str, float]) -> str:
    """``phase measured/predicted`` for every phase both hold (a one-line summary)."""
    parts = [f"{p} {measured[p]:.2f}/{predicted[p]:.2f}" for p in (*PHASES, "total")
             if p in measured and p in predicted]
    return ", ".join(parts)
