"""Loss and accuracy over a whole loader: of a model, of theta(alpha), of each expert."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spsa_mix.blend import BlendedObjective, evaluate, evaluate_blend, evaluate_experts

from .blend_helpers import TinyNet, make_tiny_experts, tiny_batch


def _loader(n: int = 50, batch_size: int = 16):
    x, y = tiny_batch(n, seed=3)
    return x, y, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch_size)


def test_evaluate_equals_the_whole_set_at_once_and_leaves_no_trace():
    net = make_tiny_experts(1)[0].train()
    x, y, loader = _loader()
    metrics = evaluate(net, loader)
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert metrics["n"] == 50
    assert metrics["loss"] == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((out.argmax(1) == y).float().mean().item())
    net.train()
    seen = []
    net.register_forward_hook(lambda m, i, o: seen.append((m.training, o.requires_grad, o.grad_fn)))
    evaluate(net, loader)
    assert all(s == (False, False, None) for s in seen) and len(seen) == 4
    assert net.training  # mode restored
    assert all(p.grad is None for p in net.parameters())


def test_evaluate_max_batches_and_regression_targets():
    net = make_tiny_experts(1)[0]
    _, _, loader = _loader()
    assert evaluate(net, loader, max_batches=2)["n"] == 32
    x = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    metrics = evaluate(net, (x, torch.zeros(8, 3)), loss_fn=F.mse_loss)
    assert np.isnan(metrics["accuracy"]) and metrics["loss"] > 0


def test_evaluate_blend_equals_evaluate_of_the_blended_model():
    experts = make_tiny_experts(3)
    x, y, loader = _loader()
    obj = BlendedObjective(TinyNet(), experts, data=(x, y), device="cpu")
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=3)
    drawn = obj.batches_drawn
    many = evaluate_blend(obj, points, loader)
    assert isinstance(many, list) and len(many) == 3
    for alpha, metrics in zip(points, many, strict=True):
        expected = evaluate(obj.blended_model(alpha), loader)
        assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-5)
        assert metrics["accuracy"] == expected["accuracy"] and metrics["n"] == 50
    one = evaluate_blend(obj, points[0], loader)
    assert isinstance(one, dict) and one["loss"] == pytest.approx(many[0]["loss"], rel=1e-6)
    assert obj.batches_drawn == drawn  # the training stream is not touched


def test_evaluate_experts_scores_each_expert_alone():
    experts = make_tiny_experts(3)
    _, _, loader = _loader()
    for granularity in ("model", "layer"):
        obj = BlendedObjective(TinyNet(), experts, device="cpu", granularity=granularity)
        for expert, metrics in zip(experts, evaluate_experts(obj, loader), strict=True):
            expected = evaluate(expert, loader)
            assert metrics["loss"] == pytest.approx(expected["loss"], rel=1e-6)
            assert metrics["accuracy"] == expected["accuracy"]


def test_evaluate_errors():
    net = TinyNet()
    with pytest.raises(ValueError, match="model must be an nn.Module, but got str"):
        evaluate("net", _loader()[2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_batches must be an integer >= 1 or None, but got 0"):
        evaluate(net, _loader()[2], max_batches=0)
    with pytest.raises(ValueError, match="data yielded no batch: nothing to evaluate"):
        evaluate(net, [])
    obj = BlendedObjective(TinyNet(), make_tiny_experts(2), device="cpu")
    with pytest.raises(ValueError, match=r"alpha must have shape \(2,\) or \(n, 2\), but got shape \(3,\)"):
        evaluate_blend(obj, np.full(3, 1 / 3), _loader()[2])


def test_large_batches_are_scored_in_chunks_on_the_cpu_with_the_whole_batchs_numbers(monkeypatch):
    import importlib

    from spsa_mix.models import build_model

    ev = importlib.import_module("spsa_mix.blend.scoring")  # the module of spsa_mix.blend.evaluate

    net = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(600, 1, 8, 8, generator=gen), torch.randint(0, 10, (600,), generator=gen)
    sizes = []
    net.register_forward_pre_hook(lambda m, args: sizes.append(int(args[0].shape[0])))
    chunked = evaluate(net, (x, y))
    assert sizes == [256, 256, 88]
    monkeypatch.setattr(ev, "EVAL_CHUNK", 10_000)
    sizes.clear()
    whole = evaluate(net, (x, y))
    assert sizes == [600]
    assert chunked["accuracy"] == whole["accuracy"] and chunked["n"] == whole["n"] == 600
    assert chunked["loss"] == pytest.approx(whole["loss"], rel=1e-6)  # equal bits where the kernels allow


def test_outputs_that_do_not_concatenate_are_computed_on_the_whole_batch():
    class Boxed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return {"logits": self.lin(x)}

    calls = []
    net = Boxed()
    net.register_forward_pre_hook(lambda m, args: calls.append(int(args[0].shape[0])))
    x, y = torch.randn(300, 2), torch.zeros(300, dtype=torch.long)
    m = evaluate(net, (x, y), loss_fn=lambda out, t: F.cross_entropy(out["logits"], t))
    assert calls == [256, 44, 300] and m["n"] == 300


def test_language_model_losses_are_weighted_per_token_not_per_example():
    from spsa_mix.blend.losses import CausalLM

    class Bigram(torch.nn.Module):  # logits from the current token: any fixed function will do
        def __init__(self) -> None:
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(8, 8, generator=torch.Generator().manual_seed(0)))

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
            return self.table[input_ids]

    long = torch.randint(0, 8, (1, 12), generator=torch.Generator().manual_seed(1))
    short = torch.randint(0, 8, (3, 12), generator=torch.Generator().manual_seed(2))
    short_labels = short.clone()
    short_labels[:, 3:] = -100  # 2 scored tokens each, against 11 in the long example
    batches = [{"input_ids": long, "labels": long}, {"input_ids": short, "labels": short_labels}]
    net, loss = Bigram(), CausalLM()
    with torch.no_grad():
        per_token = [float(loss(net(b["input_ids"]), b["labels"])) for b in batches]
    metrics = evaluate(net, batches, loss_fn=loss)
    expected = (11 * per_token[0] + 6 * per_token[1]) / 17   # the mean over the 17 scored tokens
    assert metrics["loss"] == pytest.approx(expected, rel=1e-6) and metrics["n"] == 4
    assert metrics["loss"] != pytest.approx((1 * per_token[0] + 3 * per_token[1]) / 4, rel=1e-3)
