"""Bias, variance and MSE of the two-point gradient estimate, measured and in closed form.

* :mod:`~spsa_mix.variance.theory`: closed forms as pure functions (derived in
  ``docs/variance.md``), GLUE's Proposition 1 and the ``O(mu^2)`` term;
* :mod:`~spsa_mix.variance.empirical`: many independent estimates at one point, drawn
  with the optimiser's own directions, and their statistics with confidence intervals;
* :mod:`~spsa_mix.variance.problems`: objectives seen from one point in alpha or beta
  (softmax-logit) space, a linear objective;
* :mod:`~spsa_mix.variance.network`: a blended small CNN on scikit-learn's digits
  (PyTorch, imported on demand).

The command line is ``spsa-mix bench variance`` (:mod:`spsa_mix.cli.variance`).

Example
-------
>>> import numpy as np
>>> from spsa_mix.variance import estimator_theory, problem_at_uniform, sample_estimates, summarize
>>> fp = problem_at_uniform("quadratic", 4, rng=0)
>>> est = sample_estimates(fp, ms=[2], n_samples=5000, kind="rademacher", sum_zero=False,
...                        mu=0.05, scale=1.0, rng=np.random.default_rng(0))
>>> th = estimator_theory("rademacher", 4, sum_zero=False, m=2, scale=1.0,
...                       target_norm=float(np.linalg.norm(fp.gradient)))
>>> summarize(est[2], fp.gradient).variance.contains(th.variance)
True
"""

from spsa_mix.variance.empirical import (
    DEFAULT_CONFIDENCE,
    DERIVATIVES,
    EstimateStats,
    Interval,
    average_estimates,
    directional_derivatives,
    sample_estimates,
    summarize,
)
from spsa_mix.variance.problems import (
    PROBLEMS,
    SPACES,
    FixedPoint,
    Linear,
    at_point,
    problem_at_uniform,
    third_derivative_terms,
)
from spsa_mix.variance.theory import (
    DirectionMoments,
    Theory,
    cosine_theory,
    direction_moments,
    estimator_theory,
    mu_bias_leading,
    paper_proposition1,
    project,
)

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DERIVATIVES",
    "EstimateStats",
    "Interval",
    "average_estimates",
    "directional_derivatives",
    "sample_estimates",
    "summarize",
    "PROBLEMS",
    "SPACES",
    "FixedPoint",
    "Linear",
    "at_point",
    "problem_at_uniform",
    "third_derivative_terms",
    "DirectionMoments",
    "Theory",
    "cosine_theory",
    "direction_moments",
    "estimator_theory",
    "mu_bias_leading",
    "paper_proposition1",
    "project",
]
