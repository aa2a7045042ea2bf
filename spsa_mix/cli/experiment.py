"""``spsa-mix experiment``: the experiment of the GLUE paper's section 5, end to end.

K experts trained on Dirichlet non-IID splits of a dataset, every way to set the mixing
weights alpha, the prior and fine-tuned test accuracy of each blend over seeds
(:func:`spsa_mix.experiment.run_experiment`). With no arguments: scikit-learn's digits
(built in, no download), a small CNN, K=10 experts, every way to set alpha, 3 seeds; a
few minutes on a CPU. Prints the markdown report and writes ``results.json``,
``results.md`` and ``figure.png`` under ``runs/experiment_<dataset>_<arch>/`` (or where
``--output``, ``--markdown`` and ``--plot`` say). The built-in sets (``digits``,
``text-domains``) default to small sizes, the others to GLUE section 5's (2000 images per
expert, 10,000 target images); every size can be set.

The command was called ``spsa-mix experiment`` before 0.2 and that name still works; it was
renamed because "GLUE" is also the NLP benchmark that SST-2 belongs to, and the command
runs an experiment on any dataset, not that benchmark.

Every option, the device and every output path (``--output``, ``--markdown``, ``--plot``,
``--cache-dir``; :func:`spsa_mix.io.check_outputs`) are checked before any work.

Exit status: 0 when every configuration ran, 1 when some failed (their errors are in
the report and the JSON), 2 for bad input or an output path that cannot be written (one
line says what and why), 130 when interrupted (the JSON keeps what was computed; trained
experts stay cached).

Example
-------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_arguments(p)
>>> a = p.parse_args(["--k", "5", "--configs", "spsa", "uniform"])
>>> a.k, a.configs
(5, ['spsa', 'uniform'])
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from spsa_mix.experiment.config import ALL_CONFIGS, ExperimentConfig
from spsa_mix.progress import write

__all__ = ["add_arguments", "run", "config_from_args"]

_D = ExperimentConfig()
_SMALL = ("digits", "textdomains")  # the built-in sets: the small default sizes; the others GLUE 5's


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spsa-mix experiment`` (no PyTorch import here)."""
    data = parser.add_argument_group("data and split")
    data.add_argument("--dataset", default=_D.dataset,
                      help="digits (built in, scikit-learn; the default), text-domains (built in, generated token "
                           "sequences of 10 domains), fashion-mnist, mnist or kmnist (their idx files, .gz or not, "
                           "under <data-root>/FashionMNIST/raw, /MNIST/raw or /KMNIST/raw), cifar10-jpeg (CIFAR-10 as "
                           "JPEG in ImageFolder layout, <data-root>/cifar10-jpeg.zip, decoded once and cached), or a "
                           "torchvision dataset present locally: cifar10, cifar100, svhn, imagenette, stl10, usps, "
                           "gtsrb")
    data.add_argument("--task", default=None, choices=["image-classification", "sequence-classification", "causal-lm"],
                      help="what the experts learn (default: image-classification for images, causal-lm for text)")
    data.add_argument("--data-root", default=None,
                      help="folder with the dataset files (default: $SPSA_MIX_DATA, ../shared/data beside the "
                           "repository or the working directory, then <cache-dir>/data)")
    data.add_argument("--image-size", type=int, default=None, help="resize images to this size (Imagenette: 64)")
    data.add_argument("--k", type=int, default=_D.k, help="number of experts (default: %(default)s, as GLUE)")
    data.add_argument("--per-expert", type=int, nargs="+", default=None,
                      help="images per expert: one size, or K sizes (default: 80 for digits, GLUE's 2000 otherwise)")
    data.add_argument("--target-size", type=int, default=None,
                      help="IID target images that learn alpha and are fine-tuned on (default: 300 for digits, "
                           "GLUE's 10,000 otherwise)")
    data.add_argument("--target-used", type=int, default=None,
                      help="learn alpha and fine-tune on a random N of the target images (nested in N; the experts, "
                           "held-out and test sets stay those of --target-size): a point of a target-size curve")
    data.add_argument("--holdout-size", type=int, default=None,
                      help="IID held-out target images for proxy accuracy, best single and greedy soup (default: 100 for "
                           "digits, 1000 otherwise)")
    data.add_argument("--target-concentration", type=_concentration, default=None, metavar="DELTA|iid",
                      help="the target domain: 'iid' (GLUE's), or a label shift with class proportions ~ "
                           "Dirichlet(DELTA), held-out and test sets drawn with them (default: 0.5 for digits, iid "
                           "otherwise)")
    data.add_argument("--dirichlet-alpha", type=float, default=_D.dirichlet_alpha,
                      help="Dirichlet concentration of the experts' class proportions (default: %(default)s, as GLUE)")
    data.add_argument("--data-seed", type=int, default=_D.data_seed, help="seed of the split and the experts (default: %(default)s)")
    exp = parser.add_argument_group("experts")
    exp.add_argument("--arch", default=_D.arch,
                     help="small-cnn (the default), resnet20, mobilenet_v2, vit, or tiny-llama for text")
    exp.add_argument("--expert-epochs", type=int, default=_D.expert_epochs, help="epochs per expert (default: %(default)s, as GLUE)")
    exp.add_argument("--independent-init", action="store_true",
                     help="give each expert its own initialisation (default: one shared initialisation, as in "
                          "federated averaging; blends of independently initialised networks are near chance)")
    exp.add_argument("--cache-dir", default=None,
                     help="where trained experts are kept and reused (default: $SPSA_MIX_CACHE or ~/.cache/spsa_mix)")
    alpha = parser.add_argument_group("alpha")
    alpha.add_argument("--configs", nargs="+", default=list(ALL_CONFIGS), choices=list(ALL_CONFIGS),
                       metavar="CONFIG", help=f"ways to set alpha, any of: {' '.join(ALL_CONFIGS)} (default: all)")
    alpha.add_argument("--budget", type=int, default=None,
                       help="forward passes for learning alpha (spsa, Nevergrad, Optuna; backprop and forward-grad "
                            "take as many steps as spsa) (default: 400 for digits, 1000 otherwise)")
    alpha.add_argument("--m", type=int, default=_D.m, help="random directions per SPSA step (default: %(default)s, as GLUE)")
    alpha.add_argument("--directions", default=_D.directions,
                       choices=["normalized-gaussian", "gaussian", "rademacher"],
                       help="SPSA direction distribution of the spsa and forward-grad rows (default: %(default)s, "
                            "as GLUE 3.2; spsa_mix.minimize defaults to rademacher, see docs/directions.md)")
    alpha.add_argument("--alpha-batch-size", type=int, default=_D.alpha_batch_size,
                       help="target images per objective evaluation (default: %(default)s)")
    alpha.add_argument("--alpha-loss", default=None,
                       choices=["task", "calibrated", "cross-entropy", "calibrated-cross-entropy", "causal-lm",
                                "calibrated-causal-lm", "entropy"],
                       help="the loss every learned row minimises: 'task' (the task's own, cross-entropy for images, "
                            "as GLUE), 'calibrated' (the task's after the best temperature, see docs/glue.md) or a "
                            "name (default: calibrated for the built-in sets, task otherwise)")
    alpha.add_argument("--nevergrad-optimizer", default=_D.nevergrad_optimizer, help="Nevergrad optimizer name (default: %(default)s)")
    alpha.add_argument("--optuna-sampler", default=_D.optuna_sampler, help="Optuna sampler: tpe (the default), cmaes, random, qmc, gp")
    alpha.add_argument("--sail-features", choices=["pixels", "penultimate"], default=_D.sail_features,
                       help="features whose MMDs set SAIL's weights (default: %(default)s)")
    ft = parser.add_argument_group("fine-tuning and run")
    ft.add_argument("--finetune-epochs", type=int, default=_D.finetune_epochs, help="fine-tuning epochs (default: %(default)s)")
    ft.add_argument("--finetune-lr", type=float, default=_D.finetune_lr, help="Adam learning rate of fine-tuning (default: %(default)s)")
    ft.add_argument("--seeds", type=int, nargs="+", default=[len(_D.seeds)],
                    help="one number N: seeds 0..N-1; several numbers: those seeds (default: 3)")
    ft.add_argument("--device", default=_D.device, help="auto (CUDA when available; the default), cpu, cuda or cuda:N")
    ft.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads during the run (default: 1 for digits, torch's own setting otherwise; "
                         "1 is fastest for tiny models and on a busy CPU)")
    ft.add_argument("--quick", action="store_true",
                    help="a tiny run (K=3, a few images, 2 expert epochs, 1 seed) to check the installation")
    out = parser.add_argument_group("output")
    out.add_argument("--output", default=None, help="JSON with every number (default: runs/experiment_<dataset>_<arch>/results.json)")
    out.add_argument("--markdown", default=None, help="markdown report (default: beside the JSON, results.md)")
    out.add_argument("--plot", default=None, help="PNG figure (default: beside the JSON, figure.png)")
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    out.add_argument("--render", metavar="JSON", default=None,
                     help="run nothing: read a results file (complete or partial), recompute its summary, print "
                          "the report and write the markdown and the figure (beside it unless --markdown/--plot)")


