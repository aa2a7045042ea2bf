"""Blend K pretrained networks of one architecture: a forward-only objective in PyTorch.

* :class:`BlendedObjective` -- the loss of theta(alpha) = sum_i alpha_i theta_i on target
  minibatches, for :func:`spsa_mix.minimize` (``vectorized=True``; ``method="spsa"``,
  ``"backprop"`` or ``"forward-grad"``); task vectors over a base with a fixed or learned
  scale, LoRA adapters (:mod:`spsa_mix.blend.spaces`), and mergekit's TIES, DARE,
  breadcrumbs and DELLA (:class:`TaskVectorMethod`, :mod:`spsa_mix.blend.methods`);
* :meth:`BlendedObjective.from_pretrained`, :meth:`BlendedObjective.save_pretrained` --
  Hugging Face model directories and PEFT adapters in, loadable directories out
  (:mod:`spsa_mix.blend.pretrained`, :mod:`spsa_mix.blend.lora`, :mod:`spsa_mix.blend.saving`);
* :func:`evaluate`, :func:`evaluate_blend`, :func:`evaluate_experts` -- loss and accuracy
  over a whole data loader;
* :func:`refresh_batchnorm` -- recompute BatchNorm statistics of a blended model;
* :func:`load_state_dict`, :func:`check_compatible`, :func:`stack_experts`,
  :func:`open_checkpoint` -- loading experts lazily from modules, state dicts, ``.pt`` and
  ``.safetensors`` files and Hugging Face directories;
* :class:`MultiTaskObjective` -- several targets at once (their own data, loss, weight and
  head) on one stack: AdaMerging's multi-task setting (:mod:`spsa_mix.blend.multitask`);
* :func:`resolve_loss` -- ``"cross-entropy"``, ``"causal-lm"``, ``"entropy"`` or a callable.

The package is laid out as the data flows, each layer importing only the layers below it
(``tests/blend/test_layers.py`` checks every import, with no cycle):

==========================================  =================================================
layer (bottom to top)                       modules
==========================================  =================================================
support                                     ``devices``, ``losses``, ``batches``,
                                            ``batchnorm``, ``skeleton``
where expert weights come from              ``sources/``: ``checkpoints`` (modules, state
                                            dicts, ``.pt`` / ``.safetensors``, Hugging Face
                                            shards), ``hub`` (configs, the architecture),
                                            ``adapters`` (PEFT adapters)
how they are held                           ``held/``: ``experts`` (checked and stacked on
                                            the device), ``functional`` (the blend's math)
how a point becomes coefficients            ``spaces``, ``methods/`` (mergekit's merge
                                            methods, and their learned spaces)
how a result is written                     ``export`` (tensor by tensor), ``saving``
                                            (Hugging Face, PEFT, safetensors), ``lora``
how experts are loaded                      ``pretrained`` (Hugging Face directories and
                                            PEFT adapters into the parts of an objective)
how probes are scored                       ``objective``, ``multitask``, ``scoring``
==========================================  =================================================

Example
-------
>>> import numpy as np, torch
>>> from spsa_mix.blend import BlendedObjective, evaluate_blend
>>> gen = torch.Generator().manual_seed(0)
>>> x, y = torch.randn(16, 4, generator=gen), torch.randint(0, 2, (16,), generator=gen)
>>> obj = BlendedObjective(torch.nn.Linear(4, 2), [torch.nn.Linear(4, 2) for _ in range(3)],
...                        data=(x, y), device="cpu")
>>> obj(np.eye(3)).shape                        # each expert alone, on one minibatch
(3,)
>>> evaluate_blend(obj, np.full(3, 1 / 3), (x, y))["n"]
16
"""

from spsa_mix.lazy import lazy_exports

__all__ = [
    "BlendedObjective",
    "LossShapeError",
    "MultiTaskObjective",
    "TaskSpec",
    "evaluate",
    "evaluate_blend",
    "evaluate_experts",
    "Metrics",
    "refresh_batchnorm",
    "differentiable_batchnorm",
    "load_state_dict",
    "check_compatible",
    "stack_experts",
    "ExpertSource",
    "ExpertStack",
    "open_checkpoint",
    "Checkpoint",
    "TensorInfo",
    "BlendSpace",
    "TaskVectorMethod",
    "resolve_loss",
    "resolve_device",
]

# Imported on first use (PEP 562), as spsa_mix.data does: checks that need no weights (the
# merge's config, its mergekit method table) import spsa_mix.blend's pure modules without PyTorch.
_WHERE = {
    "differentiable_batchnorm": "batchnorm", "refresh_batchnorm": "batchnorm",
    "Checkpoint": "sources.checkpoints", "TensorInfo": "sources.checkpoints",
    "open_checkpoint": "sources.checkpoints",
    "resolve_device": "devices",
    "Metrics": "scoring", "evaluate": "scoring", "evaluate_blend": "scoring", "evaluate_experts": "scoring",
    "ExpertSource": "held.experts", "ExpertStack": "held.experts", "check_compatible": "held.experts",
    "load_state_dict": "held.experts", "stack_experts": "held.experts",
    "resolve_loss": "losses",
    "TaskVectorMethod": "methods.space",
    "BlendedObjective": "objective", "LossShapeError": "objective",
    "MultiTaskObjective": "multitask", "TaskSpec": "multitask",
    "BlendSpace": "spaces",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
