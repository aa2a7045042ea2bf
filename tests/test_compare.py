"""spsa_mix.compare: method specifications, summaries and the comparison loop."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spsa_mix import compare as library


def test_parse_method():
    assert library.parse_method("spsa") == ("spsa", "spsa", {})
    label, method, kw = library.parse_method("nevergrad:CMA@batch_size=4,parametrization=stick,x0=[0.5,0.5]")
    assert method == "nevergrad:CMA" and kw == {"x0": (0.5, 0.5), "options": {"batch_size": 4, "parametrization": "stick"}}
    with pytest.raises(ValueError, match="method settings must be key=value, but got '=3' in 'spsa@=3'"):
        library.parse_method("spsa@=3")


def test_summary_and_table():
    rows = [dict(method="a", seed=s, final_loss=v, rel=v, cost=10.0, wall_s=1.0, overhead_per_eval_s=1e-4,
                 status="BUDGET") for s, v in enumerate([1.0, 3.0])]
    (s,) = library.summarize(rows, ["a"])
    assert s["final_loss_mean"] == 2.0 and s["final_loss_std"] == pytest.approx(math.sqrt(2))
    table = library.format_table([s], problem="quadratic")
    assert "| `a` | 2.000e+00 ± 1.4e+00 | 2.000 | 10 | 1.00 | 100 | BUDGET |" in table


def test_an_interrupted_minimize_stops_the_comparison(monkeypatch):
    """minimize turns Ctrl-C into an INTERRUPTED result; the comparison must stop, not record it."""
    import spsa_mix
    from spsa_mix.core.result import OptimizeResult, Status

    def interrupted(*args, **kwargs):
        return OptimizeResult(x=np.full(3, 1 / 3), fun=1.0, nit=1, nfev=2, cost=2.0, status=Status.INTERRUPTED,
                              success=False, message="interrupted", history={})

    monkeypatch.setattr(spsa_mix, "minimize", interrupted)
    seen = []
    with pytest.raises(KeyboardInterrupt):
        library.compare_methods(lambda seed: library.quadratic_problem(3, seed), [library.parse_method("spsa")],
                                seeds=2, budget=10, on_update=seen.append)
    assert seen[-1]["status"] == "interrupted" and seen[-1]["runs"] == []


def test_a_non_finite_loss_ends_that_run_as_nonfinite_and_the_comparison_goes_on():
    import numpy as np

    from spsa_mix.compare import Problem, compare_methods, parse_method, quadratic_problem

    def make(seed):
        p = quadratic_problem(3, seed)
        calls = []

        def objective(points):
            calls.append(1)
            return np.full(len(points), np.nan) if len(calls) == 3 else p.objective(points)

        return Problem(objective, 3, p.final_loss, p.curve_loss, info=p.info)

    doc = compare_methods(make, [parse_method("spsa")], seeds=2, budget=20)
    assert doc["status"] == "complete" and not doc["errors"] and len(doc["runs"]) == 2
    assert {r["status"] for r in doc["runs"]} == {"NONFINITE"} and not any(r["success"] for r in doc["runs"])
    assert "NONFINITE" in doc["table"]
