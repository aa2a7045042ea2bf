"""Losses of a blended network on target data, each with the accuracy it implies.

Every loss is called as ``loss(outputs, targets) -> scalar tensor`` (the mean over the
batch), the signature :class:`~spsa_mix.blend.BlendedObjective` and
:func:`~spsa_mix.blend.evaluate` use. ``outputs`` may be a tensor of logits, a Hugging
Face ``ModelOutput`` (its ``.logits`` is used) or a tuple whose first entry is the logits.

==================  ==========================================================  ===================
name                what it is                                                  accuracy it reports
==================  ==========================================================  ===================
``cross-entropy``   ``F.cross_entropy(logits (B, C), labels (B,))``: images,    arg-max hits per
                    sequence classification                                     example
``causal-lm``       next-token cross-entropy: logits ``(B, T, V)`` at position  next-token hits per
                    ``t`` scored against ``labels[:, t + 1]``; ``labels`` is    scored token
                    ``input_ids`` with padding set to ``-100`` (ignored), as
                    Hugging Face's ``labels`` convention
``calibrated-``     cross-entropy after the best temperature on the batch:      arg-max hits per
``cross-entropy``   ``min_T CE(logits / T, labels)`` (a blend's accuracy does   example
                    not depend on T, its raw cross-entropy does; see
                    :class:`CalibratedCrossEntropy`)
``calibrated-``     the same for next-token logits (:class:`CalibratedCausalLM`) next-token hits
``causal-lm``
``multiple-``       ``-log softmax(ll)[answer]`` per question, ``ll`` each          arg-max hits per
``choice``          choice's log-likelihood ``sum_t log p(choice_t | prompt,     question
                    choice_<t)`` (:class:`MultipleChoice`; the batches of
                    :class:`~spsa_mix.data.text.ChoiceData`)
``entropy``         mean Shannon entropy of the predicted distribution          none (``nan``)
                    (AdaMerging's test-time objective: no labels needed); for
                    ``(B, T, V)`` logits the mean over the tokens that
                    ``targets`` marks as real (``!= -100``), when given
==================  ==========================================================  ===================

:func:`resolve_loss` turns a name, a callable or ``"package.module:callable"`` into one.
A loss may carry a ``correct(outputs, targets) -> (hits, count)`` method;
:func:`correct_counts` uses it, and falls back to arg-max hits per example.

Example
-------
>>> import torch
>>> logits = torch.tensor([[[0.0, 5.0], [5.0, 0.0], [0.0, 0.0]]])       # (B=1, T=3, V=2)
>>> labels = torch.tensor([[0, 1, 0]])                                   # position t predicts t+1
>>> loss = resolve_loss("causal-lm")
>>> round(float(loss(logits, labels)), 4), [int(v) for v in loss.correct(logits, labels)]
(0.0067, [2, 2])
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "IGNORE_INDEX",
    "logits_of",
    "CrossEntropy",
    "CalibratedCrossEntropy",
    "fit_inverse_temperature",
    "CausalLM",
    "CalibratedCausalLM",
    "calibrated",
    "Entropy",
    "MultipleChoice",
    "resolve_loss",
    "correct_counts",
    "LossFn",
]

IGNORE_INDEX = -100  # torch's cross_entropy default and Hugging Face's padding label
LossFn = Callable[[Any, Any], torch.Tensor]


def logits_of(outputs: Any) -> torch.Tensor:
    """The logits in a model's outputs: a tensor, ``outputs.logits``, or ``outputs[0]``.

    >>> logits_of((torch.zeros(2, 3), "other")).shape
    torch.Size([2, 3])
    """
    if isinstance(outputs, torch.Tensor):
        return outputs
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise ValueError(f"cannot find logits in the model's outputs: got {type(outputs).__name__} "
                     "(expected a tensor, an object with .logits, or a tuple starting with one)")


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """bf16 / fp16 logits upcast to float32 for the loss; float32 and float64 kept as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _argmax_hits(logits: torch.Tensor, targets: Any) -> tuple[torch.Tensor, int]:
    if (isinstance(targets, torch.Tensor) and logits.ndim >= 1 and not targets.is_floating_point()
            and not targets.is_complex() and tuple(logits.shape[:-1]) == tuple(targets.shape)):
        valid = targets != IGNORE_INDEX
        hits = ((logits.argmax(dim=-1) == targets) & valid).sum()
        return hits, int(valid.sum())
    return torch.tensor(-1, device=logits.device), 0


