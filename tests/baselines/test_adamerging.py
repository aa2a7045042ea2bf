"""AdaMerging's loop: the paper's own (clamp in the forward pass, torch's Adam) to rounding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from spsa_mix.baselines.adamerging import adamerging
from spsa_mix.blend.multitask import MultiTaskObjective, TaskSpec


SHAPES = {"0.weight": (4, 5), "0.bias": (4,), "2.weight": (3, 4), "2.bias": (3,)}  # two layers: two groups


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))


def _linear(seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def _data(seed: int, batches: int = 4) -> list[tuple[torch.Tensor, None]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=gen), None) for _ in range(batches)]


def _paper_loop(base, experts, datas, *, steps, lr, layer_wise):
    """AdaMerging's code, transcribed: raw lambdas, clamp in the forward, Adam, mean entropy per task."""
    k = len(experts)
    raw = torch.nn.Parameter(torch.full((2, k) if layer_wise else (k,), 0.3, dtype=torch.float64))
    opt = torch.optim.Adam([raw], lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    out = []
    for step in range(steps):
        lam = torch.clamp(raw, 0.0, 1.0)
        params = {}
        for name in SHAPES:
            row = lam[int(name[0]) // 2] if layer_wise else lam  # layer "0" is group 0, layer "2" group 1
            params[name] = base[name].double() + sum(row[i] * (experts[i][name] - base[name]).double() for i in range(k))
        loss = 0.0
        for data in datas:
            x = data[step % len(data)][0].double()
            h = torch.tanh(x @ params["0.weight"].T + params["0.bias"])
            logp = torch.log_softmax(h @ params["2.weight"].T + params["2.bias"], dim=-1)
            loss = loss + (-(logp.exp() * logp).sum(-1)).mean() / len(datas)
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(torch.clamp(raw, 0.0, 1.0).detach().numpy().copy())
    return np.stack(out)


@pytest.mark.parametrize("layer_wise", [False, True])
def test_it_is_the_papers_loop(layer_wise):
    base, experts = _linear(0), [_linear(i + 1) for i in range(3)]
    datas = [_data(10), _data(11)]
    obj = MultiTaskObjective(_net(), experts, [TaskSpec("a", datas[0]), TaskSpec("b", datas[1])],
                             base=base, space="task-vectors", scale=1.0, simplex_atol=None, device="cpu",
                             dtype=torch.float64, granularity="layer" if layer_wise else "model")
    res = adamerging(obj, steps=60, lr=0.05)
    ref = _paper_loop(base, experts, datas, steps=60, lr=0.05, layer_wise=layer_wise)
    np.testing.assert_allclose(res.x, ref[-1], atol=1e-9)
    assert (ref == 0).any() or (ref == 1).any()  # the clamp was reached: its zero gradient is exercised
    assert res.nit == res.njev == 60 and res.success and res.history["loss"].shape == (60,)
    assert res.x.shape == obj.shape


def test_a_callback_can_stop_it_and_bad_settings_are_named():
    q = lambda x: (float((x ** 2).sum()), 2 * x)  # noqa: E731

    def stop(step, lam, loss):
        if step == 2:
            raise StopIteration

    res = adamerging(q, shape=(2,), steps=10, callback=stop)
    assert res.nit == 3 and res.status.name == "CALLBACK" and not res.success
    with pytest.raises(ValueError, match="steps must be"):
        adamerging(q, shape=(2,), steps=0)
    with pytest.raises(ValueError, match="bounds must be"):
        adamerging(q, shape=(2,), bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="shape must be the shape of lambda"):
        adamerging(q)
    with pytest.raises(ValueError, match="lr must be a non-negative finite number"):
        adamerging(q, shape=(2,), lr=float("nan"))
