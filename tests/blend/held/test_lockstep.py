"""Probes in lockstep: nested blocks, tied weights, one read of the rows per block and call,
errors in a probe, control flow that depends on the weights, weights read outside a forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from spsa_mix.blend import BlendedObjective
from spsa_mix.blend.held import streamed as streamed_module
from spsa_mix.blend.held.lockstep import Lockstep, ProbeOrderError, UnboundWeightError
from spsa_mix.blend.held.streamed import stream_experts
from spsa_mix.blend.skeleton import skeleton_of


class Nested(nn.Module):
    """A module owning a tensor beside its children (as a ViT owns its position embedding),
    with an output layer tied to the input embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.scale = nn.Parameter(torch.ones(4))
        self.inner = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 4))
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embed(ids) * self.scale
        return self.head(self.inner(h) + h)


def _experts(cls: type[nn.Module], k: int = 3) -> list[nn.Module]:
    out = []
    for i in range(k):
        torch.manual_seed(i)
        net = cls()
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.3 * torch.randn_like(p))
        out.append(net)
    return out


def _objectives(cls: type[nn.Module], data, k: int = 3):
    experts = _experts(cls, k)
    return (BlendedObjective(cls(), experts, data=data, device="cpu", memory="resident"),
            BlendedObjective(cls(), experts, data=data, device="cpu", memory="streamed"))


def test_nested_blocks_and_tied_weights_give_the_resident_losses():
    ids = torch.randint(0, 7, (5, 3), generator=torch.Generator().manual_seed(0))
    data = (ids, torch.randint(0, 7, (5, 3)))

    def loss(out, y):
        return torch.nn.functional.cross_entropy(out.reshape(-1, 7), y.reshape(-1))

    experts = _experts(Nested)
    resident = BlendedObjective(Nested(), experts, data=data, loss_fn=loss, device="cpu", memory="resident")
    streamed = BlendedObjective(Nested(), experts, data=data, loss_fn=loss, device="cpu", memory="streamed")
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=5)
    np.testing.assert_allclose(streamed(points), resident(points), rtol=1e-6)
    assert streamed._lockstep.bound() == []  # every block's copies freed


def test_each_block_is_blended_once_per_call_for_all_its_probes(monkeypatch):
    experts = _experts(Nested)
    held = stream_experts(Nested().state_dict(), experts, device=torch.device("cpu"), dtype=torch.float32,
                          aliases={"head.weight": "embed.weight"})
    runner = Lockstep(skeleton_of(Nested(), device=torch.device("cpu")), held, dtype=torch.float32)
    calls: list[tuple[int, tuple[int, ...]]] = []
    blend = streamed_module.blend_rows

    def counting(rows, coeffs, out, **kw):
        calls.append((coeffs.shape[0], tuple(out.shape[1:])))
        return blend(rows, coeffs, out, **kw)

    monkeypatch.setattr(streamed_module, "blend_rows", counting)
    ids = torch.randint(0, 7, (2, 3))
    coeffs = torch.tensor([[[0.2, 0.3, 0.5]], [[0.5, 0.5, 0.0]]])  # (n, G, R)
    outs = runner.run(coeffs, lambda: runner.model(ids))
    # embed, scale, two linears' weights and biases, and the tied head (the embedding again): 7 blends of 2 probes
    assert [n for n, _ in calls] == [2] * 7 and sorted(s for _, s in calls).count((7, 4)) == 2
    for out, c in zip(outs, coeffs, strict=True):
        net = Nested()
        state = {n: sum(float(w) * e.state_dict()[n] for w, e in zip(c[0], experts, strict=True))
                 for n in net.state_dict()}
        net.load_state_dict(state)
        assert torch.allclose(out, net(ids), atol=1e-6)


class Gated(nn.Linear):
    """A linear layer that runs its child only when its own weights sum above zero."""

    def __init__(self) -> None:
        super().__init__(3, 3)
        self.extra = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = super().forward(x)
        return self.extra(h) if float(self.weight.sum()) > 0 else h


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = Gated()
        self.c = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.a(x))


