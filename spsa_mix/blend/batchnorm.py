"""BatchNorm and blending: blended running statistics, refreshed statistics, and gradients.

By default the running statistics (``running_mean``, ``running_var``) are blended like the
parameters, ``sum_i alpha_i mu_i``; ``num_batches_tracked`` (an integer) becomes the
rounded weighted average of the experts' counts in :meth:`BlendedObjective.blended_state_dict`
(in eval mode BatchNorm never reads it; with ``momentum=None`` it weighs the next updates).

The blended mean is the mean of the blended network's activations only to first order:
the blended network's features are not the blend of the experts' features, and the
blended variance misses the spread between the experts' means. :func:`refresh_batchnorm`
recomputes the statistics on target data (the GLUE paper's "refresh the BatchNorm
statistics", section 6) for a final blended model.

When it helps, measured with ``python benchmarks/bn_refresh.py`` (K=5 small-CNN experts
trained for 8 epochs on non-IID splits of scikit-learn's digits, each seeing mostly 4 of
the 10 classes; target: all 10 classes, 256 examples to learn alpha and to refresh;
test accuracy in % on a held-out 30 %, mean ± std over 3 seeds;
``benchmarks/results/bn_refresh.md``):

==================  =============  ==================  ====================
experts             alpha          blended statistics  refreshed statistics
==================  =============  ==================  ====================
shared init         uniform        75.1 ± 15.1         94.4 ± 0.6
shared init         best expert    94.7 ± 1.2          88.6 ± 1.4
shared init         GLUE (SPSA)    89.6 ± 0.4          92.1 ± 0.6
independent inits   uniform        10.3 ± 0.5          25.5 ± 12.0
independent inits   best expert    95.1 ± 1.0          89.2 ± 1.1
independent inits   GLUE (SPSA)    10.3 ± 0.5          46.0 ± 6.1
==================  =============  ==================  ====================

Refreshing helps a blend spread over several experts (+19 points for the uniform blend
of experts from one initialisation, +2.5 for the alpha learned by SPSA, and it partly
rescues blends of independently initialised experts, which are near chance with blended
statistics); it hurts a single expert (about -6 points: its own statistics match the
features its later layers were trained on, and 256 target examples of another class mix
are a worse estimate). So refresh a final blended model whose alpha is not (nearly)
one-hot, and check the choice on held-out data when in doubt.

Gradients: PyTorch's ``batch_norm`` treats the running statistics as constants (reverse
mode drops their gradient, forward mode refuses them), but here they depend on alpha.
:func:`differentiable_batchnorm` rewrites eval-mode BatchNorm as the explicit affine map
``(x - mu) / sqrt(var + eps) * w + b`` so that ``value_and_grad`` and ``jvp`` see the
whole dependence on alpha; the forward probes keep the fused kernel.

Example
-------
>>> import torch
>>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
>>> data = [(torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(8))]
>>> _ = refresh_batchnorm(net, data)
>>> int(net[1].num_batches_tracked), net.training
(1, True)
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from spsa_mix.blend.batches import iterate_once
from spsa_mix.blend.devices import resolve_device

__all__ = ["refresh_batchnorm", "differentiable_batchnorm", "has_batchnorm"]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` contains a BatchNorm layer.

    >>> has_batchnorm(torch.nn.Linear(2, 2))
    False
    """
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def refresh_batchnorm(model: nn.Module, data: Any, *, device: str | torch.device | None = None,
                      max_batches: int | None = None) -> nn.Module:
    """Recompute the running statistics of every BatchNorm layer of ``model`` on ``data``.

    The statistics are reset and re-estimated as the plain average over the batches (one
    pass in train mode without gradients, :func:`torch.optim.swa_utils.update_bn`); the
    parameters are untouched and the model's train/eval mode is restored. Returns
    ``model`` (modified in place).

    Parameters
    ----------
    model:
        E.g. ``BlendedObjective.blended_model(alpha)``.
    data:
        An iterable of ``(inputs, targets)`` batches or one batch ``(inputs, targets)``;
        the targets are not used.
    device:
        Where the batches go; default the device of the model's first parameter.
    max_batches:
        Use at most this many batches.

    Examples
    --------
    >>> net = torch.nn.BatchNorm1d(2)
    >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    >>> refresh_batchnorm(net, (x, torch.zeros(2))).running_mean.tolist()
    [2.0, 20.0]
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, but got {type(model).__name__}")
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int)
                                    or max_batches < 1):
        raise ValueError(f"max_batches must be an integer >= 1 or None, but got {max_batches!r}")
    if device is None:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        dev = resolve_device(device)
    batches = list(iterate_once(data, dev, max_batches=max_batches))
    if not batches:
        raise ValueError("data yielded no batch: refresh_batchnorm needs at least one batch")
    inputs = [b.args[0] if len(b.args) == 1 and not b.kwargs else None for b in batches]
    if any(x is None for x in inputs):
        raise ValueError("refresh_batchnorm needs batches whose inputs are one tensor")
    update_bn(inputs, model)
    return model


def _explicit_batchnorm_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    if self.training or self.running_mean is None or self.running_var is None:
        return type(self).forward(self, x)
    self._check_input_dim(x)
    shape = (1, -1) + (1,) * (x.ndim - 2)  # broadcast over (B, C, *spatial)
    scale = torch.rsqrt(self.running_var + self.eps)
    if self.weight is not None:
        scale = scale * self.weight
    out = (x - self.running_mean.view(shape)) * scale.view(shape)
    if self.bias is not None:
        out = out + self.bias.view(shape)
    return out


def differentiable_batchnorm(model: nn.Module) -> nn.Module:
    """Make eval-mode BatchNorm of ``model`` differentiable in its running statistics.

    Each BatchNorm layer's ``forward`` is replaced (on the instance, in place) by the
    explicit ``(x - running_mean) / sqrt(running_var + eps) * weight + bias``, the same
    function as the fused kernel in eval mode, written with ordinary operations so that
    autograd and :func:`torch.func.jvp` differentiate through the statistics. Train mode
    is unchanged. Returns ``model``.

    >>> bn = torch.nn.BatchNorm1d(2).eval()
    >>> x = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    >>> ref = bn(x)
    >>> torch.allclose(differentiable_batchnorm(bn)(x), ref, atol=1e-6)
    True
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.forward = types.MethodType(_explicit_batchnorm_forward, module)  # type: ignore[method-assign]
    return model