class CrossEntropy:
    """Mean cross-entropy of class logits ``(B, C)`` against labels ``(B,)`` (labels of
    ``-100`` are ignored, as in :func:`torch.nn.functional.cross_entropy`).

    >>> round(float(CrossEntropy()(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0]))), 4)
    0.6931
    """

    name = "cross-entropy"

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        return F.cross_entropy(logits_of(outputs), targets)

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        """Arg-max hits and the number of examples scored."""
        return _argmax_hits(logits_of(outputs), targets)

    def __repr__(self) -> str:
        return "CrossEntropy()"


def fit_inverse_temperature(logits: torch.Tensor, labels: torch.Tensor, *, iters: int = 12) -> torch.Tensor:
    """``b* = argmin_b CE(b * logits, labels)`` for class logits ``(N, C)``, by Newton's method.

    ``CE(b z)`` is convex in ``b`` with ``f'(b) = mean(E_p[z] - z_y)`` and ``f''(b) =
    mean(Var_p[z])``, ``p = softmax(b z)``; from ``b = 1``, each step is kept within a
    factor 4 of the current ``b``, and ``b`` within ``[1e-3, 1e3]``. Tensor operations only,
    a fixed number of steps, no gradient: it runs under inference mode, ``torch.func.jvp``
    and ``vmap``. Labels of ``-100`` are ignored. Returns a 0-d tensor (float64).

    >>> z = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    >>> b = fit_inverse_temperature(z, torch.tensor([0, 1, 0, 1]))
    >>> round(float(b), 4), round(float(torch.log(torch.tensor(3.0)) / 2), 4)   # p(correct) = 3/4 at b*
    (0.5493, 0.5493)
    """
    with torch.no_grad():
        z = logits.detach().to(torch.float64)
        valid = labels != IGNORE_INDEX
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        zy = z.gather(1, safe[:, None]).squeeze(1)
        w = valid.to(torch.float64) / valid.sum().clamp_min(1).to(torch.float64)
        b = torch.ones((), dtype=torch.float64, device=z.device)
        for _ in range(iters):
            p = (b * z).softmax(dim=1)
            mean = (p * z).sum(dim=1)
            g = ((mean - zy) * w).sum()
            h = ((p * (z - mean[:, None]) ** 2).sum(dim=1) * w).sum()
            step = g / h.clamp_min(1e-12)
            b = torch.minimum(torch.maximum(b - step, b / 4), b * 4).clamp(1e-3, 1e3)
        return b


