"""``spsa-mix eval``: score checkpoints on target data with the merge's code and metrics.

``spsa-mix eval merged/ other/ mergekit_out/ --data val.jsonl --loss causal-lm`` prints one
row per checkpoint (loss, accuracy, examples) and, with ``--output results.json`` (or
``.csv``), writes them. ``spsa-mix eval merged/ expert.safetensors --tasks merge.yaml``
scores each checkpoint on every task of a multi-task merge config (``data.tasks``): one row
per checkpoint, each task's loss and accuracy and their means, as ``recipe.json`` has them
(a multi-task merge output scores each task with its own folder, ``merged/<task>/``). The
work is :mod:`spsa_mix.merge.evaluation`; this module parses,
calls it and prints. Exit status 2 for bad input (one line), before any weight is read.

Example
-------
>>> import argparse
>>> p = argparse.ArgumentParser()
>>> add_arguments(p)
>>> a = p.parse_args(["a/", "b/", "--data", "v.jsonl", "--loss", "multiple-choice"])
>>> a.checkpoints, a.loss, a.batch_size
(['a/', 'b/'], 'multiple-choice', 16)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``spsa-mix eval`` (no PyTorch import here)."""
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT",
                        help="Hugging Face directories (experts, merged outputs, mergekit outputs), PEFT adapters, "
                             ".pt/.safetensors state dicts")
    parser.add_argument("--data", help="the data to score: JSONL/CSV/TSV/TXT text, an image folder, "
                                       ".pt/.safetensors tensors, or a multiple-choice JSONL")
    parser.add_argument("--tasks", metavar="CONFIG",
                        help="instead of --data: a spsa-mix merge config whose data.tasks are the targets; each "
                             "checkpoint scored on every task (its data, loss, model and base from the config), "
                             "a multi-task merge output folder with each task's own folder")
    parser.add_argument("--loss", help="causal-lm, cross-entropy, entropy, multiple-choice or package.module:callable "
                                       "(default: causal-lm for a causal LM, else cross-entropy)")
    parser.add_argument("--text-field", default="text", help="the text's field or column")
    parser.add_argument("--label-field", help="the label's field or column, for sequence classification")
    parser.add_argument("--choice-fields", nargs=3, default=["prompt", "choices", "answer"],
                        metavar=("PROMPT", "CHOICES", "ANSWER"), help="the fields of a multiple-choice JSONL")
    parser.add_argument("--model", help="the architecture of .pt/.safetensors checkpoints (as for spsa-mix merge)")
    parser.add_argument("--base", help="the base model of PEFT adapters (default: the one their config names)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples (questions, for multiple choice) per forward pass")
    parser.add_argument("--max-length", type=int, default=128, help="tokens kept per text")
    parser.add_argument("--image-size", type=int, help="resize images to this size")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="the models' dtype")
    parser.add_argument("--output", help="write the rows to this .json or .csv file")


_TASK_KEYS = ("loss", "label_field", "model", "base", "image_size")  # the config's with --tasks


def _check_output(output: str | None) -> None:
    if output is not None:
        from spsa_mix.io import check_outputs

        if Path(output).suffix.lower() not in (".json", ".csv"):
            raise ValueError(f"--output must end in .json or .csv, but got {output!r}")
        check_outputs({"--output": Path(output)})


def _run_tasks(args: argparse.Namespace) -> int:
    """``--tasks``: every checkpoint on every task of the config."""
    try:
        if args.data is not None:
            raise ValueError("--tasks and --data: give one (--tasks scores the config's data.tasks, "
                             "--data one target)")
        given = [k for k in _TASK_KEYS if getattr(args, k) is not None]
        if given:
            raise ValueError(f"--{given[0].replace('_', '-')} with --tasks: each task's data, loss, model and "
                             "base come from the config")
        from spsa_mix.merge.evaluation import plan_tasks

        plan_tasks(args.checkpoints, args.tasks)
        _check_output(args.output)
    except ValueError as e:
        print(f"spsa-mix eval: error: {e}", file=sys.stderr)
        return 2
    import torch

    from spsa_mix.merge.evaluation import evaluate_tasks, format_tasks_table, write_task_results

    try:
        rows, tasks, metric = evaluate_tasks(args.checkpoints, args.tasks, device=args.device,
                                             dtype=getattr(torch, args.dtype) if args.dtype else None,
                                             log=lambda line: print(line, file=sys.stderr))
    except ValueError as e:
        print(f"spsa-mix eval: error: {e}", file=sys.stderr)
        return 2
    print(format_tasks_table(rows, tasks, metric=metric))
    if args.output:
        write_task_results(rows, tasks, args.output, metric=metric)
        print(f"Wrote {args.output}.")
    return 0


def run(args: argparse.Namespace) -> int:
    """Score as ``args`` say; print the table; return the exit status."""
    if getattr(args, "tasks", None) is not None:
        return _run_tasks(args)
    try:
        if args.data is None:
            raise ValueError("give --data (the data to score) or --tasks (a merge config whose data.tasks "
                             "to score)")
        from spsa_mix.merge.config import DataConfig
        from spsa_mix.merge.evaluation import check_checkpoints

        if not Path(args.data).exists() and ":" not in args.data:
            raise ValueError(f"--data: no such file or folder {args.data!r}")
        data = DataConfig.from_dict({"train": args.data, "text_field": args.text_field,
                                     "label_field": args.label_field, "batch_size": args.batch_size,
                                     "max_length": args.max_length, "image_size": args.image_size}, where="the flags")
        check_checkpoints(args.checkpoints, model=args.model, base=args.base)
        if args.loss is not None:
            from spsa_mix.blend.losses import resolve_loss

            resolve_loss(args.loss)
        _check_output(args.output)
    except ValueError as e:
        print(f"spsa-mix eval: error: {e}", file=sys.stderr)
        return 2
    import torch

    from spsa_mix.merge.evaluation import evaluate_checkpoints, format_table, write_results

    try:
        rows, metric = evaluate_checkpoints(args.checkpoints, data, loss=args.loss, model=args.model, base=args.base,
                                            device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None,
                                            choice_fields=tuple(args.choice_fields),
                                            log=lambda line: print(line, file=sys.stderr))
    except ValueError as e:
        print(f"spsa-mix eval: error: {e}", file=sys.stderr)
        return 2
    print(format_table(rows, metric=metric))
    if args.output:
        write_results(rows, args.output, metric=metric)
        print(f"Wrote {args.output}.")
    return 0
