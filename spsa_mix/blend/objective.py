"""``BlendedObjective``: the loss of theta(alpha) = sum_i alpha_i theta_i on a minibatch.

The objective that :func:`spsa_mix.minimize` optimises when the experts are networks.
``obj(points)`` scores ``n`` mixing weights at once, forward only: under
:func:`torch.inference_mode`, the architecture in eval mode (BatchNorm on its blended
running statistics, dropout off), all ``n`` probes on the same minibatch, so that they
differ only by alpha; the minibatch advances once per call. ``value_and_grad`` (autograd,
for ``method="backprop"``) and ``jvp`` (forward-mode AD, for ``method="forward-grad"``)
advance it once per call as well, so every method sees the same minibatch schedule.

Layer-wise mixing (``granularity="layer"``): one simplex per parameter group, a group
being each module that owns floating-point tensors directly (a convolution's weight, a
BatchNorm layer's weight, bias and running statistics, a linear layer's weight and
bias, a ViT's positional embedding); ``obj.groups`` names them in ``state_dict`` order and
``obj.shape == (len(obj.groups), K)``: pass ``k=obj.shape`` to :func:`spsa_mix.minimize`.

Different heads (``head="fc"``, a prefix or a list of prefixes of ``state_dict`` names):
the tensors under the head are not blended; they are taken from ``experts[head_from]``,
or, with ``head_from=None``, from ``model`` itself (e.g. a head for the target's classes).
Only that source's head must match the architecture; the other experts' heads may have
any shape or be missing. Everywhere else ``model`` only provides the architecture: its
own weights are ignored.

Example
-------
>>> import numpy as np, torch, spsa_mix
>>> gen = torch.Generator().manual_seed(0)
>>> experts = [torch.nn.Linear(4, 3) for _ in range(3)]
>>> x, y = torch.randn(32, 4, generator=gen), torch.randint(0, 3, (32,), generator=gen)
>>> obj = BlendedObjective(torch.nn.Linear(4, 3), experts, data=(x, y), device="cpu")
>>> obj.k, obj.shape, obj(np.full((2, 3), 1 / 3)).shape
(3, (3,), (2,))
>>> res = spsa_mix.minimize(obj, k=obj.k, vectorized=True, maxiter=20, seed=0)
>>> merged = obj.blended_model(res.x)   # an nn.Module holding theta(alpha*)
>>> merged.training, merged.weight.requires_grad
(True, True)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from torch import nn

from spsa_mix.blend.batches import Batch, BatchStream
from spsa_mix.blend.batchnorm import differentiable_batchnorm
from spsa_mix.blend.devices import check_float_dtype, resolve_device
from spsa_mix.blend.experts import ExpertSource, check_expert_list, matches_prefix, stack_experts
from spsa_mix.blend.functional import bind_to_buffer, blend, blend_into, call_blended, map_probes, unflatten
from spsa_mix.core.errors import NonFiniteLossError

__all__ = ["BlendedObjective", "LossShapeError"]

logger = logging.getLogger("spsa_mix")
FloatArray = NDArray[np.float64]
Batched = bool | Literal["auto"]

DEFAULT_SIMPLEX_ATOL = 1e-6  # this package's tolerance on alpha >= 0 and sum(alpha) == 1
AUTO_VMAP_MIN_PROBES = 4  # "auto" batches calls with at least this many probes off the CPU (step_cost_cuda.md)
Score = Callable[[Any, Any], tuple[torch.Tensor, ...]]


def auto_batches(device: torch.device, n: int, *, convolutional: bool) -> bool:
    """The ``batched="auto"`` policy: vmap off the CPU, for calls of at least
    ``AUTO_VMAP_MIN_PROBES`` probes, in networks without convolutions.

    Measured (``benchmarks/results/step_cost_cpu_quiet16.md``, ``step_cost_cuda_m1248.md``,
    ``step_cost_cuda.md``): on the CPU the loop always wins (vmap is 1.5-3.7x slower: it
    turns each convolution into a grouped one); on an H100 the batched ViT wins from 4
    probes up (1.3-2.9x at batch 128 and 256, though not at 1024), while batched CNNs win only
    in some runs at small, launch-bound batches and lose at larger ones. Batching also
    multiplies the activation memory by the number of probes.

    >>> auto_batches(torch.device("cpu"), 8, convolutional=False)
    False
    >>> auto_batches(torch.device("cuda"), 8, convolutional=False), auto_batches(torch.device("cuda"), 2, convolutional=False)
    (True, False)
    """
    return device.type != "cpu" and n >= AUTO_VMAP_MIN_PROBES and not convolutional


class LossShapeError(ValueError):
    """``loss_fn`` returned something other than a scalar tensor."""


def _math_attention() -> contextlib.AbstractContextManager[Any]:
    """Scaled-dot-product attention through its plain (math) kernel: the fused CPU kernels
    have no forward-mode derivative."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


