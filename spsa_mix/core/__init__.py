"""The optimiser core: NumPy and SciPy only.

* :mod:`~spsa_mix.core.simplex`: softmax maps between logits and simplex points;
* :mod:`~spsa_mix.core.domain`: simplex weights with positive and real coordinates beside
  them, and the maps to unconstrained coordinates;
* :mod:`~spsa_mix.core.directions`: random directions and the unbiasing factor;
* :mod:`~spsa_mix.core.schedules`: radius and step-size schedules;
* :mod:`~spsa_mix.core.updates`: gradient estimates, Adam and SGD as pure functions;
* :mod:`~spsa_mix.core.optimizer`: the ask/tell classes that own the state;
* :mod:`~spsa_mix.core.driver`: the run loop (budget, history, validation, faults);
* :mod:`~spsa_mix.core.checkpoint`: the state file of a run, to resume it bit for bit;
* :mod:`~spsa_mix.core.methods`: what a method is, and the registry (entry points for
  methods outside the core);
* :mod:`~spsa_mix.core.minimize`: ``minimize``, its options and the built-in methods;
* :mod:`~spsa_mix.core.result`: the one result type;
* :mod:`~spsa_mix.core.validation`: the argument checks; :mod:`~spsa_mix.core.errors`: the
  exceptions.
"""

from spsa_mix.core.domain import Domain
from spsa_mix.core.errors import NonFiniteLossError, ObjectiveError
from spsa_mix.core.methods import available_methods
from spsa_mix.core.minimize import minimize
from spsa_mix.core.optimizer import SimplexForwardGradient, SimplexGradient, SimplexSPSA
from spsa_mix.core.result import OptimizeResult, Status

__all__ = [
    "minimize",
    "available_methods",
    "SimplexSPSA",
    "SimplexForwardGradient",
    "SimplexGradient",
    "Domain",
    "OptimizeResult",
    "Status",
    "NonFiniteLossError",
    "ObjectiveError",
]
