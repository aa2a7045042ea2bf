"""The experiment end to end: data, experts, every way to set alpha, fine-tuning.

:func:`run_experiment` follows GLUE section 5 at the size a :class:`~spsa_mix.experiment.config.ExperimentConfig`
asks for:

1. load the dataset and split its training part into an IID target set, an IID held-out
   target split and K disjoint Dirichlet(0.5) expert splits (:mod:`spsa_mix.data.splits`);
2. train the K experts or load them from the cache (:mod:`spsa_mix.experiment.experts`);
3. for every configuration and seed, set alpha (:mod:`spsa_mix.experiment.alpha`), build the
   prior theta(alpha), score it on the test split, fine-tune all its weights on the
   target set with alpha fixed and score it after every epoch (:mod:`spsa_mix.experiment.finetune`);
4. summarise over seeds, write the markdown report, the JSON and the figure
   (:mod:`spsa_mix.experiment.report`).

What a seed varies: for the learned configurations the minibatch order of alpha learning
and the optimiser's own randomness (SPSA directions, Nevergrad and Optuna's draws); for
every configuration the minibatch order of fine-tuning (and dropout, if any). The data
split and the experts are fixed by ``data_seed`` and shared by all seeds. Within a seed,
every configuration sees the same minibatch sequence, in alpha learning and in
fine-tuning, so configurations differ only by alpha; two that arrive at the very same alpha
(data-size and uniform for splits of equal sizes) are fine-tuned once, and the run of the
second records ``finetune_copied_from`` (:meth:`Experiment.finetune`).

Nothing computed is lost to a failure: experts are cached as soon as each is trained,
and the JSON (``output``) is rewritten after every expert and every (configuration,
seed) run, with ``status`` ``"running"``, then ``"complete"``, ``"complete with errors"``
(a configuration that raised is recorded in ``errors`` and the run goes on) or
``"interrupted"``.

A rerun into the same ``output`` reuses its finished runs: each (configuration, seed) run
is stored with a ``key``, the SHA-256 of everything that determines it
(:meth:`Experiment.run_key`: the configuration less the fields that only say which runs
there are and where files live, the device, the experts' cache keys, digests of the target
and held-out examples, :data:`RESULTS_FORMAT`), and a run whose key is in the old file is
taken from it instead of being computed (``reused_runs`` lists them; the log says so). The
file never holds fewer finished runs than it did: the old runs this run has not placed
(other settings, or not reached yet when it is interrupted) are kept under
``previous_runs``, outside the summary, and are reused when their settings come back. To
start afresh, delete the file or write elsewhere. An old file that cannot be read is
replaced, with a warning.

Example
-------
>>> import tempfile
>>> from spsa_mix.experiment.config import ExperimentConfig
>>> cfg = ExperimentConfig.quick(configs=("uniform", "spsa"), cache_dir=tempfile.mkdtemp(), expert_epochs=1)
>>> res = run_experiment(cfg, progress=False)
>>> res["status"], sorted(res["summary"]), len(res["runs"])
('complete', ['spsa', 'uniform'], 2)
"""

from __future__ import annotations

import json
import logging
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spsa_mix.blend import evaluate, evaluate_blend, resolve_device
from spsa_mix.blend.batches import call_model
from spsa_mix.blend.losses import calibrated, resolve_loss
from spsa_mix.cpu_threads import torch_threads
from spsa_mix.data.batches import Batches
from spsa_mix.experiment.alpha import SEED_DEPENDENT, AlphaProblem, AlphaResult, set_alpha
from spsa_mix.experiment.config import ExperimentConfig
from spsa_mix.experiment.environment import bit_exact_environment
from spsa_mix.experiment.experts import Expert, ExpertCache, expert_key, initial_model
from spsa_mix.experiment.finetune import finetune
from spsa_mix.experiment.pool import build_pool, default_model_fn, default_splits, load_pool_task
from spsa_mix.experiment.report import compare, figure_title, plot_curves, render_markdown, summarize
from spsa_mix.io import atomic_write_text, check_outputs, write_json

__all__ = ["run_experiment", "Experiment", "derive_seed", "RESULTS_FORMAT", "FROM_SCRATCH"]

FROM_SCRATCH = "from-scratch"  # the reference row: the architecture from random initialisation, fine-tuned