class BlendedObjective:
    """Loss of the blended network ``theta(alpha) = sum_i alpha_i theta_i`` on target data.

    Parameters
    ----------
    model:
        The architecture (an ``nn.Module``); its weights are ignored except a head kept
        with ``head=...`` and ``head_from=None``. It is copied, never modified.
    experts:
        At least two experts: ``nn.Module``\\ s, state dicts, or ``.pt`` / ``.safetensors``
        files, each matching ``model`` (names, shapes, dtypes of parameters and buffers).
    loss_fn:
        ``loss_fn(outputs, targets) -> scalar tensor`` (default cross-entropy, mean over
        the batch).
    data:
        A ``DataLoader`` or any iterable of ``(inputs, targets)`` batches, cycled forever;
        or one fixed batch ``(inputs, targets)`` (a tuple of tensors) scored on every call.
        ``None`` is allowed for an objective used only to build blended models.
    device:
        ``None`` or ``"auto"``: CUDA when available, else the CPU. An unavailable device is an error.
    dtype:
        Floating-point type of the blend and of the forward passes (float32 by default).
    granularity:
        ``"model"`` (one alpha of ``K`` weights) or ``"layer"`` (one simplex per group; see
        the module docstring).
    head, head_from:
        Keep a head unblended: ``head`` names its prefix(es); ``head_from`` is the index of
        the expert that provides it, ``None`` for ``model``'s own head.
    batched:
        ``True``: score the probes of one call in one batched forward
        (:func:`torch.func.vmap` over a functional call); ``False``: one forward per probe,
        the module running on weights written into its own buffer; ``"auto"`` (default):
        batched off the CPU for calls of at least ``AUTO_VMAP_MIN_PROBES = 4`` probes
        (SPSA with ``m >= 2``) in networks without convolutions, else the loop (see
        :func:`auto_batches` for the measurements); where the architecture does not allow
        vmap, "auto" falls back to the loop (once, logged). The same policy applies to the
        tangents of :meth:`jvp`.
    simplex_atol:
        Tolerance of the check that each row of alpha is on the simplex; ``None`` accepts
        any finite alpha (extrapolation).

    Attributes
    ----------
    k, shape, groups, device, dtype, num_blended

    Raises
    ------
    ValueError
        For no experts or one, experts that do not match (naming the first offending
        tensor and the expert's index), an unavailable device, and any other bad argument.
    """

    def __init__(
        self,
        model: nn.Module,
        experts: Sequence[ExpertSource],
        *,
        loss_fn: Callable[[Any, Any], torch.Tensor] = F.cross_entropy,
        data: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        granularity: Literal["model", "layer"] = "model",
        head: str | Sequence[str] | None = None,
        head_from: int | None = None,
        batched: Batched = "auto",
        simplex_atol: float | None = DEFAULT_SIMPLEX_ATOL,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module (the architecture), but got {type(model).__name__}")
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, but got {loss_fn!r}")
        if granularity not in ("model", "layer"):
            raise ValueError(f"granularity must be 'model' or 'layer', but got {granularity!r}")
        if not (batched is True or batched is False or (isinstance(batched, str) and batched == "auto")):
            raise ValueError(f"batched must be True, False or 'auto', but got {batched!r}")
        if simplex_atol is not None and (isinstance(simplex_atol, bool) or not isinstance(simplex_atol, numbers.Real)
                                         or not simplex_atol >= 0):
            raise ValueError(f"simplex_atol must be a non-negative number or None, but got {simplex_atol!r}")
        self.device = resolve_device(device)
        self.dtype = check_float_dtype(dtype)
        expert_list = check_expert_list(experts)
        reference = model.state_dict()
        heads = self._check_head(head, head_from, reference, len(expert_list))

        self.loss_fn = loss_fn
        self.granularity = granularity
        self.head = heads
        self.head_from = None if head_from is None else int(head_from)
        self.simplex_atol = None if simplex_atol is None else float(simplex_atol)
        self._stack = stack_experts(reference, expert_list, device=self.device, dtype=self.dtype,
                                    granularity=granularity, head=heads, head_from=self.head_from)
        # A pristine copy of the architecture (for blended_model and the gradient model), and
        # the probe model, whose blended tensors are views of one flat buffer of P scalars.
        self._arch = copy.deepcopy(model).to(device=self.device, dtype=self.dtype).eval().requires_grad_(False)
        self._theta = torch.zeros(self._stack.layout.size, device=self.device, dtype=self.dtype)
        self._model = bind_to_buffer(copy.deepcopy(self._arch), self._stack.layout, self._theta,
                                     self._stack.constants)
        self._grad_model: nn.Module | None = None
        self._stream = BatchStream(data, device=self.device, dtype=self.dtype) if data is not None else None
        self.last_batch: Batch | None = None  # the minibatch of the last call; spsa_mix.distributed weights shards by it
        self._policy: Batched = batched
        self._vmap = {"probes": batched is not False, "jvp": batched is not False}
        self._convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())
        k = self._stack.k
        self.shape: tuple[int, ...] = (k,) if granularity == "model" else (len(self._stack.groups), k)

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_head(head: Any, head_from: Any, reference: dict[str, torch.Tensor], k: int) -> tuple[str, ...]:
        if head is None:
            if head_from is not None:
                raise ValueError(f"head_from={head_from!r} needs head= (the prefix of the head's tensors)")
            return ()
        heads = (head,) if isinstance(head, str) else tuple(head) if isinstance(head, Sequence) else None
        if not heads or not all(isinstance(h, str) and h for h in heads):
            raise ValueError(f"head must be a non-empty string or a list of them (state_dict prefixes), but got {head!r}")
        for h in heads:
            if not any(matches_prefix(name, (h,)) for name in reference):
                tops = sorted({name.split(".")[0] for name in reference})
                raise ValueError(f"head={h!r} matches no tensor of the model; its top-level names are {tops}")
        if head_from is not None and (isinstance(head_from, bool) or not isinstance(head_from, numbers.Integral)
                                      or not 0 <= int(head_from) < k):
            raise ValueError(f"head_from must be an expert index in [0, {k - 1}] or None, but got {head_from!r}")
        return heads

    # ------------------------------------------------------------------ properties
    @property
    def k(self) -> int:
        """Number of experts ``K``."""
        return self._stack.k

    @property
    def groups(self) -> list[str]:
        """Names of the parameter groups (module paths), one per row of alpha; ``["model"]``
        for ``granularity="model"``."""
        return list(self._stack.groups)

    @property
    def num_blended(self) -> int:
        """Number of blended scalars per expert."""
        return self._stack.layout.numel

    def uses_vmap(self, n: int, kind: str = "probes") -> bool:
        """Whether a call with ``n`` probes (or tangents, ``kind="jvp"``) runs batched.

        >>> BlendedObjective._example().uses_vmap(8)    # "auto" on the CPU: the loop
        False
        """
        if n < 2 or not self._vmap[kind]:
            return False
        return auto_batches(self.device, n, convolutional=self._convolutional) if self._policy == "auto" else True

    @property
    def batched(self) -> Batched:
        """The ``batched`` policy: ``True``, ``False``, or ``"auto"``; ``False`` once an
        ``"auto"`` objective has fallen back to the loop."""
        return self._policy if self._vmap["probes"] else False

    @property
    def batches_drawn(self) -> int:
        """How many minibatches the objective has consumed (one per call)."""
        return 0 if self._stream is None else self._stream.batches_drawn

    # ------------------------------------------------------------------ checks
    def _check_points(self, points: ArrayLike, name: str = "points") -> tuple[FloatArray, bool]:
        try:
            arr = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name} must be an array of shape (n, *{self.shape}), but got {points!r:.100}") from e
        if arr.shape == self.shape:
            single, arr = True, arr[None]
        elif arr.ndim == len(self.shape) + 1 and arr.shape[1:] == self.shape and arr.shape[0] >= 1:
            single = False
        else:
            hint = (f" (granularity='layer': one row of {self.k} weights per group, {len(self.groups)} groups)"
                    if self.granularity == "layer" else "")
            raise ValueError(
                f"{name} must have shape {self.shape} or (n, {', '.join(map(str, self.shape))}), "
                f"but got shape {arr.shape}{hint}"
            )
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be finite, but got {np.array2string(arr, threshold=20)}")
        if self.simplex_atol is not None:
            tol = self.simplex_atol
            rows = arr.reshape(-1, self.k)
            bad = np.flatnonzero((rows.min(axis=1) < -tol) | (np.abs(rows.sum(axis=1) - 1.0) > tol))
            if bad.size:
                row = rows[bad[0]]
                raise ValueError(
                    f"{name} must lie on the probability simplex (non-negative, each row summing to 1, "
                    f"tolerance {tol:g}), but a row is {np.array2string(row, precision=4)} (sum {row.sum():.6g}); "
                    "pass simplex_atol=None to allow any weights"
                )
        return arr, single

    def _check_point(self, alpha: ArrayLike) -> FloatArray:
        arr, single = self._check_points(alpha, "alpha")
        if not single:
            raise ValueError(f"alpha must have shape {self.shape}, but got shape {np.shape(alpha)}")
        return arr[0]

    def _next_batch(self) -> Batch:
        if self._stream is None:
            raise ValueError("this BlendedObjective has no data (data=None): pass data= to compute losses")
        self.last_batch = self._stream.next()
        return self.last_batch

    @staticmethod
    def _check_finite(values: FloatArray, points: FloatArray, what: str) -> None:
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise NonFiniteLossError(
                f"the {what} of the blended network is {float(values[i])!r} at probe {i} "
                f"(alpha={np.array2string(points[min(i, len(points) - 1)], precision=4, threshold=20)})",
                index=i,
                value=float(values[i]),
            )

    # ------------------------------------------------------------------ the blend
    def _blend(self, alpha: torch.Tensor) -> torch.Tensor:
        """``(n, *shape)`` -> ``(n, P)`` flat blended parameters."""
        segments = self._stack.segments if self.granularity == "layer" else None
        return blend(self._stack.weights, alpha, segments)

    def _loss(self, model: nn.Module, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        out = call_blended(model, theta, self._stack.layout, self._stack.constants, batch.args, batch.kwargs)
        return self._check_loss(self.loss_fn(out, batch.targets))

    @staticmethod
    def _check_loss(loss: Any) -> torch.Tensor:
        if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
            got = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else f"a {type(loss).__name__}"
            raise LossShapeError(
                f"loss_fn must return a scalar tensor (reduce over the batch, e.g. reduction='mean'), but it returned {got}"
            )
        return loss

    def _map(self, kind: str, fn: Callable[[torch.Tensor], Any], rows: torch.Tensor) -> Any:
        """``map_probes`` with the ``batched`` policy; ``"auto"`` falls back to a loop once."""
        if not self.uses_vmap(rows.shape[0], kind):
            return map_probes(fn, rows, batched=False)
        try:
            return map_probes(fn, rows, batched=True)
        except LossShapeError:
            raise
        except Exception as e:
            if self._policy is True:
                raise
            out = map_probes(fn, rows, batched=False)  # raises if the loop fails too
            logger.warning("batched %s (torch.func.vmap) failed for this architecture (%s: %.200s); "
                           "scoring them in a loop from now on", kind, type(e).__name__, e)
            self._vmap[kind] = False
            return out

    def _probe(self, alpha: torch.Tensor, batch: Batch, score: Score) -> tuple[torch.Tensor, ...]:
        """``score(outputs, targets)`` (a tuple of scalars) for each of ``n`` probes ``alpha``
        ``(n, *shape)`` on one batch; each result has shape ``(n,)``. Call under inference mode.

        Looped probes write theta into the probe model's own buffer (one matrix-vector
        product) and call the module as it is; batched probes form all thetas with one
        matrix product and vmap a functional call over them.
        """
        n = alpha.shape[0]
        if self.uses_vmap(n):
            st = self._stack

            def fn(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
                out = call_blended(self._model, theta, st.layout, st.constants, batch.args, batch.kwargs)
                return score(out, batch.targets)

            try:
                return tuple(map_probes(fn, self._blend(alpha), batched=True))
            except LossShapeError:
                raise
            except Exception as e:
                if self._policy is True:
                    raise
                results = self._loop(alpha, batch, score)  # raises if the loop fails too
                logger.warning("batched probes (torch.func.vmap) failed for this architecture (%s: %.200s); "
                               "scoring them in a loop from now on", type(e).__name__, e)
                self._vmap["probes"] = False
                return results
        return self._loop(alpha, batch, score)

    def _loop(self, alpha: torch.Tensor, batch: Batch, score: Score) -> tuple[torch.Tensor, ...]:
        segments = self._stack.segments if self.granularity == "layer" else None
        results = []
        for a in alpha:
            blend_into(self._theta, self._stack.weights, a, segments)
            results.append(score(self._model(*batch.args, **batch.kwargs), batch.targets))
        return tuple(torch.stack(parts) for parts in zip(*results, strict=True))

    def _score_loss(self, out: Any, targets: Any) -> tuple[torch.Tensor]:
        return (self._check_loss(self.loss_fn(out, targets)),)

    def _gradient_model(self) -> nn.Module:
        if self._grad_model is None:
            self._grad_model = differentiable_batchnorm(copy.deepcopy(self._arch))
        return self._grad_model

    # ------------------------------------------------------------------ the objective
    def __call__(self, points: ArrayLike) -> FloatArray | float:
        """Losses of ``n`` mixing weights on one minibatch, forward only.

        Parameters
        ----------
        points:
            ``(n, *shape)`` mixing weights (each row on the simplex); a single point of
            shape ``shape`` gives a float.

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64 losses, all on the same minibatch; the minibatch then advances.

        Raises
        ------
        ValueError
            For points of the wrong shape, off the simplex or not finite; a ``loss_fn``
            that does not return a scalar.
        NonFiniteLossError
            If a loss is NaN or infinite (a ``ValueError``; :func:`spsa_mix.minimize` stops
            cleanly on it and keeps the last finite iterate).

        Examples
        --------
        >>> obj = BlendedObjective._example()
        >>> obj(np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])).round(4).tolist()
        [0.6931, 0.5471, 0.4399]
        """
        pts, single = self._check_points(points)
        batch = self._next_batch()
        with torch.inference_mode():
            alpha = torch.as_tensor(pts, dtype=self.dtype, device=self.device)
            (losses,) = self._probe(alpha, batch, self._score_loss)  # (n,)
            values = losses.to(torch.float64).cpu().numpy()
        self._check_finite(values, pts, "loss")
        return float(values[0]) if single else values

    def value_and_grad(self, alpha: ArrayLike) -> tuple[float, FloatArray]:
        """Loss at ``alpha`` and its gradient with respect to alpha, by autograd.

        One forward and one backward pass on the next minibatch, the model in eval mode
        as for the probes. The gradient is ``d L / d alpha_i = <grad_theta L, theta_i>``
        (with the BatchNorm running statistics differentiated too).

        Returns
        -------
        (float, numpy.ndarray)
            The loss and the gradient, of the same shape as ``alpha``.

        With ``spsa_mix.minimize(..., method="backprop")`` one call is charged
        ``1 + backward_cost`` evaluations (default 3: a backward pass counts as two
        forwards, GLUE section 4.1).

        Examples
        --------
        >>> loss, grad = BlendedObjective._example().value_and_grad(np.array([0.5, 0.5]))
        >>> round(loss, 4), grad.round(4).tolist()     # expert 0 is all zeros: <grad, theta_0> = 0
        (0.5471, [0.0, -0.2517])
        """
        point = self._check_point(alpha)
        batch = self._next_batch()
        model = self._gradient_model()
        a = torch.tensor(point, dtype=self.dtype, device=self.device, requires_grad=True)
        with torch.enable_grad():
            loss = self._loss(model, self._blend(a[None])[0], batch)
            (grad,) = torch.autograd.grad(loss, a)
        value = float(loss.detach())
        g = grad.to(torch.float64).cpu().numpy()
        self._check_finite(np.array([value]), point[None], "loss")
        self._check_finite(np.array([np.abs(g).sum()]), point[None], "gradient")
        return value, g

    def jvp(self, alpha: ArrayLike, tangents: ArrayLike) -> tuple[float, FloatArray]:
        """Loss at ``alpha`` and its exact directional derivatives along ``tangents``.

        Forward-mode AD (:func:`torch.func.jvp`) on the next minibatch, no backward pass
        and no finite-difference bias; the ``m`` tangents are pushed through one batched
        forward where the architecture allows it (``batched``), else one by one.

        Parameters
        ----------
        alpha:
            A point of shape ``shape``.
        tangents:
            ``(m, *shape)`` directions in alpha space.

        Returns
        -------
        (float, numpy.ndarray)
            The loss and the ``m`` directional derivatives ``<grad L, t_r>``.

        Examples
        --------
        >>> loss, derivs = BlendedObjective._example().jvp(np.array([0.5, 0.5]), np.array([[1.0, -1.0]]))
        >>> round(loss, 4), derivs.round(4).tolist()     # 0.0 - (-0.2517), as value_and_grad says
        (0.5471, [0.2517])
        """
        point = self._check_point(alpha)
        tan = np.asarray(tangents, dtype=np.float64)
        if tan.ndim != len(self.shape) + 1 or tan.shape[1:] != self.shape or tan.shape[0] < 1:
            raise ValueError(f"tangents must have shape (m, {', '.join(map(str, self.shape))}), but got shape {tan.shape}")
        if not np.all(np.isfinite(tan)):
            raise ValueError("tangents must be finite")
        batch = self._next_batch()
        model = self._gradient_model()
        a = torch.as_tensor(point, dtype=self.dtype, device=self.device)
        t = torch.as_tensor(tan, dtype=self.dtype, device=self.device)

        def loss_at(x: torch.Tensor) -> torch.Tensor:
            return self._loss(model, self._blend(x[None])[0], batch)

        def along(direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = torch.func.jvp(loss_at, (a,), (direction,))
            return out[0], out[1]  # (loss, directional derivative)

        with torch.no_grad(), _math_attention():
            losses, derivs = self._map("jvp", along, t)
        value = float(losses[0])
        d = derivs.to(torch.float64).cpu().numpy()
        self._check_finite(np.array([value]), point[None], "loss")
        self._check_finite(d, np.repeat(point[None], len(d), axis=0), "directional derivative")
        return value, d

    # ------------------------------------------------------------------ blended models
    def blended_state_dict(self, alpha: ArrayLike) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of theta(alpha): every tensor of the architecture, in order.

        Floating-point tensors are blended (head tensors copied from their source);
        integer buffers (``num_batches_tracked``) are the rounded weighted average of the
        experts' values. Each tensor owns its memory (safe to save with safetensors).

        >>> state = BlendedObjective._example().blended_state_dict(np.array([0.25, 0.75]))
        >>> state["weight"].tolist()
        [[0.0, 0.0], [0.75, -0.75]]
        """
        point = self._check_point(alpha)
        st = self._stack
        with torch.no_grad():
            a = torch.as_tensor(point, dtype=self.dtype, device=self.device)
            tensors = {n: v.clone() for n, v in unflatten(self._blend(a[None])[0], st.layout).items()}
            rows = torch.as_tensor(point, dtype=torch.float64, device=self.device).reshape(-1, self.k)  # (G, K)
            for name, value in st.constants.items():
                tensors[name] = value.clone()
            for name, (stacked, group) in st.counters.items():
                if group is None or stacked.dtype == torch.bool:
                    continue  # expert 0's value, already in constants
                w = rows[group].reshape((-1,) + (1,) * (stacked.ndim - 1))
                tensors[name] = torch.round((w * stacked.to(torch.float64)).sum(0)).to(stacked.dtype)
        return {name: tensors[name] for name in st.names}

    def blended_model(self, alpha: ArrayLike) -> nn.Module:
        """A fresh copy of the architecture holding theta(alpha), ready to fine-tune:
        on ``device``, in ``dtype``, in train mode, every parameter requiring grad.

        >>> net = BlendedObjective._example().blended_model(np.array([0.0, 1.0]))
        >>> net.weight.tolist(), net.training, net.weight.requires_grad
        ([[0.0, 0.0], [1.0, -1.0]], True, True)
        """
        net = copy.deepcopy(self._arch)
        net.load_state_dict(self.blended_state_dict(alpha))
        return net.requires_grad_(True).train()

    @classmethod
    def _example(cls) -> BlendedObjective:
        """Two linear experts on one fixed batch, for the docstring examples."""
        experts = [{"weight": torch.zeros(2, 2), "bias": torch.zeros(2)},
                   {"weight": torch.tensor([[0.0, 0.0], [1.0, -1.0]]), "bias": torch.zeros(2)}]
        x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([1, 0, 1])
        return cls(nn.Linear(2, 2), experts, data=(x, y), device="cpu")

    def __repr__(self) -> str:
        return (f"BlendedObjective(k={self.k}, shape={self.shape}, granularity={self.granularity!r}, "
                f"num_blended={self.num_blended}, device={str(self.device)!r}, dtype={self.dtype})")
