"""mergekit's merge methods in PyTorch, tensor by tensor, equal to mergekit 0.1.5's own output.

* :mod:`~spsa_mix.blend.methods.registry` -- the methods by name, their parameters and
  mergekit's defaults (:func:`check_parameters`);
* :mod:`~spsa_mix.blend.methods.sparsification` -- TIES' trim, DARE's random drop, Model
  Breadcrumbs, DELLA's MagPrune (random masks from a seeded generator);
* :mod:`~spsa_mix.blend.methods.task_arithmetic` -- the task-vector family (task
  arithmetic, TIES, DARE, breadcrumbs, DELLA): sign election, disjoint mean, ``lambda``;
  the rows a search blends with the consensus fixed (:func:`fixed_rows`);
* :mod:`~spsa_mix.blend.methods.interpolation` -- linear, SLERP, NuSLERP, Model Stock.

Each function mirrors mergekit's code operation for operation, so that the same inputs give
the same bits (``tests/blend/test_methods.py`` runs mergekit's functions beside them). The
spaces of :class:`~spsa_mix.blend.BlendedObjective` that learn these methods' weights are
in :mod:`spsa_mix.blend.methods.space`; ``docs/merge_methods.md`` has the design.

Example
-------
>>> import torch
>>> from spsa_mix.blend.methods import check_parameters, merge_tensor
>>> b, e = torch.zeros(3), [torch.tensor([1.0, -2.0, 4.0]), torch.tensor([-1.0, -2.0, 2.0])]
>>> p = check_parameters("ties", {}, k=2)
>>> merge_tensor("ties", b, e, [1.0, 1.0], p).tolist()   # a tie (entry 0) elects +
[1.0, -2.0, 3.0]
"""

from spsa_mix.lazy import lazy_exports

__all__ = ["METHODS", "TASK_VECTOR_METHODS", "FIXED_METHODS", "LEARNED_SPACES", "MethodSpec", "check_parameters",
           "method_of_space", "sparsify", "sparsified_deltas", "combine", "merge_tensor", "fixed_rows",
           "tensor_generator", "interpolation"]

_WHERE = {
    "interpolation": "interpolation",
    "METHODS": "registry", "TASK_VECTOR_METHODS": "registry", "FIXED_METHODS": "registry",
    "LEARNED_SPACES": "registry", "MethodSpec": "registry", "check_parameters": "registry",
    "method_of_space": "registry", "sparsify": "sparsification", "sparsified_deltas": "task_arithmetic",
    "combine": "task_arithmetic", "merge_tensor": "task_arithmetic", "fixed_rows": "task_arithmetic",
    "tensor_generator": "task_arithmetic",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
