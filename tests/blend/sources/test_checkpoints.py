"""Reading experts lazily: safetensors headers, one tensor at a time, HF directories, prefixes."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from spsa_mix.blend.sources.checkpoints import TensorInfo, hf_weight_files, open_checkpoint, read_safetensors_header


def _tensors() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {"a.weight": torch.randn(3, 4, generator=gen), "a.bias": torch.randn(3, generator=gen).to(torch.bfloat16),
            "b.scale": torch.randn((), generator=gen).double(), "b.count": torch.tensor(7),
            "c.half": torch.randn(5, generator=gen).half(), "c.empty": torch.zeros(0, 2)}


def test_safetensors_reader_equals_safetensors_and_reads_straight_into_a_slice(tmp_path):
    path = tmp_path / "e.safetensors"
    save_file(_tensors(), path)
    ckpt = open_checkpoint(path, label="experts[0]")
    reference = load_file(path)
    assert set(ckpt.infos) == set(reference)
    assert ckpt.infos["a.bias"] == TensorInfo((3,), torch.bfloat16) and ckpt.infos["b.count"].dtype == torch.int64
    for name, t in reference.items():
        got = ckpt.read(name)
        assert got.dtype == t.dtype and got.shape == t.shape and torch.equal(got, t)
    row = torch.zeros(2, 20)
    ckpt.read_into("a.weight", row[1, 4:16])  # float32 into float32: read from the file directly
    assert torch.equal(row[1, 4:16], reference["a.weight"].reshape(-1)) and row[0].abs().sum() == 0
    cast = torch.zeros(3, dtype=torch.float32)
    ckpt.read_into("a.bias", cast)  # bf16 into float32: read, then cast
    assert torch.equal(cast, reference["a.bias"].float())


def test_headers_are_checked(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00")
    with pytest.raises(ValueError, match=r"experts\[2\]: '.*bad.safetensors' is not a safetensors file \(shorter than 8 bytes\)"):
        read_safetensors_header(bad, "experts[2]")
    path = tmp_path / "e.safetensors"
    save_file({"w": torch.zeros(4)}, path)
    data = path.read_bytes()
    path.write_bytes(data[:-4])  # truncated
    with pytest.raises(ValueError, match=r"tensor 'w' in '.*e.safetensors' has inconsistent byte offsets \[0, 16\]"):
        open_checkpoint(path, label="experts[0]")


def _header(path, header) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(64))


@pytest.mark.parametrize(("header", "message"), [
    ([1, 2], "its header is a JSON list, not an object"),
    ({"w": {"dtype": "F32", "data_offsets": [0, 16]}}, "the entry of tensor 'w' has no shape"),
    ({"w": {"dtype": "F32", "shape": [4]}}, "the entry of tensor 'w' has no data_offsets"),
    ({"w": "F32"}, "the entry of tensor 'w' is a str, not an object"),
    ({"w": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "tensor 'w' has shape \\[-4\\]"),
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}}, "tensor 'w' has data_offsets \\[16, 0\\]"),
    ({"w": {"dtype": 5, "shape": [4], "data_offsets": [0, 16]}}, "tensor 'w' has dtype 5, not a name"),
    ({"__metadata__": [1], "w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, "its __metadata__ is not"),
])
def test_crafted_headers_are_refused_naming_the_entry(tmp_path, header, message):
    path = tmp_path / "c.safetensors"
    _header(path, header)
    with pytest.raises(ValueError, match=r"experts\[0\]: '.*c.safetensors' is not a safetensors file \(" + message):
        read_safetensors_header(path, "experts[0]")


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_a_shard_index_naming_a_file_outside_the_folder_is_refused(tmp_path, shard):
    model = tmp_path / "model"
    model.mkdir()
    save_file({"w": torch.zeros(2)}, tmp_path / "outside.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": shard}}))
    with pytest.raises(ValueError, match=f"names the shard '{shard}', which is outside .*: refused"):
        hf_weight_files(model, "experts[0]")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["w"]}))
    with pytest.raises(ValueError, match="its weight_map must map tensor names to shard file names"):
        hf_weight_files(model, "experts[0]")


def test_hf_directories_single_sharded_and_bin(tmp_path):
    tensors = {f"layer{i}.weight": torch.full((64, 64), float(i)) for i in range(4)}
    single = tmp_path / "single"
    single.mkdir()
    save_file(tensors, single / "model.safetensors")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    weight_map = {}
    for i, (name, t) in enumerate(tensors.items()):
        file = f"model-{i + 1:05d}-of-00004.safetensors"
        save_file({name: t}, sharded / file)
        weight_map[name] = file
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    binary = tmp_path / "bin"
    binary.mkdir()
    torch.save(tensors, binary / "pytorch_model.bin")
    for d in (single, sharded, binary):
        ckpt = open_checkpoint(d, label="experts[0]")
        assert sorted(ckpt.infos) == sorted(tensors) and all(torch.equal(ckpt.read(n), t) for n, t in tensors.items())
    (sharded / "model-00003-of-00004.safetensors").unlink()
    with pytest.raises(ValueError, match=r"experts\[1\]: model.safetensors.index.json names the shard "
                                         r"'model-00003-of-00004.safetensors', which is not in '.*sharded'"):
        hf_weight_files(sharded, "experts[1]")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"base: '.*empty' holds no weights: expected one of \['model.safetensors.index.json', "
                                         r"'model.safetensors', 'pytorch_model.bin.index.json', 'pytorch_model.bin'\], found \['config.json'\]"):
        open_checkpoint(empty, label="base")


def test_data_parallel_prefix_is_stripped_only_when_every_name_has_it(tmp_path):
    ckpt = open_checkpoint({"module.a": torch.ones(1), "module.b": torch.zeros(2)}, label="experts[0]")
    assert ckpt.strip_prefix("module.") and list(ckpt.infos) == ["a", "b"] and torch.equal(ckpt.read("b"), torch.zeros(2))
    mixed = open_checkpoint({"module.a": torch.ones(1), "b": torch.zeros(2)}, label="experts[0]")
    assert not mixed.strip_prefix("module.") and list(mixed.infos) == ["module.a", "b"]
    path = tmp_path / "dp.safetensors"
    save_file({"module.w": torch.arange(3.0)}, path)
    ckpt = open_checkpoint(path, label="experts[0]")
    ckpt.strip_prefix("module.")
    assert torch.equal(ckpt.read("w"), torch.arange(3.0))
    with pytest.raises(KeyError, match="experts\\[0\\] has no tensor 'module.w'"):
        ckpt.read("module.w")
