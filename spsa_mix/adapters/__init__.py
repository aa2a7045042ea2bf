"""Black-box optimisers under the one ``method`` keyword of :func:`spsa_mix.minimize`.

``method="nevergrad:<name>"`` (:mod:`spsa_mix.adapters.nevergrad`, any optimizer of
``nevergrad.optimizers.registry``) and ``method="optuna:<sampler>"``
(:mod:`spsa_mix.adapters.optuna`: ``tpe``, ``cmaes``, ``random``, ``qmc``, ``gp``) run the
library's ask/tell interface on a parametrisation of the simplex
(:mod:`spsa_mix.adapters._parametrization`) inside the core's run loop
(:mod:`spsa_mix.adapters._asktell`): the same objective, budget in objective evaluations
(never exceeded), seed handling, result type and history as ``method="spsa"``.
:func:`spsa_mix.minimize` finds them through the ``nevergrad`` and ``optuna`` entry points of
the group ``spsa_mix.methods`` (``pyproject.toml``, :mod:`spsa_mix.core.methods`), and the
libraries are imported only when such a method is asked for.

Example
-------
>>> import numpy as np, spsa_mix
>>> from spsa_mix.problems import Quadratic
>>> q = Quadratic.random(3, rng=1)
>>> res = spsa_mix.minimize(q, k=3, method="optuna:qmc", max_evals=20, seed=0, vectorized=True,
...                         options={"batch_size": 5})
>>> res.nit, res.nfev, res.history["batch_size"].tolist()
(4, 20, [5.0, 5.0, 5.0, 5.0])
"""

from spsa_mix.adapters._parametrization import PARAMETRIZATIONS, SimplexParametrization

__all__ = ["PARAMETRIZATIONS", "SimplexParametrization"]
