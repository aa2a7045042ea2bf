"""Small networks and experts shared by the blend tests (CPU, a few seconds in all)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np
import torch
from torch import nn

from spsa_mix.models import build_model


class TinyNet(nn.Module):
    """Linear -> BatchNorm -> tanh -> Linear: smooth, with running statistics."""

    def __init__(self, d_in: int = 5, hidden: int = 6, d_out: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(d_in, hidden)
        self.bn = nn.BatchNorm1d(hidden)
        self.fc = nn.Linear(hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(self.bn(self.body(x))))


def make_tiny_experts(k: int, *, seed: int = 0, d_out: int = 3, dtype: torch.dtype = torch.float32) -> list[nn.Module]:
    """``k`` TinyNets with distinct weights and distinct, non-trivial BatchNorm statistics."""
    experts = []
    for i in range(k):
        net = TinyNet(d_out=d_out)
        gen = torch.Generator().manual_seed(seed * 100 + i)
        with torch.no_grad():
            for p in (net.body.weight, net.body.bias, net.fc.weight, net.fc.bias):
                p.copy_(0.6 * torch.randn(p.shape, generator=gen))
            net.bn.running_mean.copy_(0.5 * torch.randn(net.bn.running_mean.shape, generator=gen))
            net.bn.running_var.copy_(0.5 + torch.rand(net.bn.running_var.shape, generator=gen))
            net.bn.weight.copy_(1.0 + 0.3 * torch.randn(net.bn.weight.shape, generator=gen))
            net.bn.bias.copy_(0.3 * torch.randn(net.bn.bias.shape, generator=gen))
            net.bn.num_batches_tracked.fill_(10 * (i + 1))
        experts.append(net.to(dtype))
    return experts


def tiny_batch(n: int = 32, *, seed: int = 0, d_out: int = 3, dtype: torch.dtype = torch.float32
               ) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=gen, dtype=dtype), torch.randint(0, d_out, (n,), generator=gen)


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8)
    y = torch.tensor(digits.target, dtype=torch.long)
    return x, y


def train_digits_experts(k: int, *, epochs: int = 3, seed: int = 0) -> tuple[list[nn.Module], torch.Tensor, torch.Tensor]:
    """``k`` small-CNN experts trained briefly on non-IID splits of digits.

    Expert ``i`` sees mostly the classes ``{2i, 2i+1, ...}`` (5 of the 10); returns the
    experts and the whole data set (x, y).
    """
    x, y = load_digits_tensors()
    rng = np.random.default_rng(seed)
    experts = []
    for i in range(k):
        favoured = {(2 * i + j) % 10 for j in range(5)}
        weights = np.where(np.isin(y.numpy(), list(favoured)), 1.0, 0.05)
        idx = rng.choice(len(y), size=500, replace=False, p=weights / weights.sum())
        net = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=seed * 10 + i)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        gen = torch.Generator().manual_seed(seed * 10 + i)
        xi, yi = x[idx], y[idx]
        for _ in range(epochs):
            perm = torch.randperm(len(idx), generator=gen)
            for b in range(0, len(idx), 50):
                j = perm[b : b + 50]
                opt.zero_grad()
                nn.functional.cross_entropy(net(xi[j]), yi[j]).backward()
                opt.step()
        experts.append(net.eval())
    return experts, x, y


def memory_tools() -> ModuleType:
    """``benchmarks/blend_memory.py`` (its ``rss_anon()`` and ``Peak`` sampler), loaded by path."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "blend_memory.py"
    spec = importlib.util.spec_from_file_location("blend_memory", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
