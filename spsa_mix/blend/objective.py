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

Three spaces (:mod:`spsa_mix.blend.spaces`): the convex blend of full weights
(``space="convex"``, the default); task vectors over a ``base``, ``theta = theta_base + s *
sum_i alpha_i (theta_i - theta_base)`` with a scale ``s`` fixed (``scale=2.0``) or learned
(``scale="learned"``: ``obj.shape`` is then a :class:`~spsa_mix.core.domain.Domain` and a
point is the flat vector of the weights followed by ``s``); and LoRA adapters over one
base (``space="lora"``, :meth:`BlendedObjective.from_pretrained` only). Hugging Face
directories, sharded or not, are read lazily by :meth:`BlendedObjective.from_pretrained`
(:mod:`spsa_mix.blend.pretrained`); :meth:`BlendedObjective.save_pretrained` writes the
blend where transformers, PEFT or safetensors load it (:mod:`spsa_mix.blend.saving`).

Memory: the experts are stacked once, in their stored dtype (bf16 stays bf16), and the blend
is accumulated in float32 then cast to ``dtype``; the architecture's own copies hold no
weights (:mod:`spsa_mix.blend.skeleton`). Peak memory is written down and measured in
``docs/blend.md``.

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
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray
from torch import nn

from spsa_mix.blend.batches import Batch, BatchStream
from spsa_mix.blend.batchnorm import differentiable_batchnorm
from spsa_mix.blend.devices import check_device_dtype, check_float_dtype, resolve_device
from spsa_mix.blend.held.experts import (
    ExpertSource,
    ExpertStack,
    check_expert_list,
    matches_prefix,
    open_experts,
    tied_aliases,
)
from spsa_mix.blend.export import blended_entries, blended_module, iter_blended
from spsa_mix.blend.held.functional import (
    accumulation_dtype,
    bind_to_buffer,
    blend,
    blend_into,
    call_blended,
    map_probes,
)
from spsa_mix.blend.lora import LoRABlend, write_adapter
from spsa_mix.blend.held.lockstep import STREAMED_PROBES, Lockstep
from spsa_mix.blend.held.memory import check_memory, hold_experts
from spsa_mix.blend.held.streamed import StreamedExperts
from spsa_mix.blend.losses import resolve_loss
from spsa_mix.blend.methods.space import MethodBlend, TaskVectorMethod, as_method, method_memory
from spsa_mix.blend.pretrained import load_pretrained
from spsa_mix.blend.saving import SaveSource, save_blend, save_tensors
from spsa_mix.blend.skeleton import meta_tensors, skeleton_of
from spsa_mix.blend.spaces import BlendSpace, check_space
from spsa_mix.core.domain import Domain
from spsa_mix.core.errors import NonFiniteLossError

__all__ = ["BlendedObjective", "LossShapeError"]

logger = logging.getLogger("spsa_mix")
FloatArray = NDArray[np.float64]
Batched = bool | Literal["auto"]

