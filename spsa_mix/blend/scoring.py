"""Loss and accuracy over a whole data loader: of a model, of theta(alpha), of each expert.

Every function returns, per model, a dict ``{"loss": float, "accuracy": float, "n": int}``:
``loss`` is the batch losses weighted by what each one averaged over
(:func:`spsa_mix.distributed.weights.loss_weight`: the scored tokens for ``causal-lm``, the
examples for cross-entropy), so that it is the mean over all the examples, or all the
tokens of a language model, whatever the batches, ``accuracy`` the accuracy that goes with the loss
(:func:`spsa_mix.blend.losses.correct_counts`: the fraction of examples whose arg-max output
is the target, or of tokens whose next token is predicted for ``causal-lm``; ``nan`` when
the targets are not class indices of the outputs, or for ``entropy``), ``n`` the number of
examples. Evaluation runs under :func:`torch.inference_mode` with the model in
eval mode: it leaves no gradient and no graph, and restores the model's mode.

On the CPU, :func:`evaluate` runs the forward pass of a batch of more than
:data:`EVAL_CHUNK` examples (one input tensor) in chunks of that many and scores the
concatenated outputs as one batch: the loss and the accuracy are those of the whole batch,
and the outputs, in eval mode one per example, are the same numbers (equal bit for bit for
this package's four image architectures on the CPU it was measured on). Measured on a
2-core CPU, one thread: a small CNN scores 28x28 images 3x faster in chunks of 256 than in
batches of 1000 (49 against 149 ms per 1000; the activations of a smaller chunk stay in the
caches).

* :func:`evaluate` -- any ``nn.Module``;
* :func:`evaluate_blend` -- theta(alpha) for one or several alphas straight from a
  :class:`~spsa_mix.blend.BlendedObjective` (no module is built; the ``n`` alphas are
  scored on each batch as the objective scores its probes);
* :func:`evaluate_experts` -- each expert alone (one-hot alphas).

Example
-------
>>> import torch
>>> net = torch.nn.Linear(2, 2)
>>> with torch.no_grad():
...     _ = net.weight.copy_(torch.eye(2)); _ = net.bias.zero_()
>>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
>>> m = evaluate(net, (x, torch.tensor([0, 1, 1])))
>>> round(m["accuracy"], 4), m["n"]
(0.6667, 3)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike
from torch import nn

from spsa_mix.blend.batches import iterate_once
from spsa_mix.blend.devices import resolve_device
from spsa_mix.blend.losses import correct_counts

if TYPE_CHECKING:
    from spsa_mix.blend.objective import BlendedObjective

__all__ = ["evaluate", "evaluate_blend", "evaluate_experts", "Metrics", "EVAL_CHUNK"]

Metrics = dict[str, float]
EVAL_CHUNK = 256  # ours: on the CPU, a forward of more examples runs in chunks of 256 (module docstring)


def _forward(model: nn.Module, batch: Any, device: torch.device) -> Any:
    """``model`` on one batch; on the CPU a single input tensor of more than
    :data:`EVAL_CHUNK` examples goes through in chunks, the outputs concatenated."""
    args, kwargs = batch.args, batch.kwargs
    x = args[0] if len(args) == 1 and not kwargs else None
    if device.type != "cpu" or not isinstance(x, torch.Tensor) or x.ndim == 0 or x.shape[0] <= EVAL_CHUNK:
        return model(*args, **kwargs)
    outs = [model(x[i: i + EVAL_CHUNK]) for i in range(0, x.shape[0], EVAL_CHUNK)]
    if not all(isinstance(o, torch.Tensor) for o in outs):
        return model(x)  # outputs that do not concatenate (a model output object): the whole batch
    return torch.cat(outs)


def _finish(loss_sum: float, correct: float, scored: float, n: int, weight: float) -> Metrics:
    if n == 0:
        raise ValueError("data yielded no batch: nothing to evaluate")
    accuracy = correct / scored if correct >= 0 and scored > 0 else math.nan
    return {"loss": loss_sum / weight if weight > 0 else math.nan, "accuracy": accuracy, "n": n}


def _weight(loss_fn: Any, batch: Any) -> float:
    """What ``loss_fn`` averaged over on ``batch`` (tokens for a language model, examples otherwise)."""
    from spsa_mix.distributed.weights import loss_weight

    return float(loss_weight(loss_fn, batch.targets, batch.size))


def _check_max_batches(max_batches: Any) -> int | None:
    if max_batches is not None and (isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1):
        raise ValueError(f"max_batches must be an integer >= 1 or None, but got {max_batches!r}")
    return max_batches


def evaluate(model: nn.Module, data: Any, *, loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
             device: str | torch.device | None = None, max_batches: int | None = None,
             dtype: torch.dtype | None = None) -> Metrics:
    """Loss and accuracy of ``model`` over all of ``data``.

    Parameters
    ----------
    model:
        Any ``nn.Module``; put in eval mode for the pass, its mode restored afterwards.
    data:
        A ``DataLoader`` (one pass), an iterable of ``(inputs, targets)`` batches, or one
        batch ``(inputs, targets)``.
    loss_fn:
        ``loss_fn(outputs, targets) -> scalar``, mean over the batch.
    device:
        Where the batches go; default the device of the model's first parameter. The model
        is not moved.
    max_batches:
        Stop after this many batches.
    dtype:
        The floating-point dtype inputs are cast to (a model held in ``float16``, say);
        default: as they come.

    Returns
    -------
    dict
        ``{"loss", "accuracy", "n"}`` (see the module docstring).
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be an nn.Module, but got {type(model).__name__}")
    max_batches = _check_max_batches(max_batches)
    if device is None:
        first = next(iter(model.parameters()), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        dev = resolve_device(device)
    was_training = model.training
    model.eval()
    loss_sum, correct, scored, n, weight = 0.0, 0.0, 0.0, 0, 0.0
    try:
        with torch.inference_mode():
            for batch in iterate_once(data, dev, max_batches=max_batches, dtype=dtype):
                out = _forward(model, batch, dev)
                w = _weight(loss_fn, batch)
                if w > 0:  # a batch with nothing to score (every label padding) adds nothing
                    loss_sum += float(loss_fn(out, batch.targets)) * w
                    weight += w
                hits, count = correct_counts(loss_fn, out, batch.targets)
                correct = correct + float(hits) if (float(hits) >= 0 and correct >= 0) else -1.0
                scored += count
                n += batch.size
    finally:
        model.train(was_training)
    return _finish(loss_sum, correct, scored, n, weight)


def evaluate_blend(objective: BlendedObjective, alpha: ArrayLike, data: Any, *,
                   max_batches: int | None = None) -> Metrics | list[Metrics]:
    """Loss and accuracy of theta(alpha) over all of ``data``, without building a module.

    Parameters
    ----------
    objective:
        The :class:`~spsa_mix.blend.BlendedObjective` holding the experts (its
        ``loss_fn``, device and ``batched`` policy are used; its minibatch stream is not
        touched).
    alpha:
        One point of shape ``objective.shape`` (returns one dict), or ``(n, *shape)``
        points (returns a list of ``n`` dicts, all scored in one pass over ``data``).
    data:
        As for :func:`evaluate`.
    max_batches:
        Stop after this many batches.

    Examples
    --------
    >>> import numpy as np
    >>> from spsa_mix.blend import BlendedObjective
    >>> gen = torch.Generator().manual_seed(0)
    >>> x, y = torch.randn(16, 3, generator=gen), torch.randint(0, 2, (16,), generator=gen)
    >>> obj = BlendedObjective(torch.nn.Linear(3, 2), [torch.nn.Linear(3, 2) for _ in range(2)], device="cpu")
    >>> sorted(evaluate_blend(obj, np.array([0.5, 0.5]), (x, y)))
    ['accuracy', 'loss', 'n']
    """
    max_batches = _check_max_batches(max_batches)
    pts, single = objective._check_points(alpha, "alpha")
    n = pts.shape[0]
    loss_sum = np.zeros(n)
    correct = np.zeros(n)
    scored = np.zeros(n)
    total, weight = 0, 0.0

    def score(out: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        hits, count = correct_counts(objective.loss_fn, out, targets)
        loss = objective._check_loss(objective.loss_fn(out, targets))
        return loss, torch.as_tensor(hits, device=loss.device), torch.as_tensor(count, device=loss.device)

    with torch.inference_mode():
        points = objective._as_points(pts)
        for batch in iterate_once(data, objective.device, max_batches=max_batches, dtype=objective.dtype):
            losses, hits, counts = objective._probe(points, batch, score)  # (n,) each
            w = _weight(objective.loss_fn, batch)
            if w > 0:
                loss_sum += losses.to(torch.float64).cpu().numpy() * w
                weight += w
            hits_np = hits.to(torch.float64).cpu().numpy()
            correct = np.where((hits_np >= 0) & (correct >= 0), correct + hits_np, -1.0)
            scored += counts.to(torch.float64).cpu().numpy()
            total += batch.size
    results = [_finish(float(loss_sum[i]), float(correct[i]), float(scored[i]), total, weight) for i in range(n)]
    return results[0] if single else results


def evaluate_experts(objective: BlendedObjective, data: Any, *, max_batches: int | None = None) -> list[Metrics]:
    """Loss and accuracy of each expert alone (a one-hot alpha, in every group, and a
    learned scale of 1), in one pass.

    >>> import numpy as np
    >>> from spsa_mix.blend import BlendedObjective
    >>> x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.zeros(8, dtype=torch.long)
    >>> obj = BlendedObjective(torch.nn.Linear(3, 2), [torch.nn.Linear(3, 2) for _ in range(3)], device="cpu")
    >>> len(evaluate_experts(obj, (x, y)))
    3
    """
    eye = np.eye(objective.k)  # (K, K)
    simplex = objective.domain.simplex
    alphas = np.broadcast_to(eye[:, None, :], (objective.k, *simplex)) if len(simplex) == 2 else eye
    points = objective.domain.join(alphas)  # a learned scale of 1: theta_i itself
    out = evaluate_blend(objective, np.ascontiguousarray(points), data, max_batches=max_batches)
    assert isinstance(out, list)  # K >= 2 points always give a list
    return out
