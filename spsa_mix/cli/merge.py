"""``spsa-mix merge``: expert checkpoints and target data in, a merged checkpoint out.

``spsa-mix merge merge.yaml`` reads a config (:mod:`spsa_mix.merge.config`); every key is
also a flag, and flags override the file (``spsa-mix merge --model base/ --experts ft/a
ft/b --data train.jsonl --output merged/`` needs no file). ``--resume`` continues a run
stopped by Ctrl-C, a crash or a kill. The work is :func:`spsa_mix.merge.run.run_merge`;
this module parses, calls it and prints the summary.

Exit status: 0 on success; 2 for bad input (one line: the key, the file or the value and
what is wrong), before any expert is read; 130 when interrupted (the run's state is saved:
``--resume`` continues it).

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
    what = parser.add_argument_group("experts (config keys: model, experts, base, space, granularity, scale)")
    what.add_argument("--model", help="a Hugging Face directory, an architecture name, or package.module:factory")
    what.add_argument("--experts", nargs="+", metavar="PATH", help="expert paths or glob patterns")
    what.add_argument("--base", help="the base model (task-vectors, lora)")
    what.add_argument("--space", choices=["convex", "task-vectors", "lora"], help="how to blend (default: convex)")
    what.add_argument("--granularity", choices=["model", "layer"], help="one alpha, or one per layer group")
    what.add_argument("--scale", help="task vectors' scale: a number or 'learned' (default 1.0)")
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
    search.add_argument("--loss", help="cross-entropy, causal-lm, entropy or package.module:callable "
                                       "(default: causal-lm for a causal LM, else cross-entropy)")
    search.add_argument("--method", help="any spsa_mix.minimize method (default: spsa)")
    search.add_argument("--budget", type=int, help="objective evaluations (default: 400)")
    search.add_argument("--seed", type=int, help="seed of the search and the data order (default: 0)")
    search.add_argument("--option", action="append", metavar="KEY=VALUE", default=None,
                        help="another keyword of minimize, e.g. lr=0.05 (repeatable; values read as JSON)")
    run_ = parser.add_argument_group("run (config keys: device, dtype, output, checkpoint_every, validate_every)")
    run_.add_argument("--device", help="auto (default: CUDA when present), cpu, cuda, cuda:N")
    run_.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="precision of the forwards")
    run_.add_argument("--output", help="the merged checkpoint's folder (default: merged)")
    run_.add_argument("--checkpoint-every", type=int, help="steps between saves of the run's state (default: 10)")
    run_.add_argument("--validate-every", type=int, help="steps between validation evaluations (default: 10)")
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
                                                         "overwrite", "select", "memory", "max_memory",
                                                         "out_shard_size")}
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
            raise ValueError("give a config file or --experts and --data")
        from spsa_mix.merge.run import plan_merge

        plan_merge(cfg)  # every check that needs no weights, before the experts are read
    except ValueError as e:
        print(f"spsa-mix merge: error: {e}", file=sys.stderr)
        return 2
    from spsa_mix.merge.run import run_merge
    from spsa_mix.progress import write

    def log(line: str) -> None:
        (print(line, file=sys.stderr) if args.no_progress else write(line, file=sys.stderr))

    try:
        outcome = run_merge(cfg, resume=args.resume, progress=not args.no_progress, log=log)
    except ValueError as e:
        print(f"spsa-mix merge: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        where = (f"the run's state is in {cfg.state_path()}: run again with --resume to continue"
                 if cfg.state_path().exists() else "no state was saved")
        print(f"spsa-mix merge: interrupted; {where}", file=sys.stderr)
        return 130
    if not outcome.recipe:  # another rank of a torchrun job: rank 0 prints
        return 0
    print(outcome.table)
    print(f"Wrote {outcome.model_path} and, beside it, recipe.json, loss.png"
          + (" and mergekit.yaml" if (outcome.output / "mergekit.yaml").exists() else "") + ".")
    return 0
