"""AdaMerging: task-wise or layer-wise task-arithmetic coefficients learned by backprop.

Yang et al., "AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024
(``EnnengYang/AdaMerging``, ``src/main_task_wise_adamerging.py`` and
``main_layer_wise_adamerging.py``): the merged model is

    theta = theta_0 + sum_k clamp(lambda_k, 0, 1) (theta_k - theta_0)

with one ``lambda_k`` per task vector (task-wise) or one per task vector and layer
(layer-wise), every ``lambda`` starting at ``prior = 0.3``; they are trained with
``torch.optim.Adam(lr=1e-3, betas=(0.9, 0.999), weight_decay=0)`` for 500 steps, each step
one minibatch of 16 unlabeled test inputs per task, on the tasks' prediction entropy. The
clamp sits in the forward pass: the raw parameters are not clipped, and the gradient
through the clamp is zero where a raw value lies outside ``[0, 1]`` (torch's ``clamp``).

:func:`adamerging` runs exactly that loop on any objective whose points are the raw
coefficients ``lambda`` and which has ``value_and_grad``: a
:class:`~spsa_mix.blend.BlendedObjective` or
:class:`~spsa_mix.blend.multitask.MultiTaskObjective` built with
``space="task-vectors", scale=1.0, simplex_atol=None`` (its point ``lambda`` gives the
coefficients ``(lambda, 1 - sum lambda)`` of the experts and the base: the formula above),
``granularity="model"`` for task-wise and ``"layer"`` for layer-wise. Where it differs from
the paper's code: its loss is the *sum* of the tasks' mean entropies, a multi-task
objective here their (weighted) mean, the same direction for Adam up to its ``eps``; its
layer-wise coefficients are per parameter tensor, here per module (a layer's weight and
bias share one, as :attr:`BlendedObjective.groups <spsa_mix.blend.BlendedObjective.groups>`
defines them).

Example
-------
>>> import numpy as np
>>> c = np.array([0.5, 0.9, 0.0])
>>> q = lambda x: (float(((x - c) ** 2).sum()), 2 * (x - c))          # value_and_grad of a quadratic
>>> res = adamerging(q, shape=(3,), steps=2000, lr=1e-2)
>>> res.x.round(2).tolist(), res.nit, res.njev
([0.5, 0.9, 0.0], 2000, 2000)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spsa_mix.core.result import History, OptimizeResult, Status
from spsa_mix.core.updates import AdamState, adam_update
from spsa_mix.core.validation import check_int

__all__ = ["adamerging", "ADAMERGING_STEPS", "ADAMERGING_LR", "ADAMERGING_PRIOR", "ADAMERGING_BATCH",
           "ADAMERGING_BETAS"]

FloatArray = NDArray[np.float64]
ADAMERGING_STEPS = 500  # main_*_adamerging.py: epochs = 500
ADAMERGING_LR = 1e-3  # torch.optim.Adam(..., lr=1e-3, betas=(0.9, 0.999), weight_decay=0.)
ADAMERGING_BETAS = (0.9, 0.999)
ADAMERGING_PRIOR = 0.3  # prior = 0.3: every lambda starts there
ADAMERGING_BATCH = 16  # batch_size=16 test inputs per task and step
ADAMERGING_EPS = 1e-8  # torch.optim.Adam's default


def adamerging(objective: Any, *, shape: Any = None, steps: int = ADAMERGING_STEPS, lr: float = ADAMERGING_LR,
               prior: float = ADAMERGING_PRIOR, bounds: tuple[float, float] = (0.0, 1.0),
               betas: tuple[float, float] = ADAMERGING_BETAS, eps: float = ADAMERGING_EPS,
               callback: Callable[[int, FloatArray, float], Any] | None = None) -> OptimizeResult:
    """AdaMerging's loop (see the module docstring) on ``objective``.

    Parameters
    ----------
    objective:
        ``objective.value_and_grad(lambda) -> (loss, gradient)`` with ``lambda`` the clamped
        coefficients, or a callable doing that; each call draws the next minibatch(es).
    shape:
        The shape of ``lambda`` (default ``objective.shape``: ``(K,)`` task-wise, ``(G, K)``
        layer-wise).
    steps, lr, prior, bounds, betas, eps:
        AdaMerging's settings (500, 1e-3, 0.3, ``[0, 1]``, ``(0.9, 0.999)``, 1e-8).
    callback:
        ``callback(step, lambda, loss)`` after each step; raising ``StopIteration`` stops.

    Returns
    -------
    OptimizeResult
        ``x`` the clamped coefficients after the last step, ``fun`` the last step's loss,
        ``nit`` and ``njev`` the steps (each one forward and one backward pass per task
        minibatch), ``history`` (``loss``, ``x`` per step), ``status`` ``COMPLETED`` (or
        ``CALLBACK``).
    """
    steps = check_int(steps, "steps", minimum=1)
    for name, value in (("lr", lr), ("eps", eps)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or not np.isfinite(value):
            raise ValueError(f"{name} must be a non-negative finite number, but got {value!r}")
    lo, hi = (float(b) for b in bounds)
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high, but got {bounds!r}")
    if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
        raise ValueError(f"betas must be two numbers in [0, 1), but got {betas!r}")
    value_and_grad = objective if not hasattr(objective, "value_and_grad") else objective.value_and_grad
    if not callable(value_and_grad):
        raise ValueError(f"objective must have value_and_grad(lambda) or be such a callable, but got "
                         f"{type(objective).__name__}")
    shape = shape if shape is not None else getattr(objective, "shape", None)
    if shape is None or not isinstance(shape, (int, tuple)):
        raise ValueError(f"shape must be the shape of lambda ((K,) or (G, K)), but got {shape!r}")
    raw = np.full(shape, float(prior), dtype=np.float64)  # lambdas_raw = ones * prior
    state = AdamState(np.zeros_like(raw), np.zeros_like(raw), 0)
    history = History()
    status, loss = Status.COMPLETED, float("nan")
    for step in range(steps):
        lam = np.clip(raw, lo, hi)  # the forward pass's clamp
        loss, grad = value_and_grad(lam)
        inside = (raw >= lo) & (raw <= hi)  # torch.clamp's gradient: zero outside the bounds
        raw, state = adam_update(raw, np.asarray(grad, dtype=np.float64).reshape(raw.shape) * inside, state,
                                 lr=lr, beta1=betas[0], beta2=betas[1], eps=eps)
        history.append(step=step, loss=float(loss), x=lam.copy())
        if callback is not None:
            try:
                callback(step, np.clip(raw, lo, hi), float(loss))
            except StopIteration:
                status = Status.CALLBACK
                break
    n = len(history)
    return OptimizeResult(x=np.clip(raw, lo, hi), fun=float(loss), nit=n, nfev=n, njev=n, status=status,
                          success=status.success, message=f"{n} AdaMerging steps", history=history.as_arrays(),
                          method="adamerging")
