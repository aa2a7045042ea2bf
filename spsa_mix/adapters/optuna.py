"""Optuna samplers under ``minimize(method="optuna:<sampler>")``.

``tpe`` (``TPESampler``), ``cmaes`` (``CmaEsSampler``), ``random`` (``RandomSampler``),
``qmc`` (``QMCSampler``, scrambled Sobol) and ``gp`` (``GPSampler``; it needs PyTorch,
which Optuna imports only when the sampler runs). The study runs through
``study.ask``/``study.tell`` with fixed distributions inside the core's run loop
(:mod:`spsa_mix.adapters._asktell`): same objective, budget (objective evaluations, never
exceeded), seed handling, result type and history as ``"spsa"``.

Optuna needs bounded distributions, so every free coordinate of the parametrisation
(:mod:`spsa_mix.adapters._parametrization`) is a ``FloatDistribution`` on a box: ``z`` in
``[1e-6, 2]`` normalised to sum to one (the default), stick-breaking fractions, or
softmax logits in ``[-bound, bound]``. The starting point ``x0`` (default: the uniform
point) is enqueued as the first trial, so every sampler, like SPSA, scores the uniform
blend first (``CmaEsSampler`` starts from the centre of the box, which is the uniform
point for the softmax and normalize parametrisations). The sampler's seed is drawn from
``rng``. ``options["batch_size"] = b`` asks ``b`` trials before telling them (Optuna then
samples the later ones of a batch without the earlier ones' results: TPE's
``constant_liar`` is on by default); with ``vectorized=True`` each batch is one call.

A :class:`~spsa_mix.core.domain.Domain` with coordinates beside the simplex adds one
distribution per extra coordinate, under its name in the domain: a positive coordinate is a
``FloatDistribution(lo, hi, log=True)`` of ``options["positive_bounds"]`` (Optuna's own
log-scale search, so the trial's parameter is the value itself), a real one a
``FloatDistribution(lo, hi)`` of ``options["real_bounds"]`` (see
:mod:`spsa_mix.adapters._parametrization` for the defaults and why).

``res.x`` is ``study.best_trial``, a point Optuna evaluated, so ``res.fun`` is its loss
and no evaluation is reserved. Optuna's logging is silenced during the run (see
:func:`_quiet`).

Options (``options={...}``)
---------------------------
``parametrization``
    ``"normalize"`` (default, measured below), ``"softmax"`` or ``"stick"``.
``bound``
    half-width of the box of the softmax logits (default 2, measured below).
``lower``
    lower end of the box for ``"normalize"`` and ``"stick"`` (default ``1e-6``).
``batch_size``
    trials asked before telling, default 1.
``sampler_kwargs``
    keyword arguments of the sampler (e.g. ``{"n_startup_trials": 5}``); ``seed`` is
    set from ``rng``.
``enqueue_x0``
    enqueue ``x0`` as the first trial (default ``True``).
``positive_bounds``, ``real_bounds``
    the boxes of the positive (default ``(1/8, 8)``, log scale) and real (default
    ``(-2, 2)``) coordinates of a domain that has them.

Choice of the default parametrisation (measured)
------------------------------------------------
Relative gap ``(f(x) - f*) / (f(1/k) - f*)`` of ``res.x`` on
``spsa_mix.problems.Quadratic.random`` (condition 10), optimum inside the simplex (``int``)
or on a face (``bnd``), budget 200 evaluations, median over 10 seeds (seed ``s`` draws
the quadratic and the optimiser), measured with::

    for optimum in interior boundary; do for k in 10 30; do
      spsa-mix bench compare --problem quadratic --k $k --budget 200 --seeds 10 \\
          --optimum $optimum --methods ...
    done; done

(the methods: optuna:tpe and optuna:cmaes with normalize, stick and softmax with bound 1, 2, 3, 5) gives

================  ==================  ========  ========  ========  ========  ==============
method            parametrization     int k=10  int k=30  bnd k=10  bnd k=30  geometric mean
================  ==================  ========  ========  ========  ========  ==============
``optuna:tpe``    **normalize**       0.049     0.415     0.112     0.494     0.183
``optuna:tpe``    stick               0.101     1.000     0.096     0.462     0.259
``optuna:tpe``    softmax, bound 1    0.019     0.426     0.243     0.550     0.180
``optuna:tpe``    softmax, bound 2    0.091     0.958     0.067     0.299     0.204
``optuna:tpe``    softmax, bound 3    0.295     1.000     0.066     0.244     0.262
``optuna:tpe``    softmax, bound 5    1.000     1.000     0.069     0.235     0.357
``optuna:cmaes``  **normalize**       0.030     0.272     0.132     0.451     0.148
``optuna:cmaes``  stick               0.575     1.000     0.392     0.674     0.624
``optuna:cmaes``  softmax, bound 1    0.031     0.237     0.248     0.515     0.175
``optuna:cmaes``  softmax, bound 2    0.072     0.589     0.071     0.267     0.169
``optuna:cmaes``  softmax, bound 3    0.116     0.966     0.055     0.177     0.181
``optuna:cmaes``  softmax, bound 5    0.723     1.000     0.057     0.210     0.305
================  ==================  ========  ========  ========  ========  ==============

``normalize`` is the default: best for CMA-ES and tied with the softmax in ``[-1, 1]`` for
TPE. The softmax box is a trade-off: with a wide box (5) no trial improved on the uniform
start when the optimum is inside (1.000), while a narrow one (1) cannot reach the faces
(two weights differ by at most a factor ``e^2``); its default ``bound`` is 2, the best
compromise of the two samplers. A value of 1.000 means no trial beat the uniform start within the budget.

Example
-------
>>> import numpy as np, spsa_mix
>>> from spsa_mix.problems import Quadratic
>>> q = Quadratic.random(3, rng=0)
>>> res = spsa_mix.minimize(q, k=3, method="optuna:random", max_evals=30, seed=0)
>>> res.nfev, bool(res.fun <= q(np.full(3, 1 / 3)))
(30, True)
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spsa_mix.adapters._asktell import (
    Parametrization,
    batch_size_of,
    make_parametrization,
    options_for,
    parse_options,
    run_ask_tell,
)
from spsa_mix.adapters._parametrization import (
    DEFAULT_LOWER,
    DEFAULT_POSITIVE_BOUNDS,
    DEFAULT_REAL_BOUNDS,
    DomainParametrization,
)
from spsa_mix.core.domain import Domain
from spsa_mix.core.methods import MethodSpec
from spsa_mix.core.result import OptimizeResult

__all__ = ["method_spec", "SAMPLERS", "DEFAULT_OPTIONS"]

FloatArray = NDArray[np.float64]

SAMPLERS: dict[str, str] = {
    "tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "random": "RandomSampler",
    "qmc": "QMCSampler",
    "gp": "GPSampler",
}
DEFAULT_OPTIONS: dict[str, Any] = {
    "parametrization": "normalize",  # measured, see the module docstring
    "bound": 2.0,  # softmax logits in [-2, 2], measured, see the module docstring
    "lower": DEFAULT_LOWER,
    "batch_size": 1,
    "sampler_kwargs": None,
    "enqueue_x0": True,
    "positive_bounds": DEFAULT_POSITIVE_BOUNDS,  # see spsa_mix.adapters._parametrization
    "real_bounds": DEFAULT_REAL_BOUNDS,
}
_SAMPLER_DEFAULTS: dict[str, dict[str, Any]] = {
    "qmc": {"scramble": True},  # unscrambled Sobol ignores the seed (Optuna's default is False)
}


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as e:  # pragma: no cover - the adapters extra is installed in tests
        raise ImportError("method='optuna:...' needs optuna: pip install 'spsa-mix[adapters]'") from e
    return optuna


def method_spec(suffix: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``"optuna:<suffix>"``.

    >>> method_spec("tpe").name
    'optuna:tpe'
    >>> method_spec("TPE")
    Traceback (most recent call last):
    ...
    ValueError: unknown Optuna sampler 'TPE' in method 'optuna:TPE'; available: ['tpe', 'cmaes', 'random', 'qmc', 'gp']
    """
    if suffix not in SAMPLERS:
        raise ValueError(f"unknown Optuna sampler {suffix!r} in method 'optuna:{suffix}'; available: {list(SAMPLERS)}")
    return MethodSpec(
        name=f"optuna:{suffix}",
        run=functools.partial(_run, sampler=suffix),
        options=frozenset({"x0", "options"}),
        final_eval=False,  # the answer is the best trial: always evaluated
        cost_per_step=batch_size_of,
        description=f"Optuna {SAMPLERS[suffix]} through study.ask/tell on a parametrisation of the simplex",
        domains=True,
        resumable=True,  # by replay (spsa_mix.adapters._asktell)
    )


