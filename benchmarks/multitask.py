"""AdaMerging's multi-task setting on a CPU: one backbone for four tasks, learned forward-only.

A small version of the 8-task protocol (AdaMerging, ICLR 2024; FusionBench's CLIP ViT-B/32
table). One pretrained backbone, akamaster's CIFAR-10 ResNet-20 (``../shared/data/resnet_cifar10``),
is fine-tuned into four experts, each on its own task with a head of its own
(:data:`TASKS`: CIFAR-10 animals, CIFAR-10 vehicles, Fashion-MNIST, scikit-learn's digits,
all as 32x32 RGB images in the backbone's normalisation). The experts are merged into one
backbone that serves the four tasks, each with its expert's head, the coefficients learned on
*unlabeled* inputs of the tasks (a pool apart from the test images) by minimising the mean
entropy of the predictions, each task on its own minibatches of 16:

* ``adamerging-task`` / ``adamerging-layer``: AdaMerging by backprop, its published settings
  (:func:`spsa_mix.baselines.adamerging`: Adam, lr 1e-3, 500 steps, lambda from 0.3 clamped to
  [0, 1]); ``adamerging++-layer``: the same on TIES-preprocessed task vectors;
* ``spsa-task`` / ``spsa-layer`` (and ``-ties``): :func:`spsa_mix.minimize`'s SPSA on the same
  objective (:class:`~spsa_mix.blend.multitask.MultiTaskObjective`, task vectors over the
  pretrained backbone) in AdaMerging's own space, every ``lambda`` in ``[0, 1]`` (each the
  first weight of a simplex of two, :class:`BoxLambda`), from AdaMerging's start (0.3),
  forward passes only, with AdaMerging's optimiser (Adam, betas (0.9, 0.999), its step of
  1e-3 in ``lambda`` at the start, :data:`SPSA_LR` in the logits) and as many steps (two
  evaluations each, ``m = 1``: ``--budget-task`` / ``--budget-layer``, default twice
  AdaMerging's steps; one evaluation is one forward pass of every task's minibatch): the
  exact gradient replaced by the two-point estimate, everything else equal;
  ``spsa-task-defaults``: the library's defaults instead (``lr="auto"``, betas (0.9, 0.99)),
  which take far larger steps; ``spsa-task-scale`` / ``spsa-layer-scale`` (not run by
  default): the library's own task-vector space, ``theta_0 + s sum_k alpha_k tau_k`` with
  alpha on the simplex and a learned ``s > 0``, unbounded above;
* references: the pretrained backbone with each task's head, each expert on its own task
  (``individual``), the uniform blend of the experts, task arithmetic (one scale for the sum
  of the task vectors from a grid, by mean validation accuracy), TIES (mergekit's trim to the
  top 20 % and sign election, its disjoint mean, the scale from a grid likewise) and joint
  multi-task fine-tuning of the backbone with the four heads (the upper bound).

TIES preprocessing uses spsa_mix's ``ties`` space when the package has one; otherwise
mergekit's own functions (``mergekit.sparsify.sparsify`` with ``magnitude``,
``generalized_task_arithmetic.get_mask`` with ``sum``) on the task vectors, trim and sign
fixed before the search as AdaMerging++ does.

Columns: each task's test accuracy and their mean (mean +- std over the seeds), wall time of
the learning, peak memory of one step above what is allocated before it (the stacked experts
are held apart, reported once), and the forward and backward passes of task minibatches
spent. The goal: forward-only layer-wise within 1 point of AdaMerging layer-wise's mean
accuracy at no more than 0.3x its peak step memory. Step times of AdaMerging and SPSA are also
measured side by side in interleaved rounds (one thread), as ``benchmarks/step_cost.py`` does.

    python benchmarks/multitask.py                     # about an hour on one thread
    python benchmarks/multitask.py --quick --output /tmp/mt.json
    python benchmarks/multitask.py --resume            # finish an interrupted run (see :func:`finished_runs`)

Needs ``../shared/data`` (``cifar10-jpeg.zip``, ``FashionMNIST/raw``,
``resnet_cifar10/resnet20-12fca82f.th``; or ``--data-root`` / ``SPSA_MIX_DATA``): without it
it says so and exits 2. Experts are cached (``--cache-dir``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESNET20 = "resnet_cifar10/resnet20-12fca82f.th"
CIFAR_ANIMALS = (2, 3, 4, 5, 6, 7)  # bird, cat, deer, dog, frog, horse
CIFAR_VEHICLES = (0, 1, 8, 9)  # airplane, automobile, ship, truck
TASKS = ("animals", "vehicles", "fashion", "digits")
TIES_DENSITY = 0.2  # TIES-merging's default k = 20 %
TA_GRID = tuple(round(0.1 * i, 2) for i in range(1, 11))  # task arithmetic's scale, 0.1 to 1.0
TIES_GRID = tuple(round(0.2 * i, 2) for i in range(1, 16))  # TIES' scale of the disjoint mean, 0.2 to 3.0
ADAMERGING_PRIOR = 0.3  # every lambda starts there, in AdaMerging and (as alpha = 1/K, s = 0.3 K) in SPSA
# SPSA with AdaMerging's step: Adam (betas 0.9, 0.999) moving lambda by about 1e-3 a step at its start, that is
# 1e-3 / (0.3 * 0.7) in the logits of (lambda, 1 - lambda) (d lambda / d logit = lambda (1 - lambda)).
SPSA_LR = 1e-3 / (ADAMERGING_PRIOR * (1 - ADAMERGING_PRIOR))
SPSA_BETAS = (0.9, 0.999)
PENALTY = 10.0  # SPSA: the loss of a point whose blended network gives NaN (log 10 = 2.3 is the largest entropy)
GOAL_POINTS, GOAL_MEMORY = 1.0, 0.3
SIZES = {"full": dict(train=3000, unlabeled=512, validation=256, test=1000, epochs=4),
         "quick": dict(train=600, unlabeled=128, validation=128, test=300, epochs=2)}
DIGITS_SIZES = {"full": dict(train=797, unlabeled=300, validation=200, test=500),  # scikit-learn's 1297 + 500
                "quick": dict(train=400, unlabeled=128, validation=128, test=300)}


@dataclass
class TaskData:
    """One task: classes, and normalised 32x32 RGB tensors per split."""

    name: str
    classes: int
    train: tuple[torch.Tensor, torch.Tensor]
    unlabeled: torch.Tensor
    validation: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def _rgb32(x: torch.Tensor, scale: float) -> torch.Tensor:
    """uint8 images ``(N, C, H, W)`` as float ``(N, 3, 32, 32)`` in [0, 1] (bilinear resize, grey
    replicated), then normalised as the pretrained ResNet expects."""
    from spsa_mix.data.real import IMAGENET_MEAN, IMAGENET_STD

    y = x.float() * scale
    if y.shape[-1] != 32:
        y = torch.nn.functional.interpolate(y, size=(32, 32), mode="bilinear", align_corners=False)
    if y.shape[1] == 1:
        y = y.repeat(1, 3, 1, 1)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((y.clamp(0, 1) - mean) / std).contiguous()


def _split(name: str, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor, scale: float,
           sizes: dict[str, int], rng: np.random.Generator) -> TaskData:
    """Disjoint train / unlabeled / validation from the training images, test from the test images."""
    order = rng.permutation(len(y))
    cuts = np.cumsum([0, sizes["train"], sizes["unlabeled"], sizes["validation"]])
    if cuts[-1] > len(y):
        raise ValueError(f"{name}: {len(y)} training images, {cuts[-1]} asked")
    tr, un, va = (order[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    te = rng.permutation(len(y_test))[: sizes["test"]]
    return TaskData(name, int(y.max()) + 1, (_rgb32(x[tr], scale), y[tr]), _rgb32(x[un], scale),
                    (_rgb32(x[va], scale), y[va]), (_rgb32(x_test[te], scale), y_test[te]))


def load_tasks(data_root: Path | None, size: str) -> dict[str, TaskData]:
    """The four tasks (see the module docstring), drawn with a fixed seed."""
    from spsa_mix.data.images import load_dataset

    rng = np.random.default_rng(0)
    sizes = SIZES[size]
    cifar = load_dataset("cifar10-jpeg", data_root=data_root, standardize=False)
    out = {}
    for name, keep in (("animals", CIFAR_ANIMALS), ("vehicles", CIFAR_VEHICLES)):
        remap = torch.full((10,), -1, dtype=torch.long)
        remap[list(keep)] = torch.arange(len(keep))
        tr = remap[cifar.y_train] >= 0
        te = remap[cifar.y_test] >= 0
        out[name] = _split(name, cifar.x_train[tr], remap[cifar.y_train[tr]], cifar.x_test[te],
                           remap[cifar.y_test[te]], cifar.scale, sizes, rng)
    fashion = load_dataset("fashion-mnist", data_root=data_root, standardize=False)
    out["fashion"] = _split("fashion", fashion.x_train, fashion.y_train, fashion.x_test, fashion.y_test,
                            fashion.scale, sizes, rng)
    digits = load_dataset("digits", standardize=False)  # scikit-learn's: its own 500-image test split
    d_sizes = {**DIGITS_SIZES[size]}
    out["digits"] = _split("digits", digits.x_train, digits.y_train, digits.x_test, digits.y_test, digits.scale,
                           {**d_sizes, "test": min(d_sizes["test"], len(digits.y_test))}, rng)
    return out


# ---------------------------------------------------------------------------- experts
def _frozen_statistics(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` whose BatchNorm layers stay in eval mode when it trains: the pretrained running
    statistics are used and kept (the affine weights still train)."""
    train = net.train

    def train_keeping_statistics(mode: bool = True) -> torch.nn.Module:
        train(mode)
        for m in net.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
        return net

    net.train = train_keeping_statistics  # type: ignore[method-assign]
    return net


