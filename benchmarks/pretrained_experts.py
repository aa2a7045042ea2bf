"""Experts that share a pretrained start: CIFAR-10 ResNet-20 fine-tuned on shifted domains.

The setting weight blending is used in (model soups, task arithmetic): one pretrained model
(akamaster's CIFAR-10 ResNet-20, ``../shared/data/resnet_cifar10``), fine-tuned into K experts,
each on its own shifted domain of CIFAR-10 (JPEG, ``cifar10-jpeg``): Gaussian noise, blur,
low contrast, darkening (``DOMAINS``); the target is a new domain that combines two of the
shifts (``TARGET``). Every way to set the weights of the experts' blend runs through the
experiment's own functions (:func:`spsa_mix.experiment.alpha.set_alpha`, on an
:class:`~spsa_mix.experiment.alpha.AlphaProblem` built here): uniform, best single, greedy
soup, data size, proxy accuracy, backprop, GLUE's SPSA, SPSA with the library's defaults,
Nevergrad and Optuna on the convex blend; task arithmetic (uniform weights, scale from a grid on
held-out accuracy) and task vectors with a learned scale over the pretrained base; the
pretrained model itself and a network from scratch as references. Each prior is scored on the
target domain's test images, then fine-tuned on the target images (alpha fixed, Adam lr
1e-3) as the experiment does.

Writes ``--output`` (JSON with every run and the command), its ``.md`` (the experiment's
table and checks)::

    python benchmarks/pretrained_experts.py --output benchmarks/results/pretrained_resnet20_cifar10.json

Needs ``../shared/data/cifar10-jpeg.zip`` and ``../shared/data/resnet_cifar10/resnet20-12fca82f.th``
(it says so and exits 2 without them). Sizes are cut for a 2-core CPU (``--help``).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESNET20 = "resnet_cifar10/resnet20-12fca82f.th"
# The experts' domains and the new target domain: CIFAR-10-C's kinds (spsa_mix.data.corruptions,
# levels on its scale, as benchmarks/real_models.py uses them); the target combines two shifts.
DOMAINS = ("gaussian-noise=0.08", "gaussian-blur=1.0", "contrast=0.2", "jpeg=10")
TARGET = "gaussian-blur=0.7+gaussian-noise=0.06"


def shift(x: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """uint8 images ``(N, 3, H, W)`` under the shift ``kind`` (:func:`spsa_mix.data.corruptions.corrupt`,
    its noise drawn from a generator seeded with ``seed``), back as uint8."""
    from spsa_mix.data.corruptions import corrupt

    y = corrupt(torch.from_numpy(x).float() / 255.0, kind, generator=torch.Generator().manual_seed(seed))
    return np.clip(np.rint(y.numpy() * 255.0), 0, 255).astype(np.uint8)


@dataclass
class Setting:
    """The pretrained model, its K fine-tuned experts and the target domain's data (see the
    module docstring): what :func:`main` and ``benchmarks/defaults.py suite`` run on."""

    k: int
    base: torch.nn.Module
    experts: list[torch.nn.Module]
    sizes: list[int]
    parts: list[np.ndarray]
    cifar: Any
    y_tr: np.ndarray
    test_ix: np.ndarray
    target_task: Any
    target_ix: np.ndarray
    test: Any
    holdout: Any
    alpha_loss: Any
    objective: Callable[..., Any]  # objective(seed, **BlendedObjective kwargs): minibatches of the target images
    scorer: Any  # the blend with the cross-entropy, no data
    started: float
    holdout_ix: np.ndarray  # the held-out images (of the target split) that choose the scale and score blends
    weights: Any  # the pretrained ResNet-20's file


def build_setting(*, per_expert: int = 1000, expert_epochs: int = 2, expert_lr: float = 1e-3, target_size: int = 500,
                  holdout_size: int = 500, test_size: int = 2000, alpha_loss: str = "calibrated") -> Setting:
    """Fine-tune the experts and cut the target domain's data (the defaults are :func:`main`'s).

    Raises
    ------
    FileNotFoundError
        Without ``cifar10-jpeg`` or akamaster's ResNet-20 weights under the data roots.
    """
    from spsa_mix.blend import BlendedObjective
    from spsa_mix.blend.losses import CalibratedCrossEntropy, CrossEntropy
    from spsa_mix.data.batches import Batches
    from spsa_mix.data.images import ImageData, default_data_roots, load_dataset
    from spsa_mix.data.real import IMAGENET_MEAN, IMAGENET_STD
    from spsa_mix.data.tasks import Task
    from spsa_mix.experiment.pipeline import derive_seed
    from spsa_mix.experiment.training import train_model
    from spsa_mix.models import load_cifar_resnet

    torch.set_num_threads(1)
    weights = next((r / RESNET20 for r in default_data_roots() if (r / RESNET20).is_file()), None)
    try:
        cifar = load_dataset("cifar10-jpeg", standardize=False)
    except ValueError as e:
        raise FileNotFoundError(str(e)) from None
    if weights is None:
        raise FileNotFoundError(f"{RESNET20} not found under {[str(r) for r in default_data_roots()]}")
    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    x_tr, y_tr = cifar.x_train.numpy(), cifar.y_train.numpy()
    x_te, y_te = cifar.x_test.numpy(), cifar.y_test.numpy()
    k = len(DOMAINS)
    perm = rng.permutation(len(y_tr))
    cuts = np.cumsum([0] + [per_expert] * k + [target_size, holdout_size])
    parts = [perm[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    test_ix = rng.permutation(len(y_te))[:test_size]

    def domain_task(kind: str, ix: np.ndarray, test: np.ndarray | None = None) -> Task:
        seed = zlib.crc32(kind.encode())  # one fixed draw of noise per domain
        xs = shift(x_tr[ix], kind, seed)
        xt = shift(x_te[test], kind, seed + 1) if test is not None else xs[:0]
        yt = y_te[test] if test is not None else y_tr[ix][:0]
        data = ImageData.from_arrays(kind, xs, y_tr[ix], xt, yt, scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                     classes=cifar.classes)
        return Task(data, "image-classification")

    base = load_cifar_resnet(weights)
    experts, sizes = [], []
    for i, kind in enumerate(DOMAINS):
        task = domain_task(kind, parts[i])
        model = copy.deepcopy(base).train()
        gen = torch.Generator().manual_seed(100 + i)
        train_model(model, Batches(task, batch_size=64, shuffle=True, generator=gen), epochs=expert_epochs,
                    lr=expert_lr)
        experts.append(model.eval())
        sizes.append(len(parts[i]))
        print(f"expert {i} ({kind}) fine-tuned", file=sys.stderr, flush=True)
    target_task = domain_task(TARGET, np.concatenate([parts[k], parts[k + 1]]), test_ix)
    n_t = target_size
    target_ix, holdout_ix = np.arange(n_t), np.arange(n_t, n_t + holdout_size)
    test = Batches(target_task, split="test", batch_size=1000)
    holdout = Batches(target_task, holdout_ix, batch_size=1000)
    loss = CalibratedCrossEntropy() if alpha_loss == "calibrated" else CrossEntropy()

    def objective(seed: int | None, **kw: Any) -> BlendedObjective:
        gen = torch.Generator().manual_seed(derive_seed(seed if seed is not None else 0, "alpha"))
        data = Batches(target_task, target_ix, batch_size=64, shuffle=True, generator=gen)
        return BlendedObjective(load_cifar_resnet(weights), experts, loss_fn=kw.pop("loss_fn", loss), data=data,
                                device="cpu", **kw)

    scorer = objective(None, loss_fn=CrossEntropy())

    return Setting(k, base, experts, sizes, parts, cifar, y_tr, test_ix, target_task, target_ix, test, holdout, loss,
                   objective, scorer, t_start, holdout_ix, weights)


@dataclass
class SuiteProblem:
    """The setting as ``benchmarks/defaults.py suite`` scores it: ``make_objective(seed)``
    (the objective ``spsa-defaults`` learns on), and the target domain's held-out
    cross-entropy of a blend (``target_loss``)."""

    k: int
    make_objective: Callable[[int], Any]
    target_loss: Callable[[np.ndarray], float]
    uniform_loss: float
    best_vertex_loss: float


def load_problem(**kwargs: Any) -> SuiteProblem:
    """:func:`build_setting` (its keyword arguments) for the suite; ``FileNotFoundError``
    without the data."""
    from spsa_mix.blend import evaluate_blend

    s = build_setting(**kwargs)

    def target_loss(alpha: np.ndarray) -> float:
        return float(evaluate_blend(s.scorer, np.asarray(alpha, dtype=np.float64), s.holdout)["loss"])

    return SuiteProblem(s.k, s.objective, target_loss, target_loss(np.full(s.k, 1.0 / s.k)),
                        min(target_loss(np.eye(s.k)[i]) for i in range(s.k)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path("benchmarks/results/pretrained_resnet20_cifar10.json"))
    ap.add_argument("--per-expert", type=int, default=1000, help="training images per expert domain")
    ap.add_argument("--expert-epochs", type=int, default=2)
    ap.add_argument("--expert-lr", type=float, default=1e-3)
    ap.add_argument("--target-size", type=int, default=500)
    ap.add_argument("--holdout-size", type=int, default=500)
    ap.add_argument("--test-size", type=int, default=2000)
    ap.add_argument("--budget", type=int, default=400)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--configs", nargs="+", default=["uniform", "best-single", "greedy-soup", "spsa", "spsa-defaults",
                                                     "backprop", "nevergrad", "task-arithmetic", "task-vectors"])
    ap.add_argument("--alpha-loss", default="calibrated", help="'task' (cross-entropy) or 'calibrated'")
    ap.add_argument("--render", action="store_true", help="only rewrite the report from --output")
    args = ap.parse_args(argv)
    if args.render:
        import json

        write_report(json.loads(args.output.read_text()), args.output)
        return 0
    torch.set_num_threads(1)

    from spsa_mix.blend import BlendedObjective, evaluate, evaluate_blend
    from spsa_mix.blend.losses import CrossEntropy
    from spsa_mix.data.batches import Batches
    from spsa_mix.experiment.alpha import AlphaProblem, AlphaResult, set_alpha
    from spsa_mix.experiment.finetune import finetune
    from spsa_mix.experiment.pipeline import NonFiniteAsPenalty, derive_seed
    from spsa_mix.experiment.report import markdown_table, summarize
    from spsa_mix.io import check_outputs, write_json
    from spsa_mix.models import ResNet20

    check_outputs({"--output": args.output, "its .md": args.output.with_suffix(".md")})

    try:
        built = build_setting(per_expert=args.per_expert, expert_epochs=args.expert_epochs, expert_lr=args.expert_lr,
                              target_size=args.target_size, holdout_size=args.holdout_size, test_size=args.test_size,
                              alpha_loss=args.alpha_loss)
    except FileNotFoundError as e:
        print(f"pretrained_experts.py: {e}", file=sys.stderr)
        return 2
    t_start = built.started
    k, base, experts, sizes, parts = built.k, built.base, built.experts, built.sizes, built.parts
    cifar, y_tr, test_ix, target_task, target_ix = built.cifar, built.y_tr, built.test_ix, built.target_task, built.target_ix
    test, holdout, objective, scorer, alpha_loss = built.test, built.holdout, built.objective, built.scorer, built.alpha_loss

    def holdout_accuracy(alpha: np.ndarray) -> float:
        return float(evaluate_blend(scorer, np.asarray(alpha, dtype=np.float64), holdout)["accuracy"])

    def tv_objective(seed: int | None, scale: Any) -> BlendedObjective:
        return objective(seed, base=base, space="task-vectors", scale=scale,
                         loss_fn=NonFiniteAsPenalty(alpha_loss, penalty=100.0))

    def tv_holdout(alpha: np.ndarray, scale: float) -> float:
        obj = tv_objective(None, float(scale))
        return float(evaluate_blend(obj, np.asarray(alpha, dtype=np.float64), holdout)["accuracy"])

    expert_holdout = [holdout_accuracy(np.eye(k)[i]) for i in range(k)]
    problem = AlphaProblem(k=k, make_objective=objective, sizes=sizes, expert_holdout_accuracy=expert_holdout,
                           holdout_accuracy=holdout_accuracy, sail_features=lambda: ([], np.zeros((0, 1)), 0),
                           budget=args.budget, holdout_size=args.holdout_size, make_task_vector_objective=tv_objective,
                           task_vector_holdout_accuracy=tv_holdout)
    results: dict[str, Any] = {
        "command": "python benchmarks/pretrained_experts.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "config": {"dataset": "cifar10-jpeg (shifted domains)", "arch": "resnet20 (pretrained, akamaster)", "k": k,
                   "per_expert": args.per_expert, "expert_domains": list(DOMAINS),
                   "expert_epochs": args.expert_epochs, "target_size": args.target_size,
                   "holdout_size": args.holdout_size, "budget": args.budget, "m": 1,
                   "alpha_loss": args.alpha_loss, "finetune_epochs": args.finetune_epochs,
                   "seeds": list(range(args.seeds)), "target_domain": TARGET},
        "dataset": {"name": "CIFAR-10 (JPEG), shifted domains", "n_test": len(test_ix), "classes": list(cifar.classes)},
        "experts": [{"index": i, "size": sizes[i], "domain": d, "class_counts": np.bincount(y_tr[parts[i]],
                                                                                          minlength=10).tolist(),
                     "test_accuracy": float(evaluate(experts[i], test)["accuracy"]),
                     "holdout_accuracy": expert_holdout[i], "cached": False} for i, d in enumerate(DOMAINS)],
        "runs": [], "errors": [], "status": "running",
        "pretrained_test_accuracy": float(evaluate(base, test)["accuracy"]),
    }

    def finish(name: str, seed: int, model: torch.nn.Module, result: AlphaResult | None) -> None:
        gen = torch.Generator().manual_seed(derive_seed(seed, "finetune"))
        train = Batches(target_task, target_ix, batch_size=64, shuffle=True, generator=gen)
        ft = finetune(model, train, test, epochs=args.finetune_epochs, lr=1e-3, seed=derive_seed(seed, "finetune"))
        run = {"config": name, "seed": seed, "alpha": [] if result is None else result.alpha.tolist(),
               "prior_accuracy": ft["test_accuracy"][0], "test_accuracy": ft["test_accuracy"],
               "evaluations": 0.0 if result is None else result.evaluations,
               "images": 0.0 if result is None else result.images,
               "alpha_seconds": 0.0 if result is None else result.seconds,
               "details": {} if result is None else result.details}
        if result is not None and result.scale is not None:
            run["scale"] = result.scale
        results["runs"].append(run)
        print(f"{name} seed {seed}: prior {100 * run['prior_accuracy']:.2f}%, fine-tuned "
              f"{100 * run['test_accuracy'][-1]:.2f}%", file=sys.stderr, flush=True)
        write_json(results, args.output, indent=1)

    for seed in range(args.seeds):
        finish("pretrained", seed, copy.deepcopy(base).train(), None)
    for name in args.configs:
        fixed = None
        for seed in range(args.seeds):
            try:
                res = fixed if fixed is not None else set_alpha(name, problem, seed=seed)
                if name in ("uniform", "best-single", "greedy-soup", "data-size", "proxy-accuracy", "task-arithmetic"):
                    fixed = res
                if res.scale is not None:
                    model = tv_objective(None, float(res.scale)).blended_model(res.alpha)
                else:
                    model = scorer.blended_model(res.alpha)
                finish(name, seed, model, res)
            except Exception as e:  # recorded, the others run
                results["errors"].append({"config": name, "seed": seed, "error": f"{type(e).__name__}: {e}"})
                print(f"{name} seed {seed}: FAILED {e}", file=sys.stderr, flush=True)
    for seed in range(args.seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "scratch"))
            scratch = ResNet20(num_classes=10, in_channels=3)
        finish("from-scratch", seed, scratch.train(), None)
    results["summary"] = summarize(results)
    results["status"] = "complete" if not results["errors"] else "complete with errors"
    results["seconds"] = time.perf_counter() - t_start
    write_json(results, args.output, indent=1)
    write_report(results, args.output)
    print(markdown_table(results["summary"]))
    return 0


def write_report(results: dict[str, Any], output: Path) -> None:
    """The markdown report beside ``output`` (the experiment's report, and the pretrained model's score)."""
    from spsa_mix.experiment.report import render_markdown
    from spsa_mix.io import atomic_write_text

    md = render_markdown(results) + (f"\nThe pretrained model alone scores {100 * results['pretrained_test_accuracy']:.2f} "
                                     f"% on the target domain's test images.\n")
    atomic_write_text(output.with_suffix(".md"), f"Command: `{results['command']}` ({results['seconds']:.0f} s).\n\n" + md)


if __name__ == "__main__":
    raise SystemExit(main())
