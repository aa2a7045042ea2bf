"""Nevergrad optimizers under ``minimize(method="nevergrad:<name>")``.

Any optimizer of ``nevergrad.optimizers.registry`` (``NGOpt``, ``CMA``, ``TwoPointsDE``,
``OnePlusOne``, ``PSO``, ...) runs through its ask/tell interface inside the core's run
loop (:mod:`spsa_mix.adapters._asktell`): the same objective, budget (objective
evaluations, never exceeded), seed handling, result type and history as ``"spsa"``.

The simplex is searched through a parametrisation (``options["parametrization"]``, see
:mod:`spsa_mix.adapters._parametrization`; default the unbounded softmax logits); the search
starts at ``x0`` (default: the uniform point). A noisy objective (minibatches) should say so,
``options={"noisy": True}``, as Nevergrad's documentation asks. ``options["batch_size"] = b`` creates the optimizer with
``num_workers=b`` and asks ``b`` candidates before telling them; with
``vectorized=True`` each batch is one call of the objective. The random state of the
parametrisation is seeded from ``rng`` only; same seed, same run. NumPy's global random
state is left as it was, and does not change the run: importing Nevergrad draws from it
(kept, see :func:`_import_nevergrad`), and a Nevergrad parameter without a random state
seeds one from the global generator the first time it is used
(``Parameter.random_state`` in ``nevergrad/parametrization/core.py``), which the
constructor of the parametrisation does, and so do the internal parametrisations of some
optimizers (the recast SciPy solvers NGOpt picks on unbounded spaces) during the run. So
for the duration of a run the global state is seeded from ``rng``, and restored at the end
(the parametrisation itself gets a ``RandomState`` seeded from ``rng`` before anything is
drawn); a thread of the caller that draws from the global generator during a run sees the
run's seeding.

A :class:`~spsa_mix.core.domain.Domain` with coordinates beside the simplex is searched as
``ng.p.Tuple(simplex, extras)``: the simplex's parametrisation as above, and an
``ng.p.Array`` of the extra coordinates bounded by ``options["positive_bounds"]`` (in
``log`` space) and ``options["real_bounds"]`` (see
:mod:`spsa_mix.adapters._parametrization` for the defaults and why).

Nevergrad may recommend a point it never evaluated (the centre of TBPSA or of an EDA, the
average of its SPSA, NGOpt delegating to such an optimizer), which cannot be known before
the run, so one evaluation is reserved (``final_eval=True``) and spent only when the
recommendation was never evaluated; with ``final_eval=False`` the best evaluated point is
returned instead of an unevaluated recommendation.

Options (``options={...}``)
---------------------------
``parametrization``
    ``"softmax"`` (default: the unbounded logits, Nevergrad's prior; measured below),
    ``"normalize"`` or ``"stick"``.
``bound``
    half-width of the box of the softmax logits (default ``None``: unbounded).
``lower``
    lower end of the box for ``"normalize"`` and ``"stick"`` (default ``1e-6``).
``batch_size``
    points asked per round (``num_workers``), default 1.
``noisy``
    tell Nevergrad the objective is stochastic (``parametrization.function.deterministic =
    False``), as its documentation asks for noisy functions: NGOpt then picks an optimizer
    that handles noise (on 10 weights and 400 evaluations, a chain of a CMA/PSO/DE portfolio
    and a noisy (1+1), instead of COBYLA or a meta-model), and recommends by averaged values
    instead of the best single one. An objective on minibatches is noisy. Default ``False``
    (Nevergrad's default).
``positive_bounds``, ``real_bounds``
    the boxes of the positive (default ``(1/8, 8)``, searched in ``log`` space) and real
    (default ``(-2, 2)``) coordinates of a domain that has them.

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

(the methods: nevergrad:NGOpt@parametrization=softmax, normalize or stick, and the same for nevergrad:CMA) gives

==================  ===============  ========  ========  ========  ========  ==============
method              parametrization  int k=10  int k=30  bnd k=10  bnd k=30  geometric mean
==================  ===============  ========  ========  ========  ========  ==============
``nevergrad:NGOpt`` softmax          0.007     0.151     0.093     0.259     0.071
``nevergrad:NGOpt`` **normalize**    0.001     0.047     0.091     0.206     0.028
``nevergrad:NGOpt`` stick            0.000     0.066     0.049     0.233     0.024
``nevergrad:CMA``   softmax          0.056     0.330     0.050     0.171     0.112
``nevergrad:CMA``   **normalize**    0.008     0.189     0.068     0.466     0.082
``nevergrad:CMA``   stick            0.026     0.341     0.053     0.239     0.103
==================  ===============  ========  ========  ========  ========  ==============

On these quadratics, whose optimum lies near the uniform start, ``normalize`` was best for
CMA and within the seed-to-seed spread of ``stick`` for NGOpt. It was the default until it
was measured on a blended network (``benchmarks/results/nevergrad_choice.md``: K=10 digits
experts, minibatch objective, 400 evaluations): there the box ``[1e-6, 2]^K`` makes NGOpt pick
COBYLA and CMA its bounded variant, both with steps small against the box, and ``z / sum(z)``
divides each move by about K: the asked points stay within L1 0.1-0.15 of the uniform point
and the answer's loss is the uniform blend's (1.62 against 1.634; the best single expert's is
1.20). On the unbounded softmax logits, the centred and reduced prior Nevergrad's optimizers
assume ("How to perform optimization" in its documentation), CMA reaches 0.76 and NGOpt 0.81.
The bounded box also changes what NGOpt selects at other budgets (a meta-model over CMA at
1000 evaluations), which is why its cost per evaluation through ``minimize`` differed from
``benchmarks/overhead.py``'s raw loop on an unbounded array. ``"softmax"`` (unbounded) is
therefore the default: Nevergrad as its documentation runs it. ``normalize`` and ``stick``
stay one option away.

Example
-------
>>> import numpy as np, spsa_mix
>>> from spsa_mix.problems import Quadratic
>>> q = Quadratic.random(4, rng=0)
>>> res = spsa_mix.minimize(q, k=4, method="nevergrad:OnePlusOne", max_evals=60, seed=0)
>>> res.nfev <= 60, bool(res.fun < q(np.full(4, 0.25)))
(True, True)
"""