def test_probes_that_run_different_modules_are_an_error():
    experts = [Branchy() for _ in range(2)]
    with torch.no_grad():
        experts[0].a.weight.fill_(1.0)
        experts[1].a.weight.fill_(-1.0)
    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    obj = BlendedObjective(Branchy(), experts, data=(x, y), device="cpu", memory="streamed")
    with pytest.raises(ProbeOrderError, match="same modules in the same order"):
        obj(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert obj._lockstep.bound() == []
    obj(np.array([[0.9, 0.1], [0.8, 0.2]]))  # the same branch for both: fine


def test_an_error_in_one_probe_reaches_the_caller_and_leaves_nothing_bound():
    experts = _experts(Nested)
    x = torch.randint(0, 7, (4, 3))
    seen: list[int] = []
    armed = [True]

    def loss(out, y):
        seen.append(1)
        if armed[0] and len(seen) == 2:
            raise ArithmeticError("the second probe's loss failed")
        return out.sum()

    obj = BlendedObjective(Nested(), experts, data=(x, x), loss_fn=loss, device="cpu", memory="streamed")
    with pytest.raises(ArithmeticError, match="second probe"):
        obj(np.full((2, 3), 1 / 3))
    assert obj._lockstep.bound() == []
    armed[0] = False
    assert obj(np.full((2, 3), 1 / 3)).shape == (2,)  # the objective still works


class ReadsAChildsWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.proj.weight.T  # the child's weight, outside the child's forward


def test_weights_read_outside_their_module_name_the_fix():
    experts = [ReadsAChildsWeight() for _ in range(2)]
    x, y = torch.randn(4, 3), torch.randint(0, 3, (4,))
    obj = BlendedObjective(ReadsAChildsWeight(), experts, data=(x, y), device="cpu", memory="streamed")
    with pytest.raises(UnboundWeightError, match="outside that module's forward .* use memory='resident'"):
        obj(np.full((2, 2), 0.5))
    resident = BlendedObjective(ReadsAChildsWeight(), experts, data=(x, y), device="cpu", memory="resident")
    assert resident(np.full((2, 2), 0.5)).shape == (2,)


def test_the_probe_model_outside_a_call_is_an_error():
    obj = BlendedObjective(Nested(), _experts(Nested), device="cpu", memory="streamed")
    with pytest.raises(RuntimeError, match="outside a call"):
        obj._model(torch.zeros(1, 2, dtype=torch.long))


def test_staged_rows_give_the_same_probes_and_prefetch_after_the_first_call():
    """The GPU path's bookkeeping (two slots, the first call's order recorded, the next block
    prefetched), run on the CPU with plain buffers: the same losses, call after call."""
    ids = torch.randint(0, 7, (5, 3), generator=torch.Generator().manual_seed(1))
    experts = _experts(Nested)
    held = stream_experts(Nested().state_dict(), experts, device=torch.device("cpu"), dtype=torch.float32,
                          aliases={"head.weight": "embed.weight"})
    plain = Lockstep(skeleton_of(Nested(), device=torch.device("cpu")), held, dtype=torch.float32)
    staged = Lockstep(skeleton_of(Nested(), device=torch.device("cpu")), held, dtype=torch.float32, staged=True)
    assert plain.stager is None and staged.stager is not None
    stager = staged.stager
    fills: list[int] = []
    fill = stager._fill

    def counting(slot, block):
        fills.append(block)
        return fill(slot, block)

    stager._fill = counting
    torch.manual_seed(2)
    for call in range(3):
        coeffs = torch.distributions.Dirichlet(torch.ones(3)).sample((2,))[:, None, :]  # (n, G, R)
        a = plain.run(coeffs, lambda: plain.model(ids))
        b = staged.run(coeffs, lambda: staged.model(ids))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), call
        assert staged.bound() == []
    # the outer module, the embedding, two linears and the head: five entries a call
    assert len(stager.sequence) == 5 and not stager.recording
    assert len(fills) == 3 * 5  # every entry staged once a call: on demand in the first, prefetched after
    assert stager.prefetched == 2 * 4  # in the second and third calls, every entry but the first
