"""spsa_mix: learn how to blend pretrained experts with forward passes only.

The core (NumPy and SciPy) is a simplex-constrained SPSA optimiser with ``minimize`` and
an ask/tell interface; :mod:`spsa_mix.blend` (PyTorch) turns K experts into a
forward-only objective; :mod:`spsa_mix.adapters` runs Nevergrad and Optuna on the same
objective and budget; :mod:`spsa_mix.baselines` sets the mixing weights without learning;
:mod:`spsa_mix.experiment` reproduces the GLUE experiment end to end.

Example
-------
>>> import numpy as np, spsa_mix
>>> opt = spsa_mix.SimplexSPSA(k=4, seed=0)
>>> opt.ask().shape
(2, 4)
"""

from spsa_mix.core import (
    Domain,
    NonFiniteLossError,
    ObjectiveError,
    OptimizeResult,
    SimplexForwardGradient,
    SimplexGradient,
    SimplexSPSA,
    Status,
    available_methods,
    minimize,
)

__version__ = "0.1.0"

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
    "__version__",
]