logger = logging.getLogger("spsa_mix.experiment")
RESULTS_FORMAT = 2  # bump when the code changes what a run computes or how it is stored (2: run keys)
# Fields of the configuration that do not change what one (configuration, seed) run computes:
_NOT_IN_RUN_KEY = (
    "configs", "seeds",  # which runs there are, not what each is
    "cache_dir", "data_root",  # where files are (the data themselves are in the key by digest)
    "extra",  # free-form notes
    "device",  # in the key as resolved ("auto" is "cuda" or "cpu")
)


def derive_seed(seed: int, stream: str) -> int:
    """An independent seed for one use (``"alpha"``, ``"finetune"``, ...) of a run seed.

    >>> derive_seed(0, "alpha") == derive_seed(0, "alpha") != derive_seed(0, "finetune")
    True
    """
    tag = int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")
    return int(np.random.SeedSequence([int(seed), tag]).generate_state(1)[0])


def _environment(device: torch.device) -> dict[str, Any]:
    import spsa_mix

    env = {"spsa_mix": spsa_mix.__version__, "python": platform.python_version(), "torch": torch.__version__,
           "platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "device": str(device), "argv": list(sys.argv)}
    env.update(bit_exact_environment())  # with the above, what bit-exactness depends on (experiment.environment)
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _subsample(indices: np.ndarray, rng: np.random.Generator, max_points: int) -> np.ndarray:
    if len(indices) > max_points:
        indices = np.sort(rng.choice(indices, size=max_points, replace=False))
    return indices


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("sail_features='penultimate' needs a model with an nn.Linear head; use 'pixels'")
    return linears[-1]


@torch.no_grad()
def _penultimate(model: nn.Module, batches: Batches) -> tuple[np.ndarray, int]:
    """Inputs of the last linear layer, one row per example (averaged over the real tokens
    of a sequence), and the number of forward passes."""
    captured: list[torch.Tensor] = []
    hook = _last_linear(model).register_forward_hook(lambda mod, inp, out: captured.append(inp[0].detach()))
    model.eval()
    rows, calls = [], 0
    try:
        for inputs, _ in batches:
            captured.clear()
            call_model(model, inputs)
            h = captured[-1]  # (B, p), or (B, T, p) for a sequence model
            if h.ndim == 3:
                mask = inputs["attention_mask"].to(h.dtype)[..., None] if isinstance(inputs, dict) \
                    else torch.ones(h.shape[:2] + (1,), dtype=h.dtype, device=h.device)
                h = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
            rows.append(h.flatten(1).cpu())
            calls += 1
    finally:
        hook.remove()
    return torch.cat(rows).numpy().astype(np.float64), calls


TASK_VECTOR_PENALTY = 100.0  # ours: the loss of a task-vector blend whose loss is not finite (see NonFiniteAsPenalty)


class NonFiniteAsPenalty:
    """A loss that is ``penalty`` where ``loss_fn`` is NaN or infinite, per probe.

    Task vectors scaled past ``s = 1`` extrapolate every tensor, the BatchNorm running
    variances too, which can fall below zero: the network's outputs and its loss are then
    NaN. As a loss of ``penalty`` (far above any cross-entropy of a working network), such a
    point is one to move away from, as it should be, instead of the end of the run.

    >>> import torch
    >>> loss = NonFiniteAsPenalty(lambda out, y: out.sum(), penalty=100.0)
    >>> float(loss(torch.tensor([1.0, 2.0]), None)), float(loss(torch.tensor([1.0, float("nan")]), None))
    (3.0, 100.0)
    """

    def __init__(self, loss_fn: Any, *, penalty: float) -> None:
        self.loss_fn = loss_fn
        self.penalty = float(penalty)

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        value = self.loss_fn(outputs, targets)
        return torch.where(torch.isfinite(value), value, torch.full_like(value, self.penalty))

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        from spsa_mix.blend.losses import correct_counts

        return correct_counts(self.loss_fn, outputs, targets)

    def __repr__(self) -> str:
        return f"NonFiniteAsPenalty({self.loss_fn!r}, penalty={self.penalty:g})"


class Experiment:
    """The state of one experiment: task, split, expert pool, the results dict.

    :func:`run_experiment` drives it; use it directly to get the blended objective of trained
    experts: :meth:`prepare` loads the task and splits its data, :meth:`train_experts`
    builds the expert pool (:func:`~spsa_mix.experiment.pool.build_pool`: trains or loads
    the experts), then :meth:`objective` gives a :class:`~spsa_mix.blend.BlendedObjective`
    on target minibatches, :meth:`holdout_accuracy` scores theta(alpha) on the held-out
    split and :meth:`problem` gathers everything :func:`~spsa_mix.experiment.alpha.set_alpha` needs.

    >>> import tempfile
    >>> exp = Experiment(ExperimentConfig.quick(cache_dir=tempfile.mkdtemp(), expert_epochs=1, per_expert=20))
    >>> exp.prepare(); exp.train_experts()
    >>> obj = exp.objective(seed=0)
    >>> obj(np.full((2, 3), 1 / 3)).shape, 0.0 <= exp.holdout_accuracy(np.full(3, 1 / 3)) <= 1.0
    ((2,), True)
    """

    def __init__(self, cfg: ExperimentConfig, *, model_fn: Callable[[], nn.Module] | None = None,
                 output: str | os.PathLike[str] | None = None, progress: bool = False,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.output = Path(output) if output is not None else None
        self.progress = progress
        self.log = log or logger.info
        self.device = resolve_device(cfg.device)
        self.model_fn = model_fn
        self._base_objective: Any = None
        self._base_model: nn.Module | None = None
        self.results: dict[str, Any] = {
            "format": RESULTS_FORMAT, "status": "running", "config": cfg.to_dict(),
            "environment": _environment(self.device), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "dataset": {}, "split": {}, "experts": [], "runs": [], "errors": [], "summary": {}, "comparison": {},
            "timings": {}, "reused_runs": [],
        }
        self.previous = self._read_previous()  # the finished runs of the file this run replaces
        self._reused: set[int] = set()  # id() of the previous runs placed in results["runs"]
        self._finetuned: dict[tuple[Any, ...], tuple[str, dict[str, Any]]] = {}  # (seed, prior) -> (config, result)

    def _read_previous(self) -> list[dict[str, Any]]:
        """The finished runs of the results file at ``output`` (``runs`` and ``previous_runs``)."""
        if self.output is None or not self.output.exists():
            return []
        try:
            old = json.loads(self.output.read_text())
            runs = [r for r in [*old.get("runs", []), *old.get("previous_runs", [])]
                    if isinstance(r, dict) and "config" in r and "seed" in r]
        except (OSError, ValueError, AttributeError, TypeError) as e:
            logger.warning("the results file %s cannot be read (%s: %s); it will be replaced", self.output,
                           type(e).__name__, e)
            return []
        return runs

    def save(self) -> None:
        """Write the results; the runs of the file replaced that this run has not placed (yet)
        are kept under ``previous_runs``, so the file never holds fewer finished runs."""
        kept = [r for r in self.previous if id(r) not in self._reused]
        if kept:
            self.results["previous_runs"] = kept
        else:
            self.results.pop("previous_runs", None)
        if self.output is not None:
            write_json(self.results, self.output, indent=2)

    def run_key(self, name: str, seed: int) -> str:
        """SHA-256 of everything that determines the run of ``name`` with ``seed``: the
        configuration less the fields of :data:`_NOT_IN_RUN_KEY`, the device, the experts'
        cache keys, digests of the target and held-out examples, the dataset's description
        and :data:`RESULTS_FORMAT`."""
        settings = {k: v for k, v in self.cfg.to_dict().items() if k not in _NOT_IN_RUN_KEY}
        data = {k: v for k, v in self.results["dataset"].items() if k != "source"}  # the source names a folder
        return expert_key({
            "format": RESULTS_FORMAT, "config": name, "seed": int(seed), "settings": settings,
            "device": str(self.device), "experts": [e.meta.get("key") for e in self.experts],
            "target": self.task.digest(self.splits.target), "holdout": self.task.digest(self.splits.holdout),
            "dataset": data, "task": self.results.get("task"),
        })

    def reuse(self, key: str) -> dict[str, Any] | None:
        """The finished run of the replaced file with ``key``, or ``None``."""
        for run in self.previous:
            if run.get("key") == key and id(run) not in self._reused:
                self._reused.add(id(run))
                return run
        return None

    # ------------------------------------------------------------------ setup
    def prepare(self) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        self.spec = cfg.pool_spec()
        self.task = load_pool_task(self.spec, cfg.resolved_cache_dir())
        self.results["dataset"] = self.task.data.describe()
        if self.task.kind != "image-classification":
            self.results["task"] = {"kind": self.task.kind, "loss": repr(self.task.loss), "metric": self.task.metric}
        labels = self.task.labels().numpy()
        self.splits = default_splits(self.spec, self.task)
        self.results["split"] = self.splits.describe(labels)
        self.results["timings"]["data_seconds"] = time.perf_counter() - start
        if self.model_fn is None:
            self.model_fn = default_model_fn(cfg.arch, self.task)
        self.test = Batches(self.task, self.splits.test, split="test", batch_size=cfg.eval_batch_size,
                            device=self.device)
        self.holdout = Batches(self.task, self.splits.holdout, batch_size=cfg.eval_batch_size, device=self.device)
        n_test = self.test.num_samples
        self.log(f"data: {self.task.name} ({self.task.data.source}); train {len(labels)}, test "
                 f"{n_test}; target {cfg.target_size}, held-out {cfg.holdout_size}, "
                 f"{cfg.k} experts of {cfg.per_expert} examples"
                 + (f"; results: {self.output}" if self.output is not None else ""))

    def train_experts(self) -> None:
        cfg = self.cfg
        start = time.perf_counter()

        def on_expert(e: Expert) -> None:
            acc = evaluate(e.model, self.holdout, loss_fn=self.task.loss)["accuracy"]
            row = {k: e.meta.get(k) for k in ("index", "size", "class_counts", "test_accuracy", "train_seconds",
                                              "key")}
            row.update(holdout_accuracy=acc, cached=e.cached, path=str(e.path) if e.path else None)
            self.results["experts"].append(row)
            self.save()
            self.log(f"expert {e.index}: {'loaded from cache' if e.cached else 'trained'}, test accuracy "
                     f"{100 * e.test_accuracy:.2f}%, held-out {100 * acc:.2f}%")

        assert self.model_fn is not None
        self.pool = build_pool(self.spec, task=self.task, splits=self.splits, model_fn=self.model_fn,
                               cache=ExpertCache(cfg.resolved_cache_dir() / "experts"), device=self.device,
                               eval_batch_size=cfg.eval_batch_size, progress=self.progress, on_expert=on_expert)
        self.experts = self.pool.experts
        self.results["timings"]["experts_seconds"] = time.perf_counter() - start

    # ------------------------------------------------------------------ alpha
    def objective(self, seed: int | None) -> Any:
        """A blended objective on target minibatches whose order comes from ``seed``, with the
        loss ``cfg.alpha_loss`` (default: the task's)."""
        target = self.pool.target_batches(self.cfg.alpha_batch_size,
                                          seed=derive_seed(seed if seed is not None else 0, "alpha"))
        if self.cfg.alpha_loss is None:
            return self.pool.objective(data=target)
        return self.pool.objective(data=target, loss_fn=self.alpha_loss())

    def alpha_loss(self) -> Any:
        """The loss the learned rows minimise: ``cfg.alpha_loss`` by name, ``"calibrated"`` the
        task's own after the best temperature (:func:`spsa_mix.blend.losses.calibrated`), or
        the task's (``None``)."""
        if self.cfg.alpha_loss is None:
            return self.task.loss
        if self.cfg.alpha_loss == "calibrated":
            return calibrated(self.task.loss)
        return resolve_loss(self.cfg.alpha_loss)

    @property
    def base_objective(self) -> Any:
        """One objective kept for building blended models and held-out scores."""
        if self._base_objective is None:
            self._base_objective = self.objective(None)
        return self._base_objective

    def blended(self, alpha: np.ndarray) -> nn.Module:
        """A fresh module holding theta(alpha), in train mode."""
        return self.base_objective.blended_model(np.asarray(alpha, dtype=np.float64))  # type: ignore[no-any-return]

    def holdout_accuracy(self, alpha: np.ndarray) -> float:
        """Accuracy of theta(alpha) on the held-out target split."""
        metrics = evaluate_blend(self.base_objective, np.asarray(alpha, dtype=np.float64), self.holdout)
        assert isinstance(metrics, dict)  # one alpha, one dict
        return float(metrics["accuracy"])

    # ------------------------------------------------------------------ task vectors over the base
    def base_model(self) -> nn.Module:
        """The base of the task-vector rows: the experts' shared initialisation, rebuilt from
        its seed (``ValueError`` when the experts were initialised independently)."""
        if not self.cfg.shared_init:
            raise ValueError("the task-vector rows need a base: the experts' shared initialisation "
                             "(shared_init=True), and these experts were initialised independently")
        if self._base_model is None:
            assert self.model_fn is not None
            self._base_model = initial_model(self.model_fn, self.spec.train).to(self.device).eval()
        return self._base_model

    def task_vector_objective(self, seed: int | None, scale: Any) -> Any:
        """The task-vector blend over :meth:`base_model` with ``scale`` (a number or
        ``"learned"``) on target minibatches ordered by ``seed`` (the same as :meth:`objective`)."""
        target = self.pool.target_batches(self.cfg.alpha_batch_size,
                                          seed=derive_seed(seed if seed is not None else 0, "alpha"))
        loss = NonFiniteAsPenalty(self.alpha_loss(), penalty=TASK_VECTOR_PENALTY)
        return self.pool.objective(data=target, base=self.base_model(), space="task-vectors", scale=scale,
                                   loss_fn=loss)

    def task_vector_model(self, alpha: np.ndarray, scale: float) -> nn.Module:
        """A fresh module holding ``base + scale * sum_i alpha_i (theta_i - base)``, in train mode."""
        obj = self.task_vector_objective(None, float(scale))
        return obj.blended_model(np.asarray(alpha, dtype=np.float64))  # type: ignore[no-any-return]

    def task_vector_holdout_accuracy(self, alpha: np.ndarray, scale: float) -> float:
        """Held-out accuracy of the task-vector blend with weights ``alpha`` and ``scale``."""
        metrics = evaluate_blend(self.task_vector_objective(None, float(scale)), np.asarray(alpha, dtype=np.float64),
                                 self.holdout)
        assert isinstance(metrics, dict)
        return float(metrics["accuracy"])

    def scratch_model(self, seed: int) -> nn.Module:
        """The architecture from a random initialisation (seeded by ``seed``), in train mode:
        the from-scratch row, fine-tuned exactly as the priors are."""
        assert self.model_fn is not None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "scratch"))
            model = self.model_fn()
        return model.to(self.device).train()

    def sail_features(self) -> tuple[list[np.ndarray], np.ndarray, int]:
        cfg = self.cfg
        rng = np.random.default_rng(derive_seed(cfg.data_seed, "sail"))
        subsets = [_subsample(ix, rng, cfg.sail_max_points) for ix in [*self.splits.experts, self.splits.target]]
        if cfg.sail_features == "pixels":
            feats = [self.task.features(ix) for ix in subsets]
            return feats[:-1], feats[-1], 0
        reference = self.blended(np.full(cfg.k, 1.0 / cfg.k))
        passes = 0
        feats = []
        for ix in subsets:
            f, calls = _penultimate(reference, Batches(self.task, ix, batch_size=cfg.eval_batch_size,
                                                       device=self.device))
            feats.append(f)
            passes += calls
        return feats[:-1], feats[-1], passes

    def problem(self) -> AlphaProblem:
        """Everything :func:`~spsa_mix.experiment.alpha.set_alpha` needs, for this run."""
        cfg = self.cfg
        return AlphaProblem(
            k=cfg.k, make_objective=self.objective, sizes=[len(ix) for ix in self.splits.experts],
            expert_holdout_accuracy=[row["holdout_accuracy"] for row in self.results["experts"]],
            holdout_accuracy=self.holdout_accuracy, sail_features=self.sail_features, budget=cfg.budget, m=cfg.m, directions=cfg.directions,
            lr=cfg.alpha_lr, betas=cfg.alpha_betas, batch_size=cfg.alpha_batch_size, holdout_size=cfg.holdout_size,
            nevergrad_optimizer=cfg.nevergrad_optimizer, optuna_sampler=cfg.optuna_sampler,
            sail_max_points=cfg.sail_max_points, progress=self.progress,
            make_task_vector_objective=self.task_vector_objective if cfg.shared_init else None,
            task_vector_holdout_accuracy=self.task_vector_holdout_accuracy if cfg.shared_init else None)

    # ------------------------------------------------------------------ runs
    def run_configs(self) -> None:
        cfg = self.cfg
        problem = self.problem()
        for name in (*cfg.configs, *((FROM_SCRATCH,) if cfg.from_scratch else ())):
            fixed: AlphaResult | None = None  # rows without randomness set alpha once
            for seed in cfg.seeds:
                key = self.run_key(name, seed)
                old = self.reuse(key)
                if old is not None:  # finished before, with the same settings
                    self.results["runs"].append(old)
                    self.results["reused_runs"].append({"config": name, "seed": seed})
                    self.log(f"{name} seed {seed}: reused from {self.output} (same settings; prior "
                             f"{100 * old['prior_accuracy']:.2f}%, after {cfg.finetune_epochs} epochs "
                             f"{100 * old['test_accuracy'][-1]:.2f}%)")
                    self.save()
                    continue
                try:
                    reused = fixed is not None
                    if name == FROM_SCRATCH:  # no alpha: a random initialisation
                        result = AlphaResult(np.zeros(0), 0.0, 0.0, "none",
                                             details={"init_seed": derive_seed(seed, "scratch")})
                    else:
                        result = fixed if fixed is not None else set_alpha(name, problem, seed=seed)
                    if name not in SEED_DEPENDENT and name != FROM_SCRATCH:
                        fixed = result
                    self.finish_run(name, seed, result, reused=reused, key=key)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # recorded; the other configurations still run
                    self.results["errors"].append({"config": name, "seed": seed, "error": f"{type(e).__name__}: {e}",
                                                   "traceback": traceback.format_exc(limit=8)})
                    self.log(f"{name} seed {seed}: FAILED ({type(e).__name__}: {e})")
                    logger.debug("configuration %s failed", name, exc_info=True)
                self.save()

    def finetune(self, name: str, seed: int, result: AlphaResult) -> tuple[dict[str, Any], str | None]:
        """Fine-tune the prior of ``result`` (theta(alpha), the base plus scaled task
        vectors, or a random initialisation for the from-scratch row) with the minibatch
        order of ``seed``; and the configuration whose fine-tuning it copies, if any. The
        fine-tuning is a function of the prior and the seed alone (same minibatches, the
        global generator seeded), so a configuration that arrives at the very prior of an
        earlier one with the same seed (data-size and uniform for equal splits, a greedy soup
        of one expert and best-single) is given the earlier one's numbers instead of
        computing them again: the same bits."""
        cfg = self.cfg
        if name == FROM_SCRATCH:
            memo: tuple[Any, ...] = (int(seed), FROM_SCRATCH)
        else:
            memo = (int(seed), np.asarray(result.alpha, dtype=np.float64).tobytes(),
                    None if result.scale is None else float(result.scale))
        if memo in self._finetuned:
            source, ft = self._finetuned[memo]
            return {**ft, "seconds": 0.0}, source
        if name == FROM_SCRATCH:
            model = self.scratch_model(seed)
        elif result.scale is not None:
            model = self.task_vector_model(result.alpha, result.scale)
        else:
            model = self.blended(result.alpha)
        gen = torch.Generator().manual_seed(derive_seed(seed, "finetune"))
        target = Batches(self.task, self.splits.target, batch_size=cfg.finetune_batch_size, shuffle=True,
                         generator=gen, device=self.device)
        ft = finetune(model, target, self.test, epochs=cfg.finetune_epochs, lr=cfg.finetune_lr,
                      seed=derive_seed(seed, "finetune"), loss_fn=self.task.loss, progress=self.progress,
                      desc=f"fine-tune {name} s{seed}")
        self._finetuned[memo] = (name, ft)
        return ft, None

    def finish_run(self, name: str, seed: int, result: AlphaResult, *, reused: bool, key: str | None = None) -> None:
        cfg = self.cfg
        ft, copied = self.finetune(name, seed, result)
        run = {
            "config": name, "seed": seed, "key": key, "alpha": result.alpha.tolist(),
            "prior_accuracy": ft["test_accuracy"][0], "test_accuracy": ft["test_accuracy"],
            "test_loss": ft["test_loss"], "train_loss": ft["train_loss"],
            # what setting alpha cost (once, for a row whose alpha is reused across seeds)
            "evaluations": result.evaluations, "images": result.images, "eval_unit": result.eval_unit,
            "alpha_seconds": result.seconds, "alpha_reused": reused, "finetune_seconds": ft["seconds"],
            "details": result.details,
        }
        if result.scale is not None:
            run["scale"] = result.scale
        if copied is not None:
            run["finetune_copied_from"] = copied  # same prior and seed: the fine-tuning of that configuration
        self.results["runs"].append(run)
        self.log(f"{name} seed {seed}: prior {100 * run['prior_accuracy']:.2f}%, after {cfg.finetune_epochs} "
                 f"epochs {100 * run['test_accuracy'][-1]:.2f}% (alpha: {result.evaluations:.0f} evaluations, "
                 f"{result.seconds:.1f} s" + (f", max weight {max(result.alpha):.2f}" if len(result.alpha) else "")
                 + (f", scale {result.scale:.3g}" if result.scale is not None else "")
                 + (f"; fine-tuning as {copied}'s, the same prior" if copied else "") + ")")

    def finalize(self, status: str) -> None:
        self.results["summary"] = summarize(self.results)
        self.results["comparison"] = compare(self.results)
        self.results["status"] = status
        self.results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.save()