DEFAULT_SIMPLEX_ATOL = 1e-6  # this package's tolerance on alpha >= 0 and sum(alpha) == 1
AUTO_VMAP_MIN_PROBES = 4  # "auto" batches calls with at least this many probes off the CPU (step_cost_cuda.md)
Memory = Literal["auto", "resident", "streamed"]
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
        with ``head=...`` and ``head_from=None``. It is copied without its weights, never
        modified.
    experts:
        At least two experts: ``nn.Module``\\ s, state dicts, ``.pt`` / ``.safetensors``
        files (names saved from ``DataParallel``, ``module.*``, are accepted) or Hugging
        Face directories, each matching ``model`` (names, shapes, dtypes of parameters and
        buffers). Tied parameters of ``model`` (e.g. an output embedding tied to the input
        one) are blended once and stay tied; the experts may store them once or twice.
    loss_fn:
        ``loss_fn(outputs, targets) -> scalar tensor`` (default cross-entropy, mean over
        the batch), or a name of :func:`spsa_mix.blend.losses.resolve_loss`
        (``"cross-entropy"``, ``"causal-lm"``, ``"entropy"``).
    data:
        A ``DataLoader`` or any iterable of batches, cycled forever; a batch is a pair
        ``(inputs, targets)`` or a dict (``input_ids``, ``attention_mask``, optional
        ``labels``; see :mod:`spsa_mix.blend.batches`); or one fixed batch (a tuple
        ``(inputs, targets)`` of tensors, or one dict) scored on every call. ``None`` is
        allowed for an objective used only to build blended models.
    device:
        ``None`` or ``"auto"``: CUDA when available, else the CPU. An unavailable device is an error.
    dtype:
        Floating-point type of the forward passes and of the blended weights (float32 by
        default); the blend itself is accumulated in float32 (float64 if ``dtype`` is).
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
        Tolerance of the check that each row of alpha is on the simplex (and that a learned
        scale is positive); ``None`` accepts any finite point (extrapolation, or LoraHub's
        unconstrained weights in a box).
    base:
        The model the experts were fine-tuned from (a source like an expert), for
        ``space="task-vectors"``.
    space:
        ``"convex"`` (default) or ``"task-vectors"`` (:mod:`spsa_mix.blend.spaces`; LoRA
        adapters go through :meth:`from_pretrained`), or one of mergekit's task-vector methods
        (``"ties"``, ``"dare_ties"``, ... or a :class:`~spsa_mix.blend.methods.space.TaskVectorMethod`
        with its parameters; :mod:`spsa_mix.blend.methods.space`).
    scale:
        Task vectors: the scale ``s > 0`` (default 1, the convex blend), or ``"learned"``.
    stack_dtype:
        The dtype the experts are kept in on the device; default their stored dtype
        (promoted across tensors and experts). Resident experts only.
    memory, max_memory:
        ``"resident"``: the experts stacked on the device; ``"streamed"``: mapped where they
        lie (safetensors memory-mapped, modules' own tensors) and blended module by module
        during the forward, for :data:`STREAMED_PROBES` probes from one read
        (:mod:`spsa_mix.blend.held.streamed`, :mod:`~spsa_mix.blend.held.lockstep`; forward
        probes only: no ``value_and_grad``, ``jvp`` or vmap); ``"auto"`` (default): resident
        when the stack fits in half of ``max_memory`` (bytes or ``"20GB"``; default 90 % of
        the memory free on the device), else streamed (:mod:`spsa_mix.blend.held.memory`).
        The choice is logged and kept in ``memory_choice``.

    Attributes
    ----------
    k, shape, domain, groups, space, scale, device, dtype, stack_dtype, num_blended, memory_mode, memory_choice

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
        loss_fn: Callable[[Any, Any], torch.Tensor] | str = F.cross_entropy,
        data: Any = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
        granularity: Literal["model", "layer"] = "model",
        head: str | Sequence[str] | None = None,
        head_from: int | None = None,
        batched: Batched = "auto",
        simplex_atol: float | None = DEFAULT_SIMPLEX_ATOL,
        base: ExpertSource | None = None,
        space: Literal["convex", "task-vectors"] | str | TaskVectorMethod = "convex",
        scale: float | Literal["learned"] = 1.0,
        stack_dtype: torch.dtype | None = None,
        memory: Memory = "auto",
        max_memory: int | str | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module (the architecture), but got {type(model).__name__}")
        loss = self._check_loss_fn(loss_fn, "loss_fn")
        self._check_options(granularity, batched, simplex_atol)
        space_name, scale_value = check_space(space, scale, has_base=base is not None)
        if space_name == "lora":
            raise ValueError("space='lora' blends PEFT adapter directories: use "
                             "BlendedObjective.from_pretrained(adapters, base=..., space='lora')")
        if base is not None and space_name == "convex":
            raise ValueError("base= is used by space='task-vectors' (and 'lora'); the convex blend has no base")
        dev = resolve_device(device)
        dt = check_device_dtype(dev, check_float_dtype(dtype))
        if stack_dtype is not None:
            check_float_dtype(stack_dtype)
        check_memory(memory, max_memory)
        expert_list = check_expert_list(experts)
        reference = model.state_dict()
        heads = self._check_head(head, head_from, reference, len(expert_list))
        method = as_method(space)
        stack, choice = hold_experts(reference, expert_list, memory=method_memory(method, self._memory_for(memory, batched)),
                                     max_memory=max_memory, device=dev, dtype=dt, granularity=granularity, head=heads,
                                     head_from=None if head_from is None else int(head_from), base=base,
                                     aliases=tied_aliases(model), stack_dtype=stack_dtype)
        self._setup(memory_choice=choice, method=None if method is None else MethodBlend.build(
                        method, stack, lambda: open_experts(expert_list, reference, base)),
            arch=skeleton_of(model, device=dev, dtype=dt), stack=stack,
            space=BlendSpace(space_name, stack.k, len(stack.groups), scale_value, granularity == "layer"),
            source=SaveSource("state-dict"), lora=None, loss_fn=loss, data=data, device=dev, dtype=dt,
            granularity=granularity, head=heads, head_from=head_from, batched=batched, simplex_atol=simplex_atol,
        )

    @classmethod
    def from_pretrained(
        cls,
        experts: Sequence[str | os.PathLike[str]],
        *,
        base: str | os.PathLike[str] | None = None,
        space: Literal["convex", "task-vectors", "lora"] = "convex",
        scale: float | Literal["learned"] = 1.0,
        data: Any = None,
        loss: Callable[[Any, Any], torch.Tensor] | str | None = None,
        device: str | torch.device | None = "auto",
        dtype: torch.dtype | None = None,
        stack_dtype: torch.dtype | None = None,
        granularity: Literal["model", "layer"] = "model",
        head: str | Sequence[str] | None = None,
        head_from: int | None = None,
        batched: Batched = "auto",
        simplex_atol: float | None = DEFAULT_SIMPLEX_ATOL,
        model_class: Any = None,
        strict_base: bool = True,
        memory: Memory = "auto",
        max_memory: int | str | None = None,
    ) -> BlendedObjective:
        """Blend Hugging Face checkpoints: full fine-tunes (``space="convex"`` or
        ``"task-vectors"``) or PEFT LoRA adapters of one base (``space="lora"``).

        Parameters
        ----------
        experts:
            Directories: Hugging Face model directories (``config.json`` with
            ``model.safetensors``, a sharded ``model.safetensors.index.json`` or
            ``pytorch_model.bin``), or PEFT adapter directories (``adapter_config.json``
            and ``adapter_model.safetensors`` or ``.bin``) for ``space="lora"``.
        base:
            The base model's directory: required for task vectors and LoRA. For saving,
            its ``config.json`` and tokenizer files are copied (else those of ``experts[0]``).
        space, scale:
            See :class:`BlendedObjective` and :mod:`spsa_mix.blend.spaces`.
        data:
            Batches: dicts (``input_ids``, ``attention_mask``, optional ``labels``) or
            ``(inputs, targets)`` pairs; see :class:`BlendedObjective`.
        loss:
            A name of :func:`~spsa_mix.blend.losses.resolve_loss` or a callable; default
            ``"causal-lm"`` for a ``*ForCausalLM`` architecture, else ``"cross-entropy"``.
        device:
            ``"auto"`` (default): CUDA when available, else the CPU.
        dtype:
            The forward's dtype; default the experts' stored dtype (bf16 experts run in bf16).
            A dtype the device cannot run is an error, raised before any weight is read.
        stack_dtype:
            The dtype the experts are kept in; default their stored dtype.
        granularity, head, head_from, batched, simplex_atol:
            As for :class:`BlendedObjective` (``head_from`` must name an expert: there is
            no architecture with weights of its own here).
        model_class:
            The transformers class to build (default the first of ``config.architectures``).
        strict_base:
            LoRA: refuse an adapter whose ``base_model_name_or_path`` names another model
            than ``base`` (compared by the last path component); shapes are always checked.
        memory, max_memory:
            As for :class:`BlendedObjective`. For LoRA, ``"streamed"`` maps the base's
            tensors instead of copying them (on the CPU, where the base is stored in the
            forward's dtype); the adapters' factors are small and always read.

        Everything that can be checked from the configs and the files' indexes (configs
        that differ between experts, tensors of other names or shapes, adapters of other
        modules, a missing base, a sharded index naming a missing file, an unsupported
        dtype) is checked before any weight is read. Nothing is downloaded: the
        architecture is built from ``config.json`` with ``local_files_only=True``.

        Examples
        --------
        The whole round trip (a runnable version with tiny models is in
        :mod:`spsa_mix.blend.pretrained`)::

            obj = BlendedObjective.from_pretrained(["ft/a", "ft/b"], data=batches, loss="causal-lm")
            res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, max_evals=400)
            obj.save_pretrained(res.x, "merged/")
        """
        loss_fn = None if loss is None else cls._check_loss_fn(loss, "loss")
        cls._check_options(granularity, batched, simplex_atol)
        check_memory(memory, max_memory)
        loaded = load_pretrained(experts, base=base, space=space, scale=scale, device=device, dtype=dtype,
                                 stack_dtype=stack_dtype, granularity=granularity, head=head, head_from=head_from,
                                 model_class=model_class, strict_base=strict_base, check_head=cls._check_head,
                                 memory=cls._memory_for(memory, batched), max_memory=max_memory)
        obj = cls.__new__(cls)
        obj._setup(memory_choice=loaded.memory_choice, arch=loaded.arch, stack=loaded.stack, space=loaded.space,
                   source=loaded.source, lora=loaded.lora, method=loaded.method,
                   loss_fn=loss_fn if loss_fn is not None else resolve_loss(loaded.default_loss), data=data,
                   device=loaded.device, dtype=loaded.dtype, granularity=granularity, head=loaded.head,
                   head_from=head_from, batched=batched, simplex_atol=simplex_atol)
        return obj

    @staticmethod
    def _memory_for(memory: str, batched: Any) -> str:
        """``memory``, where ``batched=True`` (vmap over whole blended models) makes "auto" resident."""
        return "resident" if memory == "auto" and batched is True else memory

    def _setup(self, *, memory_choice: str, arch: nn.Module, stack: ExpertStack | StreamedExperts, space: BlendSpace,
               source: SaveSource,
               lora: LoRABlend | None, method: MethodBlend | None, loss_fn: Callable[[Any, Any], torch.Tensor], data: Any,
               device: torch.device, dtype: torch.dtype, granularity: str, head: tuple[str, ...],
               head_from: int | None, batched: Batched, simplex_atol: float | None) -> None:
        self.device = device
        self.dtype = dtype
        self.loss_fn = loss_fn
        self.granularity = granularity
        self.head = head
        self.head_from = None if head_from is None else int(head_from)
        self.simplex_atol = None if simplex_atol is None else float(simplex_atol)
        self._stack = stack
        self._space = space
        self._source = source
        self._lora = lora
        self._acc = accumulation_dtype(stack.dtype, dtype)  # the blend's dtype
        self.memory_choice = memory_choice
        logger.info("%s", memory_choice)
        self._method = method  # a task-vector method space (spsa_mix.blend.methods.space), or None
        # The weightless architecture (for blended_model and the gradient model), and the
        # probe model, whose blended tensors are views of one flat buffer of P scalars.
        self._arch = arch.eval().requires_grad_(False)
        self._lockstep: Lockstep | None = None
        if isinstance(stack, StreamedExperts):  # blended tensors bound just in time, module by module
            if batched is True:
                raise ValueError("batched=True (vmap over whole blended models) needs the resident stack: pass "
                                 "memory='resident', or batched='auto' with streamed experts")
            self._theta = torch.zeros(0, device=device, dtype=dtype)
            self._lockstep = Lockstep(copy.deepcopy(self._arch), stack, dtype=dtype)
            self._model = self._lockstep.model
            streamed = set(stack.layout.names) | {a for a, s in stack.aliases.items() if s in stack.rows}
            missing = [name for name in meta_tensors(self._model) if name not in streamed]
        else:
            self._theta = torch.zeros(stack.layout.size, device=device, dtype=dtype)
            self._model = bind_to_buffer(copy.deepcopy(self._arch), stack.layout, self._theta, stack.constants,
                                         stack.aliases)
            missing = meta_tensors(self._model)
        if missing:  # every parameter and persistent buffer must be blended or constant
            raise RuntimeError(f"internal error: the architecture's tensors {missing[:3]} are neither blended nor "
                               "constant")
        self._grad_model: nn.Module | None = None
        self._stream = BatchStream(data, device=device, dtype=dtype) if data is not None else None
        self.last_batch: Batch | None = None  # the minibatch of the last call; spsa_mix.distributed weights shards by it
        self._policy: Batched = batched
        self._vmap = {"probes": batched is not False, "jvp": batched is not False}
        self._convolutional = any(isinstance(m, nn.modules.conv._ConvNd) for m in arch.modules())
        self.domain: Domain = space.domain
        self.shape: tuple[int, ...] | Domain = space.shape

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _check_loss_fn(loss_fn: Any, name: str) -> Callable[[Any, Any], torch.Tensor]:
        if isinstance(loss_fn, str):
            return resolve_loss(loss_fn)
        if not callable(loss_fn):
            raise ValueError(f"{name} must be callable, but got {loss_fn!r}")
        return loss_fn  # type: ignore[no-any-return]

    @staticmethod
    def _check_options(granularity: Any, batched: Any, simplex_atol: Any) -> None:
        if granularity not in ("model", "layer"):
            raise ValueError(f"granularity must be 'model' or 'layer', but got {granularity!r}")
        if not (batched is True or batched is False or (isinstance(batched, str) and batched == "auto")):
            raise ValueError(f"batched must be True, False or 'auto', but got {batched!r}")
        if simplex_atol is not None and (isinstance(simplex_atol, bool) or not isinstance(simplex_atol, numbers.Real)
                                         or not float(simplex_atol) >= 0):
            raise ValueError(f"simplex_atol must be a non-negative number or None, but got {simplex_atol!r}")

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
        """Number of blended scalars per expert (for LoRA: the per-rank-row weights)."""
        return self._stack.layout.numel

    @property
    def space(self) -> str:
        """``"convex"``, ``"task-vectors"`` or ``"lora"``."""
        return self._space.name

    @property
    def scale(self) -> float | str:
        """The task-vector scale ``s`` (1 for the other spaces), or ``"learned"``."""
        return self._space.scale

    @property
    def stack_dtype(self) -> torch.dtype:
        """The dtype the experts are kept in on the device (streamed: as stored)."""
        return self._stack.dtype

    @property
    def memory_mode(self) -> str:
        """``"resident"`` or ``"streamed"`` (see ``memory``)."""
        return "streamed" if self._lockstep is not None else "resident"

    def memory(self) -> dict[str, int]:
        """Bytes held on the device: the stacked experts (and base row), the probe model's
        blended buffer, and the constants (heads, counters; for LoRA the base and the
        adapters' factors); with streamed experts (or a LoRA base mapped from its file), also
        ``mapped``, the bytes of the files' tensors they are views of (the page cache holds
        what has been read; the process holds none).

        >>> BlendedObjective._example().memory()
        {'stack': 2048, 'blended': 1024, 'constants': 0}
        """
        st = self._stack
        mapped_names = st.mapped if isinstance(st, ExpertStack) else frozenset()
        constants = sum(t.numel() * t.element_size() for n, t in st.constants.items() if n not in mapped_names)
        out = {"stack": st.nbytes, "blended": self._theta.numel() * self._theta.element_size(), "constants": constants}
        if isinstance(st, StreamedExperts):
            out["mapped"] = st.mapped_bytes
        elif mapped_names:
            out["mapped"] = sum(t.numel() * t.element_size() for n, t in st.constants.items() if n in mapped_names)
        return out

    def uses_vmap(self, n: int, kind: str = "probes") -> bool:
        """Whether a call with ``n`` probes (or tangents, ``kind="jvp"``) runs batched.

        >>> BlendedObjective._example().uses_vmap(8)    # "auto" on the CPU: the loop
        False
        """
        if n < 2 or not self._vmap[kind] or self._lockstep is not None:
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

    # ------------------------------------------------------------------ state (resuming a run)
    def state_dict(self) -> dict[str, int]:
        """The objective's state for a checkpoint (``minimize(..., checkpoint=...)``): the
        number of minibatches drawn. Not the weights (see :meth:`blended_state_dict`).

        >>> obj = BlendedObjective._example()
        >>> _ = obj([0.5, 0.5]); obj.state_dict()
        {'batches_drawn': 1}
        """
        return {"batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the minibatches where a run that drew ``state["batches_drawn"]`` left
        them: the data is iterated again from its start and that many batches are skipped
        without a forward pass (:meth:`BatchStream.restart
        <spsa_mix.blend.batches.BatchStream.restart>`). Load it into an objective built
        again on the same data, its order seeded as the first time: a shuffling
        ``spsa_mix.data.Batches`` with a freshly seeded ``torch.Generator``, or a
        ``DataLoader`` with a seeded ``generator=``; then the batches that follow are those
        the interrupted run would have drawn.

        >>> obj = BlendedObjective._example()
        >>> obj.load_state_dict({"batches_drawn": 3}); obj.batches_drawn
        3
        """
        if not isinstance(state, dict) or "batches_drawn" not in state:
            raise ValueError(f"state must be a dict with 'batches_drawn' (a state_dict() of BlendedObjective), "
                             f"but got {state!r:.100}")
        n = state["batches_drawn"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"state['batches_drawn'] must be an integer >= 0, but got {n!r}")
        if self._stream is None:
            if n:
                raise ValueError(f"state['batches_drawn'] is {n}, but this BlendedObjective has no data (data=None)")
            return
        self._stream.restart(n)

    # ------------------------------------------------------------------ checks
    def _check_points(self, points: ArrayLike, name: str = "points") -> tuple[FloatArray, bool]:
        """``(n, *point_shape)`` float64 points and whether one point was given (see
        :meth:`BlendSpace.check_points <spsa_mix.blend.spaces.BlendSpace.check_points>`)."""
        return self._space.check_points(points, name=name, simplex_atol=self.simplex_atol)

    def _check_point(self, alpha: ArrayLike) -> FloatArray:
        arr, single = self._check_points(alpha, "alpha")
        if not single:
            raise ValueError(f"alpha must have shape {self.domain.point_shape}, but got shape {np.shape(alpha)}")
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
    def _as_points(self, points: ArrayLike) -> torch.Tensor:
        """Checked points as a tensor in the blend's accumulation dtype, on the device."""
        return torch.as_tensor(np.asarray(points), dtype=self._acc, device=self.device)

    def _coefficients(self, points: torch.Tensor) -> torch.Tensor:
        """``(n, *point_shape)`` -> ``(n, R)`` coefficients of the stack's rows, or ``(n, G, R)``
        for a layer-wise blend."""
        c = self._space.coefficients(points)  # (n, G, R)
        return c if self.granularity == "layer" else c[:, 0]

    def _require_resident(self, what: str) -> None:
        if self._lockstep is not None:
            raise ValueError(f"{what} (method='backprop' or 'forward-grad') needs the resident stack: build the "
                             "objective with memory='resident' (streamed experts score forward probes only)")

    def _blend(self, points: torch.Tensor) -> torch.Tensor:
        """``(n, *point_shape)`` -> ``(n, P)`` flat blended parameters, in ``dtype``."""
        segments = self._stack.segments if self.granularity == "layer" else None
        if self._method is not None and self._method.per_probe:
            return torch.stack([self._mix(p) for p in points])
        return blend(self._stack.weights, self._coefficients(points), segments, dtype=self.dtype)

    def _mix(self, point: torch.Tensor) -> torch.Tensor:
        """One point's ``(P,)`` parameters by a per-probe method blend (:mod:`spsa_mix.blend.methods.space`)."""
        assert self._method is not None
        alpha, scale = self._space.split_tensor(point[None])
        segments = self._stack.segments if self.granularity == "layer" else [(0, self._stack.layout.size)]
        return self._method.mix(self._stack.weights, alpha[0], scale[0], segments, self.dtype)

    def _loss(self, model: nn.Module, theta: torch.Tensor, batch: Batch) -> torch.Tensor:
        st = self._stack
        out = call_blended(model, theta, st.layout, st.constants, batch.args, batch.kwargs, st.aliases)
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

    def _probe(self, points: torch.Tensor, batch: Batch, score: Score) -> tuple[torch.Tensor, ...]:
        """``score(outputs, targets)`` (a tuple of scalars) for each of ``n`` probes ``points``
        ``(n, *point_shape)`` on one batch; each result has shape ``(n,)``. Call under
        inference mode.

        Looped probes write theta into the probe model's own buffer (one matrix-vector
        product) and call the module as it is; batched probes form all thetas with one
        matrix product and vmap a functional call over them.
        """
        n = points.shape[0]
        if self._lockstep is not None:
            return self._lockstep_probes(points, batch, score)
        if self.uses_vmap(n):
            st = self._stack

            def fn(theta: torch.Tensor) -> tuple[torch.Tensor, ...]:
                out = call_blended(self._model, theta, st.layout, st.constants, batch.args, batch.kwargs, st.aliases)
                return score(out, batch.targets)

            try:
                return tuple(map_probes(fn, self._blend(points), batched=True))
            except LossShapeError:
                raise
            except Exception as e:
                if self._policy is True:
                    raise
                results = self._loop(points, batch, score)  # raises if the loop fails too
                logger.warning("batched probes (torch.func.vmap) failed for this architecture (%s: %.200s); "
                               "scoring them in a loop from now on", type(e).__name__, e)
                self._vmap["probes"] = False
                return results
        return self._loop(points, batch, score)

    def _lockstep_probes(self, points: torch.Tensor, batch: Batch, score: Score) -> tuple[torch.Tensor, ...]:
        """Streamed experts: the probes in turns of :data:`STREAMED_PROBES`, each turn's
        blocks blended for all its probes from one read (:mod:`spsa_mix.blend.held.lockstep`)."""
        lockstep = self._lockstep
        if lockstep is None:
            raise RuntimeError("internal error: lockstep probes without streamed experts")
        coeffs = self._space.coefficients(points)  # (n, G, R)

        def one() -> tuple[torch.Tensor, ...]:
            return score(self._model(*batch.args, **batch.kwargs), batch.targets)

        results: list[tuple[torch.Tensor, ...]] = []
        for start in range(0, coeffs.shape[0], STREAMED_PROBES):
            results += lockstep.run(coeffs[start:start + STREAMED_PROBES], one)
        return tuple(torch.stack(parts) for parts in zip(*results, strict=True))

    def _loop(self, points: torch.Tensor, batch: Batch, score: Score) -> tuple[torch.Tensor, ...]:
        segments = self._stack.segments if self.granularity == "layer" else None
        results = []
        per_probe = self._method is not None and self._method.per_probe
        for i, c in enumerate(self._coefficients(points)):
            if per_probe:
                self._theta.copy_(self._mix(points[i]))
            else:
                blend_into(self._theta, self._stack.weights, c, segments)
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
        """Losses of ``n`` points on one minibatch, forward only.

        Parameters
        ----------
        points:
            ``(n, *shape)`` mixing weights (each row on the simplex); a single point of
            shape ``shape`` gives a float. With ``scale="learned"``, ``(n, domain.size)``:
            the weights row by row, then the scale.

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
            (losses,) = self._probe(self._as_points(pts), batch, self._score_loss)  # (n,)
            values = losses.to(torch.float64).cpu().numpy()
        self._check_finite(values, pts, "loss")
        return float(values[0]) if single else values

    def value_and_grad(self, alpha: ArrayLike) -> tuple[float, FloatArray]:
        """Loss at ``alpha`` and its gradient with respect to alpha, by autograd.

        One forward and one backward pass on the next minibatch, the model in eval mode
        as for the probes. The gradient is ``d L / d alpha_i = <grad_theta L, theta_i>``
        (with the BatchNorm running statistics differentiated too); with a learned scale
        it is taken with respect to the whole flat point, the scale included.

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
        self._require_resident("value_and_grad")
        batch = self._next_batch()
        model = self._gradient_model()
        a = self._as_points(point).requires_grad_(True)
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
            A point of shape ``shape`` (``(domain.size,)`` with a learned scale).
        tangents:
            ``(m, *point_shape)`` directions in that space (a learned scale included).

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
        shape = self.domain.point_shape
        tan = np.asarray(tangents, dtype=np.float64)
        if tan.ndim != len(shape) + 1 or tan.shape[1:] != shape or tan.shape[0] < 1:
            raise ValueError(f"tangents must have shape (m, {', '.join(map(str, shape))}), but got shape {tan.shape}")
        if not np.all(np.isfinite(tan)):
            raise ValueError("tangents must be finite")
        self._require_resident("jvp")
        batch = self._next_batch()
        model = self._gradient_model()
        a = self._as_points(point)
        t = self._as_points(tan)

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
    def iter_blended(self, alpha: ArrayLike, *, dtype: Callable[[str], torch.dtype] | torch.dtype | None = None
                     ) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` for every tensor of theta(alpha), in ``state_dict`` order, one
        at a time (the memory of one tensor beyond what is kept); tied names give the very
        tensor of the name they are tied to (:mod:`spsa_mix.blend.export`).

        Blended tensors are accumulated in float32 and cast to ``dtype`` (a dtype, or a
        function of the name; default the objective's ``dtype``).

        >>> [name for name, _ in BlendedObjective._example().iter_blended(np.array([0.5, 0.5]))]
        ['weight', 'bias']
        """
        point = self._check_point(alpha)
        if dtype is None or isinstance(dtype, torch.dtype):
            fixed = check_float_dtype(dtype) if dtype is not None else self.dtype
            return self._iter_blended(point, lambda name: fixed)
        return self._iter_blended(point, dtype)

    def _iter_blended(self, point: FloatArray, out_dtype: Callable[[str], torch.dtype]
                      ) -> Iterator[tuple[str, torch.Tensor]]:
        """theta(point) (a checked point) tensor by tensor (:mod:`spsa_mix.blend.export`)."""
        st = self._stack
        with torch.no_grad():
            points = self._as_points(point[None])
            if self._lora is not None:  # the per-rank weights in the accumulation dtype, not the forward's
                segments = st.segments if self.granularity == "layer" else None
                mix = blend(st.weights, self._coefficients(points), segments, dtype=self._acc)[0]
                return self._lora.merged(mix, st, out_dtype, self._acc)
            rows = self._space.coefficients(points)[0]  # (G, R)
            counters = self._space.counter_coefficients(points)[0]  # (G, R): the integer buffers' weights
            method = self._method
            if method is None:
                return iter_blended(st, rows, out_dtype, acc=self._acc, counter_rows=counters)
            alpha, scale = self._space.split(point[None])
            weights, s = alpha.reshape(-1, self.k), float(scale[0])  # (G, K), mergekit's lambda

            def exact(name: str, group: int) -> torch.Tensor:  # mergekit's merge, recomputed tensor by tensor
                return method.tensor(name, weights[group], s, st.dtype)

        return iter_blended(st, rows, out_dtype, acc=self._acc, counter_rows=counters, exact=exact)

    def blended_state_dict(self, alpha: ArrayLike) -> dict[str, torch.Tensor]:
        """The ``state_dict`` of theta(alpha): every tensor of the architecture, in order.

        Floating-point tensors are blended (in float32, then cast to ``dtype``; head
        tensors copied from their source); integer buffers (``num_batches_tracked``) are
        the rounded weighted average of the experts' values. Each tensor owns its memory,
        except that tied names share one tensor. For LoRA, the base's state dict with the
        blended update merged in.

        >>> state = BlendedObjective._example().blended_state_dict(np.array([0.25, 0.75]))
        >>> state["weight"].tolist()
        [[0.0, 0.0], [0.75, -0.75]]
        """
        return dict(self.iter_blended(alpha))

    def blended_model(self, alpha: ArrayLike) -> nn.Module:
        """A fresh copy of the architecture holding theta(alpha), ready to fine-tune:
        on ``device``, in ``dtype``, in train mode, every parameter requiring grad, tied
        parameters tied (for LoRA: the base architecture with the update merged in).

        >>> net = BlendedObjective._example().blended_model(np.array([0.0, 1.0]))
        >>> net.weight.tolist(), net.training, net.weight.requires_grad
        ([[0.0, 0.0], [1.0, -1.0]], True, True)
        """
        return self.model_holding(self.blended_state_dict(alpha))

    def model_holding(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """A fresh copy of the architecture (the base's for LoRA) holding ``state`` (every
        tensor of its ``state_dict``: a blend, a fixed merge, an expert), as
        :meth:`blended_model` gives it.

        >>> obj = BlendedObjective._example()
        >>> obj.model_holding(obj.blended_state_dict(np.array([1.0, 0.0]))).bias.tolist()
        [0.0, 0.0]
        """
        arch = self._lora.base_arch if self._lora is not None else self._arch
        return blended_module(arch, state, self._stack.aliases)

    def save_pretrained(self, alpha: ArrayLike, path: str | os.PathLike[str], *, overwrite: bool = False,
                        dtype: torch.dtype | None = None, max_shard_size: int | str = "5GB") -> str:
        """Write theta(alpha) where the usual loaders read it; returns the path written.

        * Hugging Face experts (convex, task vectors): a model directory, ``config.json``,
          ``generation_config.json`` and the tokenizer files copied from the base (else
          ``experts[0]``), the weights as (sharded) safetensors in their stored dtype (or
          ``dtype``), tied weights stored once: ``AutoModelFor*.from_pretrained(path)``
          loads it.
        * LoRA: a PEFT adapter directory of rank ``sum_i r_i``, the weights
          ``alpha_i scaling_i`` folded into ``lora_A`` and ``lora_alpha = r`` (scaling 1), as
          PEFT's ``add_weighted_adapter(combination_type="cat")`` writes it:
          ``PeftModel.from_pretrained(base_model, path)`` loads it.
        * Other experts: a safetensors state dict, ``path`` itself if it ends in
          ``.safetensors``, else ``path/model.safetensors``.

        The blend is written one tensor at a time into a temporary folder beside ``path``,
        then renamed into place; an existing non-empty ``path`` is refused unless
        ``overwrite=True``.

        >>> import tempfile, safetensors.torch
        >>> out = BlendedObjective._example().save_pretrained(np.array([0.5, 0.5]), tempfile.mkdtemp() + "/m.safetensors")
        >>> safetensors.torch.load_file(out)["weight"].tolist()
        [[0.0, 0.0], [0.5, -0.5]]
        """
        point = self._check_point(alpha)
        if dtype is not None:
            check_float_dtype(dtype)
        lora, st = self._lora, self._stack

        def adapter(directory: Path) -> None:
            if lora is None:
                raise RuntimeError("internal error: a LoRA save without the LoRA blend")
            coeffs = self._coefficients(self._as_points(point[None]))
            write_adapter(lora, st, coeffs, directory, segments=st.segments if self.granularity == "layer" else None,
                          forward_dtype=self.dtype, source=self._source, dtype=dtype)

        return save_blend(lambda out_dtype: self._iter_blended(point, out_dtype), path, source=self._source,
                          stored=st.stored_dtypes, default_dtype=self.dtype, aliases=st.aliases, overwrite=overwrite,
                          dtype=dtype, max_shard_size=max_shard_size, write_adapter=adapter,
                          entries=None if lora is not None else (lambda out_dtype: blended_entries(st, out_dtype)))

    def save_tensors(self, tensors: Iterable[tuple[str, torch.Tensor]], path: str | os.PathLike[str], *,
                     overwrite: bool = False, dtype: torch.dtype | None = None,
                     max_shard_size: int | str = "5GB") -> str:
        """Write any full model of this architecture (every ``(name, tensor)`` of its
        ``state_dict``, in order: a fixed merge, an expert) the way :meth:`save_pretrained`
        writes a blend (a Hugging Face directory or a safetensors state dict; not LoRA);
        returns the path written.

        >>> import tempfile, safetensors.torch
        >>> obj = BlendedObjective._example()
        >>> out = obj.save_tensors(obj.iter_blended(np.array([1.0, 0.0])), tempfile.mkdtemp() + "/m.safetensors")
        >>> safetensors.torch.load_file(out)["bias"].tolist()
        [0.0, 0.0]
        """
        if dtype is not None:
            check_float_dtype(dtype)
        return save_tensors(tensors, path, source=self._source, overwrite=overwrite, dtype=dtype,
                            max_shard_size=max_shard_size, aliases=self._stack.aliases)

    @classmethod
    def _example(cls) -> BlendedObjective:
        """Two linear experts on one fixed batch, for the docstring examples."""
        experts = [{"weight": torch.zeros(2, 2), "bias": torch.zeros(2)},
                   {"weight": torch.tensor([[0.0, 0.0], [1.0, -1.0]]), "bias": torch.zeros(2)}]
        x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), torch.tensor([1, 0, 1])
        return cls(nn.Linear(2, 2), experts, data=(x, y), device="cpu")

    def __repr__(self) -> str:
        scale = f", scale={self.scale!r}" if self.space == "task-vectors" else ""
        return (f"BlendedObjective(k={self.k}, shape={self.shape}, space={self.space!r}{scale}, "
                f"granularity={self.granularity!r}, num_blended={self.num_blended}, device={str(self.device)!r}, "
                f"dtype={self.dtype}, stack_dtype={self.stack_dtype})")