def _concentration(text: str) -> float | str:
    """``--target-concentration``: ``iid`` or a positive number.

    >>> _concentration("iid"), _concentration("0.5")
    ('iid', 0.5)
    """
    if text.lower() == "iid":
        return "iid"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'iid' or a positive number, but got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be 'iid' or a positive number, but got {text!r}")
    return value


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The :class:`ExperimentConfig` the options describe (sizes default by dataset).

    >>> import argparse
    >>> p = argparse.ArgumentParser(); add_arguments(p)
    >>> config_from_args(p.parse_args(["--dataset", "fashion-mnist"])).per_expert
    2000
    >>> config_from_args(p.parse_args(["--quick", "--seeds", "2"])).seeds
    (0, 1)
    """
    seeds = tuple(range(args.seeds[0])) if len(args.seeds) == 1 else tuple(args.seeds)
    if len(args.seeds) == 1 and args.seeds[0] < 1:
        raise ValueError(f"--seeds must be a count >= 1 or a list of seeds, but got {args.seeds[0]}")
    values: dict[str, Any] = dict(
        dataset=args.dataset, task=args.task, data_root=args.data_root, image_size=args.image_size, k=args.k,
        dirichlet_alpha=args.dirichlet_alpha, data_seed=args.data_seed, arch=args.arch,
        target_used=getattr(args, "target_used", None),
        expert_epochs=args.expert_epochs, shared_init=not args.independent_init, cache_dir=args.cache_dir, configs=tuple(args.configs), m=args.m, directions=args.directions,
        alpha_batch_size=args.alpha_batch_size, nevergrad_optimizer=args.nevergrad_optimizer,
        optuna_sampler=args.optuna_sampler, sail_features=args.sail_features, finetune_epochs=args.finetune_epochs,
        finetune_lr=args.finetune_lr, seeds=seeds, device=args.device,
    )
    explicit = {"per_expert": args.per_expert, "target_size": args.target_size, "holdout_size": args.holdout_size,
                "budget": args.budget, "threads": args.threads,
                "target_concentration": getattr(args, "target_concentration", None),
                "alpha_loss": getattr(args, "alpha_loss", None)}
    if args.quick:
        quick = ExperimentConfig.quick()
        for name in ("k", "expert_epochs", "finetune_epochs"):  # quick sizes unless the option was changed
            if values[name] == getattr(_D, name):
                values[name] = getattr(quick, name)
        if len(args.seeds) == 1 and args.seeds[0] == len(_D.seeds):
            values["seeds"] = quick.seeds
        base = quick
    elif args.dataset.lower().replace("-", "").replace("_", "") in _SMALL:
        base = _D
    else:
        base = ExperimentConfig.paper(args.dataset)
    for name, value in explicit.items():
        values[name] = value if value is not None else getattr(base, name)
    if values["target_concentration"] == "iid":
        values["target_concentration"] = None
    if values["alpha_loss"] == "task":
        values["alpha_loss"] = None
    if isinstance(values["per_expert"], list) and len(values["per_expert"]) == 1:
        values["per_expert"] = values["per_expert"][0]
    if args.quick:
        values["from_scratch"] = base.from_scratch
        values["sail_max_points"] = base.sail_max_points
        values["eval_batch_size"] = base.eval_batch_size
    return ExperimentConfig(**values)


def _default_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    output = Path(args.output) if args.output else Path("runs") / f"experiment_{args.dataset}_{args.arch}" / "results.json"
    markdown = Path(args.markdown) if args.markdown else output.with_suffix(".md")
    plot = Path(args.plot) if args.plot else output.with_name("figure.png")
    return output, markdown, plot


def _render(args: argparse.Namespace) -> int:
    from spsa_mix.experiment.report import render_paths, render_results
    from spsa_mix.io import check_outputs

    try:
        markdown, plot = render_paths(args.render, markdown=args.markdown, plot=args.plot)
        check_outputs({"--render": args.render, "--markdown": markdown, "--plot": plot})  # all three are written
        text, paths = render_results(args.render, markdown=markdown, plot=plot)
    except ValueError as e:
        print(f"spsa-mix experiment: error: {e}", file=sys.stderr)
        return 2
    print(text)
    print(f"Wrote {', '.join(str(p) for p in paths)}.")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the experiment the options describe; print the report; return the exit status."""
    if args.render:
        return _render(args)
    try:
        cfg = config_from_args(args)
        output, markdown, plot = _default_paths(args)
        from spsa_mix.blend import resolve_device
        from spsa_mix.experiment.report import render_markdown

        resolve_device(cfg.device)  # a bad device fails before any work
        from spsa_mix.io import check_outputs

        check_outputs({"--output": output, "--markdown": markdown, "--plot": plot,
                       "--cache-dir": cfg.resolved_cache_dir()}, folders=("--cache-dir",))
        from spsa_mix.models import available_models

        if cfg.arch not in available_models():
            raise ValueError(f"unknown architecture {cfg.arch!r}; available: {', '.join(available_models())}")
    except ValueError as e:
        print(f"spsa-mix experiment: error: {e}", file=sys.stderr)
        return 2
    from spsa_mix.experiment.pipeline import run_experiment

    def log(line: str) -> None:
        if args.no_progress:
            print(line, file=sys.stderr)
        else:
            write(line, file=sys.stderr)  # tqdm.write: keeps the bars intact

    try:
        results = run_experiment(cfg, output=output, markdown=markdown, plot=plot, progress=not args.no_progress, log=log)
    except ValueError as e:
        print(f"spsa-mix experiment: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spsa-mix experiment: interrupted; results so far in {output}; trained experts stay cached", file=sys.stderr)
        return 130
    print(render_markdown(results))
    if results.get("reused_runs"):
        from spsa_mix.experiment.report import runs_phrase

        print(f"Reused {len(results['reused_runs'])} finished runs from {output} (same settings, not run again): "
              f"{runs_phrase(results['reused_runs'])}.")
    total = results["timings"].get("total_seconds", 0.0)
    print(f"Wrote {output}, {markdown}, {plot} ({total:.0f} s).")
    return 1 if results["errors"] else 0
