"""Writing blends: atomic folders, refusal to overwrite, shards, plain state dicts."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.saving import parse_size, write_safetensors_shards, write_safetensors_stream
from spsa_mix.io import atomic_directory

from .blend_helpers import TinyNet, make_tiny_experts, memory_tools, tiny_batch
from .hf_helpers import llama_config, save_family


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


def test_a_streamed_file_is_safetensors_own_layout_whatever_the_order_tensors_come_in(tmp_path):
    from safetensors import safe_open

    entries = [("flag", torch.bool, (3,)), ("w", torch.bfloat16, (2, 3)), ("n", torch.int64, ()),
               ("x", torch.float32, (5,)), ("empty", torch.float16, (0, 4))]
    values = {"flag": torch.tensor([True, False, True]), "w": torch.arange(6.0).reshape(2, 3).to(torch.bfloat16),
              "n": torch.tensor(7), "x": torch.linspace(0, 1, 5), "empty": torch.zeros(0, 4, dtype=torch.float16)}
    write_safetensors_stream(((n, values[n]) for n in ["x", "w", "empty", "flag", "n"]), entries, tmp_path / "a")
    loaded = load_file(tmp_path / "a")
    assert set(loaded) == set(values) and all(torch.equal(loaded[n], values[n]) for n in values)
    with safe_open(tmp_path / "a", "pt") as f:  # the file parses in safetensors' own (Rust) reader
        assert f.metadata() == {"format": "pt"}
    from safetensors.torch import save_file

    save_file(values, tmp_path / "b", metadata={"format": "pt"})
    assert (tmp_path / "a").stat().st_size == (tmp_path / "b").stat().st_size  # same header and data sizes
    with pytest.raises(RuntimeError, match="is torch.float32 \\(5,\\), but the header plans torch.float16"):
        write_safetensors_stream([("x", values["x"])], [("x", torch.float16, (5,))], tmp_path / "c")
    with pytest.raises(RuntimeError, match="were planned but never came"):
        write_safetensors_stream([("x", values["x"])], entries[3:], tmp_path / "d")


def test_saving_holds_one_tensor_not_a_shard(tmp_path):
    """A 17 MB model saved in one shard: serialising the shard in memory, as before, held the
    whole model; written tensor by tensor the peak is a few tensors."""
    tools = memory_tools()
    config = llama_config(vocab_size=2048, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                          tie_word_embeddings=False)
    family = save_family(tmp_path / "family", k=2, config=config)
    model_bytes = sum(p.numel() * 4 for p in family.base_model.parameters())
    largest = max(p.numel() * 4 for p in family.base_model.parameters())
    del family.base_model, family.expert_models
    obj = BlendedObjective.from_pretrained(family.experts, device="cpu", memory="streamed")
    obj.save_pretrained(np.array([0.5, 0.5]), tmp_path / "warm", max_shard_size="5GB")  # the allocator's first blocks
    before = tools.rss_anon()
    with tools.Peak() as save:
        obj.save_pretrained(np.array([0.3, 0.7]), tmp_path / "out", max_shard_size="5GB")
    assert save.peak - before < 2 * largest + 2**21 < model_bytes / 2, (save.peak - before, largest, model_bytes)
    saved = load_file(tmp_path / "out" / "model.safetensors")
    state = obj.blended_state_dict(np.array([0.3, 0.7]))
    assert saved.keys() == state.keys() and all(torch.equal(saved[n], state[n]) for n in saved)