class CalibratedCrossEntropy:
    """Cross-entropy after the temperature that minimises it on the batch:
    ``min_{T > 0} CE(logits / T, labels)``, for class logits ``(B, C)`` (labels of ``-100``
    ignored).

    Why: a weight blend of experts trained on different data is under-confident (its
    logits shrink as the experts disagree: the uniform blend of the default digits run needs
    ``T = 0.12``), so the raw cross-entropy of the blend rewards putting the weight on
    one or two confident experts over an accurate blend of many, and its minimiser has a
    lower accuracy than the uniform blend (``benchmarks/results/diagnose_default.md``).
    The accuracy of a blend does not depend on ``T``; this loss does not either, so it
    scores what fine-tuning cannot fix for free. The temperature is fitted by
    :func:`fit_inverse_temperature` (forward only, a few Newton steps on the logits) and
    held fixed in the gradient, which is then the gradient of the profiled loss (envelope
    theorem), so ``method="backprop"`` and ``"forward-grad"`` minimise the same function.

    >>> z, y = torch.tensor([[0.2, 0.0], [0.0, 0.2], [0.2, 0.0]]), torch.tensor([0, 1, 1])
    >>> round(float(CrossEntropy()(z, y)), 4), round(float(CalibratedCrossEntropy()(z, y)), 4)
    (0.6648, 0.6365)
    >>> round(float(CalibratedCrossEntropy()(10 * z, y)), 6) == round(float(CalibratedCrossEntropy()(z, y)), 6)
    True
    """

    name = "calibrated-cross-entropy"

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        logits = _at_least_float32(logits_of(outputs))
        if logits.ndim != 2 or not isinstance(targets, torch.Tensor) or targets.shape != logits.shape[:1]:
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"calibrated-cross-entropy needs logits (B, C) and labels (B,), but got logits "
                             f"{tuple(logits.shape)} and labels {got}")
        b = fit_inverse_temperature(logits, targets).to(logits.dtype)
        return F.cross_entropy(logits * b, targets)

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        """Arg-max hits and the number of examples scored (the temperature changes neither)."""
        return _argmax_hits(logits_of(outputs), targets)

    def __repr__(self) -> str:
        return "CalibratedCrossEntropy()"


class CausalLM:
    """Next-token cross-entropy of logits ``(B, T, V)`` against ``labels`` ``(B, T)``:
    position ``t`` predicts ``labels[:, t + 1]``; ``-100`` marks padding (ignored). The mean
    is over the scored tokens of the whole batch, as Hugging Face's causal-LM loss.

    >>> round(float(CausalLM()(torch.zeros(2, 4, 8), torch.tensor([[1, 2, 3, -100], [4, 5, 6, 7]]))), 4)
    2.0794
    """

    name = "causal-lm"

    @staticmethod
    def _shifted(outputs: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = logits_of(outputs)
        if not isinstance(labels, torch.Tensor) or logits.ndim != 3 or labels.shape != logits.shape[:2]:
            got = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"causal-lm needs logits (B, T, V) and labels (B, T), but got logits "
                             f"{tuple(logits.shape)} and labels {got}")
        return logits[:, :-1, :], labels[:, 1:]

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        logits, labels = self._shifted(outputs, targets)
        return F.cross_entropy(_at_least_float32(logits.reshape(-1, logits.shape[-1])), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX)

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        """Next-token arg-max hits and the number of scored tokens."""
        logits, labels = self._shifted(outputs, targets)
        return _argmax_hits(logits, labels)

    def __repr__(self) -> str:
        return "CausalLM()"


class CalibratedCausalLM(CausalLM):
    """Next-token cross-entropy after the temperature that minimises it on the batch (the
    causal-LM counterpart of :class:`CalibratedCrossEntropy`; the scored tokens are pooled).

    >>> z = torch.zeros(2, 4, 8); z[..., 3] = 0.1
    >>> labels = torch.tensor([[1, 3, 3, -100], [4, 3, 3, 3]])
    >>> float(CalibratedCausalLM()(z, labels)) <= float(CausalLM()(z, labels))
    True
    """

    name = "calibrated-causal-lm"

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        logits, labels = self._shifted(outputs, targets)
        flat = _at_least_float32(logits.reshape(-1, logits.shape[-1]))
        y = labels.reshape(-1)
        b = fit_inverse_temperature(flat, y).to(flat.dtype)
        return F.cross_entropy(flat * b, y, ignore_index=IGNORE_INDEX)

    def __repr__(self) -> str:
        return "CalibratedCausalLM()"


def calibrated(loss: Any) -> LossFn:
    """The calibrated version of a task's loss: :class:`CalibratedCrossEntropy` for
    cross-entropy (a :class:`CrossEntropy` or ``F.cross_entropy``), :class:`CalibratedCausalLM`
    for :class:`CausalLM`; a ``ValueError`` for any other.

    >>> calibrated(CrossEntropy()), calibrated(CausalLM())
    (CalibratedCrossEntropy(), CalibratedCausalLM())
    """
    if isinstance(loss, (CalibratedCrossEntropy, CalibratedCausalLM)):
        return loss
    if isinstance(loss, CausalLM):
        return CalibratedCausalLM()
    if isinstance(loss, CrossEntropy) or loss is F.cross_entropy:
        return CalibratedCrossEntropy()
    raise ValueError(f"no calibrated version of the loss {loss!r}: only cross-entropy and causal-lm have one")


