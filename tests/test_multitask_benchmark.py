"""benchmarks/multitask.py: its TIES preprocessing on tiny tensors, its --resume decisions, its clean exit
without the data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    pytest.importorskip("mergekit")
    sys.path.insert(0, str(ROOT / "benchmarks"))  # as when it runs as a script (it imports step_cost)
    spec = importlib.util.spec_from_file_location("multitask_bench", ROOT / "benchmarks" / "multitask.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    bench = _bench()
    gen = torch.Generator().manual_seed(0)
    base = {"w": torch.randn(50, generator=gen), "fc.weight": torch.zeros(3), "n": torch.tensor(4)}
    experts = [{"w": base["w"] + torch.randn(50, generator=gen), "fc.weight": torch.ones(3) * i, "n": torch.tensor(9)}
               for i in range(3)]
    rebuilt, merged = bench.ties_vectors(base, experts, density=0.2)
    kept = torch.stack([e["w"] - base["w"] for e in rebuilt])  # (K, 50)
    assert all(int((k != 0).sum()) <= 10 for k in kept)  # the top 20 % of each task vector at most
    trimmed = torch.stack([torch.where((d := e["w"] - base["w"]).abs() >= d.abs().topk(10).values[-1], d, 0)
                           for e in experts])
    elected = torch.sign(trimmed.sum(0))
    assert torch.equal(kept, trimmed * (torch.sign(trimmed) == elected))  # the entries that agree with the sign
    count = (kept != 0).sum(0).clamp_min(1)
    torch.testing.assert_close(merged["w"], base["w"] + kept.sum(0) / count)
    assert all(torch.equal(r["fc.weight"], e["fc.weight"]) for r, e in zip(rebuilt, experts, strict=True))  # heads kept
    assert torch.equal(merged["n"], base["n"])  # integer buffers untouched


def test_without_the_shared_data_it_says_so_and_exits_2(tmp_path, capsys):
    bench = _bench()
    assert bench.main(["--data-root", str(tmp_path), "--output", str(tmp_path / "r.json"), "--quick"]) == 2
    assert "resnet20-12fca82f.th not found" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def _settings(bench, **changed):
    """The settings part of a default (full) run's config, as ``main`` checks it before loading data."""
    return {"size": "full", "sizes": bench.SIZES["full"], "digits_sizes": bench.DIGITS_SIZES["full"], "seeds": 3,
            "adamerging_steps": 500, "budget_task": 1000, "budget_layer": 1000, "batch_per_task": 16,
            "spsa_lr": bench.SPSA_LR, "spsa_betas": bench.SPSA_BETAS, "ties_density": bench.TIES_DENSITY,
            "ta_grid": bench.TA_GRID, "ties_grid": bench.TIES_GRID, "ties_from": "mergekit", "expert_bn": "frozen",
            **changed}


def _interrupted(bench):
    """A results file as an interrupted run leaves it (JSON: tuples as lists), with the data's keys too."""
    runs = [{"method": m, "seed": 0, "accuracy": {"mean": 0.5}} for m in ("pretrained", "uniform")]
    runs += [{"method": "joint", "seed": s, "accuracy": {"mean": 0.8}} for s in (0, 2)]
    config = json.loads(json.dumps({**_settings(bench), "tasks": {"digits": {"classes": 10}}, "groups": 38}))
    return {"command": "python benchmarks/multitask.py ", "config": config, "runs": runs,
            "errors": [{"method": "joint", "error": "RuntimeError: stopped"}], "status": "running"}


def test_resume_keeps_every_finished_run_and_runs_only_the_missing_seeds():
    bench = _bench()
    previous = _interrupted(bench)
    kept = bench.finished_runs(previous, _settings(bench))  # the settings alone: before the data is loaded
    assert kept == previous["runs"] and kept is not previous["runs"]
    full = {**_settings(bench), "tasks": {"digits": {"classes": 10}}, "groups": 38}  # once it is
    assert bench.finished_runs(previous, full) == previous["runs"]
    assert bench.pending_seeds("pretrained", 3, kept) == []  # one run, done
    assert bench.pending_seeds("ties", 3, kept) == [0]  # one run, not done
    assert bench.pending_seeds("joint", 3, kept) == [1]  # the seed the failure stopped
    assert bench.pending_seeds("spsa-layer", 3, kept) == [0, 1, 2]
    assert bench.pending_seeds("joint", 1, kept) == []


def test_resume_refuses_a_file_written_with_other_settings():
    bench = _bench()
    previous = _interrupted(bench)
    with pytest.raises(ValueError, match=r"seeds was 3, now 1; budget_layer was 1000, now 20$"):
        bench.finished_runs(previous, _settings(bench, seeds=1, budget_layer=20))
    with pytest.raises(ValueError, match=r"groups was 38, now 12"):
        bench.finished_runs(previous, {**_settings(bench), "groups": 12})
    with pytest.raises(ValueError, match="not a results file"):
        bench.finished_runs({"runs": []}, _settings(bench))


def test_resume_checks_the_file_before_the_data(tmp_path, capsys):
    bench = _bench()
    out = tmp_path / "r.json"
    common = ["--resume", "--data-root", str(tmp_path), "--output", str(out)]  # no data there
    assert bench.main(common) == 2
    assert "cannot resume" in (err := capsys.readouterr().err) and "it does not exist" in err
    out.write_text(json.dumps(_interrupted(bench)))
    assert bench.main([*common, "--seeds", "1"]) == 2
    assert "written with other settings: seeds was 3, now 1" in capsys.readouterr().err
    assert json.loads(out.read_text()) == _interrupted(bench)  # left as it was
    assert bench.main([*common, "--render"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert bench.main(common) == 2  # the same settings: on to the data, which is missing
    assert "not found" in capsys.readouterr().err
