"""Blend K PyTorch experts with forward passes only, and compare with backprop and uniform.

Trains four small MLP experts on label-skewed splits of scikit-learn's digits (no
download), then learns the mixing weights alpha on a target domain whose classes are
skewed too (mostly 0-4, the classes of expert 0) with two-point SPSA
(``method="spsa"``, two forward passes per step, no backward pass) and with autograd
(``method="backprop"``) at the same number of steps, and scores theta(alpha) on a test split.
SPSA's alpha beats the uniform blend by more than 20 accuracy points and lands within 5
points of backprop's. Runs in seconds on a CPU::

    python examples/blend_experts.py
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn

import spsa_mix
from spsa_mix.blend import BlendedObjective, evaluate_blend

K = 4
STEPS = 150


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def main() -> dict[str, float]:
    """Run the comparison; returns what the script prints (``key=value``) and the test checks."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    # Data: 8x8 digits, flattened; a target domain (mostly classes 0-4) split into a target
    # set that learns alpha and a test set, and K expert splits skewed towards other classes.
    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
    y = torch.tensor(digits.target)
    weights = np.where(digits.target < 5, 1.0, 0.1)
    domain = rng.choice(len(y), size=600, replace=False, p=weights / weights.sum())
    target, test = domain[:300], domain[300:]
    rest = np.setdiff1d(np.arange(len(y)), domain)
    experts_data = []
    for i in range(K):  # expert i sees mostly the classes 2i.. 2i+4 (a label shift)
        favoured = np.isin(y[rest].numpy(), np.arange(2 * i, 2 * i + 5) % 10)
        weights = np.where(favoured, 1.0, 0.1)
        experts_data.append(rng.choice(rest, size=200, replace=False, p=weights / weights.sum()))

    # Experts: one shared initialisation (as in federated averaging), each trained on its split.
    init = make_model().state_dict()
    experts = []
    for idx in experts_data:
        model = make_model()
        model.load_state_dict(init)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        experts.append(model)

    # The objective: minibatches of 64 target images; all probes of one call share a minibatch.
    target_loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[target], y[target]),
                                                batch_size=64, shuffle=True,
                                                generator=torch.Generator().manual_seed(0))
    test_set = (x[test], y[test])

    out: dict[str, float] = {}
    rows = [("uniform", np.full(K, 1 / K), 0, 0)]
    for method in ["spsa", "backprop"]:
        obj = BlendedObjective(make_model(), experts, loss_fn=torch.nn.functional.cross_entropy,
                               data=target_loader, device="cpu")
        res = spsa_mix.minimize(obj, k=obj.k, vectorized=True, method=method, maxiter=STEPS, lr=0.05, seed=0)
        rows.append((method, res.x, res.nfev, res.njev))
        out[f"{method}_forward_passes"], out[f"{method}_backward_passes"] = res.nfev, res.njev

    print(f"{'alpha from':10s} {'test accuracy':>13s} {'forward':>8s} {'backward':>8s}  alpha")
    for name, alpha, forward, backward in rows:
        out[f"{name}_accuracy"] = acc = evaluate_blend(obj, alpha, test_set)["accuracy"]
        print(f"{name:10s} {acc:13.3f} {forward:8d} {backward:8d}  {np.round(alpha, 3)}")
    for i in range(K):
        out[f"expert{i}_accuracy"] = acc = evaluate_blend(obj, np.eye(K)[i], test_set)["accuracy"]
        print(f"expert {i}   {acc:13.3f}")
    return out


if __name__ == "__main__":
    for key, value in main().items():
        print(f"{key}={value}")
