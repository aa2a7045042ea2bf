"""mergekit's fixed merges, one tensor at a time: linear, SLERP, NuSLERP, Model Stock.

As mergekit 0.1.5 computes them (``mergekit/merge_methods/{linear,slerp,nuslerp,model_stock}.py``),
in float32 (float64 for float64 tensors) and returned in the inputs' dtype:

* :func:`linear`: ``sum_i w_i theta_i``, divided by ``sum_i w_i`` when ``normalize``;
* :func:`slerp`: spherical interpolation from ``v0`` (mergekit's base) to ``v1`` by ``t``
  over the whole flattened tensor, linear where the two are (anti)parallel
  (``|cos| > 0.9995``);
* :func:`nuslerp`: the same between two models, ``t = w_1 / (w_0 + w_1)``, over rows
  (``flatten=False``) or the flattened tensor (mergekit's default); with a base, between the
  two task vectors, added to the base;
* :func:`model_stock`: ``t theta_avg + (1 - t) theta_base`` with ``t = K cos / (1 + (K - 1)
  cos)``, ``cos`` the mean pairwise cosine of the task vectors (the base kept where the
  denominator vanishes).

Example
-------
>>> import torch
>>> a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
>>> [round(v, 4) for v in slerp(0.5, a, b).tolist()]
[0.7071, 0.7071]
>>> linear([a, b], [1.0, 3.0]).tolist()
[0.25, 0.75]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["linear", "slerp", "nuslerp", "model_stock"]


def _work(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def linear(tensors: Sequence[torch.Tensor], weights: Sequence[float], *, normalize: bool = True) -> torch.Tensor:
    """``sum_i w_i theta_i`` (over ``sum_i w_i`` when ``normalize``), mergekit's ``linear``."""
    first = tensors[0]
    dtype = _work(first)
    out = torch.zeros_like(first, dtype=dtype)
    for t, w in zip(tensors, weights, strict=True):
        out.addcmul_(t, torch.tensor(float(w), dtype=dtype, device=t.device))
    if normalize:
        out.div_(torch.tensor([float(w) for w in weights], dtype=dtype).sum())
    return out.to(first.dtype)


def slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, *, dot_threshold: float = 0.9995,
          eps: float = 1e-8) -> torch.Tensor:
    """SLERP from ``v0`` (``t = 0``) to ``v1`` (``t = 1``) over the flattened tensors."""
    dtype = _work(v0)
    a, b = v0.reshape(-1).to(dtype), v1.reshape(-1).to(dtype)
    if a.numel() == 0:
        return v0.clone()
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    na = torch.where(na > eps, na, torch.ones_like(na))
    nb = torch.where(nb > eps, nb, torch.ones_like(nb))
    dot = ((a / na) * (b / nb)).sum().clamp(-1, 1)
    if dot.abs() > dot_threshold:
        coef_a, coef_b = 1 - t, t
    else:
        theta = torch.acos(dot)
        s = torch.sin(theta)
        coef_a, coef_b = torch.sin((1 - t) * theta) / s, torch.sin(t * theta) / s
    return (coef_a * a + coef_b * b).reshape(v0.shape).to(v0.dtype)


def _nuslerp(t: float, v0: torch.Tensor, v1: torch.Tensor, *, row_wise: bool, flatten: bool,
             eps: float = 1e-8) -> torch.Tensor:
    shape = v0.shape
    if flatten:
        v0, v1 = v0.reshape(-1), v1.reshape(-1)
    elif row_wise:
        v0, v1 = v0.transpose(0, -1), v1.transpose(0, -1)

    def unit(x: torch.Tensor) -> torch.Tensor:
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=1e-7)

    cos = torch.sum(unit(v0) * unit(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, torch.zeros_like(cos), cos))
    out = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)
    out = torch.where(colinear, (1 - t) * v0 + t * v1, out)
    if row_wise and not flatten:
        out = out.transpose(0, -1)
    return out.reshape(shape)


def nuslerp(tensors: Sequence[torch.Tensor], weights: Sequence[float], *, base: torch.Tensor | None = None,
            row_wise: bool = False, flatten: bool = True) -> torch.Tensor:
    """mergekit's ``nuslerp`` of two models with weights ``(w_0, w_1)`` (``t = w_1 / (w_0 +
    w_1)``, 0.5 when they sum to 0), of their task vectors when ``base`` is given."""
    if len(tensors) != 2:
        raise ValueError(f"nuslerp merges exactly two models, but got {len(tensors)}")
    total = sum(weights)
    t = 0.5 if abs(total) < 1e-6 else weights[1] / total
    if base is not None:
        return base + _nuslerp(t, tensors[0] - base, tensors[1] - base, row_wise=row_wise, flatten=flatten)
    return _nuslerp(t, tensors[0], tensors[1], row_wise=row_wise, flatten=flatten)


def model_stock(base: torch.Tensor, tensors: Sequence[torch.Tensor], *, filter_wise: bool = False) -> torch.Tensor:
    """Model Stock: the average of the experts pulled towards the base by the mean pairwise
    cosine of their task vectors (mergekit's ``model_stock``; at least two experts)."""
    if len(tensors) < 2:
        raise ValueError(f"model_stock needs a base and at least two models, but got {len(tensors)} model(s)")
    shape = base.shape
    w0, ws = base, list(tensors)
    if filter_wise:
        if w0.dim() == 1:
            w0, ws = w0.unsqueeze(0), [w.unsqueeze(0) for w in ws]
    else:
        w0, ws = w0.reshape(-1), [w.reshape(-1) for w in ws]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1:]:
            norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    denominator = 1 + (k - 1) * cos
    singular = denominator.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos),
                    (k * cos) / torch.where(singular, torch.ones_like(denominator), denominator))
    average = sum(ws) / k
    return (t * average + (1 - t) * w0).reshape(shape)
