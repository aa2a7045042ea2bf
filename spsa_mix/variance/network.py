"""A blended network objective for the variance study: a small CNN on scikit-learn's digits.

:class:`DigitsBlend` trains a pool of experts once with
:func:`spsa_mix.experiment.pool.build_pool` (the ``"small-cnn"`` of
:func:`spsa_mix.models.build_model` on 8x8 digits, shipped inside scikit-learn: no
download) and serves, for any ``K`` up to the pool size, the blend of the first ``K``
experts on one fixed target batch (:class:`spsa_mix.blend.BlendedObjective` with
``data=(x, y)``, so the loss is a deterministic function of alpha) as a
:class:`~spsa_mix.variance.problems.FixedPoint` at the uniform mixture. The true
gradient comes from autograd (``value_and_grad``).

The experts follow GLUE section 5 in miniature: every expert starts from the same
initialisation (seeded) and is trained with Adam on its own non-IID subset, whose class
proportions are drawn from a Dirichlet distribution of concentration 0.5 (GLUE's
``delta = 0.5``; :func:`spsa_mix.data.splits.dirichlet_sample`: each expert samples the
digits outside the target batch, so a pool of 50 experts of 200 images fits in 1797
digits); the target batch is an IID sample of the digits.

Example
-------
>>> import numpy as np
>>> pool = DigitsBlend(n_experts=2, steps=2, per_expert=16, target_size=8, seed=0)
>>> fp = pool.problem(2, space="beta")
>>> fp.shape, fp.smooth
((2,), False)
"""

from __future__ import annotations

import numpy as np
import torch

from spsa_mix.blend import BlendedObjective
from spsa_mix.core.validation import check_positive, check_positive_int
from spsa_mix.data.splits import Splits, dirichlet_sample, random_parts
from spsa_mix.data.tasks import Task
from spsa_mix.experiment.experts import TrainSpec
from spsa_mix.experiment.pool import PoolSpec, build_pool, load_pool_task
from spsa_mix.variance.problems import SPACES, FixedPoint, at_point

__all__ = ["DigitsBlend"]

DIRICHLET_CONCENTRATION = 0.5  # GLUE section 5: per-class proportions ~ Dir(0.5)
ARCH = "small-cnn"  # spsa_mix.models: about 24k parameters, fast on 8x8 images


class DigitsBlend:
    """A pool of small-CNN experts trained on digits, and their blends at the uniform point.

    Parameters
    ----------
    n_experts:
        Size of the pool (the largest ``K`` served).
    seed:
        Seeds the split, the shared initialisation and every expert's minibatch order.
    per_expert:
        Training images per expert (drawn with its Dirichlet class proportions).
    steps, batch_size, lr:
        Adam steps, minibatch size and learning rate of each expert (a few seconds of
        CPU for the pool; this package's choice, enough for the experts to differ).
    target_size:
        Size of the fixed target batch on which the blends are scored.
    dtype:
        Floating-point type of the blended forward passes (float32 by default: three
        times faster than float64 on a CPU, and its rounding error in the central
        difference, about ``1e-7 |L| / mu``, is far below the estimates' spread).

    Raises
    ------
    ValueError
        For a non-positive size or step count, or a ``target_size`` of half the digits or
        more.

    Examples
    --------
    >>> pool = DigitsBlend(n_experts=2, steps=1, per_expert=8, target_size=4, seed=1)
    >>> pool.objective(2).k, len(pool.experts)
    (2, 2)
    """

    def __init__(
        self,
        *,
        n_experts: int,
        seed: int = 0,
        per_expert: int = 200,
        steps: int = 40,
        batch_size: int = 32,
        lr: float = 3e-3,
        target_size: int = 64,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.n_experts = check_positive_int(n_experts, "n_experts")
        per_expert = check_positive_int(per_expert, "per_expert")
        steps = check_positive_int(steps, "steps")
        batch_size = check_positive_int(batch_size, "batch_size")
        target_size = check_positive_int(target_size, "target_size")
        lr = check_positive(lr, "lr")
        spec = PoolSpec(dataset="digits", test_size=0, standardize=False, arch=ARCH, k=self.n_experts,
                        train=TrainSpec(steps=steps, batch_size=batch_size, lr=lr, init_seed=seed))
        task = load_pool_task(spec)
        n_total = int(task.labels().shape[0])
        if target_size >= n_total // 2:
            raise ValueError(f"target_size must be below {n_total // 2} (half of the digits), but got {target_size}")

        def split(task: Task) -> Splits:
            # target first, then each expert's Dirichlet(0.5) draw from the rest (experts may overlap)
            labels = task.labels().numpy()
            rng = np.random.default_rng(seed)
            target, rest = random_parts(n_total, [target_size], rng, sort=False)
            experts, seeds = dirichlet_sample(labels, k=self.n_experts, per_expert=per_expert,
                                              concentration=DIRICHLET_CONCENTRATION, rng=rng, pool=rest,
                                              with_seeds=True)
            return Splits(target=target, holdout=np.zeros(0, dtype=np.int64), experts=experts, seeds=seeds)

        pool = build_pool(spec, task=task, splits=split, cache=None, progress=False)
        x, y = pool.whole("target")
        self.data = (x.to(dtype), y)
        self.dtype = dtype
        self.seed = seed
        self._model_fn = pool.model_fn
        self.experts: list[dict[str, torch.Tensor]] = [
            {name: t.detach().clone() for name, t in m.state_dict().items()} for m in pool.models]

    def objective(self, k: int) -> BlendedObjective:
        """The blend of the first ``k`` experts on the fixed target batch (any alpha allowed)."""
        k = check_positive_int(k, "k")
        if not 2 <= k <= self.n_experts:
            raise ValueError(f"k must be between 2 and n_experts={self.n_experts}, but got {k}")
        return BlendedObjective(self._model_fn(), self.experts[:k], data=self.data, device="cpu", dtype=self.dtype,
                                simplex_atol=None)

    def problem(self, k: int, *, space: str = "alpha", chunk_size: int = 256) -> FixedPoint:
        """The blend of ``k`` experts seen from ``alpha = 1/k`` (``smooth=False``: ReLU
        and max-pooling kinks, so the closed forms are the ``mu -> 0`` limit)."""
        if space not in SPACES:
            raise ValueError(f"space must be 'alpha' or 'beta', but got {space!r}")
        obj = self.objective(k)
        return at_point(obj, np.full(k, 1.0 / k), space=space, smooth=False, chunk_size=chunk_size)

    def __repr__(self) -> str:
        return f"DigitsBlend(n_experts={self.n_experts}, seed={self.seed}, target_size={self.data[0].shape[0]})"