def make_sampler(name: str, *, seed: int, **kwargs: Any) -> Any:
    """The Optuna sampler ``name`` (a key of :data:`SAMPLERS`) seeded with ``seed``.

    >>> type(make_sampler("tpe", seed=0)).__name__
    'TPESampler'
    """
    optuna = _import_optuna()
    if name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {list(SAMPLERS)}, but got {name!r}")
    kwargs = {**_SAMPLER_DEFAULTS.get(name, {}), **kwargs}
    cls = getattr(optuna.samplers, SAMPLERS[name])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # QMC, GP
            return cls(seed=seed, **kwargs)
    except TypeError as e:
        raise ValueError(f"options['sampler_kwargs'] do not fit optuna.samplers.{cls.__name__}: {e}") from e


def param_names(dim: int) -> list[str]:
    """Names of the free coordinates, zero-padded so that sorting keeps their order.

    >>> param_names(11)[:2], param_names(11)[-1]
    (['z00', 'z01'], 'z10')
    """
    width = len(str(max(dim - 1, 0)))
    return [f"z{i:0{width}d}" for i in range(dim)]


class _OptunaBackend:
    """One in-memory study; each free coordinate is a ``FloatDistribution`` on a box (a
    positive coordinate of a domain on a log scale: its parameter is ``s``, its free
    coordinate ``log s``)."""

    def __init__(self, sampler: Any, param: Parametrization, z0: FloatArray, *, enqueue: bool) -> None:
        optuna = _import_optuna()
        Float = optuna.distributions.FloatDistribution
        simplex = param.simplex if isinstance(param, DomainParametrization) else param
        self.names = param_names(simplex.dim)
        assert simplex.bounds is not None  # make_parametrization gives Optuna a bounded softmax
        low, high = simplex.bounds
        self.distributions = {n: Float(low, high) for n in self.names}
        self.log = np.zeros(param.dim, dtype=bool)  # free coordinate = log(parameter)
        if isinstance(param, DomainParametrization):
            taken = set(self.names)
            extras = [n if n not in taken else f"extra_{n}" for n in param.domain.names]
            for i, name in enumerate(extras):
                positive = i < param.domain.positive
                lo, hi = param.positive_bounds if positive else param.real_bounds
                self.distributions[name] = Float(lo, hi, log=positive)
            self.log[simplex.dim : simplex.dim + param.domain.positive] = True
            self.names = self.names + extras
        self.study = optuna.create_study(sampler=sampler, direction="minimize")
        if enqueue:
            values = np.array(z0, dtype=np.float64)
            values[self.log] = np.exp(values[self.log])
            self.study.enqueue_trial({n: self._in_box(n, float(v)) for n, v in zip(self.names, values, strict=True)})

    def _in_box(self, name: str, value: float) -> float:
        """``value`` within its distribution (``exp(log s)`` may leave it by an ulp)."""
        d = self.distributions[name]
        return min(max(value, d.low), d.high)

    def _free(self, params: dict[str, float]) -> FloatArray:
        values = np.array([params[name] for name in self.names], dtype=np.float64)
        values[self.log] = np.log(values[self.log])
        return values

    def ask(self, n: int) -> tuple[list[Any], FloatArray]:
        trials = [self.study.ask(self.distributions) for _ in range(n)]
        z = np.array([self._free(t.params) for t in trials], dtype=np.float64)
        return trials, z.reshape(n, len(self.names))

    def tell(self, handles: list[Any], losses: FloatArray) -> None:
        for trial, loss in zip(handles, losses, strict=True):
            self.study.tell(trial, float(loss))

    def recommend(self) -> FloatArray | None:
        try:
            best = self.study.best_trial
        except ValueError:  # no completed trial yet
            return None
        return self._free(best.params)

    def close(self) -> None:
        """Nothing to release (an in-memory study)."""


