"""Minimise a quadratic over the probability simplex with ``spsa_mix.minimize``.

Run: ``python examples/quadratic_minimize.py``
"""

import numpy as np

import spsa_mix

rng = np.random.default_rng(0)
k = 10
c = rng.dirichlet(np.ones(k))  # the minimiser, inside the simplex
A = np.diag(np.linspace(1.0, 10.0, k))


def loss(alpha: np.ndarray) -> float:
    d = alpha - c
    return 0.5 * float(d @ A @ d)


res = spsa_mix.minimize(loss, k=k, max_evals=4000, lr=0.05, lr_schedule="cosine", seed=0)
print(res)
print("max |x - c| =", np.abs(res.x - c).max())
