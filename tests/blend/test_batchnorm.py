"""BatchNorm: refreshed statistics, and the explicit eval-mode form used for gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from spsa_mix.blend import differentiable_batchnorm, refresh_batchnorm
from spsa_mix.blend.batchnorm import has_batchnorm

from .blend_helpers import TinyNet, make_tiny_experts, tiny_batch


def test_refresh_recomputes_the_statistics_of_the_data():
    net = make_tiny_experts(1)[0].eval()
    x, y = tiny_batch(64, seed=1)
    loader = [(x[:32], y[:32]), (x[32:], y[32:])]
    refresh_batchnorm(net, loader)
    with torch.no_grad():
        features = net.body(x)  # the input of the BatchNorm layer
    # the average over the two batches of the batch statistics (momentum=None)
    means = torch.stack([features[:32].mean(0), features[32:].mean(0)]).mean(0)
    variances = torch.stack([features[:32].var(0), features[32:].var(0)]).mean(0)  # unbiased, as BatchNorm
    torch.testing.assert_close(net.bn.running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net.bn.running_var, variances, rtol=1e-5, atol=1e-6)
    assert int(net.bn.num_batches_tracked) == 2
    assert not net.training and net.bn.momentum == 0.1  # mode and momentum restored
    assert all(p.grad is None for p in net.parameters())


def test_refresh_leaves_parameters_and_respects_max_batches():
    net = make_tiny_experts(1)[0]
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    x, y = tiny_batch(64)
    refresh_batchnorm(net, [(x[:32], y[:32]), (x[32:], y[32:])], max_batches=1)
    assert int(net.bn.num_batches_tracked) == 1
    assert all(torch.equal(p, before[n]) for n, p in net.named_parameters())


def test_refresh_errors():
    with pytest.raises(ValueError, match="model must be an nn.Module, but got int"):
        refresh_batchnorm(3, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="data yielded no batch"):
        refresh_batchnorm(TinyNet(), [])
    with pytest.raises(ValueError, match="max_batches must be an integer >= 1 or None, but got -1"):
        refresh_batchnorm(TinyNet(), [], max_batches=-1)
    with pytest.raises(ValueError, match="needs batches whose inputs are one tensor"):
        refresh_batchnorm(TinyNet(), [({"x": torch.zeros(2, 5)}, torch.zeros(2))])


def test_differentiable_batchnorm_equals_the_fused_kernel_and_has_gradients():
    for bn, shape in ((nn.BatchNorm1d(4), (6, 4)), (nn.BatchNorm2d(4), (2, 4, 3, 3)), (nn.BatchNorm1d(4, affine=False), (6, 4))):
        gen = torch.Generator().manual_seed(0)
        with torch.no_grad():
            bn.running_mean.copy_(torch.randn(4, generator=gen))
            bn.running_var.copy_(torch.rand(4, generator=gen) + 0.5)
        bn.eval()
        x = torch.randn(shape, generator=gen)
        fused = bn(x)
        differentiable_batchnorm(bn)
        torch.testing.assert_close(bn(x), fused, rtol=1e-5, atol=1e-6)
        mean = bn.running_mean.clone().requires_grad_(True)
        out = torch.func.functional_call(bn, {"running_mean": mean}, (x,))
        (grad,) = torch.autograd.grad(out.sum(), mean)
        assert grad.abs().sum() > 0  # the fused kernel gives no gradient here
    bn.train()
    x = torch.randn(6, 4, generator=gen)
    torch.testing.assert_close(bn(x), nn.functional.batch_norm(x, None, None, training=True))


def test_has_batchnorm():
    assert has_batchnorm(TinyNet()) and not has_batchnorm(nn.Linear(2, 2))