def run_experiment(
    cfg: ExperimentConfig | None = None,
    *,
    model_fn: Callable[[], nn.Module] | None = None,
    output: str | os.PathLike[str] | None = None,
    markdown: str | os.PathLike[str] | None = None,
    plot: str | os.PathLike[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the experiment and return every number it produced.

    Parameters
    ----------
    cfg:
        Sizes and hyperparameters (default: :class:`ExperimentConfig`'s, the built-in digits run).
    model_fn:
        Builds a fresh untrained ``nn.Module`` (any architecture); default
        ``spsa_mix.models.build_model(cfg.arch, ...)``. Give ``cfg.arch`` a name that
        identifies it: with the parameter shapes it keys the expert cache.
    output:
        JSON file, rewritten after every expert and every run (partial results survive);
        finished runs of an earlier run into the same file are reused where their settings
        match, and kept under ``previous_runs`` where they do not (see the module docstring).
    markdown:
        Markdown report (experts table, configurations table, gaps), written at the end.
    plot:
        PNG of test accuracy against fine-tuning epochs, written at the end.
    progress:
        tqdm bars for expert training, alpha learning and fine-tuning (none, with one warning,
        where tqdm is not installed).
    log:
        Called with one line per step (default: the ``spsa_mix.experiment`` logger at INFO).

    Returns
    -------
    dict
        ``config``, ``environment``, ``dataset``, ``split``, ``experts``, ``runs`` (one per
        configuration and seed), ``summary`` (per configuration over seeds),
        ``comparison`` (SPSA's gaps to data-size, proxy-accuracy and backprop, as GLUE compares),
        ``errors``, ``timings``, ``status``.

    Raises
    ------
    ValueError
        For a bad configuration, an unknown dataset or architecture, missing data, sizes
        the data cannot hold, or an output path or cache folder that cannot be written
        (:func:`spsa_mix.io.check_outputs`), all before any training.
    """
    cfg = cfg if cfg is not None else ExperimentConfig()
    check_outputs({"output": output, "markdown": markdown, "plot": plot, "cache_dir": cfg.resolved_cache_dir()},
                  folders=("cache_dir",))  # a bad path fails now, not after the work
    exp = Experiment(cfg, model_fn=model_fn, output=output, progress=progress, log=log)
    start = time.perf_counter()
    with torch_threads(cfg.threads) as threads:  # restored after the run, whatever way it ends
        try:
            exp.prepare()
            exp.train_experts()
            exp.run_configs()
        except KeyboardInterrupt:
            exp.results["timings"]["total_seconds"] = time.perf_counter() - start
            exp.finalize("interrupted")
            raise
        except Exception as e:
            if exp.results["experts"] or exp.results["runs"]:
                exp.results["errors"].append({"config": None, "seed": None, "error": f"{type(e).__name__}: {e}"})
                exp.results["timings"]["total_seconds"] = time.perf_counter() - start
                exp.finalize("failed")
            raise
    exp.results["timings"]["total_seconds"] = time.perf_counter() - start
    exp.results["environment"]["torch_threads"] = threads
    exp.finalize("complete with errors" if exp.results["errors"] else "complete")
    if markdown is not None:
        atomic_write_text(markdown, render_markdown(exp.results))
    if plot is not None and exp.results["summary"]:
        plot_curves(exp.results["summary"], plot, title=figure_title(exp.results["config"]))
    return exp.results
