"""The configuration of one experiment: every size and hyperparameter in one place.

The experiment follows the protocol of the GLUE paper's section 5 (K experts on Dirichlet
splits, every way to set alpha, fine-tuning). Two scales share one dataclass.
:class:`ExperimentConfig` itself holds the scaled-down defaults of the built-in run
(``spsa-mix experiment`` with no arguments: scikit-learn's digits, a few minutes on a
2-core CPU); :meth:`ExperimentConfig.paper` holds GLUE section 5's sizes (2000
images per expert, 10,000 target images, 40 expert epochs) for a dataset large enough to
hold them. Each default names its source: "GLUE 5" is section 5 of the GLUE paper, "ours"
marks a choice of this package, made because the paper does not state one.

Example
-------
>>> cfg = ExperimentConfig()
>>> cfg.dataset, cfg.k, cfg.per_expert, cfg.budget
('digits', 10, 80, 400)
>>> ExperimentConfig.paper("fashion-mnist").per_expert
2000
>>> ExperimentConfig(k=1)
Traceback (most recent call last):
...
ValueError: k must be an integer >= 2 (a blend needs at least two experts), but got 1
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spsa_mix.core.directions import DIRECTION_KINDS
from spsa_mix.core.validation import check_int
from spsa_mix.io import default_cache_dir  # re-exported: the experiment's default cache

if TYPE_CHECKING:
    from spsa_mix.experiment.pool import PoolSpec

__all__ = ["ExperimentConfig", "ALL_CONFIGS", "DEFAULT_CONFIGS", "default_cache_dir"]

# Every way to set alpha, in table order (spsa_mix.experiment.alpha documents each).
ALL_CONFIGS: tuple[str, ...] = (
    "data-size",  # GLUE Config 1
    "proxy-accuracy",  # GLUE Config 2
    "backprop",  # GLUE Config 3
    "spsa",  # GLUE Config 4 (two-point SPSA, the GLUE paper's method)
    "forward-grad",
    "uniform",
    "best-single",
    "greedy-soup",
    "sail",
    "nevergrad",
    "optuna",
    "spsa-defaults",  # spsa_mix.minimize's own defaults (lr="auto", start="auto")
    "task-arithmetic",  # task vectors over the base, uniform weights, scale on held-out
    "task-vectors",  # task vectors, weights and scale learned
)
DEFAULT_CONFIGS = ALL_CONFIGS
# The losses alpha can be learned on: "calibrated" (the task's after the best temperature) and the
# names of spsa_mix.blend.losses.LOSSES (listed here so that the CLI need not import PyTorch).
ALPHA_LOSSES = ("calibrated", "cross-entropy", "calibrated-cross-entropy", "causal-lm", "calibrated-causal-lm",
                "entropy")


def _check_int(value: Any, name: str, minimum: int, why: str = "") -> None:
    try:
        check_int(value, name, minimum=minimum)
    except ValueError:
        if not why:
            raise
        raise ValueError(f"{name} must be an integer >= {minimum}{why}, but got {value!r}") from None


def _check_pos(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"{name} must be a positive number, but got {value!r}")


@dataclass
class ExperimentConfig:
    """Sizes and hyperparameters of one GLUE run (defaults: the built-in CPU run).

    Attributes are grouped as the pipeline uses them: data and split, experts, alpha,
    fine-tuning, run. ``None`` for ``data_root`` and ``cache_dir`` means the defaults of
    :func:`spsa_mix.data.images.default_data_roots` and :func:`default_cache_dir`.

    >>> ExperimentConfig(per_expert=50).to_dict()["per_expert"]
    50
    """

    # ---- data and split
    dataset: str = "digits"  # ours: real 8x8 digits shipped in scikit-learn, no download
    task: str | None = None  # ours: None is the dataset's own (images: classification; text: causal-lm)
    data_root: str | None = None  # where to look for files (not needed for digits)
    image_size: int | None = None  # resize for datasets of mixed sizes (Imagenette); None: native
    k: int = 10  # GLUE 5: K = 10 experts
    per_expert: int | tuple[int, ...] = 80  # ours (digits holds 1797 images); GLUE 5: 2000. K sizes: unequal
    dirichlet_alpha: float = 0.5  # GLUE 5: Dirichlet concentration delta = 0.5
    target_size: int = 300  # ours (digits); GLUE 5: 10,000 images drawn IID from the base training set
    holdout_size: int = 100  # ours: IID held-out target split: proxy accuracy, best single, greedy soup
    target_used: int | None = None  # ours: None, all target_size images; N: learn alpha and fine-tune on a random N
    # of them (nested in N), the experts, held-out and test sets unchanged (target-size curves)
    target_concentration: float | None = 0.5  # ours (digits): a label-shifted target domain, its class
    # proportions ~ Dirichlet(0.5), the held-out split and the test set drawn with them; GLUE 5 (and paper()): None, IID
    data_seed: int = 0  # ours: fixes the split and the experts (same across alpha seeds)
    # ---- experts
    arch: str = "small-cnn"  # ours: small and fast on a CPU (spsa_mix.models)
    expert_epochs: int = 40  # GLUE 5: 40 epochs
    expert_lr: float = 1e-3  # GLUE 5: Adam, learning rate 0.001
    expert_betas: tuple[float, float] = (0.9, 0.999)  # GLUE 5
    expert_batch_size: int = 64  # GLUE 5
    shared_init: bool = True  # ours: all experts start from one initialisation (see spsa_mix.experiment.experts)
    # ---- alpha
    budget: int = 400  # ours: forward passes (minibatch evaluations) for learning alpha
    m: int = 1  # GLUE 5: one random direction per step
    directions: str = "normalized-gaussian"  # GLUE 3.2: u uniform on the unit sphere (minimize's default: rademacher)
    alpha_lr: float = 1e-2  # GLUE 5: Adam on alpha, learning rate 1e-2
    alpha_betas: tuple[float, float] = (0.9, 0.99)  # GLUE 5
    alpha_batch_size: int = 64  # ours: minibatch of target images per objective call
    alpha_loss: str | None = "calibrated"  # ours (digits): the task's loss after the best temperature
    # (docs/glue.md, the diagnosis of the default run); GLUE 5 (and paper()): None, the task's own loss
    nevergrad_optimizer: str = "NGOpt"  # ours: Nevergrad's own recommended default
    optuna_sampler: str = "tpe"  # ours: Optuna's default sampler
    sail_features: str = "pixels"  # ours: "pixels" or "penultimate" (see spsa_mix.experiment.alpha)
    sail_max_points: int = 500  # ours: points per distribution in the MMDs (cost is quadratic)
    # ---- fine-tuning
    finetune_epochs: int = 5  # ours: the paper's "few epochs" is not a number
    finetune_lr: float = 1e-3  # ours: Adam, as the experts were trained
    finetune_batch_size: int = 64  # ours: as the experts
    from_scratch: bool = True  # ours: a reference row, the architecture from random initialisation fine-tuned alike
    # ---- run
    configs: tuple[str, ...] = DEFAULT_CONFIGS
    seeds: tuple[int, ...] = (0, 1, 2)  # GLUE 5: three seeds
    device: str = "auto"  # "auto": CUDA when available, else CPU
    threads: int | None = 1  # ours: torch CPU threads during the run (restored after); None: torch's setting.
    # 1 for the tiny digits models: 35 s on 1 thread vs 47 s on 2 (idle 2-core CPU), 6 min on 2 under load
    cache_dir: str | None = None
    eval_batch_size: int = 1000  # ours: batch size of test and held-out evaluation
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes saved with the results

    def __post_init__(self) -> None:
        self.configs = tuple(self.configs)
        if isinstance(self.per_expert, (list, tuple)):
            self.per_expert = tuple(self.per_expert) if len(self.per_expert) != 1 else self.per_expert[0]
        self.seeds = tuple(int(s) for s in self.seeds) if not isinstance(self.seeds, int) else tuple(range(self.seeds))
        self.expert_betas = tuple(self.expert_betas)  # type: ignore[assignment]
        self.alpha_betas = tuple(self.alpha_betas)  # type: ignore[assignment]
        self.validate()

    def validate(self) -> None:
        """Check every field; raise ``ValueError`` naming the first bad one."""
        _check_int(self.k, "k", 2, " (a blend needs at least two experts)")
        if isinstance(self.per_expert, tuple):
            if len(self.per_expert) != self.k:
                raise ValueError(f"per_expert must be one size or k={self.k} sizes, but got {len(self.per_expert)} "
                                 f"sizes {list(self.per_expert)}")
            for size in self.per_expert:
                _check_int(size, "per_expert", 1)
        else:
            _check_int(self.per_expert, "per_expert", 1)
        for name in ("target_size", "holdout_size", "expert_epochs", "expert_batch_size",
                     "budget", "m", "alpha_batch_size", "finetune_batch_size", "eval_batch_size",
                     "sail_max_points"):
            _check_int(getattr(self, name), name, 1)
        _check_int(self.finetune_epochs, "finetune_epochs", 0)
        _check_int(self.data_seed, "data_seed", 0)
        if self.image_size is not None:
            _check_int(self.image_size, "image_size", 1)
        if self.threads is not None:
            _check_int(self.threads, "threads", 1)
        for name in ("dirichlet_alpha", "expert_lr", "alpha_lr", "finetune_lr"):
            _check_pos(getattr(self, name), name)
        if self.target_concentration is not None:
            _check_pos(self.target_concentration, "target_concentration")
        if self.target_used is not None:
            _check_int(self.target_used, "target_used", 1)
            if self.target_used > self.target_size:
                raise ValueError(f"target_used must be at most target_size={self.target_size}, but got "
                                 f"{self.target_used}")
        unknown = [c for c in self.configs if c not in ALL_CONFIGS]
        if unknown or not self.configs:
            raise ValueError(f"configs must be a non-empty subset of {list(ALL_CONFIGS)}, but got {list(self.configs)}")
        if len(set(self.configs)) != len(self.configs):
            raise ValueError(f"configs must not repeat a name, but got {list(self.configs)}")
        if not self.seeds or any(s < 0 for s in self.seeds) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct non-negative integers, but got {list(self.seeds)}")
        if self.directions not in DIRECTION_KINDS:
            raise ValueError(f"directions must be one of {list(DIRECTION_KINDS)}, but got {self.directions!r}")
        if self.sail_features not in ("pixels", "penultimate"):
            raise ValueError(f"sail_features must be 'pixels' or 'penultimate', but got {self.sail_features!r}")
        if self.alpha_loss is not None and self.alpha_loss not in ALPHA_LOSSES:
            raise ValueError(f"alpha_loss must be None (the task's loss) or one of {list(ALPHA_LOSSES)}, but got "
                             f"{self.alpha_loss!r}")
        if self.task is not None and self.task not in ("image-classification", "sequence-classification",
                                                       "causal-lm"):
            raise ValueError(f"task must be None, 'image-classification', 'sequence-classification' or 'causal-lm', "
                             f"but got {self.task!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string ('auto', 'cpu', 'cuda', 'cuda:0'), but got {self.device!r}")

    @classmethod
    def paper(cls, dataset: str = "fashion-mnist", **overrides: Any) -> ExperimentConfig:
        """GLUE section 5's sizes: 2000 images per expert, 10,000 target images, 40 epochs;
        and its protocol: an IID target, alpha learned on the task's cross-entropy.

        >>> ExperimentConfig.paper(target_size=5000).target_size
        5000
        """
        values: dict[str, Any] = dict(dataset=dataset, per_expert=2000, target_size=10_000, holdout_size=1000,
                                      expert_epochs=40, budget=1000, threads=None, target_concentration=None,
                                      alpha_loss=None)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def quick(cls, **overrides: Any) -> ExperimentConfig:
        """A tiny run for tests and smoke checks (seconds): K=3, few images, short budgets,
        one CPU thread (tiny models run faster on one), no from-scratch row.

        >>> ExperimentConfig.quick().k
        3
        """
        values: dict[str, Any] = dict(k=3, per_expert=40, target_size=120, holdout_size=60, expert_epochs=2,
                                      budget=24, finetune_epochs=1, seeds=(0,), sail_max_points=60,
                                      eval_batch_size=500, threads=1, from_scratch=False)
        values.update(overrides)
        return cls(**values)

    def expert_sizes(self) -> list[int]:
        """The K split sizes.

        >>> ExperimentConfig(k=3, per_expert=[10, 20, 30]).expert_sizes(), ExperimentConfig(k=2).expert_sizes()
        ([10, 20, 30], [80, 80])
        """
        if isinstance(self.per_expert, tuple):
            return list(self.per_expert)
        return [int(self.per_expert)] * self.k

    def replace(self, **changes: Any) -> ExperimentConfig:
        """A copy with some fields changed (validated).

        >>> ExperimentConfig().replace(k=5).k
        5
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    def resolved_cache_dir(self) -> Path:
        """``cache_dir`` or the default cache folder."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def pool_spec(self) -> PoolSpec:
        """The expert pool this configuration describes (:func:`spsa_mix.experiment.pool.build_pool`).

        >>> ExperimentConfig(k=4).pool_spec().k
        4
        """
        from spsa_mix.experiment.experts import TrainSpec
        from spsa_mix.experiment.pool import PoolSpec

        train = TrainSpec(epochs=self.expert_epochs, lr=self.expert_lr, betas=self.expert_betas,
                          batch_size=self.expert_batch_size, data_seed=self.data_seed, shared_init=self.shared_init)
        return PoolSpec(dataset=self.dataset, kind=self.task, data_root=self.data_root, image_size=self.image_size,
                        arch=self.arch, k=self.k, per_expert=self.per_expert, target_size=self.target_size,
                        holdout_size=self.holdout_size, concentration=self.dirichlet_alpha, data_seed=self.data_seed,
                        train=train, target_concentration=self.target_concentration, target_used=self.target_used)