def _with_head(base: torch.nn.Module, classes: int, seed: int, *, frozen_bn: bool = False) -> torch.nn.Module:
    net = copy.deepcopy(base)
    gen = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(64, classes)
    with torch.no_grad():
        bound = 1 / math.sqrt(64)  # nn.Linear's own initialisation, from a seeded generator
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    net.fc = head
    return _frozen_statistics(net) if frozen_bn else net


def finetune_experts(base_path: Path, tasks: dict[str, TaskData], *, epochs: int, cache: Path,
                     frozen_bn: bool) -> list[Path]:
    """Each task's expert: the pretrained ResNet-20 with a new head, every weight fine-tuned
    (Adam, lr 1e-3, batch 64; with ``frozen_bn`` the BatchNorm statistics kept as
    pretrained), cached by :func:`spsa_mix.experiment.finetuned.finetune_expert`."""
    from spsa_mix.experiment.finetuned import FinetuneSpec, finetune_expert
    from spsa_mix.models import load_cifar_resnet

    paths = []
    for i, (name, task) in enumerate(tasks.items()):
        spec = FinetuneSpec(epochs=epochs, batch_size=64, lr=1e-3, seed=i)
        made = finetune_expert(lambda t=task, i=i: _with_head(load_cifar_resnet(base_path), t.classes, 100 + i,
                                                              frozen_bn=frozen_bn),
                               task.train, spec=spec, cache_dir=cache,
                               name=f"multitask-{name}" + ("-frozen-bn" if frozen_bn else ""))
        took = "cached" if made.cached else f"fine-tuned in {made.meta['seconds']:.0f} s"
        print(f"expert {name}: {took}", file=sys.stderr, flush=True)
        paths.append(made.path)
    return paths


