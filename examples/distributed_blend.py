"""Blend experts on several processes: ``torchrun`` ranks share the seed and send only losses.

Four small MLP experts (trained in a second on label-skewed splits of scikit-learn's
digits, the same on every rank) are blended with SPSA (``m=2``: four probes a step) on
minibatches of 64 target images. Every rank builds the same optimiser with the same seed;
with the default data parallelism each rank scores every probe on its slice of each
minibatch (``ShardedBatchSampler``: it loads only its own images) and one all-reduce of
``2 m + 3`` float64 numbers a step gives every rank the same mean losses. Rank 0 alone
prints and writes the result. The same script runs in one process without ``torchrun``::

    python examples/distributed_blend.py
    torchrun --nproc-per-node 2 examples/distributed_blend.py                    # data parallel
    torchrun --nproc-per-node 2 examples/distributed_blend.py --probe-groups all  # probe parallel
    torchrun --nproc-per-node 4 examples/distributed_blend.py --probe-groups 2    # both

(``python -m torch.distributed.run`` is ``torchrun``.) With ``--probe-groups all`` each rank
scores its probes on whole minibatches and the run equals the single-process run bit for
bit; data parallelism equals it to float32 rounding of the shards' mean losses.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

import spsa_mix
from spsa_mix.blend import BlendedObjective, evaluate_blend
from spsa_mix.distributed import init_distributed, rank_zero_only
from spsa_mix.io import write_json

K = 4
STEPS = 60
BATCH = 64


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def experts_and_data() -> tuple[list[nn.Module], TensorDataset, tuple[torch.Tensor, torch.Tensor]]:
    """The same experts and data on every rank: everything seeded, nothing random left."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    digits = load_digits()
    x, y = torch.tensor(digits.data / 16.0, dtype=torch.float32), torch.tensor(digits.target)
    domain = rng.choice(len(y), size=600, replace=False, p=np.where(digits.target < 5, 1.0, 0.1) / np.where(
        digits.target < 5, 1.0, 0.1).sum())
    target, test = domain[:400], domain[400:]
    init = make_model().state_dict()
    experts = []
    for i in range(K):  # expert i sees mostly the classes 2i .. 2i+4
        idx = np.flatnonzero(np.isin(digits.target, np.arange(2 * i, 2 * i + 5) % 10))[:200]
        model = make_model()
        model.load_state_dict(init)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
        experts.append(model)
    return experts, TensorDataset(x[target], y[target]), (x[test], y[test])


def main(argv: list[str] | None = None) -> tuple[dict[str, object], bool]:
    """Run the blend on this rank; what rank 0 prints, and whether this rank is rank 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe-groups", default="1", help="1 (data parallel), 'all' (probe parallel), or a divisor")
    parser.add_argument("--output", help="write the result here (JSON; rank 0 only)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    groups = args.probe_groups if args.probe_groups == "all" else int(args.probe_groups)
    ctx = init_distributed("auto", probe_groups=groups)

    experts, target, test = experts_and_data()
    # The same global minibatches on every rank (one seed), each rank loading its slice.
    batches = BatchSampler(RandomSampler(target, generator=torch.Generator().manual_seed(0)), BATCH, drop_last=True)
    loader = DataLoader(target, batch_sampler=ctx.shard_sampler(batches))
    obj = ctx.wrap(BlendedObjective(make_model(), experts, data=loader, device=ctx.device))
    res = spsa_mix.minimize(obj, k=obj.k, vectorized=True, m=2, maxiter=STEPS, lr=0.05, seed=0)

    out: dict[str, object] = {
        "world_size": ctx.world_size, "probe_groups": obj.layout.probe_groups, "data_ranks": obj.layout.data_size,
        "alpha": " ".join(repr(float(a)) for a in res.x), "fun": res.fun, "nfev": res.nfev,
        "bytes_per_step": (obj.bytes_sent - 8 * (obj.layout.probe_groups + 3)) // res.nit,  # less the final call's
        "accuracy": evaluate_blend(obj.objective, res.x, test)["accuracy"],
        "uniform_accuracy": evaluate_blend(obj.objective, np.full(K, 1 / K), test)["accuracy"],
    }
    if args.output:
        rank_zero_only(write_json)(out, args.output)  # a no-op on the other ranks
    writer = ctx.is_writer
    ctx.close()
    return out, writer


if __name__ == "__main__":
    result, writer = main()
    if writer:
        for key, value in result.items():
            print(f"{key}={str(value).replace(' ', ',')}")