from __future__ import annotations

import builtins
import difflib
import functools
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

__all__ = ["method_spec", "DEFAULT_OPTIONS"]

FloatArray = NDArray[np.float64]

DEFAULT_OPTIONS: dict[str, Any] = {
    "parametrization": "softmax",  # Nevergrad's own prior (unbounded, start 0, sigma 1); measured, module docstring
    "bound": None,  # softmax logits unbounded: Nevergrad's own Array(init=0, sigma=1)
    "lower": DEFAULT_LOWER,
    "batch_size": 1,  # sequential: ask one, tell one
    "noisy": False,  # Nevergrad's own default: a deterministic function (see the module docstring)
    "positive_bounds": DEFAULT_POSITIVE_BOUNDS,  # see spsa_mix.adapters._parametrization
    "real_bounds": DEFAULT_REAL_BOUNDS,
}
_POPULAR = ("NGOpt", "CMA", "TwoPointsDE", "OnePlusOne", "PSO", "DE", "RandomSearch", "NGOptBase")


def _import_nevergrad() -> Any:
    """``nevergrad``, imported with NumPy's global random state kept: importing it draws
    from the global generator (module-level optimizer configurations build parameters)."""
    state = np.random.get_state()  # noqa: NPY002 - the legacy global state Nevergrad draws from
    try:
        import nevergrad
    except ImportError as e:  # pragma: no cover - the adapters extra is installed in tests
        raise ImportError("method='nevergrad:...' needs nevergrad: pip install 'spsa-mix[adapters]'") from e
    finally:
        np.random.set_state(state)  # noqa: NPY002
    return nevergrad


