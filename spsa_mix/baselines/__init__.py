"""Mixing weights set without learning: the baselines GLUE compares against.

* :mod:`~spsa_mix.baselines.heuristics`: uniform (the model soup), data size (GLUE
  Config 1), proxy accuracy (Config 2), best single expert, greedy soup (Wortsman et al.
  2022);
* :mod:`~spsa_mix.baselines.sail`: SAIL's closed-form weights (Theorem 3) from MMDs
  between the experts' and the target's feature distributions.

Every function above is pure and returns a point of the probability simplex. Learned by
other means than :func:`spsa_mix.minimize`: :mod:`~spsa_mix.baselines.adamerging`
(AdaMerging's task-arithmetic coefficients by backprop, its published settings) and
:mod:`~spsa_mix.baselines.lorahub` (LoraHub's Nevergrad search).

Example
-------
>>> from spsa_mix.baselines import proxy_accuracy_weights
>>> proxy_accuracy_weights([0.5, 0.25, 0.25]).tolist()
[0.5, 0.25, 0.25]
"""

from spsa_mix.baselines.adamerging import adamerging
from spsa_mix.baselines.heuristics import (
    best_single_weights,
    data_size_weights,
    greedy_soup,
    proxy_accuracy_weights,
    uniform_weights,
)
from spsa_mix.baselines.sail import mmd2_matrix, sail_from_distances, sail_weights, simplex_qp

__all__ = [
    "adamerging",
    "uniform_weights",
    "data_size_weights",
    "proxy_accuracy_weights",
    "best_single_weights",
    "greedy_soup",
    "sail_weights",
    "sail_from_distances",
    "mmd2_matrix",
    "simplex_qp",
]
