"""The merge's cost model: its counts are the search's, its phases add up, the clock logs each phase."""

from __future__ import annotations

import numpy as np
import pytest

import spsa_mix
from spsa_mix.merge.cost import PHASES, PhaseClock, UnitCosts, planned_counts, predict_phases
from spsa_mix.problems import Quadratic


@pytest.mark.parametrize(("budget", "k", "validate_every"), [(200, 3, 10), (100, 3, 10), (300, 3, 7), (60, 5, 10)])
def test_planned_counts_are_what_a_search_with_validation_does(budget: int, k: int, validate_every: int) -> None:
    q = Quadratic.random(k, rng=0)
    calls: list[int] = []
    res = spsa_mix.minimize(q, k=k, max_evals=budget, seed=0, val_every=validate_every,
                            val_objective=lambda a: calls.append(1) or q(a))  # start="auto", as the merge runs it
    counts = planned_counts(budget=budget, k=k, validate_every=validate_every)
    assert counts["steps"] == res.nit
    assert counts["validations"] == len(calls)  # the start, the checks, the last iterate, the candidate's
    assert res.nfev <= counts["evaluations"] == budget


def test_the_phases_add_up_to_the_total() -> None:
    u = UnitCosts(imports=1.0, data=2.0, experts=3.0, evaluation=0.01, validation=0.5, write=0.25, checks=0.125)
    p = predict_phases(u, {"evaluations": 100, "validations": 4, "steps": 48}, k=3)
    assert list(p) == [*PHASES, "total"]
    assert p["search"] == pytest.approx(100 * 0.01 + 4 * 0.5) and p["references"] == pytest.approx(4 * 0.5)
    assert p["total"] == pytest.approx(sum(p[x] for x in PHASES))


def test_the_clock_holds_lines_until_a_phase_that_is_not_held() -> None:
    lines: list[str] = []
    clock = PhaseClock(lines.append)
    clock.mark("checks", hold=True)
    clock.mark("imports", hold=True)
    assert lines == []
    clock.mark("data", "3 files")
    assert [x.split(":")[0] for x in lines] == ["checks", "imports", "data"] and lines[-1].endswith("(3 files)")
    d = clock.as_dict()
    assert list(d) == ["checks", "imports", "data", "total"] and d["total"] >= sum(np.array(list(d.values()))[:-1])
