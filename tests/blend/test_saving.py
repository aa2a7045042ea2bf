"""Writing blends: atomic folders, refusal to overwrite, shards, plain state dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.saving import parse_size, write_safetensors_shards
from spsa_mix.io import atomic_directory

from .blend_helpers import TinyNet, make_tiny_experts, tiny_batch


def test_state_dict_experts_save_a_safetensors_state_dict(tmp_path):
    experts = make_tiny_experts(2)
    obj = BlendedObjective(TinyNet(), experts, data=tiny_batch(), device="cpu")
    alpha = np.array([0.25, 0.75])
    path = obj.save_pretrained(alpha, tmp_path / "blend.safetensors")
    net = TinyNet()
    net.load_state_dict(load_file(path))
    expected = obj.blended_state_dict(alpha)
    assert all(torch.equal(net.state_dict()[n], expected[n]) for n in expected)
    assert int(net.bn.num_batches_tracked) == 18  # 0.25 * 10 + 0.75 * 20, rounded
    folder = obj.save_pretrained(alpha, tmp_path / "folder")
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["model.safetensors"] and folder.endswith("folder")
    with pytest.raises(ValueError, match=r"path '.*blend.safetensors' exists and is not empty: pass overwrite=True"):
        obj.save_pretrained(alpha, tmp_path / "blend.safetensors")
    obj.save_pretrained(np.array([1.0, 0.0]), tmp_path / "blend.safetensors", overwrite=True)
    assert torch.equal(load_file(path)["body.weight"], experts[0].body.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blend.safetensors", "folder"]  # no temporary left


def test_an_interrupted_save_leaves_nothing(tmp_path):
    def tensors():
        yield "a", torch.zeros(2)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"), atomic_directory(tmp_path / "out") as tmp:
        write_safetensors_shards(tensors(), tmp)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(ValueError, match="exists and is not empty"), atomic_directory(tmp_path / "full"):
        pass
    with atomic_directory(tmp_path / "full", overwrite=True) as tmp:
        (tmp / "y").write_text("y")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["y"]


def test_shards_follow_transformers_layout(tmp_path):
    tensors = [(f"t{i}", torch.full((10,), float(i))) for i in range(5)]  # 40 bytes each
    files = write_safetensors_shards(iter(tensors), tmp_path, max_shard_size=100)
    assert files[-1] == "model.safetensors.index.json" and files[0] == "model-00001-of-00003.safetensors"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 200 and index["weight_map"]["t4"] == "model-00003-of-00003.safetensors"
    assert torch.equal(load_file(tmp_path / index["weight_map"]["t2"])["t2"], torch.full((10,), 2.0))
    for bad in ("5XB", 0, "-3GB", None):
        with pytest.raises(ValueError, match="max_shard_size must be a positive number of bytes"):
            parse_size(bad)
