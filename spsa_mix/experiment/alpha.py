"""Every way to set the mixing weights alpha, one function per table row.

=================  ===========================================================  =============
name               how alpha is set                                             seed varies
=================  ===========================================================  =============
``data-size``      GLUE Config 1: ``alpha_i ∝ n_i`` (expert split sizes)        nothing
``proxy-accuracy`` GLUE Config 2: ``alpha_i ∝`` expert i's held-out accuracy    nothing
``backprop``       GLUE Config 3: Adam on softmax logits, exact gradients       minibatches
``spsa``           GLUE Config 4: two-point SPSA, ``m`` directions per step     minibatches, directions
``forward-grad``   SPSA's estimator with exact jvps (forward-mode AD)           minibatches, directions
``uniform``        ``alpha_i = 1/K``                                            nothing
``best-single``    one-hot on the expert with the best held-out accuracy        nothing
``greedy-soup``    Wortsman et al. 2022 on held-out accuracy                    nothing
``sail``           SAIL (Theorem 3): MMDs between expert and target features    nothing
``nevergrad``      ``minimize(method="nevergrad:<optimizer>")`` (NGOpt), noise  minibatches, optimiser
                   declared (``options={"noisy": True}``)
``optuna``         ``minimize(method="optuna:<sampler>")`` (TPE)                minibatches, sampler
``spsa-defaults``  ``minimize(objective, k, max_evals=budget)``: the library's  minibatches, directions
                   defaults (``lr="auto"``, ``start="auto"``: the uniform
                   point and the vertices checked first, Rademacher directions)
``task-            task arithmetic (Ilharco et al. 2023): uniform weights on    nothing
arithmetic``       the task vectors over the base, the scale chosen from
                   :data:`TASK_SCALES` on held-out accuracy
``task-vectors``   the weights and the scale of the task vectors learned        minibatches, directions
                   together (``scale="learned"``, SPSA with the defaults)
=================  ===========================================================  =============

The task-vector rows blend ``theta = theta_base + s * sum_i alpha_i (theta_i - theta_base)``
(:class:`~spsa_mix.blend.BlendedObjective` with ``space="task-vectors"``) over a base:
the experts' shared initialisation in the Dirichlet protocol, a pretrained model when the
experts were fine-tuned from one. Their ``alpha`` is the weights (on the simplex) and
``scale`` the scale; ``s = 1`` is the convex blend.

Budgets. ``spsa``, ``nevergrad`` and ``optuna`` get the same ``max_evals`` (forward
passes on target minibatches, one reserved for scoring the answer). ``backprop`` and
``forward-grad`` run as many steps as GLUE does, on the same minibatch sequence (GLUE 5:
"the same mini-batch schedule as GLUE"); their cost is what those steps cost in the
core's currency (a backward pass counts 2, a jvp 1 per direction). Held-out based
methods count one evaluation per model scored on the whole held-out split. ``images``
converts every cost to images forwarded (cost times batch or split size).

Features for SAIL (``sail_features``): ``"pixels"`` (the default) uses the normalised
input images, flattened: the distributions compared are the experts' training inputs and
the target inputs, exactly what SAIL's MMDs are defined on, with no reference network to
choose, and no forward pass. ``"penultimate"`` uses the inputs of the last linear layer
of the uniform blend theta(1/K), a reference network that favours no expert. At most
``sail_max_points`` images per distribution are used (the MMD is quadratic in them).

Example
-------
>>> sorted(SEED_DEPENDENT)
['backprop', 'forward-grad', 'nevergrad', 'optuna', 'spsa', 'spsa-defaults', 'task-vectors']
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["AlphaProblem", "AlphaResult", "set_alpha", "SEED_DEPENDENT", "CONFIG_FUNCTIONS", "spsa_steps",
           "TASK_SCALES"]

FloatArray = NDArray[np.float64]
SEED_DEPENDENT = frozenset({"backprop", "spsa", "forward-grad", "nevergrad", "optuna", "spsa-defaults",
                            "task-vectors"})
TASK_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0)  # ours: task arithmetic's scale grid, chosen on held-out accuracy


@dataclass
class AlphaProblem:
    """What the ways to set alpha draw on (the pipeline builds it from the experts).

    Attributes
    ----------
    k:
        Number of experts.
    make_objective:
        ``make_objective(seed)``: a fresh vectorized objective on target minibatches
        whose order comes from ``seed`` (a :class:`~spsa_mix.blend.BlendedObjective`).
    sizes:
        Images each expert was trained on.
    expert_holdout_accuracy:
        Each expert's accuracy on the held-out target split.
    holdout_accuracy:
        ``holdout_accuracy(alpha)``: accuracy of theta(alpha) on the held-out split.
    sail_features:
        ``sail_features()`` -> (list of ``(n_i, p)`` expert feature arrays, ``(n, p)``
        target features, forward passes spent).
    budget, m, directions, lr, betas, batch_size, holdout_size:
        Forward-pass budget, directions per step and their distribution, Adam settings on alpha, images per
        objective call and in the held-out split.
    nevergrad_optimizer, optuna_sampler:
        The library method names.
    sail_max_points:
        Points per distribution in SAIL's MMDs.
    progress:
        Progress bars for learning alpha.
    make_task_vector_objective, task_vector_holdout_accuracy:
        ``make_task_vector_objective(seed, scale)``: the objective of the task-vector blend over
        the base with ``scale`` a number or ``"learned"``; ``task_vector_holdout_accuracy(alpha,
        scale)``: its held-out accuracy. ``None`` when there is no base (the task-vector rows
        then fail with a message).
    """

    k: int
    make_objective: Callable[[int], Any]
    sizes: Sequence[int]
    expert_holdout_accuracy: Sequence[float]
    holdout_accuracy: Callable[[FloatArray], float]
    sail_features: Callable[[], tuple[list[FloatArray], FloatArray, int]]
    budget: int = 400
    m: int = 1
    directions: str = "normalized-gaussian"
    lr: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.99)
    batch_size: int = 64
    holdout_size: int = 100
    nevergrad_optimizer: str = "NGOpt"
    optuna_sampler: str = "tpe"
    sail_max_points: int = 500
    progress: bool = False
    make_task_vector_objective: Callable[[int, Any], Any] | None = None
    task_vector_holdout_accuracy: Callable[[FloatArray, float], float] | None = None


@dataclass
class AlphaResult:
    """A configuration's alpha and what it cost.

    ``evaluations`` is in the unit of ``eval_unit``; ``images`` converts it to images
    forwarded; ``details`` holds method-specific records (the optimiser's loss history,
    the greedy soup's decisions, SAIL's distances); ``scale`` is set by the task-vector rows.
    """

    alpha: FloatArray
    evaluations: float
    images: float
    eval_unit: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    scale: float | None = None  # the task-vector rows: theta = base + scale * sum_i alpha_i (theta_i - base)


def spsa_steps(budget: int, m: int) -> int:
    """Steps SPSA takes on ``budget`` evaluations (``2 m`` each, one reserved).

    >>> spsa_steps(400, 1), spsa_steps(400, 4)
    (199, 49)
    """
    return max((budget - 1) // (2 * m), 1)


def _minimize(problem: AlphaProblem, method: str, seed: int, *, objective: Any = None, **kwargs: Any) -> AlphaResult:
    import spsa_mix
    from spsa_mix.core.result import Status
    from spsa_mix.progress import progress_enabled

    objective = problem.make_objective(seed) if objective is None else objective
    res = spsa_mix.minimize(objective, k=getattr(objective, "shape", problem.k), method=method, vectorized=True,
                            seed=seed, show_progress_bar=progress_enabled(problem.progress), **kwargs)
    if res.status == Status.INTERRUPTED:  # the core returns what it had on Ctrl-C; the experiment stops
        raise KeyboardInterrupt
    if not res.success:
        raise RuntimeError(f"minimize(method={method!r}) did not succeed: {res.message}")
    history = res.history
    details = {"method": method, "nit": int(res.nit), "nfev": int(res.nfev), "cost": float(res.cost),
               "fun": float(res.fun), "message": res.message,
               "loss_history": np.asarray(history.get("loss", []), dtype=np.float64).tolist(),
               "cost_history": np.asarray(history.get("cost", []), dtype=np.float64).tolist()}
    if "start" in res:
        details["start"] = res.start
    x = np.asarray(res.get("alpha", res.x), dtype=np.float64)
    scale = float(res.extras["scale"]) if "extras" in res and "scale" in res.extras else None
    return AlphaResult(x, float(res.cost), float(res.cost) * problem.batch_size,
                       "forward passes on target minibatches (a backward pass counts 2)", details=details, scale=scale)


def _spsa(problem: AlphaProblem, seed: int) -> AlphaResult:
    return _minimize(problem, "spsa", seed, max_evals=problem.budget, m=problem.m,  # GLUE 3.3: start at 1/K
                     directions=problem.directions, lr=problem.lr, betas=problem.betas, start="uniform")


def _backprop(problem: AlphaProblem, seed: int) -> AlphaResult:
    return _minimize(problem, "backprop", seed, maxiter=spsa_steps(problem.budget, problem.m), lr=problem.lr,
                     betas=problem.betas, final_eval=False)


def _forward_grad(problem: AlphaProblem, seed: int) -> AlphaResult:
    return _minimize(problem, "forward-grad", seed, maxiter=spsa_steps(problem.budget, problem.m), m=problem.m,
                     directions=problem.directions, lr=problem.lr, betas=problem.betas, final_eval=False)


def _nevergrad(problem: AlphaProblem, seed: int) -> AlphaResult:
    # the objective draws a new minibatch per call: noisy, as Nevergrad's documentation asks to declare
    return _minimize(problem, f"nevergrad:{problem.nevergrad_optimizer}", seed, max_evals=problem.budget,
                     options={"noisy": True})


def _optuna(problem: AlphaProblem, seed: int) -> AlphaResult:
    return _minimize(problem, f"optuna:{problem.optuna_sampler}", seed, max_evals=problem.budget)


def _spsa_defaults(problem: AlphaProblem, seed: int) -> AlphaResult:
    return _minimize(problem, "spsa", seed, max_evals=problem.budget)


def _require_base(problem: AlphaProblem, name: str) -> None:
    if problem.make_task_vector_objective is None or problem.task_vector_holdout_accuracy is None:
        raise ValueError(f"{name!r} blends task vectors over a base: the experts need a shared initialisation "
                         "(shared_init=True) or a pretrained base")


def _task_arithmetic(problem: AlphaProblem, seed: int) -> AlphaResult:
    _require_base(problem, "task-arithmetic")
    assert problem.task_vector_holdout_accuracy is not None
    alpha = np.full(problem.k, 1.0 / problem.k)
    scores = [float(problem.task_vector_holdout_accuracy(alpha, s)) for s in TASK_SCALES]
    best = int(np.argmax(scores))  # ties: the smallest scale
    evals, images = _held_out_cost(len(TASK_SCALES), problem)
    return AlphaResult(alpha, evals, images, _HELD_OUT, scale=float(TASK_SCALES[best]),
                       details={"scales": list(TASK_SCALES), "holdout_accuracy": scores})


def _task_vectors(problem: AlphaProblem, seed: int) -> AlphaResult:
    _require_base(problem, "task-vectors")
    assert problem.make_task_vector_objective is not None
    objective = problem.make_task_vector_objective(seed, "learned")
    return _minimize(problem, "spsa", seed, objective=objective, max_evals=problem.budget)


_HELD_OUT = "models scored on the whole held-out split"


def _uniform(problem: AlphaProblem, seed: int) -> AlphaResult:
    from spsa_mix.baselines import uniform_weights

    return AlphaResult(np.asarray(uniform_weights(problem.k), dtype=np.float64), 0.0, 0.0, "none")


def _data_size(problem: AlphaProblem, seed: int) -> AlphaResult:
    from spsa_mix.baselines import data_size_weights

    return AlphaResult(np.asarray(data_size_weights(list(problem.sizes)), dtype=np.float64), 0.0, 0.0, "none",
                       details={"sizes": list(problem.sizes)})


def _held_out_cost(n_models: int, problem: AlphaProblem) -> tuple[float, float]:
    return float(n_models), float(n_models * problem.holdout_size)


def _proxy_accuracy(problem: AlphaProblem, seed: int) -> AlphaResult:
    from spsa_mix.baselines import proxy_accuracy_weights

    evals, images = _held_out_cost(problem.k, problem)
    alpha = np.asarray(proxy_accuracy_weights(list(problem.expert_holdout_accuracy)), dtype=np.float64)
    return AlphaResult(alpha, evals, images, _HELD_OUT,
                       details={"expert_holdout_accuracy": list(problem.expert_holdout_accuracy)})


def _best_single(problem: AlphaProblem, seed: int) -> AlphaResult:
    from spsa_mix.baselines import best_single_weights

    evals, images = _held_out_cost(problem.k, problem)
    alpha = np.asarray(best_single_weights(list(problem.expert_holdout_accuracy)), dtype=np.float64)
    return AlphaResult(alpha, evals, images, _HELD_OUT, details={"expert": int(np.argmax(alpha))})


def _greedy_soup(problem: AlphaProblem, seed: int) -> AlphaResult:
    from spsa_mix.baselines import greedy_soup

    calls = 0

    def evaluate(weights: Any) -> float:
        nonlocal calls
        calls += 1
        return float(problem.holdout_accuracy(np.asarray(weights, dtype=np.float64)))

    weights, record = greedy_soup(list(problem.expert_holdout_accuracy), evaluate)
    evals, images = _held_out_cost(problem.k + calls, problem)
    return AlphaResult(np.asarray(weights, dtype=np.float64), evals, images, _HELD_OUT,
                       details={"soup_evaluations": calls, "record": record})


def _sail(problem: AlphaProblem, seed: int) -> AlphaResult:
    from spsa_mix.baselines import sail_weights

    expert_features, target_features, passes = problem.sail_features()
    weights, record = sail_weights(expert_features, target_features, max_points=max(problem.sail_max_points, 2),
                                   rng=0)
    n_images = sum(len(f) for f in expert_features) + len(target_features)
    return AlphaResult(np.asarray(weights, dtype=np.float64), float(passes), float(n_images if passes else 0),
                       "forward passes of the reference network (0 for pixel features)",
                       details={"features_shape": [list(np.shape(f)) for f in expert_features[:1]],
                                "target_features": int(len(target_features)), "record": record})


CONFIG_FUNCTIONS: dict[str, Callable[[AlphaProblem, int], AlphaResult]] = {
    "data-size": _data_size,
    "proxy-accuracy": _proxy_accuracy,
    "backprop": _backprop,
    "spsa": _spsa,
    "forward-grad": _forward_grad,
    "uniform": _uniform,
    "best-single": _best_single,
    "greedy-soup": _greedy_soup,
    "sail": _sail,
    "nevergrad": _nevergrad,
    "optuna": _optuna,
    "spsa-defaults": _spsa_defaults,
    "task-arithmetic": _task_arithmetic,
    "task-vectors": _task_vectors,
}


def set_alpha(name: str, problem: AlphaProblem, *, seed: int = 0) -> AlphaResult:
    """Run configuration ``name`` and time it; the result's alpha is checked to lie on
    the simplex (non-negative, summing to one within 1e-6).

    Raises
    ------
    ValueError
        For an unknown name (listing the available ones).
    RuntimeError
        If a method returns a point off the simplex or its run did not succeed.
    """
    if name not in CONFIG_FUNCTIONS:
        raise ValueError(f"unknown configuration {name!r}; available: {list(CONFIG_FUNCTIONS)}")
    start = time.perf_counter()
    result = CONFIG_FUNCTIONS[name](problem, seed)
    result.seconds = time.perf_counter() - start
    alpha = np.asarray(result.alpha, dtype=np.float64).reshape(-1)
    if alpha.shape != (problem.k,) or not np.all(np.isfinite(alpha)) or alpha.min() < -1e-9 \
            or abs(alpha.sum() - 1.0) > 1e-6:
        raise RuntimeError(f"configuration {name!r} returned alpha {alpha!r}, not a point of the {problem.k}-simplex")
    result.alpha = np.clip(alpha, 0.0, None) / np.clip(alpha, 0.0, None).sum()
    return result
