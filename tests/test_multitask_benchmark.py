"""benchmarks/multitask.py: its TIES preprocessing on tiny tensors, and its clean exit without the data."""

from __future__ import annotations

import importlib.util
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