def method_spec(suffix: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``"nevergrad:<suffix>"``.

    >>> method_spec("CMA").name
    'nevergrad:CMA'
    >>> method_spec("CMAA")
    Traceback (most recent call last):
    ...
    ValueError: unknown Nevergrad optimizer 'CMAA' in method 'nevergrad:CMAA'; close names: ['CMA', ...
    """
    ng = _import_nevergrad()
    registry = ng.optimizers.registry
    if suffix not in registry:
        close = difflib.get_close_matches(suffix, list(registry), n=5, cutoff=0.6)
        raise ValueError(
            f"unknown Nevergrad optimizer {suffix!r} in method 'nevergrad:{suffix}'; close names: {close}; "
            f"common ones: {list(_POPULAR)}; all {len(registry)} names: sorted(nevergrad.optimizers.registry)"
        )
    return MethodSpec(
        name=f"nevergrad:{suffix}",
        run=functools.partial(_run, optimizer=suffix),
        options=frozenset({"x0", "options"}),
        final_eval=True,
        cost_per_step=batch_size_of,
        description=f"Nevergrad {suffix} through ask/tell on a parametrisation of the simplex",
        domains=True,
        resumable=True,  # by replay (spsa_mix.adapters._asktell)
    )


@contextmanager
def _numpy_global_state(seed: int) -> Iterator[None]:
    """NumPy's global random state seeded with ``seed``, and restored on exit (see the
    module docstring)."""
    state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what Nevergrad draws from
    np.random.seed(seed)  # noqa: NPY002
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _array(ng: Any, z0: FloatArray, bounds: tuple[Any, Any] | None) -> Any:
    return ng.p.Array(init=z0) if bounds is None else ng.p.Array(init=z0, lower=bounds[0], upper=bounds[1])


class _NevergradBackend:
    """One Nevergrad optimizer on ``ng.p.Array`` of the free coordinates (a ``ng.p.Tuple``
    of the simplex's and the extra coordinates' arrays for a domain that has some)."""

    def __init__(self, optimizer: str, param: Parametrization, z0: FloatArray, budget: int,
                 *, batch_size: int, seed: int, noisy: bool = False) -> None:
        ng = _import_nevergrad()
        if isinstance(param, DomainParametrization):
            split = param.simplex.dim
            parametrization = ng.p.Tuple(_array(ng, z0[:split], param.simplex.bounds),
                                         _array(ng, z0[split:], param.extra_bounds))
        else:
            parametrization = _array(ng, z0, param.bounds)
        parametrization.random_state = np.random.RandomState(seed)  # before anything is drawn
        if noisy:
            parametrization.function.deterministic = False  # read by NGOpt when it chooses
        self.opt = ng.optimizers.registry[optimizer](parametrization=parametrization, budget=budget,
                                                     num_workers=batch_size)

    @staticmethod
    def _flat(value: Any) -> FloatArray:
        if isinstance(value, tuple):
            return np.concatenate([np.asarray(v, dtype=np.float64).reshape(-1) for v in value])
        return np.asarray(value, dtype=np.float64)

    def ask(self, n: int) -> tuple[list[Any], FloatArray]:
        candidates = [self.opt.ask() for _ in range(n)]
        return candidates, np.stack([self._flat(c.value) for c in candidates])

    def tell(self, handles: list[Any], losses: FloatArray) -> None:
        for candidate, loss in zip(handles, losses, strict=True):
            self.opt.tell(candidate, float(loss))

    def recommend(self) -> FloatArray | None:
        if self.opt.num_tell == 0:
            return None
        return self._flat(self.opt.provide_recommendation().value)

    def close(self) -> None:
        """Stop the threads of Nevergrad's recast optimizers (SciPy's Cobyla, Powell,
        SQP...; NGOpt picks them for some spaces and budgets). Each runs its solver in a
        non-daemon thread that waits for the next tell; it is stopped only when the
        optimizer is garbage-collected, so an exception that keeps the run's frames alive
        (an ``ObjectiveError`` held by the caller) would otherwise keep the interpreter
        from exiting."""
        base = _import_nevergrad().optimizers.base
        stack, seen = [self.opt], set()
        while stack:
            opt = stack.pop()
            if id(opt) in seen:
                continue
            seen.add(id(opt))
            thread = getattr(opt, "_messaging_thread", None)
            if thread is not None:
                thread.stop()
            for value in vars(opt).values():
                items = value if isinstance(value, (list, tuple)) else [value]
                stack.extend(v for v in items if isinstance(v, base.Optimizer))


def _size_one_float(value: Any) -> float:
    """``float(x)`` that also takes an array of one element (NumPy < 2.4 behaviour).

    >>> _size_one_float(np.array([2.5]))
    2.5
    """
    return builtins.float(np.asarray(value).reshape(-1)[0]) if np.size(value) == 1 else builtins.float(value)


@contextmanager
def _metamodel_numpy_compat() -> Iterator[None]:
    """Let Nevergrad 1.0.12's meta-model run under NumPy >= 2.4.

    ``nevergrad.optimization.metamodel.learn_on_k_best`` calls ``float()`` on the
    one-element array returned by a scikit-learn ``predict``, a ``TypeError`` since NumPy
    2.4; NGOpt picks that meta-model for small dimensions, and the error also leaves the
    Powell thread of the recast optimizer waiting, so the interpreter hangs at exit. For
    the duration of a run, ``float`` in that module accepts one-element arrays again.
    """
    from nevergrad.optimization import metamodel

    if "float" in vars(metamodel):  # patched already (nested run) or fixed upstream
        yield
        return
    metamodel.float = _size_one_float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        del metamodel.float  # type: ignore[attr-defined]


class _NumpyWithOwnRandom:
    """NumPy with ``random`` replaced by another generator (for one module's draws)."""

    def __init__(self, random: np.random.RandomState) -> None:
        self.random = random

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


@contextmanager
def _reproducible_recast() -> Iterator[None]:
    """Make NGOpt's meta-model over pycma reproducible, for the duration of a run.

    In small dimensions with a few hundred evaluations NGOpt runs
    ``ParametrizedMetaModel(multivariate_optimizer=CmaFmin2)``: a recast ``cma.fmin`` in a
    background thread. Two things made the same seed give another run each time:

    * Nevergrad calls ``cma.fmin`` without a ``seed`` option, and pycma then seeds NumPy's
      global generator from the clock (``CMAEvolutionStrategy.__init__``) and draws its
      samples from it.
    * The global generator is shared by the two threads: pycma's samples in the
      background, the main thread's meta-model (``metamodel.learn_on_k_best``) and the
      parameters of both threads that seed their random state from it
      (``Parameter.random_state``), in an order that depends on the threads' timing.

    So here ``cma.fmin`` samples from a generator of its own (its ``randn`` option, with
    ``seed=nan``, which leaves the global generator alone) and the meta-model draws from
    another. Both are seeded from the global state, which the run has seeded from ``rng``,
    without advancing it.
    """
    try:
        import cma
    except ImportError:  # pragma: no cover - a dependency of nevergrad
        cma = None
    from nevergrad.optimization import metamodel

    if isinstance(metamodel.np, _NumpyWithOwnRandom):  # a nested run: patched already
        yield
        return
    state = np.random.get_state()  # noqa: NPY002 - the run's seeding of the legacy global state
    key = state[1] if isinstance(state, tuple) else state["state"]["key"]  # the Mersenne Twister's key
    seeds = np.random.RandomState(key[::-1].copy())  # noqa: NPY002 - Nevergrad and pycma take RandomState
    real_np, real_fmin = metamodel.np, getattr(cma, "fmin", None)

    def fmin(*args: Any, options: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        options = dict(options or {})
        if "seed" not in options and "randn" not in options:
            own = np.random.RandomState(int(seeds.randint(1, 2**31 - 1)))  # noqa: NPY002 - as pycma's default
            options.update(randn=own.randn, seed=np.nan)  # NaN: pycma leaves the global generator alone
        return real_fmin(*args, options=options, **kwargs)  # type: ignore[misc]

    metamodel.np = _NumpyWithOwnRandom(np.random.RandomState(key))  # noqa: NPY002
    if cma is not None:
        cma.fmin = functools.wraps(real_fmin)(fmin)  # type: ignore[arg-type]
    try:
        yield
    finally:
        metamodel.np = real_np
        if cma is not None:
            cma.fmin = real_fmin


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence Nevergrad's advice about settings (e.g. ``num_workers`` for a sequential
    optimizer, a sub-optimizer finishing its budget): the adapter chose them knowingly;
    and the warnings of the SciPy solvers Nevergrad runs internally (overflows in the
    Powell search on its meta-model, COBYLA's settings) and of pycma about solutions Nevergrad
    injects. Also applies :func:`_metamodel_numpy_compat` and :func:`_reproducible_recast`."""
    ng = _import_nevergrad()
    with warnings.catch_warnings(), _metamodel_numpy_compat(), _reproducible_recast():
        warnings.simplefilter("ignore", ng.errors.InefficientSettingsWarning)
        warnings.simplefilter("ignore", ng.errors.FinishedUnderlyingOptimizerWarning)
        # SciPy solvers Nevergrad runs internally (Powell on a meta-model, COBYLA) warn about
        # overflows and their own settings
        warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"scipy\.")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"scipy\.")
        # pycma (behind Nevergrad's CMA) when Nevergrad injects its own candidates
        warnings.filterwarnings("ignore", message="orphanated injected solution")
        yield


def _run(objective: Callable[..., Any], shape: tuple[int, ...] | Domain, *, optimizer: str,
         rng: np.random.Generator, run_kwargs: dict[str, Any], final_eval: bool, total_steps: int | None,
         x0: Any = None, options: dict[str, Any] | None = None) -> OptimizeResult:
    opts = parse_options(options, method=f"nevergrad:{optimizer}", allowed=options_for(shape, DEFAULT_OPTIONS))
    batch_size = batch_size_of({"options": opts})
    param = make_parametrization(shape, opts)
    if not isinstance(opts["noisy"], bool):
        raise ValueError(f"options['noisy'] must be True or False, but got {opts['noisy']!r}")
    seed = int(rng.integers(2**32 - 1))
    global_seed = int(rng.integers(2**32 - 1))  # drawn after seed: the parametrisation's seed is as before

    @contextmanager
    def run_context() -> Iterator[None]:
        with _numpy_global_state(global_seed), _quiet():
            yield

    def make_backend(param: Parametrization, z0: FloatArray, budget: int) -> _NevergradBackend:
        return _NevergradBackend(optimizer, param, z0, budget, batch_size=batch_size, seed=seed, noisy=opts["noisy"])

    return run_ask_tell(objective, shape, make_backend=make_backend, param=param, x0=x0, batch_size=batch_size,
                        run_kwargs=run_kwargs, final_eval=final_eval, quiet=run_context)