class MultiHead(torch.nn.Module):
    """A ResNet-20 backbone with one head per task (joint multi-task fine-tuning)."""

    def __init__(self, base: torch.nn.Module, classes: list[int], seed: int, *, frozen_bn: bool) -> None:
        super().__init__()
        self.backbone = copy.deepcopy(base)
        self.heads = torch.nn.ModuleList([_with_head(base, c, 100 + i).fc for i, c in enumerate(classes)])
        self.backbone.fc = torch.nn.Identity()
        self.frozen_bn = frozen_bn

    def train(self, mode: bool = True) -> MultiHead:
        super().train(mode)
        if self.frozen_bn:  # the pretrained BatchNorm statistics, as the experts' with --expert-bn frozen
            for m in self.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor, task: int) -> torch.Tensor:
        return self.heads[task](self.backbone(x))

    def task_model(self, task: int) -> torch.nn.Module:
        net = copy.deepcopy(self.backbone)
        net.fc = copy.deepcopy(self.heads[task])
        return net.eval()


def joint_finetune(base: torch.nn.Module, tasks: dict[str, TaskData], *, epochs: int, seed: int,
                   frozen_bn: bool) -> MultiHead:
    """Every weight of the backbone and the four heads, Adam lr 1e-3, one minibatch of 64 of
    each task per step (the sum of their cross-entropies), as many steps as an expert's epochs."""
    model = MultiHead(base, [t.classes for t in tasks.values()], seed, frozen_bn=frozen_bn).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1000 + seed)
    steps = epochs * max(math.ceil(len(t.train[1]) / 64) for t in tasks.values())
    orders = [torch.randperm(len(t.train[1]), generator=gen) for t in tasks.values()]
    for step in range(steps):
        opt.zero_grad()
        loss = torch.zeros(())
        for i, t in enumerate(tasks.values()):
            n = len(t.train[1])
            start = (step * 64) % n
            if start + 64 > n:
                orders[i] = torch.randperm(n, generator=gen)
                start = 0
            ix = orders[i][start:start + 64]
            loss = loss + torch.nn.functional.cross_entropy(model(t.train[0][ix], i), t.train[1][ix])
        loss.backward()
        opt.step()
    return model.eval()


