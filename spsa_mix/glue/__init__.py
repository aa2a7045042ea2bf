"""The GLUE experiment end to end (GLUE section 5 at a size a CPU runs).

K experts trained on Dirichlet non-IID splits of a dataset, every way to set the mixing
weights alpha (data-size, proxy-accuracy, backprop, GLUE's SPSA, forward-gradient,
uniform, best single expert, greedy soup, SAIL, Nevergrad, Optuna), the prior and the
fine-tuned test accuracy of theta(alpha) over seeds, a markdown report, a figure and JSON.

Modules: :mod:`~spsa_mix.glue.config` (the configuration), :mod:`~spsa_mix.glue.data`
(datasets, the Dirichlet split, minibatches), :mod:`~spsa_mix.glue.experts` (training and
caching experts), :mod:`~spsa_mix.glue.alpha` (every way to set alpha),
:mod:`~spsa_mix.glue.finetune`, :mod:`~spsa_mix.glue.pipeline` (:func:`run_glue`),
:mod:`~spsa_mix.glue.report`. Names are imported lazily, so importing this package does
not import PyTorch until one of them is used.

Example
-------
>>> from spsa_mix.glue import GlueConfig
>>> GlueConfig().dataset
'digits'
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "GlueConfig",
    "ALL_CONFIGS",
    "run_glue",
    "Experiment",
    "load_dataset",
    "available_datasets",
    "dirichlet_split",
    "make_splits",
    "Batches",
    "ImageData",
    "ExpertCache",
    "TrainSpec",
    "train_or_load_experts",
    "AlphaProblem",
    "AlphaResult",
    "set_alpha",
    "finetune",
    "summarize",
    "markdown_table",
    "render_markdown",
    "plot_curves",
    "write_json",
]

_WHERE = {
    "GlueConfig": "config", "ALL_CONFIGS": "config",
    "run_glue": "pipeline", "Experiment": "pipeline",
    "load_dataset": "data", "available_datasets": "data", "dirichlet_split": "data", "make_splits": "data",
    "Batches": "data", "ImageData": "data",
    "ExpertCache": "experts", "TrainSpec": "experts", "train_or_load_experts": "experts",
    "AlphaProblem": "alpha", "AlphaResult": "alpha", "set_alpha": "alpha",
    "finetune": "finetune",
    "summarize": "report", "markdown_table": "report", "render_markdown": "report", "plot_curves": "report",
    "write_json": "report",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"spsa_mix.glue.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'spsa_mix.glue' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
