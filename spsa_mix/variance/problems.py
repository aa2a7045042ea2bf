"""Objectives seen from one fixed point, in alpha space or in beta (softmax-logit) space.

A :class:`FixedPoint` is what the variance study needs from a problem: the point ``x``
where the directions are drawn, a vectorized loss of points of that space, the true
gradient there, and (for the ``O(mu^2)`` term) the gradient at nearby points.

* alpha space: ``x = alpha``, losses ``L(alpha + mu u)``; the points may leave the
  simplex (a quadratic or linear objective is defined everywhere);
* beta space: ``x = beta`` with ``softmax(beta) = alpha``, losses
  ``L(softmax(beta + mu u))``, what :class:`spsa_mix.SimplexSPSA` evaluates; the
  gradient is ``J(beta)^T grad_alpha L`` (:func:`spsa_mix.core.simplex.softmax_vjp`).

:class:`Linear` and the quadratic of :class:`spsa_mix.problems.Quadratic` have exact
gradients; for a network, :mod:`spsa_mix.variance.network` builds the same
:class:`FixedPoint` around autograd.

Example
-------
>>> import numpy as np
>>> fp = problem_at_uniform("linear", 4, space="beta", rng=np.random.default_rng(0))
>>> fp.x.shape, bool(abs(fp.gradient.sum()) < 1e-12)  # a beta gradient sums to zero
((4,), True)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.simplex import check_simplex_point, logits_from_simplex, softmax, softmax_vjp
from spsa_mix.core.validation import check_positive, check_positive_int, normalize_rng
from spsa_mix.problems import Quadratic

__all__ = ["Linear", "FixedPoint", "SPACES", "PROBLEMS", "at_point", "problem_at_uniform", "third_derivative_terms"]

FloatArray = NDArray[np.float64]
Space = Literal["alpha", "beta"]
SPACES: tuple[str, ...] = ("alpha", "beta")
PROBLEMS: tuple[str, ...] = ("quadratic", "linear")


@dataclass
class Linear:
    """``f(alpha) = w . alpha``: vectorized, with exact ``value_and_grad`` and ``jvp``.

    >>> f = Linear(np.array([1.0, 2.0]))
    >>> f(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist(), f.value_and_grad([0.5, 0.5])[1].tolist()
    ([1.5, 1.0], [1.0, 2.0])
    """

    w: FloatArray

    def __post_init__(self) -> None:
        self.w = np.asarray(self.w, dtype=np.float64)
        if self.w.ndim != 1 or self.w.size < 1 or not np.all(np.isfinite(self.w)):
            raise ValueError(f"w must be a non-empty finite vector, but got shape {self.w.shape}")

    @property
    def k(self) -> int:
        return int(self.w.shape[0])

    @classmethod
    def random(cls, k: int, *, rng: np.random.Generator | int | None = None) -> Linear:
        """Standard normal weights ``w``."""
        k = check_positive_int(k, "k")
        g = rng if isinstance(rng, np.random.Generator) else normalize_rng(seed=rng)
        return cls(g.standard_normal(k))

    def __call__(self, alpha: ArrayLike) -> float | FloatArray:
        a = np.asarray(alpha, dtype=np.float64)
        vals = a @ self.w
        return float(vals) if a.ndim == 1 else vals

    def value_and_grad(self, alpha: ArrayLike) -> tuple[float, FloatArray]:
        return float(np.asarray(alpha, dtype=np.float64) @ self.w), self.w.copy()

    def jvp(self, alpha: ArrayLike, tangents: ArrayLike) -> tuple[float, FloatArray]:
        return float(np.asarray(alpha, dtype=np.float64) @ self.w), np.asarray(tangents, dtype=np.float64) @ self.w


@dataclass(frozen=True)
class FixedPoint:
    """An objective seen from one point ``x`` of the space where directions are drawn.

    Attributes
    ----------
    losses:
        ``(n, *shape)`` points of the space -> ``(n,)`` losses (deterministic).
    x:
        The point, of shape ``shape``.
    gradient:
        The true gradient at ``x`` in that space (analytic or autograd).
    grad_at:
        The true gradient at any point of the space (for the ``O(mu^2)`` term).
    space:
        ``"alpha"`` or ``"beta"``.
    smooth:
        Whether third derivatives exist (``False`` for a ReLU network: then the closed
        forms are the ``mu -> 0`` limit only).
    exact_differences:
        Whether the central difference is exact at every ``mu`` (a quadratic or linear
        objective in alpha space).
    chunk_size:
        How many points to pass to ``losses`` at once.

    Examples
    --------
    >>> fp = FixedPoint(losses=lambda pts: pts.sum(axis=1), x=np.zeros(2), gradient=np.ones(2),
    ...                 grad_at=lambda x: np.ones(2))
    >>> fp.shape, fp.losses(np.ones((3, 2))).tolist()
    ((2,), [2.0, 2.0, 2.0])
    """

    losses: Callable[[FloatArray], FloatArray]
    x: FloatArray
    gradient: FloatArray
    grad_at: Callable[[FloatArray], FloatArray] = field(repr=False)
    space: str = "alpha"
    smooth: bool = True
    exact_differences: bool = False
    chunk_size: int = 1 << 16

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape)


def at_point(
    objective: Any,
    alpha: ArrayLike,
    *,
    space: str = "alpha",
    smooth: bool = True,
    exact_differences: bool = False,
    chunk_size: int = 1 << 16,
) -> FixedPoint:
    """Wrap a vectorized objective with ``value_and_grad`` around the point ``alpha``.

    Parameters
    ----------
    objective:
        ``objective(points (n, *shape)) -> (n,)`` and
        ``objective.value_and_grad(alpha) -> (float, grad)``.
    alpha:
        A point of the simplex (strictly positive rows summing to one).
    space:
        ``"alpha"`` or ``"beta"``.
    smooth, exact_differences, chunk_size:
        See :class:`FixedPoint`; ``exact_differences`` is forced to ``False`` in beta
        space (the softmax makes every objective non-quadratic).

    Examples
    --------
    >>> fp = at_point(Linear(np.array([1.0, 3.0])), [0.5, 0.5], space="beta")
    >>> fp.gradient.tolist()   # J^T w with J = diag(alpha) - alpha alpha^T
    [-0.5, 0.5]
    >>> at_point(Linear(np.ones(2)), [0.5, 0.5], space="gamma")
    Traceback (most recent call last):
    ...
    ValueError: space must be 'alpha' or 'beta', but got 'gamma'
    """
    if space not in SPACES:
        raise ValueError(f"space must be 'alpha' or 'beta', but got {space!r}")
    a = np.asarray(alpha, dtype=np.float64)
    a = check_simplex_point(a, a.shape, name="alpha")
    chunk_size = check_positive_int(chunk_size, "chunk_size")

    def grad_alpha(point: FloatArray) -> FloatArray:
        return np.asarray(objective.value_and_grad(point)[1], dtype=np.float64).reshape(a.shape)

    if space == "alpha":
        return FixedPoint(
            losses=lambda pts: np.asarray(objective(pts), dtype=np.float64),
            x=a,
            gradient=grad_alpha(a),
            grad_at=grad_alpha,
            space="alpha",
            smooth=smooth,
            exact_differences=exact_differences,
            chunk_size=chunk_size,
        )

    def grad_beta(beta: FloatArray) -> FloatArray:
        s = softmax(beta)
        return softmax_vjp(s, grad_alpha(s))

    beta0 = logits_from_simplex(a)
    return FixedPoint(
        losses=lambda pts: np.asarray(objective(softmax(pts)), dtype=np.float64),
        x=beta0,
        gradient=softmax_vjp(a, grad_alpha(a)),
        grad_at=grad_beta,
        space="beta",
        smooth=smooth,
        exact_differences=False,
        chunk_size=chunk_size,
    )


def problem_at_uniform(
    name: str, k: int, *, space: str = "alpha", rng: np.random.Generator | int | None = None
) -> FixedPoint:
    """A random ``"quadratic"`` (:meth:`Quadratic.random`, interior optimum, condition
    number 10) or ``"linear"`` (:meth:`Linear.random`) objective over ``k`` experts, seen
    from the uniform mixture ``alpha = 1/k`` (GLUE's starting point, section 3.3).

    >>> fp = problem_at_uniform("quadratic", 3, rng=0)
    >>> fp.exact_differences, fp.shape
    (True, (3,))
    """
    if name not in PROBLEMS:
        raise ValueError(f"problem must be one of {list(PROBLEMS)}, but got {name!r}")
    k = check_positive_int(k, "k")
    if k < 2:
        raise ValueError(f"k must be at least 2 (one expert has nothing to blend), but got {k}")
    g = rng if isinstance(rng, np.random.Generator) else normalize_rng(seed=rng)
    objective = Quadratic.random(k, rng=g, optimum="interior") if name == "quadratic" else Linear.random(k, rng=g)
    return at_point(objective, np.full(k, 1.0 / k), space=space, exact_differences=True)


def _basis(shape: tuple[int, ...], sum_zero: bool) -> FloatArray:
    """Orthonormal basis (columns) of the direction space, ``(n, d)``."""
    n = int(np.prod(shape))
    if not sum_zero:
        return np.eye(n)
    k = shape[-1]
    q, _ = np.linalg.qr(np.eye(k)[:, : k - 1] - 1.0 / k)  # k - 1 centred vectors span the sum-zero plane
    return np.kron(np.eye(n // k), q)


def third_derivative_terms(
    problem: FixedPoint, *, sum_zero: bool, step: float = 1e-3, cubes: bool = True
) -> tuple[FloatArray, FloatArray | None]:
    """The contractions of the third derivative ``T`` at ``problem.x`` that
    :func:`spsa_mix.variance.theory.mu_bias_leading` needs, by second differences of the
    exact gradient: ``T[v, v, .] = (G(x + s v) - 2 G(x) + G(x - s v)) / s^2 + O(s^2)``.

    Returns ``t = sum_j T[b_j, b_j, .]`` over an orthonormal basis of the direction space
    (shape of ``x``) and, with ``cubes=True``, ``T[p_f, p_f, p_f]`` for every column
    ``p_f`` of the projector (shape ``(n,)``). Costs ``2 d + 1`` (plus ``2 n``) gradients.
    The default ``step`` balances the ``O(s^2)`` truncation against the rounding error
    ``eps |G| / s^2`` of float64 (both about ``1e-7`` relative).

    >>> fp = problem_at_uniform("linear", 3, space="alpha", rng=0)
    >>> t, c = third_derivative_terms(fp, sum_zero=True)
    >>> float(np.abs(t).max()), float(np.abs(c).max())   # a linear function has T = 0
    (0.0, 0.0)
    """
    s = check_positive(step, "step")
    shape = problem.shape
    x = problem.x
    g0 = problem.grad_at(x)

    def second_difference(v: FloatArray) -> FloatArray:
        return (problem.grad_at(x + s * v) - 2.0 * g0 + problem.grad_at(x - s * v)) / (s * s)

    basis = _basis(shape, sum_zero)
    t = np.zeros(shape)
    for j in range(basis.shape[1]):
        t += second_difference(basis[:, j].reshape(shape))
    if not cubes:
        return t, None
    n = int(np.prod(shape))
    proj = basis @ basis.T  # (n, n), the projector P
    out = np.empty(n)
    for f in range(n):
        p = proj[:, f].reshape(shape)
        out[f] = float(np.sum(second_difference(p) * p))
    return t, out
