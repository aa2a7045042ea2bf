"""The benchmark grid: every closed form inside its interval, in alpha and beta space
(with the O(mu^2) term at a finite radius), rows, skipped combinations, errors."""

from __future__ import annotations

import json

import pytest

from spsa_mix.io import to_jsonable
from spsa_mix.variance.bench import run_grid


@pytest.fixture(scope="module")
def grid():
    return run_grid(problem="quadratic", ks=[2, 4], ms=[1, 3], orthogonal=[False, True], spaces=["alpha", "beta"],
                    mus=[0.1], n_samples=2000, confidence=1 - 1e-5, seed=0)


def test_every_closed_form_lies_in_its_interval(grid):
    bad = [(r["space"], r["directions"], r["sum_zero"], r["orthogonal"], r["scale_kind"], r["k"], r["m"], name)
           for r in grid["rows"] for name, ok in r["agree"].items() if ok is False]
    assert bad == []
    assert sum(ok is True for r in grid["rows"] for ok in r["agree"].values()) > 300


def test_rows_and_skipped_combinations(grid):
    rows = grid["rows"]
    # i.i.d.: (unit directions x 2 scales + Gaussian + Rademacher) x 2 subspaces x 2 spaces x every (K, m);
    # orthogonal: no Rademacher, and m = 3 > d = 1 for K = 2 in the subspace
    iid = [r for r in rows if not r["orthogonal"]]
    orth = [r for r in rows if r["orthogonal"]]
    # ... less the paper rows of unit directions in the sum-zero plane of K = 2, where d = 1 = c
    assert len(iid) == 4 * 2 * 2 * 2 * 2 - 2 * 2
    assert {r["scale_kind"] for r in rows if r["directions"] != "normalized-gaussian"} == {"unbiased"}
    assert {r["directions"] for r in orth} == {"normalized-gaussian", "gaussian"}
    assert not any(r["k"] == 2 and r["m"] == 3 and r["sum_zero"] for r in orth)
    assert any(s.get("k") == 2 and s.get("m") == 3 and "m <= d = 1" in s["reason"] for s in grid["skipped"])
    assert any("Rademacher" in s["reason"] for s in grid["skipped"])
    for r in rows:
        assert (r["paper_prop1"] is not None) == (r["directions"] == "normalized-gaussian" and not r["sum_zero"]
                                                  and not r["orthogonal"] and r["scale_kind"] == "paper")
        assert r["theory"]["limit"] == ("exact" if r["space"] == "alpha" else "mu^2")
        assert r["scale"] == (r["dim"] if r["scale_kind"] == "unbiased" and r["directions"] == "normalized-gaussian"
                              else 1.0)
        assert r["dim"] == (r["k"] - 1 if r["sum_zero"] else r["k"])
    json.dumps(to_jsonable(grid), allow_nan=False)


def test_mu_squared_term_is_needed_in_beta_space():
    """Unit directions in the sum-zero plane of K = 2 make a deterministic estimate (d = 1),
    so its interval is a point: only the closed form with the O(mu^2) term matches it."""
    out = run_grid(problem="linear", ks=[2], ms=[1], kinds=["normalized-gaussian"], sum_zero=[True],
                   scales=["unbiased"], spaces=["beta"], mus=[0.3], n_samples=50, seed=0)
    (row,) = out["rows"]
    emp = row["empirical"]["bias_norm"]
    assert emp["high"] - emp["low"] < 1e-12
    assert row["agree"]["bias_norm"]
    mu_bias = row["theory"]["mu_bias_norm"]
    assert mu_bias > 1e-4 and abs(emp["value"] - mu_bias) < 0.02 * mu_bias


def test_exact_derivative_rows_are_exact_everywhere():
    out = run_grid(problem="linear", ks=[3], ms=[2], kinds=["gaussian"], sum_zero=[True], scales=["paper"],
                   spaces=["beta"], derivative="exact", n_samples=2000, seed=1)
    (row,) = out["rows"]
    assert row["theory"]["limit"] == "exact" and row["theory"]["mu_bias_norm"] is None
    assert all(v for v in row["agree"].values() if v is not None)


def test_same_seed_same_rows():
    kw = dict(problem="quadratic", ks=[3], ms=[1, 2], kinds=["rademacher"], sum_zero=[True], n_samples=200)
    a, b = run_grid(seed=5, **kw), run_grid(seed=5, **kw)
    assert [r["empirical"] for r in a["rows"]] == [r["empirical"] for r in b["rows"]]
    c = run_grid(seed=6, **kw)
    assert [r["empirical"] for r in a["rows"]] != [r["empirical"] for r in c["rows"]]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"problem": "cubic"}, r"problem must be one of \['quadratic', 'linear', 'network'\]"),
        ({"ks": [1, 3]}, r"every K must be at least 2 .* but got ks=\[1, 3\]"),
        ({"ks": []}, r"ks must be a non-empty list, but got \[\]"),
        ({"ms": [0]}, "m must be an integer >= 1, but got 0"),
        ({"kinds": ["uniform"]}, r"kinds must contain only \['normalized-gaussian', 'gaussian', 'rademacher'\]"),
        ({"scales": ["half"]}, r"scales must contain only \['unbiased', 'paper'\], but got 'half'"),
        ({"spaces": ["gamma"]}, r"spaces must contain only \['alpha', 'beta'\]"),
        ({"mus": [0.0]}, "mu must be positive, but got 0.0"),
        ({"derivative": "forward"}, "derivative must be one of"),
        ({"n_samples": 1}, "n_samples must be at least 2, but got 1"),
        ({"confidence": 1.5}, r"confidence must be a number in \(0, 1\), but got 1.5"),
        ({"sum_zero": "yes"}, "sum_zero must be a non-empty list, but got 'yes'"),
        ({"seed": -1}, "seed must be a non-negative integer, but got -1"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        run_grid(**{"ks": [3], "ms": [1], "n_samples": 10, **kwargs})


def test_run_benchmark_leaves_failed_with_the_finished_rows_on_a_crash(tmp_path, monkeypatch):
    import spsa_mix.variance.bench as bench

    real = bench.sample_estimates
    calls = []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(bench, "sample_estimates", crashing)
    out = tmp_path / "v.json"
    settings = dict(problem="linear", ks=[3, 4], ms=[1], kinds=["gaussian"], sum_zero=[True], scales=["unbiased"],
                    n_samples=100)
    with pytest.raises(RuntimeError, match="out of memory"):
        bench.run_benchmark(settings, output=out)
    doc = json.loads(out.read_text())
    assert doc["status"] == "failed" and doc["error"] == "RuntimeError: out of memory"
    assert [r["k"] for r in doc["rows"]] == [3] and doc["summary"]["rows"] == 1
    with pytest.raises(ValueError, match="every K must be at least 2"):  # bad settings: nothing written
        bench.run_benchmark({**settings, "ks": [1]}, output=tmp_path / "none.json")
    assert not (tmp_path / "none.json").exists()


def test_a_k_beyond_the_machines_memory_is_refused_before_any_work(tmp_path, capsys):
    from spsa_mix.cli import main

    with pytest.raises(ValueError, match="K=100000000 needs about .* bytes .* more than this machine's memory"):
        run_grid(problem="quadratic", ks=[3, 100_000_000], ms=[1], kinds=["gaussian"], sum_zero=[True],
                 orthogonal=[False], n_samples=2, progress=False)
    assert main(["bench", "variance", "--k", "100000000", "--no-progress", "--quiet", "--output",
                 str(tmp_path / "v.json"), "--plot", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "more than this machine's memory" in err