# ---------------------------------------------------------------------------- TIES
def ties_vectors(base: dict[str, torch.Tensor], experts: list[dict[str, torch.Tensor]], density: float,
                 skip: tuple[str, ...] = ("fc",)) -> tuple[list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """TIES on the task vectors, with mergekit's own functions: each ``tau_k`` trimmed to its
    top ``density`` by magnitude, the sign elected per entry (``sum``), the entries that
    disagree with it dropped. Returns the experts rebuilt from those vectors
    (``theta_0 + tau_k'``, AdaMerging++'s preprocessing) and the disjoint mean's model
    (``theta_0 + sum_k tau_k' / #agreeing``, mergekit's ``ties`` with weights 1 and normalize)."""
    from mergekit.merge_methods.generalized_task_arithmetic import get_mask
    from mergekit.sparsify import SparsificationMethod, sparsify

    out = [dict(e) for e in experts]
    merged = dict(base)
    for name, b in base.items():
        if any(name == s or name.startswith(s + ".") for s in skip) or not b.is_floating_point():
            continue
        deltas = torch.stack([sparsify(e[name] - b, density=density, method=SparsificationMethod.magnitude)
                              for e in experts])  # (K, *shape)
        mask = get_mask(deltas, method="sum").to(deltas.dtype)
        kept = deltas * mask
        for k in range(len(experts)):
            out[k][name] = b + kept[k]
        divisor = mask.sum(0)
        divisor[divisor == 0] = 1
        merged[name] = b + kept.sum(0) / divisor
    return out, merged


def spsa_mix_has_ties() -> bool:
    """Whether spsa_mix offers a ``ties`` space of its own (it is then used instead of mergekit)."""
    from spsa_mix.blend.spaces import SPACES

    return "ties" in SPACES


# ---------------------------------------------------------------------------- objectives
def _specs(tasks: dict[str, TaskData], heads: list[Any], *, batch: int, seed: int, loss: Any) -> list[Any]:
    from spsa_mix.blend.multitask import TaskSpec
    from spsa_mix.data.batches import TensorBatches
    from spsa_mix.models import ResNet20

    specs = []
    for i, (name, t) in enumerate(tasks.items()):
        gen = torch.Generator().manual_seed(10_000 * (seed + 1) + i)
        data = TensorBatches(t.unlabeled, torch.zeros(len(t.unlabeled), dtype=torch.long), batch_size=batch,
                             shuffle=True, generator=gen, drop_last=True)
        specs.append(TaskSpec(name, data, loss=loss, head="fc", head_from=heads[i],
                              model=ResNet20(num_classes=t.classes, in_channels=3)))
    return specs


def make_objective(base: Any, experts: list[Any], tasks: dict[str, TaskData], heads: list[Any], *, seed: int,
                   granularity: str, scale: Any, simplex_atol: Any, loss: Any = "entropy", batch: int = 16) -> Any:
    from spsa_mix.blend.multitask import MultiTaskObjective
    from spsa_mix.models import ResNet20

    return MultiTaskObjective(ResNet20(num_classes=10, in_channels=3), experts,
                              _specs(tasks, heads, batch=batch, seed=seed, loss=loss), device="cpu", base=base,
                              space="task-vectors", scale=scale, granularity=granularity, simplex_atol=simplex_atol,
                              batched=False)


class BoxLambda:
    """AdaMerging's parameter space for :func:`spsa_mix.minimize`: each coefficient
    ``lambda`` in ``[0, 1]`` as the first weight of a simplex of two, ``(lambda, 1 - lambda)``,
    so a point of ``(M, 2)`` (``M = K`` task-wise, ``G K`` layer-wise) is scored by
    ``objective`` (task vectors, scale 1, any weights) at ``lambda = point[..., 0]``."""

    def __init__(self, objective: Any) -> None:
        self.objective = objective
        self.lam_shape = tuple(objective.shape)
        self.shape = (int(np.prod(self.lam_shape)), 2)

    def lam(self, points: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(points)[..., 0]).reshape(-1, *self.lam_shape)

    def point(self, lam: Any) -> np.ndarray:
        flat = np.broadcast_to(np.asarray(lam, dtype=np.float64), self.lam_shape).reshape(-1)
        return np.stack([flat, 1.0 - flat], axis=1)

    def __call__(self, points: Any) -> Any:
        pts = np.asarray(points, dtype=np.float64)
        single = pts.shape == self.shape
        out = self.objective(self.lam(pts[None] if single else pts))
        return float(out[0]) if single else out

    def state_dict(self) -> dict[str, Any]:
        return self.objective.state_dict()  # type: ignore[no-any-return]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.objective.load_state_dict(state)


def lambda_point(obj: Any, lam: np.ndarray) -> np.ndarray:
    """The point of a scorer (task vectors, learned scale, any weights) whose coefficients of
    the task vectors are ``lam`` (``(K,)`` for every group, or ``(G, K)``): scale 1."""
    g = len(obj.groups)
    rows = np.broadcast_to(np.asarray(lam, dtype=np.float64), (g, obj.k)) if obj.domain.simplex != (obj.k,) \
        else np.asarray(lam, dtype=np.float64)
    return obj.domain.join(np.ascontiguousarray(rows), np.array([1.0]))


def _test_data(tasks: dict[str, TaskData], split: str) -> dict[str, Any]:
    from spsa_mix.data.batches import TensorBatches

    return {n: TensorBatches(*getattr(t, split), batch_size=250) for n, t in tasks.items()}


def unlabeled_entropy(obj: Any, point: np.ndarray, tasks: dict[str, TaskData]) -> float:
    """The objective itself at ``point``: the tasks' mean prediction entropy over their whole
    unlabeled pools (``obj``'s tasks score the entropy)."""
    from spsa_mix.data.batches import TensorBatches

    pools = {n: TensorBatches(t.unlabeled, torch.zeros(len(t.unlabeled), dtype=torch.long), batch_size=256)
             for n, t in tasks.items()}
    return float(obj.evaluate(point, pools)["loss"])


def score(obj: Any, point: np.ndarray, tasks: dict[str, TaskData], split: str = "test") -> dict[str, float]:
    """Each task's accuracy on ``split`` and their mean."""
    out = obj.evaluate(point, _test_data(tasks, split))
    return {**{n: float(m["accuracy"]) for n, m in out["tasks"].items()}, "mean": float(out["accuracy"])}


# ---------------------------------------------------------------------------- memory and time
def step_peak_mb(step: Any) -> float:
    """Peak MiB that one call of ``step`` allocates above what is allocated before it
    (``benchmarks/step_cost.py``'s measurement: PyTorch's CPU allocator events)."""
    from step_cost import peak_memory  # benchmarks/ is on sys.path when this runs as a script

    return peak_memory(step, device=torch.device("cpu")) / 2**20


# ---------------------------------------------------------------------------- the run
SINGLE_RUN = ("pretrained", "individual", "uniform", "task-arithmetic", "ties")  # nothing random: one run, seed 0


def finished_runs(previous: dict[str, Any], config: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of ``previous`` (a results file of this script) that ``--resume`` keeps: every
    one, when its config has the value of ``config`` (as JSON holds it) under each key of
    ``config``; else ``ValueError`` naming what differs (up to three keys). Its errors are
    not kept: the runs they stopped are missing, so they run again.

    >>> old = {"config": {"seeds": 3, "spsa_betas": [0.9, 0.999]}, "runs": [{"method": "uniform", "seed": 0}]}
    >>> finished_runs(old, {"seeds": 3, "spsa_betas": (0.9, 0.999)})
    [{'method': 'uniform', 'seed': 0}]
    >>> finished_runs(old, {"seeds": 1, "adamerging_steps": 60})
    Traceback (most recent call last):
    ...
    ValueError: it was written with other settings: seeds was 3, now 1; adamerging_steps was not set, now 60
    """
    from spsa_mix.io import dumps_json

    if not isinstance(previous, dict) or not isinstance(previous.get("config"), dict) \
            or not isinstance(previous.get("runs"), list):
        raise ValueError("it is not a results file of this script (no 'config' and 'runs')")
    old, new = previous["config"], json.loads(dumps_json(config))
    found = [f"{key} was {repr(old[key]) if key in old else 'not set'}, now {value!r}" for key, value in new.items()
             if key not in old or old[key] != value]
    if found:
        more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
        raise ValueError("it was written with other settings: " + "; ".join(found[:3]) + more)
    return [dict(r) for r in previous["runs"]]


def pending_seeds(method: str, seeds: int, runs: list[dict[str, Any]]) -> list[int]:
    """The seeds of ``method`` still to run, given the finished ``runs``: ``[0]`` or ``[]``
    for the methods of :data:`SINGLE_RUN`, else those of ``range(seeds)`` with no run.

    >>> runs = [{"method": "uniform", "seed": 0}, {"method": "joint", "seed": 0}, {"method": "joint", "seed": 2}]
    >>> pending_seeds("uniform", 3, runs), pending_seeds("joint", 3, runs), pending_seeds("ties", 3, runs)
    ([], [1], [0])
    """
    done = {r["seed"] for r in runs if r["method"] == method}
    return [s for s in range(1 if method in SINGLE_RUN else seeds) if s not in done]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/multitask_resnet20.json"))
    ap.add_argument("--quick", action="store_true", help="small sizes and budgets (minutes), one seed")
    ap.add_argument("--seeds", type=int, default=None, help="seeds of every learned row (default 3; 1 with --quick)")
    ap.add_argument("--steps", type=int, default=None, help="AdaMerging's steps (default 500, its setting)")
    ap.add_argument("--budget-task", type=int, default=None, help="SPSA task-wise evaluations (default 2 x steps)")
    ap.add_argument("--budget-layer", type=int, default=None, help="SPSA layer-wise evaluations (default 2 x steps)")
    ap.add_argument("--methods", nargs="+", default=None, help="a subset of the rows (default all)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds of the step timing")
    ap.add_argument("--expert-bn", choices=("frozen", "trained"), default="frozen",
                    help="fine-tune the experts (and the joint model) with the pretrained BatchNorm statistics kept "
                         "(default) or re-estimated on each task")
    ap.add_argument("--data-root", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--render", action="store_true", help="only rewrite the report from --output")
    ap.add_argument("--resume", action="store_true",
                    help="keep the runs already in --output (its settings must be these) and run only the missing "
                         "ones, then the step measurement and the report")
    args = ap.parse_args(argv)
    if args.render and args.resume:
        print("multitask.py: --render and --resume exclude each other", file=sys.stderr)
        return 2
    if args.render:
        write_report(json.loads(args.output.read_text()), args.output)
        return 0
    torch.set_num_threads(1)
    from spsa_mix.data.images import default_data_roots
    from spsa_mix.experiment.config import default_cache_dir
    from spsa_mix.io import check_outputs, write_json

    try:
        check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md")})
    except ValueError as e:
        print(f"multitask.py: {e}", file=sys.stderr)
        return 2
    size = "quick" if args.quick else "full"
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    steps = args.steps if args.steps is not None else (60 if args.quick else 500)
    budget_task = args.budget_task if args.budget_task is not None else 2 * steps
    budget_layer = args.budget_layer if args.budget_layer is not None else 2 * steps
    config: dict[str, Any] = {
        "size": size, "sizes": SIZES[size], "digits_sizes": DIGITS_SIZES[size], "seeds": seeds,
        "adamerging_steps": steps, "budget_task": budget_task, "budget_layer": budget_layer, "batch_per_task": 16,
        "spsa_lr": SPSA_LR, "spsa_betas": SPSA_BETAS, "ties_density": TIES_DENSITY, "ta_grid": TA_GRID,
        "ties_grid": TIES_GRID, "ties_from": "mergekit", "expert_bn": args.expert_bn}
    previous: dict[str, Any] | None = None
    if args.resume:  # the settings checked now, the data's (task sizes, groups) once it is loaded
        try:
            previous = json.loads(args.output.read_text())
            finished_runs(previous, config)  # type: ignore[arg-type]
        except (OSError, ValueError) as e:
            why = "it does not exist" if not args.output.exists() else str(e)
            print(f"multitask.py: cannot resume {str(args.output)!r}: {why}; resume with that run's options, "
                  "or leave --resume out to start over", file=sys.stderr)
            return 2
    roots = [args.data_root] if args.data_root else default_data_roots()
    weights = next((r / RESNET20 for r in roots if (r / RESNET20).is_file()), None)
    if weights is None:
        print(f"multitask.py: {RESNET20} not found under {[str(r) for r in roots]} (../shared/data; "
              "--data-root or SPSA_MIX_DATA): skipped", file=sys.stderr)
        return 2
    try:
        tasks = load_tasks(args.data_root, size)
    except ValueError as e:
        print(f"multitask.py: {e}", file=sys.stderr)
        return 2
    defaults = ["pretrained", "individual", "uniform", "task-arithmetic", "ties", "joint",
                "adamerging-task", "adamerging-layer", "spsa-task", "spsa-layer", "spsa-task-ties", "spsa-layer-ties",
                "spsa-task-defaults"]
    all_methods = [*defaults, "adamerging++-layer", "spsa-layer-defaults", "spsa-task-scale", "spsa-layer-scale"]
    methods = args.methods or defaults
    unknown = sorted(set(methods) - set(all_methods))
    if unknown:
        print(f"multitask.py: unknown method {unknown[0]!r}; the methods are {all_methods}", file=sys.stderr)
        return 2
    t_start = time.perf_counter()
    cache = (args.cache_dir or default_cache_dir()) / "multitask"
    from safetensors.torch import load_file

    from spsa_mix.blend.scoring import evaluate
    from spsa_mix.blend.losses import Entropy
    from spsa_mix.experiment.pipeline import NonFiniteAsPenalty
    from spsa_mix.models import load_cifar_resnet

    base_model = load_cifar_resnet(weights)
    base_sd = {k: v for k, v in base_model.state_dict().items()}
    frozen_bn = args.expert_bn == "frozen"
    expert_paths = finetune_experts(weights, tasks, epochs=SIZES[size]["epochs"], cache=cache, frozen_bn=frozen_bn)
    expert_sds = [load_file(str(p)) for p in expert_paths]
    heads = [{k: v for k, v in sd.items() if k.startswith("fc.")} for sd in expert_sds]  # each task's head
    names = list(tasks)
    k = len(names)
    ties_experts, ties_merged = ties_vectors(base_sd, expert_sds, TIES_DENSITY)
    if spsa_mix_has_ties():
        print("note: spsa_mix has a 'ties' space; this benchmark still preprocesses with mergekit's functions "
              "(its API is not wired here yet)", file=sys.stderr)

    def scorer(experts: list[Any], granularity: str = "layer") -> Any:
        return make_objective(base_sd, experts, tasks, heads, seed=0, granularity=granularity, scale="learned",
                              simplex_atol=None)

    plain_scorer = scorer(expert_sds)
    ties_scorer = scorer(ties_experts)
    config["tasks"] = {n: {"classes": t.classes, "train": len(t.train[1]), "unlabeled": len(t.unlabeled),
                           "validation": len(t.validation[1]), "test": len(t.test[1])} for n, t in tasks.items()}
    config["groups"] = len(plain_scorer.groups)
    command = "python benchmarks/multitask.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {
        "command": command, "config": config,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "threads": 1,
                        "machine": platform.machine(), "note": "a 2-core CPU shared with other jobs while it ran"},
        "stacked_experts_mb": plain_scorer.memory()["stack"] / 2**20,
        "runs": [], "errors": [], "status": "running",
    }
    seconds_before = 0.0  # of the runs being resumed, where their file recorded it
    if previous is not None:
        try:
            kept = finished_runs(previous, config)
        except ValueError as e:
            print(f"multitask.py: cannot resume {str(args.output)!r}: {e}; leave --resume out to start over",
                  file=sys.stderr)
            return 2
        seconds_before = float(previous.get("seconds", 0.0))
        results.update(command=previous.get("command", command), runs=kept,
                       resumed=[*previous.get("resumed", []), {"command": command, "kept_runs": len(kept),
                                                               "seconds_before": previous.get("seconds")}])
        print(f"resuming {args.output}: {len(kept)} finished runs kept, "
              f"{sum(len(pending_seeds(m, seeds, kept)) for m in methods)} to run", file=sys.stderr, flush=True)

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - t_start

    def record(method: str, seed: int, acc: dict[str, float], **extra: Any) -> None:
        results["runs"].append({"method": method, "seed": seed, "accuracy": acc, **extra})
        print(f"{method} seed {seed}: mean {100 * acc['mean']:.2f} % "
              + " ".join(f"{n} {100 * acc[n]:.1f}" for n in names)
              + (f" ({extra['seconds']:.0f} s)" if "seconds" in extra else ""), file=sys.stderr, flush=True)
        results["seconds"] = elapsed()  # so far: a resumed run adds to it
        write_json(results, args.output, indent=1)

    def grid(obj: Any, scales: tuple[float, ...], lam_of: Any) -> tuple[float, dict[str, float]]:
        best = max(scales, key=lambda s: score(obj, lambda_point(obj, lam_of(s)), tasks, "validation")["mean"])
        return best, score(obj, lambda_point(obj, lam_of(best)), tasks)

    n_per = len(names)
    for method in methods:
        todo = pending_seeds(method, seeds, results["runs"])
        if not todo:
            continue  # every run kept from the file being resumed
        try:
            if method == "pretrained":
                pt = lambda_point(plain_scorer, np.zeros(k))
                record(method, 0, score(plain_scorer, pt, tasks), entropy=unlabeled_entropy(plain_scorer, pt, tasks))
            elif method == "individual":
                acc = {n: score(plain_scorer, lambda_point(plain_scorer, np.eye(k)[i]), {n: tasks[n]})[n]
                       for i, n in enumerate(names)}
                record(method, 0, {**acc, "mean": float(np.mean(list(acc.values())))})
            elif method == "uniform":
                pt = lambda_point(plain_scorer, np.full(k, 1 / k))
                record(method, 0, score(plain_scorer, pt, tasks), entropy=unlabeled_entropy(plain_scorer, pt, tasks))
            elif method == "task-arithmetic":
                s, acc = grid(plain_scorer, TA_GRID, lambda s: np.full(k, s))
                record(method, 0, acc, scale=s,
                       entropy=unlabeled_entropy(plain_scorer, lambda_point(plain_scorer, np.full(k, s)), tasks))
            elif method == "ties":
                tie = make_objective(base_sd, [ties_merged, base_sd], tasks, heads, seed=0, granularity="model",
                                     scale="learned", simplex_atol=None)
                s, acc = grid(tie, TIES_GRID, lambda s: np.array([s, 0.0]))
                record(method, 0, acc, scale=s, entropy=unlabeled_entropy(tie, lambda_point(tie, np.array([s, 0.0])), tasks))
            elif method == "joint":
                for seed in todo:
                    t0 = time.perf_counter()
                    model = joint_finetune(base_model, tasks, epochs=SIZES[size]["epochs"], seed=seed,
                                           frozen_bn=frozen_bn)
                    seconds = time.perf_counter() - t0
                    acc = {n: float(evaluate(model.task_model(i), _test_data({n: tasks[n]}, "test")[n])["accuracy"])
                           for i, n in enumerate(names)}
                    record(method, seed, {**acc, "mean": float(np.mean(list(acc.values())))}, seconds=seconds)
            elif method.startswith("adamerging"):
                from spsa_mix.baselines.adamerging import adamerging

                gran = "layer" if method.endswith("layer") else "model"
                experts = ties_experts if "++" in method else expert_sds
                for seed in todo:
                    obj = make_objective(base_sd, experts, tasks, heads, seed=seed, granularity=gran, scale=1.0,
                                         simplex_atol=None)
                    t0 = time.perf_counter()
                    res = adamerging(obj, steps=steps)
                    seconds = time.perf_counter() - t0
                    ev = ties_scorer if "++" in method else plain_scorer
                    pt = lambda_point(ev, res.x)
                    record(method, seed, score(ev, pt, tasks), seconds=seconds, entropy=unlabeled_entropy(ev, pt, tasks),
                           forwards=steps * n_per, backwards=steps * n_per, evaluations=steps,
                           lam=np.asarray(res.x).tolist(), final_loss=float(res.fun))
            elif method.startswith("spsa"):
                import spsa_mix

                gran = "layer" if "-layer" in method else "model"
                experts = ties_experts if "-ties" in method else expert_sds
                budget = budget_layer if gran == "layer" else budget_task
                ev = ties_scorer if "-ties" in method else plain_scorer
                for seed in todo:
                    if method.endswith("-scale"):  # the library's task-vector space: simplex weights, a learned scale
                        obj = make_objective(base_sd, experts, tasks, heads, seed=seed, granularity=gran,
                                             scale="learned", simplex_atol=1e-6,
                                             loss=NonFiniteAsPenalty(Entropy(), penalty=PENALTY))
                        x0 = obj.domain.join(np.full(obj.domain.simplex, 1 / k), np.array([ADAMERGING_PRIOR * k]))
                        learner: Any = obj
                    else:  # AdaMerging's space: every lambda in [0, 1]
                        obj = make_objective(base_sd, experts, tasks, heads, seed=seed, granularity=gran, scale=1.0,
                                             simplex_atol=None, loss=NonFiniteAsPenalty(Entropy(), penalty=PENALTY))
                        learner = BoxLambda(obj)
                        x0 = learner.point(ADAMERGING_PRIOR)
                    step = {} if method.endswith(("-scale", "-defaults")) else {"lr": SPSA_LR, "betas": SPSA_BETAS}
                    t0 = time.perf_counter()
                    res = spsa_mix.minimize(learner, k=learner.shape, vectorized=True, max_evals=budget, seed=seed,
                                            x0=x0, start="uniform", **step)
                    seconds = time.perf_counter() - t0
                    extra: dict[str, Any] = {}
                    if method.endswith("-scale"):
                        alpha, pos, _ = obj.domain.split(res.x)
                        lam = np.asarray(alpha) * float(pos.reshape(-1)[0])
                        extra["scale"] = float(pos.reshape(-1)[0])
                    else:
                        lam = learner.lam(res.x)[0]
                    pt = lambda_point(ev, lam)
                    record(method, seed, score(ev, pt, tasks), seconds=seconds, entropy=unlabeled_entropy(ev, pt, tasks),
                           forwards=int(res.nfev) * n_per, backwards=0, evaluations=int(res.nfev),
                           lam=lam.tolist(), final_loss=float(res.fun), **extra)
        except Exception as e:  # recorded; the other rows run
            results["errors"].append({"method": method, "error": f"{type(e).__name__}: {e}"})
            print(f"{method}: FAILED {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            write_json(results, args.output, indent=1)

    # Memory and time of one step, AdaMerging against SPSA, on the same objective.
    results["steps"] = measure_steps(base_sd, expert_sds, tasks, heads, rounds=args.rounds)
    results["status"] = "complete" if not results["errors"] else "complete with errors"
    results["seconds"] = elapsed()
    write_json(results, args.output, indent=1)
    write_report(results, args.output)
    print(args.output.with_suffix(".md").read_text())
    return 0


def measure_steps(base_sd: Any, experts: list[Any], tasks: dict[str, TaskData], heads: list[Any], *,
                  rounds: int) -> dict[str, Any]:
    """Peak memory and interleaved time of one step of each learner (task- and layer-wise)."""
    out: dict[str, Any] = {"peak_mb": {}, "times_s": {}}
    steps = {}
    for gran in ("model", "layer"):
        bp = make_objective(base_sd, experts, tasks, heads, seed=0, granularity=gran, scale=1.0, simplex_atol=None)
        lam = np.full(bp.shape, 0.3)
        fo = BoxLambda(make_objective(base_sd, experts, tasks, heads, seed=0, granularity=gran, scale=1.0,
                                      simplex_atol=None))
        x = fo.point(ADAMERGING_PRIOR)
        probes = np.stack([x, x])  # one SPSA step: two probes (m = 1)
        label = "task" if gran == "model" else "layer"
        steps[f"adamerging-{label}"] = (lambda o=bp, a=lam: o.value_and_grad(a))
        steps[f"spsa-{label}"] = (lambda o=fo, p=probes: o(p))
        out["stack_mb"] = fo.objective.memory()["stack"] / 2**20
    for name, fn in steps.items():
        out["peak_mb"][name] = step_peak_mb(fn)
    from step_cost import interleaved_times  # benchmarks/ is on sys.path when this runs as a script

    out["times_s"] = interleaved_times(steps, rounds=rounds, warmup=1)
    return out


# ---------------------------------------------------------------------------- report
def summarize(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: mean and std over seeds of each column."""
    rows = []
    methods = list(dict.fromkeys(r["method"] for r in results["runs"]))
    peaks = results.get("steps", {}).get("peak_mb", {})
    for m in methods:
        runs = [r for r in results["runs"] if r["method"] == m]
        acc = {key: [100 * r["accuracy"][key] for r in runs] for key in runs[0]["accuracy"]}
        row = {"method": m, "seeds": len(runs), "accuracy": {key: (float(np.mean(v)), float(np.std(v)))
                                                              for key, v in acc.items()}}
        for key in ("seconds", "forwards", "backwards", "evaluations", "entropy"):
            if key in runs[0]:
                row[key] = float(np.mean([r[key] for r in runs]))
        base = m.replace("++", "").replace("-ties", "").replace("-defaults", "")  # the same step as their plain row
        if base in peaks:
            row["peak_mb"] = peaks[base]
        rows.append(row)
    return rows


def _ratio_rounds(times: dict[str, list[float]], num: str, den: str) -> list[float]:
    return [a / b for a, b in zip(times.get(num, []), times.get(den, []), strict=False)]


def write_report(results: dict[str, Any], output: Path) -> None:
    """The markdown report beside ``output``."""
    from spsa_mix.io import atomic_write_text

    rows = summarize(results)
    names = list(results["config"]["tasks"])
    head = ["method", "seeds", *[f"{n} (%)" for n in names], "mean (%)", "entropy", "wall s", "peak MiB", "forwards",
            "backwards"]
    took = f"{results['seconds']:.0f} s; " if "seconds" in results else ""
    unrecorded = [r for r in results.get("resumed", []) if r.get("seconds_before") is None]
    if unrecorded and "seconds" in results:  # the time before the first such resumption is missing from the total
        took = f"{results['seconds']:.0f} s since it was resumed, the time before not recorded; "
    for r in results.get("resumed", []):
        took += f"resumed by `{r['command']}` with {r['kept_runs']} runs finished; "
    lines = [f"Command: `{results['command']}` ({took}"
             f"{results['environment']['note']}, one thread).", "",
             "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in rows:
        acc = r["accuracy"]
        cells = [r["method"], str(r["seeds"])] + [f"{acc[n][0]:.2f} ± {acc[n][1]:.2f}" for n in [*names, "mean"]]
        cells += [f"{r['entropy']:.4f}" if "entropy" in r else "-", f"{r['seconds']:.0f}" if "seconds" in r else "-", f"{r['peak_mb']:.1f}" if "peak_mb" in r else "-",
                  f"{r['forwards']:.0f}" if "forwards" in r else "-", f"{r['backwards']:.0f}" if "backwards" in r else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    steps = results.get("steps", {})
    lines += ["", f"Stacked experts (and the pretrained base): {results['stacked_experts_mb']:.1f} MiB, held by every "
              "learner and not counted in the peaks. Entropy: the objective, the tasks' mean prediction entropy (nats) over "
              "their whole unlabeled pools. Peak: the most memory one step allocates above what is "
              "allocated before it (PyTorch's CPU allocator events, benchmarks/step_cost.py); forwards and backwards: "
              "passes of one task's minibatch of 16.", ""]
    by = {r["method"]: r for r in rows}
    times = steps.get("times_s", {})
    for label in ("task", "layer"):
        bp, fo = by.get(f"adamerging-{label}"), by.get(f"spsa-{label}")
        ratio = _ratio_rounds(times, f"adamerging-{label}", f"spsa-{label}")
        if ratio:
            lines.append(f"- {label}-wise step time, AdaMerging / SPSA (interleaved rounds): median "
                         f"{np.median(ratio):.2f} [{min(ratio):.2f}-{max(ratio):.2f}] over {len(ratio)} rounds")
        if bp and fo:
            gap = fo["accuracy"]["mean"][0] - bp["accuracy"]["mean"][0]
            mem = fo.get("peak_mb", math.nan) / bp.get("peak_mb", math.nan)
            wall = fo.get("seconds", math.nan) / bp.get("seconds", math.nan)
            extra = fo.get("forwards", 0) - (bp.get("forwards", 0) + 2 * bp.get("backwards", 0))
            verdict = "meets" if gap >= -GOAL_POINTS and mem <= GOAL_MEMORY else "misses"
            ta = by.get("task-arithmetic")
            below = ta is not None and max(fo["accuracy"]["mean"][0], bp["accuracy"]["mean"][0]) < ta["accuracy"]["mean"][0]
            note = (f"; both below task arithmetic's {ta['accuracy']['mean'][0]:.2f} %: the entropy's minimum is not "
                    "an accurate model here" if below and ta is not None else "")
            lines.append(f"- {label}-wise: SPSA {gap:+.2f} points against AdaMerging (mean accuracy), peak step "
                         f"memory {mem:.2f}x, whole-run wall time {wall:.2f}x; SPSA spent {fo.get('forwards', 0):.0f} "
                         f"forward passes against AdaMerging's {bp.get('forwards', 0):.0f} forwards and "
                         f"{bp.get('backwards', 0):.0f} backwards ({extra:+.0f} passes if a backward costs two "
                         f"forwards) — {verdict} the goal (within {GOAL_POINTS:g} point at <= {GOAL_MEMORY:g}x "
                         f"memory){note}")
    if results.get("errors"):
        lines += ["", "Errors:", *[f"- {e['method']}: {e['error']}" for e in results["errors"]]]
    if not str(results.get("status", "")).startswith("complete"):
        lines += ["", f"Status: {results.get('status')}."]
    atomic_write_text(output.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
