"""Blend K pretrained networks of one architecture: a forward-only objective in PyTorch.

* :class:`BlendedObjective` -- the loss of theta(alpha) = sum_i alpha_i theta_i on target
  minibatches, for :func:`spsa_mix.minimize` (``vectorized=True``; ``method="spsa"``,
  ``"backprop"`` or ``"forward-grad"``); task vectors over a base with a fixed or learned
  scale, and LoRA adapters (:mod:`spsa_mix.blend.spaces`);
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

from spsa_mix.blend.batchnorm import differentiable_batchnorm, refresh_batchnorm
from spsa_mix.blend.checkpoints import Checkpoint, TensorInfo, open_checkpoint
from spsa_mix.blend.devices import resolve_device
from spsa_mix.blend.evaluate import Metrics, evaluate, evaluate_blend, evaluate_experts
from spsa_mix.blend.experts import ExpertSource, ExpertStack, check_compatible, load_state_dict, stack_experts
from spsa_mix.blend.losses import resolve_loss
from spsa_mix.blend.multitask import MultiTaskObjective, TaskSpec
from spsa_mix.blend.objective import BlendedObjective, LossShapeError
from spsa_mix.blend.spaces import BlendSpace

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
    "resolve_loss",
    "resolve_device",
]
