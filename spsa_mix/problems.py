"""Analytic test problems on the simplex, with exact gradients and known optima.

:class:`Quadratic` is ``f(alpha) = 0.5 (alpha - c)^T A (alpha - c)`` with ``A`` positive
definite. It is vectorized (a batch of points in, a batch of losses out), exposes
``value_and_grad`` and ``jvp`` so that every method of :func:`spsa_mix.minimize` runs on it,
and computes its constrained minimiser independently of this package's optimisers
(closed form when the unconstrained optimum lies inside the simplex, SciPy's SLSQP
otherwise).

:class:`ScaledQuadratic` is the same for a point with a learned scale beside the weights
(a task-vector blend ``theta = s sum_i alpha_i tau_i`` fitted to ``theta*``): its domain
is ``Domain(k, positive=1, names=("scale",))`` and its minimiser ``(c, s*)`` is known by
construction.

Example
-------
>>> import numpy as np
>>> q = Quadratic.random(5, rng=np.random.default_rng(0), optimum="interior")
>>> x = q.minimizer()
>>> bool(np.allclose(x, q.c)), round(q(x), 12)
(True, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.optimize
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.domain import Domain
from spsa_mix.core.simplex import project_onto_simplex
from spsa_mix.core.validation import check_positive, check_positive_int, normalize_rng

__all__ = ["Quadratic", "ScaledQuadratic"]

FloatArray = NDArray[np.float64]


def _check_at_least(value: float, name: str, low: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not np.isfinite(value) or not value >= low:
        raise ValueError(f"{name} must be a number >= {low:g}, but got {value!r}")


@dataclass
class Quadratic:
    """``f(alpha) = 0.5 (alpha - c)^T A (alpha - c)`` over one simplex of ``k`` vertices.

    ``noise_std`` adds independent Gaussian noise to every evaluation (a stochastic
    objective); ``value_and_grad`` and ``jvp`` stay exact.
    """

    A: FloatArray
    c: FloatArray
    noise_std: float = 0.0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0), repr=False)

    def __post_init__(self) -> None:
        self.A = np.asarray(self.A, dtype=np.float64)
        self.c = np.asarray(self.c, dtype=np.float64)
        k = self.c.shape[0]
        if self.c.ndim != 1 or self.A.shape != (k, k):
            raise ValueError(f"A must be (k, k) and c (k,), but got A {self.A.shape} and c {self.c.shape}")
        if not np.allclose(self.A, self.A.T) or np.linalg.eigvalsh(self.A).min() <= 0:
            raise ValueError("A must be symmetric positive definite")
        _check_at_least(self.noise_std, "noise_std", 0.0)

    @property
    def k(self) -> int:
        return int(self.c.shape[0])

    @classmethod
    def random(
        cls,
        k: int,
        *,
        rng: np.random.Generator | int | None = None,
        optimum: Literal["interior", "boundary"] = "interior",
        condition: float = 10.0,
        scale: float = 1.0,
        noise_std: float = 0.0,
    ) -> Quadratic:
        """A random instance: eigenvalues log-spaced in ``[scale/condition, scale]``; with
        ``optimum="interior"`` ``c`` is an interior point of the simplex (so it is the
        minimiser), with ``"boundary"`` ``c`` lies outside it, beyond a face, so that the
        minimiser has zero coordinates."""
        k = check_positive_int(k, "k")
        _check_at_least(condition, "condition", 1.0)  # the ratio of A's largest to smallest eigenvalue
        g = rng if isinstance(rng, np.random.Generator) else normalize_rng(seed=rng)
        q, _ = np.linalg.qr(g.standard_normal((k, k)))
        eig = scale * np.logspace(-np.log10(condition), 0.0, k)
        A = (q * eig) @ q.T
        A = 0.5 * (A + A.T)
        if optimum == "interior":
            c = g.dirichlet(np.full(k, 2.0))
            c = 0.8 * c + 0.2 / k  # keep away from the faces
        elif optimum == "boundary":
            c = g.dirichlet(np.full(k, 1.0))
            n_out = max(1, k // 3)
            out = g.choice(k, size=n_out, replace=False)
            c[out] = -0.3 * g.uniform(0.5, 1.0, size=n_out)  # pushes those coordinates to 0
            c += (1.0 - c.sum()) / k
        else:
            raise ValueError(f"optimum must be 'interior' or 'boundary', but got {optimum!r}")
        return cls(A=A, c=c, noise_std=noise_std, rng=np.random.default_rng(g.integers(2**63)))

    @classmethod
    def scattered(cls, k: int, *, rng: np.random.Generator | int | None = None, spread: float = 0.6,
                  ridge: float = 0.1) -> Quadratic:
        """A random instance whose centre is scattered around the simplex: ``A = B B^T / k +
        ridge I`` (``B`` standard normal, ``k x k``) and ``c = dirichlet(1) + N(0, spread^2)``
        per coordinate, drawn in that order from ``rng``. ``c`` is off the simplex, so the
        minimiser mostly lies on a face with several experts weighted: the problems on which
        a start at the best vertex trapped SPSA (issue 19; ``docs/directions.md``, "The start:
        a race").

        >>> q = Quadratic.scattered(20, rng=np.random.default_rng(0))
        >>> q.k, bool((q.minimizer() < 1e-9).any())
        (20, True)
        """
        k = check_positive_int(k, "k")
        _check_at_least(spread, "spread", 0.0)
        _check_at_least(ridge, "ridge", 0.0)
        g = rng if isinstance(rng, np.random.Generator) else normalize_rng(seed=rng)
        b = g.standard_normal((k, k))
        A = b @ b.T / k + ridge * np.eye(k)
        c = g.dirichlet(np.ones(k)) + g.normal(0.0, spread, k)
        return cls(A=0.5 * (A + A.T), c=c)

    # ------------------------------------------------------------------ evaluation
    def __call__(self, alpha: ArrayLike) -> float | FloatArray:
        """Loss at one point (``(k,)`` -> float) or a batch (``(n, k)`` -> ``(n,)``)."""
        a = np.asarray(alpha, dtype=np.float64)
        d = a - self.c
        vals = 0.5 * np.einsum("...i,ij,...j->...", d, self.A, d)
        if self.noise_std > 0:
            vals = vals + self.noise_std * self.rng.standard_normal(np.shape(vals))
        return float(vals) if a.ndim == 1 else vals

    def value(self, alpha: ArrayLike) -> float:
        """The exact (noise-free) loss at one point."""
        d = np.asarray(alpha, dtype=np.float64) - self.c
        return float(0.5 * d @ self.A @ d)

    def grad(self, alpha: ArrayLike) -> FloatArray:
        """``A (alpha - c)``."""
        return self.A @ (np.asarray(alpha, dtype=np.float64) - self.c)

    def value_and_grad(self, alpha: ArrayLike) -> tuple[float, FloatArray]:
        return self.value(alpha), self.grad(alpha)

    def jvp(self, alpha: ArrayLike, tangents: ArrayLike) -> tuple[float, FloatArray]:
        """Loss and the directional derivatives ``<grad, t_r>`` for tangents ``(m, k)``."""
        return self.value(alpha), np.asarray(tangents, dtype=np.float64) @ self.grad(alpha)

    # ------------------------------------------------------------------ optimum
    def minimizer(self) -> FloatArray:
        """The minimiser over the simplex, computed without this package's optimisers."""
        k = self.k
        if np.all(self.c > 0) and abs(self.c.sum() - 1.0) < 1e-12:
            return self.c.copy()
        # Constrained minimum: SLSQP from the projection of c, tight tolerances.
        x_start = project_onto_simplex(self.c)
        res = scipy.optimize.minimize(
            self.value,
            x_start,
            jac=self.grad,
            method="SLSQP",
            bounds=[(0.0, 1.0)] * k,
            constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones(k)}],
            options={"ftol": 1e-15, "maxiter": 1000},
        )
        x = project_onto_simplex(res.x)
        if res.success:
            return x
        # SLSQP can stop at the minimiser with a line-search complaint (the tolerance is tight):
        # polish by accelerated projected gradient, and accept what the Frank-Wolfe gap certifies
        # (f(x) - f* <= 1e-9 max(1, f), below every relative gap the benchmarks report).
        x = self._polish(x)
        gap = self._fw_gap(x)
        if gap > 1e-9 * max(1.0, abs(self.value(x))):
            raise RuntimeError(f"SLSQP failed to find the constrained minimiser ({res.message}), and projected "
                               f"gradient left a Frank-Wolfe gap of {gap:.3g}")
        return x

    def _fw_gap(self, x: FloatArray) -> float:
        """``g(x) . x - min_i g_i(x)``: an upper bound on ``f(x) - f*`` over the simplex (f convex)."""
        g = self.grad(x)
        return float(g @ x - g.min())

    def _polish(self, x: FloatArray, iters: int = 20_000) -> FloatArray:
        """FISTA (Beck and Teboulle 2009) with the projection onto the simplex, step ``1/L``
        with ``L`` the largest eigenvalue of ``A``, from ``x``."""
        step = 1.0 / float(np.linalg.eigvalsh(self.A).max())
        y, t = x.copy(), 1.0
        for _ in range(iters):
            x_next = project_onto_simplex(y - step * self.grad(y))
            t_next = 0.5 * (1.0 + np.sqrt(1.0 + 4.0 * t * t))
            y = x_next + (t - 1.0) / t_next * (x_next - x)
            x, t = x_next, t_next
            if self._fw_gap(x) <= 1e-14 * max(1.0, abs(self.value(x))):
                break
        return x

    def minimum(self) -> float:
        """The minimum value over the simplex."""
        return self.value(self.minimizer())


