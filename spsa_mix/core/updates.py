"""Gradient estimates and parameter updates as pure functions (no state inside).

The classes in :mod:`spsa_mix.core.optimizer` own the state and call these kernels, in
the manner of ``torch.optim.adam.adam`` under ``torch.optim.Adam``.

Example
-------
>>> import numpy as np
>>> u = np.array([[1.0, -1.0]]) / np.sqrt(2)
>>> g = two_point_gradient(np.array([1.2]), np.array([0.8]), u, mu=0.1, scale=1.0)
>>> g.round(6).tolist()
[1.414214, -1.414214]
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = ["two_point_gradient", "directional_gradient", "AdamState", "adam_update", "sgd_update"]

FloatArray = NDArray[np.float64]


def two_point_gradient(
    loss_plus: FloatArray, loss_minus: FloatArray, directions: FloatArray, *, mu: float, scale: float
) -> FloatArray:
    """Averaged two-point estimate, GLUE eq. (3) times ``scale``.

    ``g = scale / m * sum_r (L+_r - L-_r) / (2 mu) * u_r`` with ``directions`` of shape
    ``(m, *shape)`` and the losses of shape ``(m,)``.
    """
    d = (loss_plus - loss_minus) / (2.0 * mu)  # (m,) directional finite differences
    return directional_gradient(d, directions, scale=scale)


def directional_gradient(derivs: FloatArray, directions: FloatArray, *, scale: float) -> FloatArray:
    """``scale / m * sum_r derivs_r * u_r``: a gradient from directional derivatives.

    >>> directional_gradient(np.array([2.0]), np.array([[1.0, 0.0]]), scale=1.0).tolist()
    [2.0, 0.0]
    """
    m = directions.shape[0]
    flat = np.asarray(derivs, dtype=np.float64) @ directions.reshape(m, -1)
    return scale * flat.reshape(directions.shape[1:]) / m


class AdamState(NamedTuple):
    """First and second moment estimates of Adam and the number of updates so far."""

    exp_avg: FloatArray
    exp_avg_sq: FloatArray
    step: int


def adam_update(
    param: FloatArray,
    grad: FloatArray,
    state: AdamState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> tuple[FloatArray, AdamState]:
    """One Adam step (Kingma and Ba 2015, Algorithm 1), as ``torch.optim.Adam`` computes it.

    .. math::
        m_t = \\beta_1 m_{t-1} + (1-\\beta_1) g_t, \\quad
        v_t = \\beta_2 v_{t-1} + (1-\\beta_2) g_t^2, \\quad
        \\theta_t = \\theta_{t-1} - \\eta \\frac{m_t / (1-\\beta_1^t)}{\\sqrt{v_t / (1-\\beta_2^t)} + \\epsilon}

    With ``eps=0`` (allowed, as in ``torch.optim.Adam``) a coordinate whose gradients have
    all been zero (or so small that their squares underflow) has ``sqrt(v_hat) + eps = 0``;
    it takes no step, where the formula would give ``0 / 0 = nan``.

    >>> p, s = adam_update(np.zeros(1), np.ones(1), AdamState(np.zeros(1), np.zeros(1), 0),
    ...                    lr=0.1, beta1=0.9, beta2=0.99, eps=0.0)
    >>> p.tolist(), s.step
    ([-0.1], 1)
    >>> adam_update(np.ones(2), np.zeros(2), AdamState(np.zeros(2), np.zeros(2), 0),
    ...             lr=0.1, beta1=0.9, beta2=0.99, eps=0.0)[0].tolist()
    [1.0, 1.0]
    """
    t = state.step + 1
    exp_avg = beta1 * state.exp_avg + (1.0 - beta1) * grad
    exp_avg_sq = beta2 * state.exp_avg_sq + (1.0 - beta2) * grad * grad
    m_hat = exp_avg / (1.0 - beta1**t)
    v_hat = exp_avg_sq / (1.0 - beta2**t)
    denom = np.sqrt(v_hat) + eps
    step = np.divide(m_hat, denom, out=np.zeros_like(m_hat), where=denom > 0)  # 0 where no gradient yet (eps=0)
    new_param = param - lr * step
    return new_param, AdamState(exp_avg, exp_avg_sq, t)


def sgd_update(
    param: FloatArray,
    grad: FloatArray,
    buf: FloatArray,
    *,
    lr: float,
    momentum: float,
) -> tuple[FloatArray, FloatArray]:
    """Gradient descent with heavy-ball momentum, as ``torch.optim.SGD`` (dampening 0).

    ``buf = momentum * buf + grad``, ``param = param - lr * buf``; ``momentum=0`` is plain
    gradient descent, GLUE eq. (4).

    >>> p, b = sgd_update(np.ones(2), np.ones(2), np.zeros(2), lr=0.5, momentum=0.0)
    >>> p.tolist()
    [0.5, 0.5]
    """
    new_buf = momentum * buf + grad
    return param - lr * new_buf, new_buf
