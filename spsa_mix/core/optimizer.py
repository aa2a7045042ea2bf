"""Ask/tell optimisers for points of one or several probability simplices.

All three classes optimise unconstrained logits ``beta`` with Adam (or SGD) and expose
``alpha = softmax(beta)`` (row by row); they differ in how the gradient with respect to
``beta`` is obtained:

:class:`SimplexSPSA`
    two-point SPSA (GLUE eq. 3): ``ask()`` returns ``2 m`` probes
    ``softmax(beta + mu u_r)``, ``softmax(beta - mu u_r)``, interleaved as
    ``[+u_1, -u_1, +u_2, -u_2, ...]``; ``tell(losses)`` forms
    ``g = c / m * sum_r (L+_r - L-_r) / (2 mu) * u_r``, with ``c`` the factor that makes
    the estimate unbiased (:func:`~spsa_mix.core.directions.estimator_scale`).
:class:`SimplexForwardGradient`
    the same estimator with the exact directional derivative in place of the finite
    difference (forward-mode AD): ``ask()`` returns the current point and the tangents
    ``J(beta) u_r`` in alpha space; ``tell(loss, derivs)``.
:class:`SimplexGradient`
    exact gradients: ``ask()`` returns the current point; ``tell(loss, grad_alpha)``, and the
    gradient is pulled back through the softmax.

Beside the simplex weights, a point may hold positive and real coordinates (a learned
scale ``s > 0``, say): give a :class:`~spsa_mix.core.domain.Domain` for ``k``. The
optimisers then work on the unconstrained vector ``beta`` of the domain (the logits, ``log``
of each positive coordinate, the real coordinates as they are); a point is one flat vector
(weights row by row, then positive, then real coordinates), the directions are drawn in the
space of ``beta`` (the extra coordinates with the same kind of entries, not projected), the
tangents of the forward gradient are pushed through :meth:`Domain.jvp
<spsa_mix.core.domain.Domain.jvp>` and exact gradients pulled back through
:meth:`Domain.vjp <spsa_mix.core.domain.Domain.vjp>`. ``alpha`` is always the simplex part
(shape ``simplex``) and ``x`` the whole point; with a simplex-only domain (an ``int`` or
``(groups, k)``) the two are the same and nothing differs from before.

Defaults: Adam with GLUE section 5's ``betas=(0.9, 0.99)`` and ``m=1``; the step size is
``lr="auto"``, ``1 / sqrt(T)`` for ``T`` planned steps with a cosine decay (``0.0316``,
constant, when the number of steps is unknown), which did better than GLUE's ``lr=1e-2``
(:data:`GLUE_LR`) across budgets of 100 to 5000 evaluations, K from 2 to 50 and noise levels
(``docs/directions.md``, "Defaults").
The directions are this package's choice: Rademacher signs (Spall's SPSA) restricted to the
sum-zero subspace, with ``mu=0.05``; GLUE's unit-sphere directions are
``directions="normalized-gaussian"``. ``docs/directions.md`` has the measurements behind
the choice.

Example
-------
>>> import numpy as np
>>> c = np.array([0.6, 0.3, 0.1])
>>> opt = SimplexSPSA(3, seed=0, lr=0.05)
>>> for _ in range(300):
...     probes = opt.ask()                                 # (2, 3), each row on the simplex
...     _ = opt.tell(((probes - c) ** 2).sum(axis=1))          # two losses, same order
>>> bool(np.abs(opt.alpha - c).max() < 0.02)
True

A learned positive coordinate beside the weights (minimum at ``alpha = c``, ``s = 2``):

>>> from spsa_mix.core.domain import Domain
>>> opt = SimplexSPSA(Domain(3, positive=1, names=("scale",)), seed=0, lr=0.05)
>>> for _ in range(400):
...     x = opt.ask()                                      # (2, 4): weights, then s
...     _ = opt.tell(((x[:, :3] - c) ** 2).sum(axis=1) + np.log(x[:, 3] / 2) ** 2)
>>> bool(np.abs(opt.alpha - c).max() < 0.02), round(float(opt.x[3]), 1)
(True, 2.0)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.directions import DIRECTION_KINDS, estimator_scale, sample_directions
from spsa_mix.core.domain import Domain
from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.core.schedules import (
    Constant,
    Cosine,
    PowerDecay,
    Schedule,
    evaluate_schedule,
    resolve_schedule,
    schedule_from_spec,
    schedule_spec,
)
from spsa_mix.core.simplex import (
    check_simplex_point,
    logits_from_simplex,
    project_sum_zero,
    softmax,
    softmax_jvp,
    softmax_vjp,
)
from spsa_mix.core.updates import AdamState, adam_update, directional_gradient, sgd_update, two_point_gradient
from spsa_mix.core.validation import (
    check_array,
    check_bool,
    check_int,
    check_positive,
    check_positive_int,
    check_probability,
    normalize_rng,
    real_array,
)

__all__ = ["SimplexSPSA", "SimplexForwardGradient", "SimplexGradient", "StepInfo", "ForwardProbe", "auto_lr"]

FloatArray = NDArray[np.float64]

DEFAULT_LR = "auto"  # AUTO_LR_SCALE / sqrt(total_steps), cosine decay: measured in docs/directions.md ("Defaults")
AUTO_LR_SCALE = 1.0  # Adam's step in logit space is 1/sqrt(T) for T planned steps (measured, docs/directions.md)
AUTO_LR_STEPS = 1000  # "auto" without a planned number of steps: the rule at 1000 steps, constant
AUTO_LR_MAX = 0.3  # "auto" for runs of a few steps: at most this (the rule's value at 11 steps)
GLUE_LR = 1e-2  # GLUE section 5 (Adam on alpha's logits), the default before "auto"
DEFAULT_BETAS = (0.9, 0.99)  # GLUE section 5
DEFAULT_EPS = 1e-8  # torch.optim.Adam
DEFAULT_MU = 0.05  # radius in logit space; measured in docs/directions.md
DEFAULT_M = 1  # GLUE section 5: one direction per step
DEFAULT_DIRECTIONS = "rademacher"  # GLUE 3.2 uses "normalized-gaussian"; measured in docs/directions.md
DEFAULT_SUM_ZERO = True  # softmax ignores the all-ones direction; measured in docs/directions.md
_STATE_VERSION = 2  # 2: the domain and the schedules' parameters in the config; version 1 still loads
_STATE_VERSIONS = (1, 2)
_STATE_KEYS = ("version", "config", "beta", "exp_avg", "exp_avg_sq", "momentum_buffer", "step", "pending", "rng")
_BUILTIN_SCHEDULES = (Constant, PowerDecay, Cosine)


class StepInfo(NamedTuple):
    """What one ``tell`` did: the step index, the loss estimate at the point before the
    update, the radius and step size used, and the norm of the gradient estimate."""

    step: int
    loss: float
    mu: float
    lr: float
    grad_norm: float


class ForwardProbe(NamedTuple):
    """``ask()`` of :class:`SimplexForwardGradient`: a point and ``m`` tangents at it
    (``alpha`` is the whole point: with extra coordinates, the flat point of the domain)."""

    alpha: FloatArray  # (*shape)
    tangents: FloatArray  # (m, *shape), tangents in point space, each simplex row summing to zero


# ---------------------------------------------------------------------- argument checks
def auto_lr(total_steps: int | None) -> float:
    """The step size of ``lr="auto"``: ``AUTO_LR_SCALE / sqrt(total_steps)`` (``AUTO_LR_STEPS``
    steps when unknown), at most ``AUTO_LR_MAX``. With a known number of steps ``"auto"``
    also decays it by a cosine.

    >>> round(auto_lr(100), 4), round(auto_lr(2500), 4), round(auto_lr(None), 4), auto_lr(1)
    (0.1, 0.02, 0.0316, 0.3)
    """
    return min(AUTO_LR_MAX, AUTO_LR_SCALE / math.sqrt(total_steps if total_steps else AUTO_LR_STEPS))


def _check_betas(betas: Any, where: str = "") -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas{where} must be a pair (beta1, beta2), but got {betas!r}")
    for i, b in enumerate(betas):
        try:
            check_probability(b, "betas")
        except ValueError:
            raise ValueError(f"Invalid beta parameter at index {i}{where}: {b!r} (must be in [0, 1))") from None
    return (float(betas[0]), float(betas[1]))


def _check_eps(eps: Any, name: str = "eps") -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{name} must be a non-negative number, but got {eps!r}")
    return float(eps)


def _check_update(update: Any, name: str = "update") -> str:
    if update not in ("adam", "sgd"):
        raise ValueError(f"{name} must be 'adam' or 'sgd', but got {update!r}")
    return str(update)


def _check_directions(directions: Any, name: str = "directions") -> str:
    if directions not in DIRECTION_KINDS:
        raise ValueError(f"{name} must be one of {list(DIRECTION_KINDS)}, but got {directions!r}")
    return str(directions)


def _key(*path: str) -> str:
    """How an error names an entry of a state: ``state['config']['lr']``."""
    return "state" + "".join(f"[{p!r}]" for p in path)


class _SimplexOptimizer:
    """State and update shared by the three optimisers: logits, Adam or SGD, schedules."""

    def __init__(
        self,
        k: int | Sequence[int] | Domain,
        *,
        x0: ArrayLike | None = None,
        lr: float | str = DEFAULT_LR,
        betas: tuple[float, float] = DEFAULT_BETAS,
        eps: float = DEFAULT_EPS,
        update: str = "adam",
        momentum: float = 0.0,
        lr_schedule: str | Schedule | None = None,
        total_steps: int | None = None,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.domain = Domain.of(k)
        self.shape = self.domain.point_shape  # of a point and of beta: the simplex shape, or (size,)
        self.total_steps = check_positive_int(total_steps, "total_steps", allow_none=True)
        if isinstance(lr, str) and lr == "auto":
            self.lr = auto_lr(self.total_steps)
            if lr_schedule is None and self.total_steps is not None:
                lr_schedule = "cosine"
        else:
            self.lr = check_positive(lr, "lr")
        self.betas = _check_betas(betas)
        self.eps = _check_eps(eps)
        self.update = _check_update(update)
        self.momentum = check_probability(momentum, "momentum")
        self._lr_schedule = resolve_schedule(lr_schedule, name="lr_schedule", total_steps=self.total_steps)
        self.rng = normalize_rng(seed, rng)

        if x0 is None:
            self._beta = np.zeros(self.shape)  # alpha = 1/k (GLUE section 3.3), positive coordinates 1, real 0
        elif self.domain.simplex_only:
            self._beta = logits_from_simplex(check_simplex_point(x0, self.shape, name="x0"))
        else:
            self._beta = self.domain.from_point(self.domain.check_point(x0, name="x0"))
        self._adam = AdamState(np.zeros(self.shape), np.zeros(self.shape), 0)
        self._momentum_buf = np.zeros(self.shape)
        self._step = 0
        self._pending: Any = None

    # ------------------------------------------------------------------ properties
    @property
    def alpha(self) -> FloatArray:
        """The current simplex weights, ``softmax`` of the logits row by row (a copy), of
        shape ``domain.simplex``."""
        if self.domain.simplex_only:
            return softmax(self._beta)
        return softmax(self.domain.split(self._beta)[0])

    @property
    def x(self) -> FloatArray:
        """The current point (a copy): ``alpha`` for a simplex-only domain, else the flat
        point of the domain (weights, then positive and real coordinates)."""
        if self.domain.simplex_only:
            return softmax(self._beta)
        return self.domain.to_point(self._beta)

    @property
    def beta(self) -> FloatArray:
        """The current unconstrained coordinates (a copy): the logits, then ``log`` of the
        positive coordinates and the real ones."""
        return self._beta.copy()

    @property
    def step_count(self) -> int:
        """Number of completed ``tell`` calls."""
        return self._step

    def current_lr(self) -> float:
        """The step size the next update will use."""
        return self.lr * evaluate_schedule(self._lr_schedule, self._step, name="lr_schedule")

    # ------------------------------------------------------------------ update
    def _apply(self, grad_beta: FloatArray, loss: float, mu: float) -> StepInfo:
        lr = self.current_lr()
        if self.update == "adam":
            self._beta, self._adam = adam_update(
                self._beta, grad_beta, self._adam, lr=lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps
            )
        else:
            self._beta, self._momentum_buf = sgd_update(
                self._beta, grad_beta, self._momentum_buf, lr=lr, momentum=self.momentum
            )
        # softmax ignores the shift of a logit row; the other coordinates are kept
        self._beta = project_sum_zero(self._beta) if self.domain.simplex_only else self.domain.project(self._beta)
        flat = grad_beta.reshape(-1)
        info = StepInfo(self._step, loss, mu, lr, math.sqrt(float(flat @ flat)))
        self._step += 1
        self._pending = None
        return info

    def _require_pending(self) -> Any:
        if self._pending is None:
            raise RuntimeError("tell() called without a pending ask(): call ask() first")
        return self._pending

    @staticmethod
    def _check_losses(losses: ArrayLike, n: int, what: str) -> FloatArray:
        arr = real_array(losses)
        if arr is None:
            raise ValueError(f"tell() expects {n} {what} as numbers, but got {type(losses).__name__}: {losses!r:.100}")
        if arr.shape != (n,):
            raise ValueError(f"tell() expects {n} {what} as an array of shape ({n},), but got shape {arr.shape}")
        if not np.isfinite(arr).all():
            i = int(np.flatnonzero(~np.isfinite(arr))[0])
            raise NonFiniteLossError(
                f"{what} must be finite, but entry {i} is {float(arr[i])!r}; the optimiser state is unchanged",
                index=i,
                value=float(arr[i]),
            )
        return arr

    # ------------------------------------------------------------------ state
    def _config(self) -> dict[str, Any]:
        return {
            "class": type(self).__name__,
            "shape": self.shape,
            "domain": self.domain.to_dict(),
            "lr": self.lr,
            "betas": self.betas,
            "eps": self.eps,
            "update": self.update,
            "momentum": self.momentum,
            "total_steps": self.total_steps,
            "lr_schedule": schedule_spec(self._lr_schedule),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: logits, moments, step, pending probes,
        the generator's state and the hyperparameters, the domain and the schedules'
        parameters (a callable schedule only as ``{"name": "callable"}``).

        >>> opt = SimplexSPSA(3, seed=0)
        >>> sorted(opt.state_dict())
        ['beta', 'config', 'exp_avg', 'exp_avg_sq', 'momentum_buffer', 'pending', 'rng', 'step', 'version']
        """
        return {
            "version": _STATE_VERSION,
            "config": copy.deepcopy(self._config()),
            "beta": self._beta.copy(),
            "exp_avg": self._adam.exp_avg.copy(),
            "exp_avg_sq": self._adam.exp_avg_sq.copy(),
            "momentum_buffer": self._momentum_buf.copy(),
            "step": self._step,
            "pending": copy.deepcopy(self._pending),
            "rng": copy.deepcopy(self.rng.bit_generator.state),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the optimiser must have the same class, domain
        (shape) and ``m``.

        As ``torch.optim``'s ``load_state_dict``, the hyperparameters (``lr``, ``mu``,
        ``betas``, ...) and the built-in schedules, with their planned number of steps, are
        restored from ``state``; a schedule given as a callable cannot be stored, so the
        optimiser must have been built with one (the same, for the same run). A state of
        version 1 (before the domain and the schedules were stored) keeps this instance's
        schedules.

        Everything is checked before anything is changed: a missing key, an array of the
        wrong shape or not finite, a negative step or second moment, a bad hyperparameter
        or a generator state of another kind raises ``ValueError`` naming the key, and
        leaves the optimiser as it was.

        >>> opt = SimplexSPSA(3)
        >>> state = opt.state_dict()
        >>> state["step"] = -1
        >>> opt.load_state_dict(state)
        Traceback (most recent call last):
        ...
        ValueError: state['step'] must be an integer >= 0, but got -1
        """
        parsed = self._parse_state(state)
        rng_state = parsed.pop("rng")
        for name, value in parsed.items():
            setattr(self, name, value)
        self.rng.bit_generator.state = rng_state

    def _parse_state(self, state: Any) -> dict[str, Any]:
        """The attributes ``state`` sets, every entry checked (nothing is changed here)."""
        if not isinstance(state, dict) or state.get("version") not in _STATE_VERSIONS:
            got = f"a dict with version {state.get('version')!r}" if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"state must be a dict from state_dict() (version {' or '.join(map(str, _STATE_VERSIONS))}), "
                             f"but got {got}")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"state lacks the keys {missing} (a state_dict() has {list(_STATE_KEYS)})")
        cfg = state["config"]
        if not isinstance(cfg, dict):
            raise ValueError(f"state['config'] must be a dict, but got {type(cfg).__name__}")
        version = state["version"]
        keys = self._config_keys(version)
        missing = [k for k in keys if k not in cfg]
        if missing:
            raise ValueError(f"state['config'] lacks the keys {missing} (a state of {type(self).__name__} has {keys})")
        if cfg["class"] != type(self).__name__:
            raise ValueError(f"state was saved by {cfg['class']}, but this optimiser is {type(self).__name__}")
        self._check_domain(cfg, version)
        out = self._parse_config(cfg, version)
        shape = self.shape
        step = check_int(state["step"], _key("step"), minimum=0)
        out["_beta"] = check_array(state["beta"], _key("beta"), shape)
        out["_adam"] = AdamState(check_array(state["exp_avg"], _key("exp_avg"), shape),
                                 check_array(state["exp_avg_sq"], _key("exp_avg_sq"), shape, nonnegative=True), step)
        out["_momentum_buf"] = check_array(state["momentum_buffer"], _key("momentum_buffer"), shape)
        out["_step"] = step
        out["_pending"] = self._parse_pending(state["pending"])
        out["rng"] = self._parse_rng(state["rng"])
        return out

    def _config_keys(self, version: int) -> list[str]:
        keys = ["class", "shape", "lr", "betas", "eps", "update", "momentum", "total_steps"]
        return keys + ["domain", "lr_schedule"] if version >= 2 else keys

    def _check_domain(self, cfg: dict[str, Any], version: int) -> None:
        try:
            saved = Domain.from_dict(cfg["domain"]) if version >= 2 else Domain.of(tuple(cfg["shape"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{_key('config', 'domain' if version >= 2 else 'shape')} is not a domain: {e}") from e
        if saved != self.domain:
            if saved.simplex_only and self.domain.simplex_only:
                raise ValueError(f"state has shape {saved.simplex}, but this optimiser has shape {self.shape}")
            raise ValueError(f"state has domain {saved!r}, but this optimiser has domain {self.domain!r}")

    def _parse_config(self, cfg: dict[str, Any], version: int) -> dict[str, Any]:
        where = f" of {_key('config', 'betas')}"
        out: dict[str, Any] = {
            "lr": check_positive(cfg["lr"], _key("config", "lr")),
            "betas": _check_betas(cfg["betas"], where),
            "eps": _check_eps(cfg["eps"], _key("config", "eps")),
            "update": _check_update(cfg["update"], _key("config", "update")),
            "momentum": check_probability(cfg["momentum"], _key("config", "momentum")),
            "total_steps": check_positive_int(cfg["total_steps"], _key("config", "total_steps"), allow_none=True),
        }
        if version >= 2:
            out["_lr_schedule"] = self._parse_schedule(cfg["lr_schedule"], "lr_schedule", self._lr_schedule)
        return out

    @staticmethod
    def _parse_schedule(spec: Any, name: str, current: Schedule) -> Schedule:
        """The schedule a state's spec gives; a callable one keeps ``current``, which must
        then be a callable too."""
        schedule = schedule_from_spec(spec, name=_key("config", name))
        if schedule is not None:
            return schedule
        if type(current) in _BUILTIN_SCHEDULES:
            raise ValueError(f"{_key('config', name)} is a callable, which a state cannot hold: build this optimiser "
                             f"with that callable ({name}=...) before loading the state")
        return current

    def _parse_pending(self, pending: Any) -> Any:
        raise NotImplementedError

    def _parse_rng(self, rng_state: Any) -> dict[str, Any]:
        probe = type(self.rng.bit_generator)(0)
        try:
            probe.state = copy.deepcopy(rng_state)
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{_key('rng')} must be the state of a {type(probe).__name__} generator "
                             f"(rng.bit_generator.state), but got {rng_state!r:.120}") from e
        return dict(probe.state)


class _DirectionalOptimizer(_SimplexOptimizer):
    """Adds the direction sampler shared by SPSA and forward gradients."""

    def __init__(
        self,
        k: int | Sequence[int] | Domain,
        *,
        m: int = DEFAULT_M,
        directions: str = DEFAULT_DIRECTIONS,
        sum_zero: bool = DEFAULT_SUM_ZERO,
        orthogonal: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(k, **kwargs)
        self.m = check_positive_int(m, "m")
        self.directions = _check_directions(directions)
        self.sum_zero = bool(sum_zero)
        self.orthogonal = bool(orthogonal)
        # Fail now, not at the first ask(), if orthogonal directions cannot be drawn.
        sample_directions(np.random.default_rng(0), self.m, self.domain, kind=directions,
                          sum_zero=self.sum_zero, orthogonal=self.orthogonal)
        self.scale = estimator_scale(directions, self.domain, self.sum_zero)

    def _draw(self) -> FloatArray:
        return sample_directions(self.rng, self.m, self.domain, kind=self.directions,
                                 sum_zero=self.sum_zero, orthogonal=self.orthogonal)

    def _config(self) -> dict[str, Any]:
        cfg = super()._config()
        cfg.update(m=self.m, directions=self.directions, sum_zero=self.sum_zero, orthogonal=self.orthogonal)
        return cfg

    def _config_keys(self, version: int) -> list[str]:
        return super()._config_keys(version) + ["m", "directions", "sum_zero", "orthogonal"]

    def _parse_config(self, cfg: dict[str, Any], version: int) -> dict[str, Any]:
        if cfg["m"] != self.m:
            raise ValueError(f"state has m={cfg['m']}, but this optimiser has m={self.m}")
        out = super()._parse_config(cfg, version)
        out["directions"] = _check_directions(cfg["directions"], _key("config", "directions"))
        out["sum_zero"] = check_bool(cfg["sum_zero"], _key("config", "sum_zero"))
        out["orthogonal"] = check_bool(cfg["orthogonal"], _key("config", "orthogonal"))
        try:
            sample_directions(np.random.default_rng(0), self.m, self.domain, kind=out["directions"],
                              sum_zero=out["sum_zero"], orthogonal=out["orthogonal"])
        except ValueError as e:
            raise ValueError(f"state['config'] asks for directions that cannot be drawn: {e}") from e
        out["scale"] = estimator_scale(out["directions"], self.domain, out["sum_zero"])
        return out

    def _parse_directions(self, pending: dict[str, Any]) -> FloatArray:
        if "directions" not in pending:
            raise ValueError(f"{_key('pending')} must hold the pending 'directions', but has keys {sorted(pending)}")
        return check_array(pending["directions"], _key("pending", "directions"), (self.m, *self.shape))


class SimplexSPSA(_DirectionalOptimizer):
    """Two-point SPSA with Adam on the logits of one or several simplices (GLUE).

    Parameters
    ----------
    k:
        Number of vertices, a shape ``(groups, k)`` for one simplex per row, or a
        :class:`~spsa_mix.core.domain.Domain` with positive and real coordinates beside the
        weights (then points are flat vectors, see the module docstring).
    x0:
        Starting point, strictly positive, each row summing to one; default ``1/k``. With
        a domain, the whole flat point (default: ``1/k``, positive coordinates 1, real 0).
    m:
        Directions averaged per step (GLUE eq. 3); each step asks for ``2 m`` probes.
    lr, betas, eps:
        Adam's step size (``"auto"``, the default: :func:`auto_lr` of ``total_steps``, with a
        cosine decay when ``total_steps`` is known and no ``lr_schedule`` is given), moment
        decay rates and denominator offset.
    update:
        ``"adam"`` (default) or ``"sgd"`` (with ``momentum``).
    mu:
        Perturbation radius in logit space at step 0 (in ``log`` space for a positive
        coordinate). SPSA settles ``O(mu^2)`` from the optimum, which shows most in a
        learned positive coordinate (a scale up to about 1 % low at ``mu=0.05``);
        ``mu_schedule="cosine"`` removes it (``docs/directions.md``).
    mu_schedule, lr_schedule:
        ``"constant"``, ``"power"``, ``"cosine"`` or a callable of the step index that
        returns a factor (see :mod:`spsa_mix.core.schedules`).
    directions, sum_zero, orthogonal:
        The direction distribution (see :mod:`spsa_mix.core.directions`).
    total_steps:
        Planned number of steps, for ``"power"`` and ``"cosine"`` schedules.
    seed, rng:
        An integer seed or a ``numpy.random.Generator`` (not both).

    Example
    -------
    >>> opt = SimplexSPSA((2, 3), m=2, seed=0)
    >>> opt.ask().shape                          # 2 m probes, one simplex per row
    (4, 2, 3)
    """

    def __init__(
        self,
        k: int | Sequence[int] | Domain,
        *,
        mu: float = DEFAULT_MU,
        mu_schedule: str | Schedule | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(k, **kwargs)
        self.mu = check_positive(mu, "mu")
        self._mu_schedule = resolve_schedule(mu_schedule, name="mu_schedule", total_steps=self.total_steps)

    def current_mu(self) -> float:
        """The radius the next probes use."""
        return self.mu * evaluate_schedule(self._mu_schedule, self._step, name="mu_schedule")

    def ask(self) -> FloatArray:
        """The ``2 m`` probes of the next step, shape ``(2 m, *shape)`` (flat points of the
        domain with extra coordinates); calling it again before :meth:`tell` returns the
        same probes."""
        if self._pending is None:
            mu = self.current_mu()
            self._pending = {"directions": self._draw(), "mu": mu}
        u, mu = self._pending["directions"], self._pending["mu"]
        betas = np.empty((2 * self.m, *self.shape))
        betas[0::2] = self._beta + mu * u
        betas[1::2] = self._beta - mu * u
        return softmax(betas) if self.domain.simplex_only else self.domain.to_point(betas)

    def tell(self, losses: ArrayLike) -> StepInfo:
        """Update with the ``2 m`` losses of the probes from :meth:`ask`, in the same order.

        Raises ``NonFiniteLossError`` (a ``ValueError``), leaving the state unchanged, if
        a loss is NaN or infinite.
        """
        pending = self._require_pending()
        arr = self._check_losses(losses, 2 * self.m, "losses")
        u, mu = pending["directions"], pending["mu"]
        grad = two_point_gradient(arr[0::2], arr[1::2], u, mu=mu, scale=self.scale)
        return self._apply(grad, float(arr.sum()) / arr.size, mu)

    def _config(self) -> dict[str, Any]:
        cfg = super()._config()
        cfg["mu"] = self.mu
        cfg["mu_schedule"] = schedule_spec(self._mu_schedule)
        return cfg

    def _config_keys(self, version: int) -> list[str]:
        return super()._config_keys(version) + (["mu", "mu_schedule"] if version >= 2 else ["mu"])

    def _parse_config(self, cfg: dict[str, Any], version: int) -> dict[str, Any]:
        out = super()._parse_config(cfg, version)
        out["mu"] = check_positive(cfg["mu"], _key("config", "mu"))
        if version >= 2:
            out["_mu_schedule"] = self._parse_schedule(cfg["mu_schedule"], "mu_schedule", self._mu_schedule)
        return out

    def _parse_pending(self, pending: Any) -> Any:
        if pending is None:
            return None
        if not isinstance(pending, dict):
            raise ValueError(f"{_key('pending')} must be None or a dict of the pending probes, but got {pending!r:.80}")
        u = self._parse_directions(pending)
        if "mu" not in pending:
            raise ValueError(f"{_key('pending')} must hold the pending 'mu', but has keys {sorted(pending)}")
        return {"directions": u, "mu": check_positive(pending["mu"], _key("pending", "mu"))}


class SimplexForwardGradient(_DirectionalOptimizer):
    """Forward-gradient descent: SPSA's estimator with exact directional derivatives.

    ``ask()`` returns a :class:`ForwardProbe` (the current point and ``m`` tangents in alpha
    space); ``tell(loss, derivs)`` takes the loss at the point and the ``m`` directional
    derivatives ``<grad_alpha L, tangent_r>``. No radius, so no finite-difference bias.

    Example
    -------
    >>> import numpy as np
    >>> c = np.array([0.7, 0.2, 0.1])
    >>> opt = SimplexForwardGradient(3, seed=0, lr=0.05)
    >>> for _ in range(300):
    ...     alpha, t = opt.ask()
    ...     _ = opt.tell(((alpha - c) ** 2).sum(), t @ (2 * (alpha - c)))
    >>> bool(np.abs(opt.alpha - c).max() < 0.02)
    True
    """

    def ask(self) -> ForwardProbe:
        if self._pending is None:
            self._pending = {"directions": self._draw()}
        u = self._pending["directions"]
        if self.domain.simplex_only:
            alpha = self.alpha
            return ForwardProbe(alpha, softmax_jvp(alpha, u))
        return ForwardProbe(self.x, self.domain.jvp(self._beta, u))

    def tell(self, loss: float, derivs: ArrayLike) -> StepInfo:
        pending = self._require_pending()
        value = self._check_losses([loss], 1, "losses")[0]
        d = self._check_losses(derivs, self.m, "directional derivatives")
        grad = directional_gradient(d, pending["directions"], scale=self.scale)
        return self._apply(grad, float(value), 0.0)

    def _parse_pending(self, pending: Any) -> Any:
        if pending is None:
            return None
        if not isinstance(pending, dict):
            raise ValueError(f"{_key('pending')} must be None or a dict of the pending tangents, but got {pending!r:.80}")
        return {"directions": self._parse_directions(pending)}


class SimplexGradient(_SimplexOptimizer):
    """Adam on the logits with exact gradients (GLUE's Config 3 when they come from autograd).

    Example
    -------
    >>> import numpy as np
    >>> c = np.array([0.7, 0.2, 0.1])
    >>> opt = SimplexGradient(3, lr=0.05)
    >>> for _ in range(300):
    ...     a = opt.ask()
    ...     _ = opt.tell(((a - c) ** 2).sum(), 2 * (a - c))
    >>> bool(np.abs(opt.alpha - c).max() < 0.01)
    True
    """

    def ask(self) -> FloatArray:
        """The current point; :meth:`tell` takes the loss and the gradient there (of the
        point's shape: with extra coordinates, with respect to them too)."""
        self._pending = True
        return self.x

    def tell(self, loss: float, grad: ArrayLike) -> StepInfo:
        self._require_pending()
        value = self._check_losses([loss], 1, "losses")[0]
        g = real_array(grad)
        if g is None:
            raise ValueError(f"tell() expects a gradient of numbers, but got {type(grad).__name__}: {grad!r:.100}")
        if g.shape != self.shape:
            raise ValueError(f"tell() expects a gradient of shape {self.shape}, but got shape {g.shape}")
        self._check_losses(g.ravel(), g.size, "gradient entries")
        grad_beta = softmax_vjp(self.alpha, g) if self.domain.simplex_only else self.domain.vjp(self._beta, g)
        return self._apply(grad_beta, float(value), 0.0)

    def _parse_pending(self, pending: Any) -> Any:
        if pending is not None and pending is not True:
            raise ValueError(f"{_key('pending')} must be None or True, but got {pending!r:.80}")
        return pending