@dataclass
class ScaledQuadratic:
    """``f(alpha, s) = 0.5 |s T^T alpha - s* T^T c|^2``: ``k`` task vectors (the rows of
    ``T``, shape ``(k, dim)``) blended with weights ``alpha`` and scaled by ``s > 0``.

    A point is the flat vector ``(alpha_1, ..., alpha_k, s)`` of :attr:`domain`. With ``T``
    of full row rank, the minimum ``0`` is reached only at ``alpha = c``, ``s = s*``:
    ``s alpha = s* c`` and summing over the weights gives ``s = s*``. Vectorized, with
    ``value_and_grad`` and ``jvp`` (the gradient with respect to ``alpha`` and ``s``).

    >>> p = ScaledQuadratic.random(3, rng=0, s_star=2.0)
    >>> x = p.minimizer()
    >>> x.shape, float(x[-1]), p(x)
    ((4,), 2.0, 0.0)
    """

    T: FloatArray
    c: FloatArray
    s_star: float

    def __post_init__(self) -> None:
        self.T = np.asarray(self.T, dtype=np.float64)
        self.c = np.asarray(self.c, dtype=np.float64)
        if self.T.ndim != 2 or self.c.shape != (self.T.shape[0],):
            raise ValueError(f"T must be (k, dim) and c (k,), but got T {self.T.shape} and c {self.c.shape}")
        if np.linalg.matrix_rank(self.T) < self.T.shape[0]:
            raise ValueError("T must have full row rank (k independent task vectors), or the optimum is not unique")
        if not (np.all(self.c > 0) and abs(self.c.sum() - 1.0) < 1e-12):
            raise ValueError(f"c must be an interior point of the simplex, but got {self.c.tolist()}")
        self.s_star = check_positive(self.s_star, "s_star")
        self.target = self.s_star * (self.c @ self.T)  # theta*, (dim,)

    @property
    def k(self) -> int:
        return int(self.c.shape[0])

    @property
    def domain(self) -> Domain:
        """``Domain(k, positive=1, names=("scale",))``."""
        return Domain(self.k, positive=1, names=("scale",))

    @classmethod
    def random(cls, k: int, *, rng: np.random.Generator | int | None = None, s_star: float = 2.0,
               dim: int | None = None) -> ScaledQuadratic:
        """Task vectors with independent normal entries (``dim = 2 k`` by default) and an
        interior ``c`` drawn as :meth:`Quadratic.random` does."""
        k = check_positive_int(k, "k")
        g = rng if isinstance(rng, np.random.Generator) else normalize_rng(seed=rng)
        d = 2 * k if dim is None else check_positive_int(dim, "dim")
        T = g.standard_normal((k, d)) / np.sqrt(d)
        c = 0.8 * g.dirichlet(np.full(k, 2.0)) + 0.2 / k
        return cls(T=T, c=c / c.sum(), s_star=s_star)

    def _residual(self, x: FloatArray) -> FloatArray:
        return x[..., -1:] * (x[..., : self.k] @ self.T) - self.target

    def __call__(self, x: ArrayLike) -> float | FloatArray:
        """Loss at one point (``(k + 1,)`` -> float) or a batch (``(n, k + 1)`` -> ``(n,)``)."""
        a = np.asarray(x, dtype=np.float64)
        r = self._residual(a)
        vals = 0.5 * np.sum(r * r, axis=-1)
        return float(vals) if a.ndim == 1 else vals

    def grad(self, x: ArrayLike) -> FloatArray:
        """``(s T r, alpha^T T r)`` with the residual ``r = s T^T alpha - theta*``."""
        a = np.asarray(x, dtype=np.float64)
        r = self._residual(a)
        return np.concatenate([a[-1] * (self.T @ r), [a[: self.k] @ self.T @ r]])

    def value_and_grad(self, x: ArrayLike) -> tuple[float, FloatArray]:
        return float(self(x)), self.grad(x)

    def jvp(self, x: ArrayLike, tangents: ArrayLike) -> tuple[float, FloatArray]:
        """Loss and the directional derivatives ``<grad, t_r>`` for tangents ``(m, k + 1)``."""
        return float(self(x)), np.asarray(tangents, dtype=np.float64) @ self.grad(x)

    def minimizer(self) -> FloatArray:
        """``(c, s*)``, the unique minimiser (known by construction)."""
        return np.concatenate([self.c, [self.s_star]])

    def minimum(self) -> float:
        return 0.0