@contextmanager
def _quiet() -> Iterator[None]:
    """Optuna logs every trial at INFO, advice about optional packages at WARNING (GP
    without ``greenlet``), and warns that QMC and GP are experimental: all silenced during
    the run, unless the ``spsa_mix`` logger is at DEBUG."""
    optuna = _import_optuna()
    level = optuna.logging.get_verbosity()
    if not logging.getLogger("spsa_mix").isEnabledFor(logging.DEBUG):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def _run(objective: Callable[..., Any], shape: tuple[int, ...] | Domain, *, sampler: str,
         rng: np.random.Generator, run_kwargs: dict[str, Any], final_eval: bool, total_steps: int | None,
         x0: Any = None, options: dict[str, Any] | None = None) -> OptimizeResult:
    opts = parse_options(options, method=f"optuna:{sampler}", allowed=options_for(shape, DEFAULT_OPTIONS))
    batch_size = batch_size_of({"options": opts})
    if opts["bound"] is None:
        raise ValueError("options['bound'] must be a positive number for Optuna (its distributions are bounded), "
                         "but got None")
    param = make_parametrization(shape, opts)
    sampler_kwargs = dict(opts["sampler_kwargs"] or {})
    if "seed" in sampler_kwargs:
        raise ValueError(f"options['sampler_kwargs'] must not set seed (it comes from seed/rng), "
                         f"but got seed={sampler_kwargs['seed']!r}")
    seed = int(rng.integers(2**31 - 1))

    def make_backend(param: Parametrization, z0: FloatArray, budget: int) -> _OptunaBackend:
        s = make_sampler(sampler, seed=seed, **sampler_kwargs)
        return _OptunaBackend(s, param, z0, enqueue=bool(opts["enqueue_x0"]))

    return run_ask_tell(objective, shape, make_backend=make_backend, param=param, x0=x0, batch_size=batch_size,
                        run_kwargs=run_kwargs, final_eval=final_eval, quiet=_quiet)
