"""``spsa-mix merge``: expert checkpoints and target data in, a merged checkpoint out.

``spsa-mix merge merge.yaml`` reads a config (:mod:`spsa_mix.merge.config`); every key is
also a flag, and flags override the file (``spsa-mix merge --model base/ --experts ft/a
ft/b --data train.jsonl --output merged/`` needs no file). ``--resume`` continues a run
stopped by Ctrl-C, a crash or a kill. The work is :func:`spsa_mix.merge.run.run_merge`;
this module parses, calls it and prints the summary.

Exit status: 0 on success; 2 for bad input (one line: the key, the file or the value and
what is wrong), before any expert is read; 1 when a file cannot be written (one line: a
full disk, ...; the run's state is kept: ``--resume`` continues it); 130 when interrupted
(the run's state is saved: ``--resume`` continues it).

Example
-------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_arguments(p)
>>> a = p.parse_args(["m.yaml", "--budget", "50", "--option", "lr=0.05", "--batch-size", "8"])
>>> overrides(a)["budget"], overrides(a)["options"], overrides(a)["data"]["batch_size"]
(50, {'lr': 0.05}, 8)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any

__all__ = ["add_arguments", "run", "overrides"]

_DATA_FLAGS = ("validation", "text_field", "label_field", "batch_size", "max_length", "image_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spsa-mix merge`` (no PyTorch import here); defaults are the config's."""
    parser.add_argument("config", nargs="?", default=None, help="a YAML config (keys as the flags below)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run saved beside the output (<output>.state); with none, start and say so")
    parser.add_argument("--overwrite", action="store_true", default=None, help="replace an existing non-empty output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    what = parser.add_argument_group("experts (config keys: model, experts, base, space, granularity, scale, "
                                     "strict_base)")
    what.add_argument("--model", help="a Hugging Face directory, an architecture name, or package.module:factory")
    what.add_argument("--experts", nargs="+", metavar="PATH", help="expert paths or glob patterns")
    what.add_argument("--base", help="the base model (task-vectors, lora)")
    what.add_argument("--space", choices=["convex", "task-vectors", "lora", "ties", "dare_ties", "dare_linear",
                                          "breadcrumbs", "breadcrumbs_ties", "della", "della_linear"],
                      help="how to blend: convex, task vectors, LoRA, or one of mergekit's methods (default: convex)")
    what.add_argument("--granularity", choices=["model", "layer"], help="one alpha, or one per layer group")
    what.add_argument("--scale", help="task vectors' scale (mergekit's lambda): a number or 'learned' (default 1.0)")
    what.add_argument("--strict-base", action=argparse.BooleanOptionalAction, default=None,
                      help="LoRA: refuse adapters whose recorded base names another model (default: on; "
                           "--no-strict-base for the same model under another name)")
    kit = parser.add_argument_group("merge methods (config keys: density, gamma, epsilon, normalize, rescale, "
                                    "consensus, baselines, mergekit)")
    kit.add_argument("--density", nargs="+", type=float, metavar="D",
                     help="fraction of each task vector kept, in (0, 1]: one number or one per expert")
    kit.add_argument("--gamma", nargs="+", type=float, metavar="G", help="breadcrumbs: largest fraction dropped")
    kit.add_argument("--epsilon", nargs="+", type=float, metavar="E", help="DELLA: keep-probability half-width")
    kit.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None,
                     help="divide by the weights' sum (default: the method's)")
    kit.add_argument("--rescale", action=argparse.BooleanOptionalAction, default=None,
                     help="keep each task vector's L1 norm after the drop (default: the method's)")
    kit.add_argument("--consensus", choices=["fixed", "per-probe"],
                     help="TIES' sign election: fixed at the start (one blend per probe) or recomputed per probe")
    kit.add_argument("--baselines", nargs="+", metavar="NAME",
                     help="fixed merges select: best scores too: auto (default), none, or names (base, linear, "
                          "task_arithmetic, ties, ..., model_stock, slerp, nuslerp)")
    kit.add_argument("--from-mergekit", dest="mergekit", metavar="YAML",
                     help="a mergekit config: its models, base, method, parameters, weights and dtype become the "
                          "space and the starting point")
    data = parser.add_argument_group("target data (config key: data)")
    data.add_argument("--data", metavar="TRAIN", help="data.train: JSONL/CSV/TSV/TXT text, an image folder, tensors, "
                                                      "torchvision:Name:root or package.module:factory")
    data.add_argument("--validation", help="data.validation: held-out data of the same kind")
    data.add_argument("--text-field", help="data.text_field (default: text)")
    data.add_argument("--label-field", help="data.label_field, for sequence classification")
    data.add_argument("--batch-size", type=int, help="data.batch_size (default: 16)")
    data.add_argument("--max-length", type=int, help="data.max_length: tokens kept per text (default: 128)")
    data.add_argument("--image-size", type=int, help="data.image_size: resize images to this size")
    search = parser.add_argument_group("search (config keys: loss, method, budget, seed, options)")
    search.add_argument("--loss", help="cross-entropy, causal-lm, entropy, multiple-choice (data: a JSONL of {prompt, "
                                       "choices, answer}) or package.module:callable (default: causal-lm for a causal "
                                       "LM, else cross-entropy)")
    search.add_argument("--method", help="any spsa_mix.minimize method (default: spsa)")
    search.add_argument("--budget", type=int, help="objective evaluations (default: 400)")
    search.add_argument("--seed", type=int, help="seed of the search and the data order (default: 0)")
    search.add_argument("--option", action="append", metavar="KEY=VALUE", default=None,
                        help="another keyword of minimize, e.g. lr=0.05 (repeatable; values read as JSON)")
    run_ = parser.add_argument_group("run (config keys: device, dtype, output, checkpoint_every, validate_every, "
                                     "select, threads)")
    run_.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    run_.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="precision of the forwards")
    run_.add_argument("--output", help="the merged checkpoint's folder (default: merged)")
    run_.add_argument("--checkpoint-every", type=int, help="steps between saves of the run's state (default: 10)")
    run_.add_argument("--validate-every", type=int, help="steps between validation evaluations (default: 10)")
    run_.add_argument("--threads", help="PyTorch CPU threads: auto (default: from the work of a forward and the free "
                                        "cores; one for a small model) or a number")
    run_.add_argument("--select", choices=["best", "learned"],
                      help="write the best on validation of the learned, uniform and best-single blends (default: "
                           "best), or the learned one")
    mem = parser.add_argument_group("memory (config keys: memory, max_memory, out_shard_size)")
    mem.add_argument("--memory", choices=["auto", "resident", "streamed"],
                     help="experts stacked on the device, or streamed from their files and blended module by "
                          "module (auto, the default: resident when the stack fits in half of --max-memory)")
    mem.add_argument("--max-memory", help="the memory budget, e.g. 20GB (default: 90%% of the memory free)")
    mem.add_argument("--out-shard-size", help="the merged checkpoint's largest shard, e.g. 2GB (default: 5GB)")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the command line sets (``None``: not given)."""
    out: dict[str, Any] = {k: getattr(args, k) for k in ("model", "experts", "base", "space", "granularity",
                                                         "loss", "method", "budget", "seed", "device", "dtype",
                                                         "output", "checkpoint_every", "validate_every",
                                                         "overwrite", "select", "normalize", "rescale",
                                                         "consensus", "mergekit", "strict_base", "memory",
                                                         "max_memory", "out_shard_size")}
    for key in ("density", "gamma", "epsilon"):
        values = getattr(args, key)
        out[key] = None if values is None else (values[0] if len(values) == 1 else list(values))
    if args.baselines is not None:
        out["baselines"] = args.baselines[0] if args.baselines in (["auto"], ["none"]) else list(args.baselines)
    if args.threads is not None:
        out["threads"] = int(args.threads) if args.threads.strip().isdigit() else args.threads
    if args.scale is not None:
        out["scale"] = args.scale if args.scale == "learned" else _number(args.scale, "--scale")
    data = {k: getattr(args, k) for k in _DATA_FLAGS}
    data["train"] = args.data
    out["data"] = data
    if args.option:
        options: dict[str, Any] = {}
        for item in args.option:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ValueError(f"--option must be KEY=VALUE, but got {item!r}")
            try:
                options[key] = json.loads(raw)
            except json.JSONDecodeError:
                options[key] = raw
        out["options"] = options
    return out


def _number(text: str, flag: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{flag} must be a number or 'learned', but got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    """Merge as ``args`` say; print the summary; return the exit status."""
    try:
        from spsa_mix.merge.config import load_config

        cfg = load_config(args.config, overrides(args))
        if args.config is None and not cfg.experts:
            raise ValueError("give a config file, --from-mergekit or --experts, and --data")
        from spsa_mix.merge.run import plan_merge

        plan_merge(cfg, resume=args.resume)  # every check that needs no weights, before the experts are read
    except ValueError as e:
        print(f"spsa-mix merge: error: {e}", file=sys.stderr)
        return 2
    from spsa_mix.merge.guard import WriteFailed
    from spsa_mix.merge.run import run_merge
    from spsa_mix.progress import write

    def log(line: str) -> None:
        (print(line, file=sys.stderr) if args.no_progress else write(line, file=sys.stderr))

    try:
        argv = getattr(args, "_argv", None)
        command = "spsa-mix " + shlex.join(argv) if argv else None
        outcome = run_merge(cfg, resume=args.resume, progress=not args.no_progress, log=log, command=command)
    except ValueError as e:
        print(f"spsa-mix merge: error: {e}", file=sys.stderr)
        return 2
    except WriteFailed as e:
        print(f"spsa-mix merge: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        where = (f"the run's state is in {cfg.state_path()}: run again with --resume to continue"
                 if cfg.state_path().exists() else "no state was saved")
        print(f"spsa-mix merge: interrupted; {where}", file=sys.stderr)
        return 130
    if not outcome.recipe:  # another rank of a torchrun job: rank 0 prints
        return 0
    print(outcome.table)
    print(outcome.wrote())
    return 0
