"""How a point becomes the coefficients of the stacked rows: convex blends, task vectors, LoRA.

Every space blends the same way, ``theta = c @ W`` with ``W`` the stack of ``R`` rows and
``c`` the coefficients of one probe (one row of coefficients per parameter group); only the
map from the point to ``c`` differs:

==================  ===================================================  =======================
space               theta                                                rows of W, coefficients
==================  ===================================================  =======================
``convex``          ``sum_i alpha_i theta_i``                            K experts; ``c = alpha``
``task-vectors``    ``theta_b + s * sum_i alpha_i (theta_i - theta_b)``  K experts and the base;
                                                                         ``c = (s alpha, 1 - s sum alpha)``
``lora``            ``W_b + sum_i alpha_i scaling_i B_i A_i`` per        K experts' rank-row
                    adapted layer (:mod:`spsa_mix.blend.lora`)           weights; ``c = alpha``
``ties``, ``dare_`` ``theta_b + s * sum_i alpha_i r_i``: mergekit's          K prepared task vectors
``ties``, ...       method (:mod:`spsa_mix.blend.methods.space`)         ``r_i`` and the base;
                                                                         ``c = (s alpha, 1)``
==================  ===================================================  =======================

The task-vector identity ``theta_b + s sum_i alpha_i (theta_i - theta_b) = (1 - s sum_i
alpha_i) theta_b + s sum_i alpha_i theta_i`` holds for any alpha (on the simplex, the base's
coefficient is ``1 - s``); ``s = 1`` is the convex blend and ``s > 1`` leaves the experts'
convex hull. The scale ``s`` is fixed (``scale=2.0``) or learned with alpha
(``scale="learned"``): the point is then a flat vector, the weights row by row and then
``s`` (:class:`spsa_mix.core.domain.Domain` with one positive coordinate named ``"scale"``),
and one global ``s`` serves every group of a layer-wise blend.

Example
-------
>>> import torch
>>> space = BlendSpace("task-vectors", k=2, scale="learned")
>>> space.domain, space.rows
(Domain(simplex=(2,), positive=1, names=('scale',)), 3)
>>> space.coefficients(torch.tensor([[0.25, 0.75, 2.0]], dtype=torch.float64)).tolist()
[[[0.5, 1.5, -1.0]]]
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from spsa_mix.blend.methods.registry import LEARNED_SPACES
from spsa_mix.core.domain import Domain

if TYPE_CHECKING:  # PyTorch is imported where coefficients are computed: the checks need only the shapes
    import torch

__all__ = ["BlendSpace", "SPACES", "SCALED_SPACES", "check_space"]

SPACES = ("convex", "task-vectors", "lora", *LEARNED_SPACES)
SCALED_SPACES = ("task-vectors", *LEARNED_SPACES)  # the spaces with a base and a scale (mergekit's lambda)
SpaceName = Literal["convex", "task-vectors", "lora"]


def check_space(space: Any, scale: Any, *, has_base: bool) -> tuple[str, float | str]:
    """``(space, scale)`` checked: a known space, a base where one is needed, a scale that is
    a positive number or ``"learned"`` (and only 1 outside task vectors).

    >>> check_space("task-vectors", 2, has_base=True)
    ('task-vectors', 2.0)
    >>> check_space("task-vectors", 1.0, has_base=False)
    Traceback (most recent call last):
    ...
    ValueError: space='task-vectors' needs base= (the model the experts were fine-tuned from: theta = theta_base + s * sum_i alpha_i (theta_i - theta_base))
    """
    space = getattr(space, "name", space)  # a TaskVectorMethod names its space
    if not isinstance(space, str) or space not in SPACES:
        raise ValueError(f"space must be one of {list(SPACES)}, but got {space!r}")
    if isinstance(scale, str):
        if scale != "learned":
            raise ValueError(f"scale must be a positive number or 'learned', but got {scale!r}")
    elif isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and float(scale) > 0):
        raise ValueError(f"scale must be a positive number or 'learned', but got {scale!r}")
    if space == "task-vectors" and not has_base:
        raise ValueError("space='task-vectors' needs base= (the model the experts were fine-tuned from: "
                         "theta = theta_base + s * sum_i alpha_i (theta_i - theta_base))")
    if space == "lora" and not has_base:
        raise ValueError("space='lora' needs base= (the model the adapters were trained on)")
    if space in LEARNED_SPACES and not has_base:
        raise ValueError(f"space={space!r} needs base= (mergekit's base_model: the model the experts were "
                         "fine-tuned from)")
    if space not in SCALED_SPACES and scale != 1 and scale != 1.0:
        raise ValueError(f"scale={scale!r} applies to space='task-vectors' and the task-vector methods "
                         f"({', '.join(LEARNED_SPACES)}) only (space={space!r} has no scale)")
    return space, (scale if isinstance(scale, str) else float(scale))


@dataclass(frozen=True)
class BlendSpace:
    """The map from a point to the coefficients of the stack's rows (see the module docstring).

    Parameters
    ----------
    name:
        ``"convex"``, ``"task-vectors"`` or ``"lora"``.
    k:
        Number of experts.
    groups:
        Number of simplices (parameter groups; 1 for one alpha for the whole model).
    scale:
        Task vectors only: a fixed ``s > 0`` or ``"learned"``.
    """

    name: str
    k: int
    groups: int = 1
    scale: float | str = 1.0
    layer_wise: bool = False

    @property
    def learned_scale(self) -> bool:
        return self.scale == "learned"

    @property
    def rows(self) -> int:
        """Rows of the stack: the K experts, and the base for task vectors and methods."""
        return self.k + (self.name in SCALED_SPACES)

    @property
    def domain(self) -> Domain:
        """Where a point lives: the simplex weights, and the scale when it is learned.

        >>> BlendSpace("convex", k=3, groups=2, layer_wise=True).domain
        Domain(simplex=(2, 3))
        """
        simplex = (self.groups, self.k) if self.layer_wise else (self.k,)
        return Domain(simplex, positive=1, names=("scale",)) if self.learned_scale else Domain(simplex)

    @property
    def shape(self) -> tuple[int, ...] | Domain:
        """What :func:`spsa_mix.minimize` takes as ``k``: the simplex shape ``(K,)`` or
        ``(G, K)``, or the :class:`~spsa_mix.core.domain.Domain` when the scale is learned."""
        d = self.domain
        return d if self.learned_scale else d.simplex

    def check_points(self, points: Any, *, name: str = "points", simplex_atol: float | None = 1e-6
                     ) -> tuple[np.ndarray, bool]:
        """``points`` as float64 ``(n, *point_shape)``, and whether one point was given.

        Raises ``ValueError`` for another shape, values that are not finite, and (unless
        ``simplex_atol`` is ``None``) a row of weights off the simplex or a learned scale
        that is not positive.

        >>> BlendSpace("convex", k=2).check_points([[0.5, 0.5], [0.9, 0.2]])
        Traceback (most recent call last):
        ...
        ValueError: points must lie on the probability simplex (non-negative, each row summing to 1, tolerance 1e-06), but a row is [0.9 0.2] (sum 1.1); pass simplex_atol=None to allow any weights
        """
        arr = np.asarray(points, dtype=np.float64)
        shape = self.domain.point_shape
        if arr.shape == shape:
            arr, single = arr[None], True
        elif arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] >= 1:
            single = False
        else:
            hint = (f" (granularity='layer': one row of {self.k} weights per group, {self.groups} groups)"
                    if self.layer_wise else "")
            if self.learned_scale:
                hint += f" (scale='learned': the {self.domain.n_weights} weights, then the scale)"
            raise ValueError(f"{name} must have shape {shape} or (n, {', '.join(map(str, shape))}), "
                             f"but got shape {arr.shape}{hint}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, but got {np.array2string(arr, threshold=20)}")
        if simplex_atol is None:
            return arr, single
        alpha, scale = self.split(arr)
        rows = alpha.reshape(-1, self.k)
        bad = np.flatnonzero((rows.min(axis=1) < -simplex_atol) | (np.abs(rows.sum(axis=1) - 1.0) > simplex_atol))
        if bad.size:
            row = rows[bad[0]]
            raise ValueError(
                f"{name} must lie on the probability simplex (non-negative, each row summing to 1, "
                f"tolerance {simplex_atol:g}), but a row is {np.array2string(row, precision=4)} (sum {row.sum():.6g}); "
                "pass simplex_atol=None to allow any weights")
        if self.learned_scale and not np.all(scale > 0):
            raise ValueError(f"the scale (the last coordinate of {name}) must be positive, but got "
                             f"{float(scale[np.flatnonzero(~(scale > 0))[0]])!r}; pass simplex_atol=None to allow any value")
        return arr, single

    def split(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(alpha (n, *simplex), scale (n,))`` of points ``(n, *point_shape)``."""
        if self.learned_scale:
            alpha, pos, _ = self.domain.split(points)
            return alpha, pos[..., 0]
        return points, np.full(points.shape[0], float(self.scale) if self.name in SCALED_SPACES else 1.0)

    def split_tensor(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha (n, G, K), scale (n,))`` of points ``(n, *point_shape)`` (differentiable)."""
        n = points.shape[0]
        if self.learned_scale:
            w = self.domain.n_weights
            return points[:, :w].reshape(n, -1, self.k), points[:, w]
        value = float(self.scale) if self.name in SCALED_SPACES else 1.0
        import torch

        return points.reshape(n, -1, self.k), torch.full((n,), value, dtype=points.dtype, device=points.device)

    def coefficients(self, points: torch.Tensor) -> torch.Tensor:
        """``(n, G, rows)`` coefficients of points ``(n, *point_shape)`` (differentiable)."""
        import torch

        n = points.shape[0]
        if self.learned_scale:
            w = self.domain.n_weights
            alpha, s = points[:, :w].reshape(n, -1, self.k), points[:, w:w + 1].reshape(n, 1, 1)
        else:
            alpha = points.reshape(n, -1, self.k)  # (n, G, K)
            s = None
        if self.name not in SCALED_SPACES:
            return alpha
        scaled = alpha * (s if s is not None else float(self.scale))
        if self.name != "task-vectors":  # rows r_i = prepared task vectors, then the base
            return torch.cat([scaled, torch.ones_like(scaled[..., :1])], dim=-1)  # (n, G, K + 1)
        return torch.cat([scaled, 1.0 - scaled.sum(dim=-1, keepdim=True)], dim=-1)  # (n, G, K + 1)

    def counter_coefficients(self, points: torch.Tensor) -> torch.Tensor:
        """``(n, G, rows)`` coefficients of the integer buffers (stored as they are, not as
        prepared task vectors): those of the task-vector space for the method spaces."""
        if self.name in SCALED_SPACES and self.name != "task-vectors":
            return dataclasses.replace(self, name="task-vectors").coefficients(points)
        return self.coefficients(points)
