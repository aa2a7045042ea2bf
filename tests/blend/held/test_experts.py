"""Loading experts from modules, state dicts, .pt and .safetensors files; checks; stacking."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.held.experts import (
    check_compatible,
    check_expert_list,
    load_state_dict,
    matches_prefix,
    stack_experts,
)

from ..blend_helpers import TinyNet, make_tiny_experts, tiny_batch


def _same(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[n], b[n]) for n in a)


def test_load_from_module_state_dict_pt_and_safetensors(tmp_path):
    net = make_tiny_experts(1)[0]
    sd = net.state_dict()
    torch.save(sd, tmp_path / "e.pt")
    torch.save({"epoch": 3, "state_dict": sd}, tmp_path / "ckpt.pth")
    save_file(dict(sd), tmp_path / "e.safetensors")
    assert _same(load_state_dict(net), sd)
    assert _same(load_state_dict(sd), sd)
    assert _same(load_state_dict(tmp_path / "e.pt"), sd)
    assert _same(load_state_dict(str(tmp_path / "ckpt.pth")), sd)  # checkpoint dict unwrapped
    loaded = load_state_dict(tmp_path / "e.safetensors")
    assert set(loaded) == set(sd) and all(torch.equal(loaded[n], sd[n]) for n in sd)


def test_objective_from_files_equals_objective_from_modules(tmp_path):
    experts, data = make_tiny_experts(3), tiny_batch()
    paths = []
    for i, e in enumerate(experts):
        path = tmp_path / (f"e{i}.safetensors" if i % 2 else f"e{i}.pt")
        (save_file(e.state_dict(), path) if i % 2 else torch.save(e.state_dict(), path))
        paths.append(path)
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=3)
    from_files = BlendedObjective(TinyNet(), paths, data=data, device="cpu")(points)
    from_modules = BlendedObjective(TinyNet(), experts, data=data, device="cpu")(points)
    np.testing.assert_array_equal(from_files, from_modules)


def test_loading_errors(tmp_path):
    with pytest.raises(ValueError, match=r"experts\[4\]: no such file '.*nothere.pt'"):
        load_state_dict(tmp_path / "nothere.pt", index=4)
    (tmp_path / "e.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"experts\[0\]: unknown checkpoint suffix '.npz'"):
        load_state_dict(tmp_path / "e.npz")
    torch.save(TinyNet(), tmp_path / "module.pt")  # a pickled module, not a state dict
    with pytest.raises(ValueError, match=r"experts\[1\]: torch.load\(.*weights_only=True\) failed \(UnpicklingError\): .* save model.state_dict\(\) instead"):
        load_state_dict(tmp_path / "module.pt", index=1)
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"experts\[0\] must map names to tensors, but entry 'epoch' is a int"):
        load_state_dict(tmp_path / "meta.pt")
    with pytest.raises(ValueError, match=r"experts\[2\] must be an nn.Module, a state_dict or a checkpoint path, but got int"):
        load_state_dict(3, index=2)  # type: ignore[arg-type]


def test_check_compatible_reports_the_first_offender_in_order():
    ref = TinyNet().state_dict()
    bad = dict(ref)
    bad["fc.weight"] = torch.zeros(2, 6)
    bad["body.bias"] = torch.zeros(9)  # earlier in state_dict order than fc.weight
    with pytest.raises(ValueError, match=r"experts\[5\] .* tensor 'body.bias' has shape \(9,\)"):
        check_compatible(ref, bad, index=5)
    check_compatible(ref, {n: t for n, t in ref.items() if not n.startswith("fc")}, index=0,
                     ignore=lambda n: matches_prefix(n, ["fc"]))


def test_check_expert_list():
    with pytest.raises(ValueError, match="experts must be a list of .* but got str"):
        check_expert_list("e.pt")
    with pytest.raises(ValueError, match="experts must be a list of .* but got dict"):
        check_expert_list({"w": torch.zeros(1)})
    assert len(check_expert_list((TinyNet(), TinyNet()))) == 2


def test_stack_holds_each_expert_once_in_one_buffer():
    experts = make_tiny_experts(3)
    ref = TinyNet().state_dict()
    stack = stack_experts(ref, experts, device=torch.device("cpu"), dtype=torch.float32)
    assert stack.k == 3
    assert stack.weights.shape == (3, stack.layout.size) and stack.weights.is_contiguous()
    offsets = stack.layout.offsets()
    for i, e in enumerate(experts):
        for name, t in e.state_dict().items():
            if t.is_floating_point():
                start, stop = offsets[name]
                assert torch.equal(stack.weights[i, start:stop], t.reshape(-1))
    assert all(start % 128 == 0 for start, _ in offsets.values())  # aligned views
    assert stack.layout.numel == sum(t.numel() for t in experts[0].state_dict().values() if t.is_floating_point())
    assert "bn.num_batches_tracked" not in stack.layout.names
    assert stack.counters["bn.num_batches_tracked"][0].tolist() == [10, 20, 30]
    assert stack.groups == ["model"] and stack.segments == [(0, stack.layout.size)]


def test_layer_groups_are_contiguous_modules():
    stack = stack_experts(TinyNet().state_dict(), make_tiny_experts(2), device=torch.device("cpu"),
                          dtype=torch.float32, granularity="layer")
    assert stack.groups == ["body", "bn", "fc"]
    offsets = stack.layout.offsets()
    assert stack.segments[1] == (offsets["bn.weight"][0], offsets["fc.weight"][0])  # padding included
    assert stack.segments[0][0] == 0 and stack.segments[-1][1] == stack.layout.size
    assert offsets["bn.running_var"][1] <= stack.segments[1][1]