class Entropy:
    """Mean Shannon entropy (nats) of ``softmax(logits)``: a label-free objective
    (AdaMerging). ``targets`` may be ``None``; for ``(B, T, V)`` logits, a ``(B, T)`` tensor
    of labels restricts the mean to the tokens that are not ``-100``.

    >>> round(float(Entropy()(torch.zeros(3, 4), None)), 4)        # log 4
    1.3863
    """

    name = "entropy"

    def __call__(self, outputs: Any, targets: Any = None) -> torch.Tensor:
        logits = _at_least_float32(logits_of(outputs))
        logp = F.log_softmax(logits, dim=-1)
        h = -(logp.exp() * logp).sum(dim=-1)  # (B,) or (B, T)
        if h.ndim == 2 and isinstance(targets, torch.Tensor) and targets.shape == h.shape:
            mask = (targets != IGNORE_INDEX).to(h.dtype)
            return (h * mask).sum() / mask.sum().clamp_min(1.0)
        return h.mean()

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        """No accuracy: entropy needs no labels."""
        return torch.tensor(-1), 0

    def __repr__(self) -> str:
        return "Entropy()"


class MultipleChoice:
    """Multiple-choice questions scored by the log-likelihood of each choice, as benchmark
    harnesses score them: ``ll_j = sum_t log p(choice_j,t | prompt, choice_j,<t)``, the
    loss ``-log softmax(ll)[answer]`` averaged over the questions, the accuracy that of
    ``argmax_j ll_j``.

    ``outputs``: logits ``(q * c, T, V)``, one row per choice of each question (a question's
    ``c`` rows in a run); ``targets`` ``(q, c, T + 1)``: the labels ``(q, c, T)`` (the choice's
    token ids at their positions, ``-100`` elsewhere; a row with none is no choice, padding
    a question with fewer than ``c``), then a column that is 1 on the answer's row, as
    :class:`~spsa_mix.data.text.ChoiceData` makes them. The logits at position ``t`` score
    the label at ``t + 1`` (as :class:`CausalLM`).

    >>> logits = torch.zeros(4, 3, 2); logits[1, 1, 1] = 2.0      # q=2 questions of c=2 rows, T=3, V=2
    >>> targets = torch.tensor([[[-100, -100, 0, 0], [-100, -100, 1, 1]],        # ll = log 1/2, 2 - log(1 + e^2)
    ...                         [[-100, 1, 1, 1], [-100, -100, -100, 0]]])       # one choice, and a dummy row
    >>> loss = MultipleChoice()
    >>> import math; ll0, ll1 = -math.log(2), 2 - math.log1p(math.exp(2))
    >>> round((math.log1p(math.exp(ll0 - ll1)) + 0.0) / 2, 4)      # question 2 alone: loss 0
    0.2248
    >>> round(float(loss(logits, targets)), 4), [int(v) for v in loss.correct(logits, targets)]
    (0.2248, [2, 2])
    """

    name = "multiple-choice"

    @staticmethod
    def scores(outputs: Any, targets: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ll, answer)``: each choice's log-likelihood ``(q, c)`` (``-inf`` for padding
        rows) and the answers' indices ``(q,)``."""
        logits = logits_of(outputs)
        if (not isinstance(targets, torch.Tensor) or targets.ndim != 3 or logits.ndim != 3
                or targets.shape[0] * targets.shape[1] != logits.shape[0] or targets.shape[2] != logits.shape[1] + 1):
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
            raise ValueError(f"multiple-choice needs logits (q * c, T, V) and targets (q, c, T + 1) (ChoiceData's "
                             f"batches), but got logits {tuple(logits.shape)} and targets {got}")
        q, c = targets.shape[:2]
        labels = targets[..., :-1].reshape(q * c, -1)
        shifted = _at_least_float32(logits[:, :-1, :])
        nll = F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), labels[:, 1:].reshape(-1),
                              ignore_index=IGNORE_INDEX, reduction="none")  # 0 where not scored
        ll = -nll.reshape(q, c, -1).sum(dim=-1)
        real = (labels != IGNORE_INDEX).any(dim=-1).reshape(q, c)
        return ll.masked_fill(~real, float("-inf")), targets[..., -1].argmax(dim=-1)

    def __call__(self, outputs: Any, targets: Any) -> torch.Tensor:
        ll, answer = self.scores(outputs, targets)
        return -F.log_softmax(ll, dim=-1).gather(1, answer[:, None]).mean()

    def correct(self, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
        """Questions whose answer has the highest log-likelihood, and the number of questions."""
        ll, answer = self.scores(outputs, targets)
        return (ll.argmax(dim=-1) == answer).sum(), int(answer.shape[0])

    def __repr__(self) -> str:
        return "MultipleChoice()"


LOSSES: dict[str, Callable[[], LossFn]] = {"cross-entropy": CrossEntropy, "calibrated-cross-entropy": CalibratedCrossEntropy,
                                           "causal-lm": CausalLM, "calibrated-causal-lm": CalibratedCausalLM,
                                           "entropy": Entropy, "multiple-choice": MultipleChoice}


def resolve_loss(spec: Any) -> LossFn:
    """A loss from a name of :data:`LOSSES`, a callable, or ``"package.module:callable"``.

    >>> resolve_loss("entropy"), resolve_loss("torch.nn.functional:cross_entropy").__name__
    (Entropy(), 'cross_entropy')
    >>> resolve_loss("mse")
    Traceback (most recent call last):
    ...
    ValueError: loss must be one of ['cross-entropy', 'calibrated-cross-entropy', 'causal-lm', 'calibrated-causal-lm', 'entropy', 'multiple-choice'], a callable or 'package.module:callable', but got 'mse'
    """
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    if isinstance(spec, str):
        if spec in LOSSES:
            return LOSSES[spec]()
        module, sep, attr = spec.partition(":")
        if sep and module and attr:
            try:
                fn = getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ValueError(f"loss {spec!r}: cannot import {attr!r} from {module!r} ({e})") from None
            if not callable(fn):
                raise ValueError(f"loss {spec!r} is not callable (it is a {type(fn).__name__})")
            _check_two_arguments(fn, spec)
            return fn  # type: ignore[no-any-return]
    raise ValueError(f"loss must be one of {list(LOSSES)}, a callable or 'package.module:callable', but got {spec!r}")


def _check_two_arguments(fn: Any, spec: str) -> None:
    """``fn`` can be called as ``fn(outputs, targets)`` (where its signature can be read).

    >>> _check_two_arguments(lambda outputs: 0.0, "m:f")
    Traceback (most recent call last):
    ...
    ValueError: loss 'm:f' must take (outputs, targets), but its signature is (outputs)
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: they are called as they are
        return
    try:
        sig.bind(None, None)
    except TypeError:
        raise ValueError(f"loss {spec!r} must take (outputs, targets), but its signature is {sig}") from None


def correct_counts(loss_fn: Any, outputs: Any, targets: Any) -> tuple[torch.Tensor, int]:
    """``(hits, count)`` for the accuracy that goes with ``loss_fn``: its own ``correct``
    method if it has one, else arg-max hits per example; ``hits`` is ``-1`` (and ``count``
    0) when the targets are not class indices of the outputs.

    >>> [int(v) for v in correct_counts(F.cross_entropy, torch.eye(3), torch.tensor([0, 1, 0]))]
    [2, 3]
    """
    own = getattr(loss_fn, "correct", None)
    if callable(own):
        return own(outputs, targets)  # type: ignore[no-any-return]
    try:
        logits = logits_of(outputs)
    except ValueError:
        return torch.tensor(-1), 0
    return _argmax_hits(logits, targets)
