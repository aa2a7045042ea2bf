"""Experiments with expert pools: the protocol of the GLUE paper's section 5, on any task.

K experts trained on Dirichlet non-IID splits of a task's data, every way to set the mixing
weights alpha (data-size, proxy-accuracy, backprop, SPSA, forward-gradient, uniform, best
single expert, greedy soup, SAIL, Nevergrad, Optuna), the prior and the fine-tuned test
accuracy of theta(alpha) over seeds, a markdown report, a figure and JSON.

Modules: :mod:`~spsa_mix.experiment.config` (the configuration),
:mod:`~spsa_mix.experiment.pool` (the expert pool: task, split, trained experts;
:func:`build_pool`), :mod:`~spsa_mix.experiment.experts` (training and caching experts),
:mod:`~spsa_mix.experiment.training` (the training loop), :mod:`~spsa_mix.experiment.alpha`
(every way to set alpha), :mod:`~spsa_mix.experiment.finetune`,
:mod:`~spsa_mix.experiment.pipeline` (:func:`run_experiment`),
:mod:`~spsa_mix.experiment.report`; the data, splits and tasks are in :mod:`spsa_mix.data`. Names are imported lazily, so importing this package does
not import PyTorch until one of them is used.

Example
-------
>>> from spsa_mix.experiment import ExperimentConfig
>>> ExperimentConfig().dataset
'digits'
"""

from __future__ import annotations

from spsa_mix.lazy import lazy_exports

__all__ = [
    "ExperimentConfig",
    "ALL_CONFIGS",
    "run_experiment",
    "Experiment",
    "ExpertCache",
    "TrainSpec",
    "train_or_load_experts",
    "train_model",
    "AlphaProblem",
    "AlphaResult",
    "set_alpha",
    "finetune",
    "summarize",
    "markdown_table",
    "render_markdown",
    "plot_curves",
    "figure_title",
    "render_results",
    "ExpertPool",
    "PoolSpec",
    "build_pool",
]

_WHERE = {
    "ExperimentConfig": "config", "ALL_CONFIGS": "config",
    "run_experiment": "pipeline", "Experiment": "pipeline",
    "ExpertCache": "experts", "TrainSpec": "experts", "train_or_load_experts": "experts",
    "train_model": "training",
    "AlphaProblem": "alpha", "AlphaResult": "alpha", "set_alpha": "alpha",
    "finetune": "finetune",
    "summarize": "report", "markdown_table": "report", "render_markdown": "report", "plot_curves": "report",
    "figure_title": "report", "render_results": "report",
    "ExpertPool": "pool", "PoolSpec": "pool", "build_pool": "pool",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
