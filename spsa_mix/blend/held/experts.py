"""Load the K experts, check them against the architecture, stack them once on the device.

An expert is an ``nn.Module``, a ``state_dict`` (any mapping of names to tensors), a
checkpoint file (``.safetensors``, or a PyTorch ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``
file holding a state dict) or a Hugging Face model directory; each is read lazily through
:func:`~spsa_mix.blend.sources.checkpoints.open_checkpoint` (names, shapes and dtypes first, then
one tensor at a time).

Every expert must match the architecture tensor for tensor: the same names, shapes and
dtypes of parameters and persistent buffers (dtypes may differ between experts when
``check_dtype=False``, as for Hugging Face checkpoints, but a floating-point tensor must
stay one); the first mismatch, in ``state_dict`` order, is reported with the expert's
index. Tensors under the ``head`` prefixes are exempt (the experts may have different
heads); see :class:`~spsa_mix.blend.BlendedObjective`. Every expert (and the base) is
checked from its index before any weight is read.

:func:`stack_experts` then copies each expert's floating-point tensors into row ``i`` of one
``(K, P)`` buffer on the device (a ``(K + 1, P)`` buffer with a base, in the last row), one
tensor at a time, straight from the file where it can. The buffer keeps the experts' stored
dtype (bf16 experts stay bf16: half the memory of float32) unless ``stack_dtype`` asks for
another; the blend is accumulated in float32 (:mod:`spsa_mix.blend.held.functional`). Tied
weights (``aliases``, e.g. an output embedding tied to the input one) are stored once.

Example
-------
>>> import torch
>>> net = torch.nn.Linear(2, 1)
>>> sd = load_state_dict(net)
>>> sorted(sd), sd["weight"].shape
(['bias', 'weight'], torch.Size([1, 2]))
>>> check_compatible(net.state_dict(), {"weight": torch.zeros(1, 3), "bias": torch.zeros(1)}, index=2)
Traceback (most recent call last):
...
ValueError: experts[2] does not match the architecture: tensor 'weight' has shape (1, 3), but the architecture has (1, 2)
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from spsa_mix.blend.sources.checkpoints import (
    DATA_PARALLEL_PREFIX,
    TORCH_SUFFIXES,
    Checkpoint,
    TensorInfo,
    open_checkpoint,
)
from spsa_mix.blend.held.functional import Layout, blend_into

__all__ = [
    "ExpertSource",
    "ExpertStack",
    "ExpertPlan",
    "Grouped",
    "TensorLike",
    "plan_experts",
    "fill_stack",
    "load_state_dict",
    "check_compatible",
    "check_expert_list",
    "matches_prefix",
    "stack_experts",
    "tied_aliases",
    "TORCH_SUFFIXES",
]

ExpertSource = nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike | Checkpoint
ALIGNMENT = 128  # elements between tensor starts in the flat buffer: 512 bytes in float32, like torch's CUDA allocator
TensorLike = torch.Tensor | TensorInfo


def _shape(t: TensorLike) -> tuple[int, ...]:
    return tuple(t.shape)


def load_state_dict(source: ExpertSource, *, index: int = 0) -> dict[str, torch.Tensor]:
    """All the tensors of one expert, on the CPU for files (``index`` only labels errors).

    Raises
    ------
    ValueError
        For a missing file, an unknown suffix, a file ``torch.load`` cannot read with
        ``weights_only=True`` (a pickled module: save its ``state_dict()`` instead), or a
        mapping with non-tensor values.

    Examples
    --------
    >>> load_state_dict("missing.pt", index=3)
    Traceback (most recent call last):
    ...
    ValueError: experts[3]: no such file 'missing.pt'
    """
    ckpt = open_checkpoint(source, label=f"experts[{index}]")
    return {name: ckpt.read(name) for name in ckpt.infos}


def matches_prefix(name: str, prefixes: Sequence[str]) -> bool:
    """Whether ``name`` is one of ``prefixes`` or lies under one (``"fc"`` covers ``"fc.weight"``).

    >>> matches_prefix("fc.weight", ["fc"]), matches_prefix("fc2.weight", ["fc"])
    (True, False)
    """
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def check_compatible(reference: Mapping[str, TensorLike], state: Mapping[str, TensorLike], *, index: int = 0,
                     ignore: Callable[[str], bool] = lambda name: False, label: str | None = None,
                     check_dtype: bool = True) -> None:
    """Raise ``ValueError`` naming the first tensor of ``state`` that differs from
    ``reference`` (missing, unexpected, other shape or dtype); ``ignore(name)`` exempts.

    Both may hold tensors or :class:`~spsa_mix.blend.sources.checkpoints.TensorInfo` records (no data
    is read). ``label`` names the expert (default ``experts[index]``); with
    ``check_dtype=False`` only floating-point versus integer is compared.
    """
    where = f"{label or f'experts[{index}]'} does not match the architecture"
    for name, ref in reference.items():
        if ignore(name):
            continue
        if name not in state:
            raise ValueError(f"{where}: it has no tensor {name!r} (shape {_shape(ref)})")
        t = state[name]
        if _shape(t) != _shape(ref):
            raise ValueError(f"{where}: tensor {name!r} has shape {_shape(t)}, but the architecture has {_shape(ref)}")
        if (t.dtype != ref.dtype) if check_dtype else (t.dtype.is_floating_point != ref.dtype.is_floating_point):
            raise ValueError(f"{where}: tensor {name!r} has dtype {t.dtype}, but the architecture has {ref.dtype}")
    for name in state:
        if name not in reference and not ignore(name):
            raise ValueError(f"{where}: it has a tensor {name!r} that the architecture does not have")


def check_expert_list(experts: Any) -> list[Any]:
    """``experts`` as a list of at least two sources.

    A blend needs two experts: with one there is nothing to learn, so ``K=1`` is an error.

    >>> check_expert_list([])
    Traceback (most recent call last):
    ...
    ValueError: experts is empty: pass at least two experts (nn.Modules, state_dicts or checkpoint paths)
    """
    if isinstance(experts, (nn.Module, Mapping, str, os.PathLike)) or not isinstance(experts, Sequence):
        raise ValueError(
            f"experts must be a list of nn.Modules, state_dicts or checkpoint paths, but got {type(experts).__name__}"
        )
    experts = list(experts)
    if not experts:
        raise ValueError("experts is empty: pass at least two experts (nn.Modules, state_dicts or checkpoint paths)")
    if len(experts) == 1:
        raise ValueError("experts holds 1 expert, but a blend needs at least two (with one there is nothing to learn)")
    return experts


def tied_aliases(model: nn.Module) -> dict[str, str]:
    """Tied parameters of ``model``: each later name of a shared parameter mapped to the
    first (e.g. ``lm_head.weight -> model.embed_tokens.weight`` for tied embeddings).

    >>> net = torch.nn.Sequential(torch.nn.Embedding(4, 2), torch.nn.Linear(2, 4, bias=False))
    >>> net[1].weight = net[0].weight
    >>> tied_aliases(net)
    {'1.weight': '0.weight'}
    """
    first: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            aliases[name] = first[id(param)]
        else:
            first[id(param)] = name
    return aliases


class Grouped:
    """What both holders of the experts (resident, streamed) derive from their layout and segments."""

    layout: Layout
    segments: list[tuple[int, int]]

    @functools.cached_property
    def group_of(self) -> dict[str, int]:
        """The index of each blended tensor's group (its slice of ``segments``)."""
        offsets = self.layout.offsets()
        return {name: next(g for g, (a, b) in enumerate(self.segments) if a <= offsets[name][0] < b)
                for name in self.layout.names}

    @functools.cached_property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each blended tensor."""
        return dict(zip(self.layout.names, self.layout.shapes, strict=True))


@dataclass
class ExpertStack(Grouped):
    """The K experts (and a base) on the device, ready to blend.

    Attributes
    ----------
    weights:
        ``(R, P)`` flat buffer of the blended (floating-point) tensors, row ``i`` expert
        ``i`` and, with ``has_base``, the base in the last row (each tensor starting at a
        multiple of ``ALIGNMENT`` elements, zeros between), in the stored dtype.
    layout:
        Names and shapes of the blended tensors in the buffer.
    groups, segments:
        The parameter groups and their contiguous slices of the buffer (one group covering
        everything for ``granularity="model"``).
    constants:
        Tensors that are not blended: the head (with ``head``), and integer buffers such as
        BatchNorm's ``num_batches_tracked`` (expert 0's value; eval mode never reads them).
    counters:
        Integer tensors stacked ``(R, *shape)`` with the index of their group (or ``None``),
        for the rounded weighted average written by ``blended_state_dict``.
    names:
        Every ``state_dict`` name of the architecture, in order (tied aliases included).
    has_base:
        Whether the last row is a base (task vectors).
    aliases:
        Tied names, each mapped to the stored name it shares its tensor with.
    stored_dtypes:
        The dtype each tensor is stored in by expert 0 (what a saved blend is written in).
    mapped:
        The constants that are views of their files (a LoRA base streamed), not held.
    """

    weights: torch.Tensor
    layout: Layout
    groups: list[str]
    segments: list[tuple[int, int]]
    constants: dict[str, torch.Tensor]
    counters: dict[str, tuple[torch.Tensor, int | None]]
    names: list[str]
    has_base: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    stored_dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    mapped: frozenset[str] = frozenset()

    @property
    def k(self) -> int:
        """Number of experts (the base row excluded)."""
        return int(self.weights.shape[0]) - int(self.has_base)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stacked buffer."""
        return self.weights.numel() * self.weights.element_size()

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the rows are held in."""
        return self.weights.dtype

    def blend_tensor(self, name: str, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """One blended tensor, ``coeffs (R,) @`` its slice of the stack, accumulated in
        ``dtype`` (``coeffs``' dtype; a narrower stack upcast block by block).

        >>> nets = [torch.nn.Linear(2, 1) for _ in range(2)]
        >>> st = stack_experts(nets[0].state_dict(), nets, device=torch.device("cpu"), dtype=torch.float32)
        >>> torch.equal(st.blend_tensor("bias", torch.tensor([0.0, 1.0]), torch.float32), nets[1].bias.detach())
        True
        """
        start, stop = self.layout.offsets()[name]
        out = torch.empty(stop - start, dtype=dtype, device=self.weights.device)
        blend_into(out, self.weights[:, start:stop], coeffs)
        return out.view(self.shapes[name])


@dataclass
class ExpertPlan(Grouped):
    """The experts opened and checked, before their blended rows are read
    (:func:`plan_experts`): the attributes of :class:`ExpertStack` but ``weights``, the
    open checkpoints ``ckpts`` (the base last) and the ``stack_dtype`` the rows are
    promoted to."""

    ckpts: list[Checkpoint]
    layout: Layout
    groups: list[str]
    segments: list[tuple[int, int]]
    constants: dict[str, torch.Tensor]
    counters: dict[str, tuple[torch.Tensor, int | None]]
    names: list[str]
    has_base: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    stored_dtypes: dict[str, torch.dtype] = field(default_factory=dict)
    stack_dtype: torch.dtype = torch.float32


def _group_of(name: str) -> str:
    return name.rpartition(".")[0]


def open_experts(experts: Sequence[ExpertSource], reference: Mapping[str, TensorLike],
                 base: ExpertSource | None = None) -> list[Checkpoint]:
    """Checkpoints of the experts (labelled ``experts[i]``) and of the base (``base``, last),
    without the ``module.`` prefix of ``DataParallel`` when the architecture has none."""
    ckpts = [open_checkpoint(e, label=f"experts[{i}]") for i, e in enumerate(experts)]
    if base is not None:
        ckpts.append(open_checkpoint(base, label="base"))
    if not any(n.startswith(DATA_PARALLEL_PREFIX) for n in reference):
        for c in ckpts:
            c.strip_prefix(DATA_PARALLEL_PREFIX)
    return ckpts


def layer_groups(blended: Sequence[str], layout: Layout) -> tuple[list[str], list[tuple[int, int]]]:
    """Each module owning blended tensors directly is one group; its contiguous slice of
    the buffer (padding included)."""
    offsets = layout.offsets()
    groups: list[str] = []
    starts: list[int] = []
    for name in blended:
        if not groups or groups[-1] != _group_of(name):
            groups.append(_group_of(name))
            starts.append(offsets[name][0])
    if len(set(groups)) != len(groups):  # a module's tensors not contiguous: cannot happen with state_dict
        raise ValueError(f"the tensors of a module are not contiguous in the state_dict: groups {groups}")
    starts[0] = 0
    return groups, list(zip(starts, starts[1:] + [layout.size], strict=True))


def plan_experts(
    reference: Mapping[str, TensorLike],
    experts: Sequence[ExpertSource],
    *,
    device: torch.device,
    dtype: torch.dtype,
    granularity: str = "model",
    head: Sequence[str] = (),
    head_from: int | None = None,
    base: ExpertSource | None = None,
    aliases: Mapping[str, str] | None = None,
    stack_dtype: torch.dtype | None = None,
    check_dtype: bool = True,
) -> ExpertPlan:
    """Everything of :func:`stack_experts` but the blended rows: the experts (and the base)
    opened and checked against ``reference``, the layout, groups and stack dtype, and the
    small tensors read (head, integer buffers); the resident stack
    (:func:`stack_experts`) and the streamed one (:mod:`spsa_mix.blend.held.streamed`)
    start from it."""
    aliases = dict(aliases or {})
    in_head = (lambda name: matches_prefix(name, head)) if head else (lambda name: False)
    for alias, source in aliases.items():
        if in_head(alias) != in_head(source):
            raise ValueError(f"head={list(head)} covers only one of the tied tensors {alias!r} and {source!r} "
                             "(one parameter under two names): keep both in the head or neither")
    names = [n for n in reference if n not in aliases]
    blended = [n for n in names if reference[n].is_floating_point() and not in_head(n)]
    integer = [n for n in names if not reference[n].is_floating_point() and not in_head(n)]
    layout = Layout(tuple(blended), tuple(_shape(reference[n]) for n in blended), align=ALIGNMENT)
    if granularity == "layer":
        groups, segments = layer_groups(blended, layout)
    else:
        groups, segments = ["model"], [(0, layout.size)]
    group_index = {g: i for i, g in enumerate(groups)}

    # Every expert (and the base) checked from its index before any weight is read.
    ckpts = open_experts(experts, {n: reference[n] for n in names}, base)
    for i, ckpt in enumerate(ckpts):
        head_exempt = bool(head) and (i != head_from or ckpt.label == "base")

        def exempt(name: str, h: bool = head_exempt) -> bool:
            return name in aliases or (h and in_head(name))

        check_compatible({n: reference[n] for n in names}, ckpt.infos, label=ckpt.label, ignore=exempt,
                         check_dtype=check_dtype)
    if head and head_from is None:
        meta = [n for n in names if in_head(n) and (not isinstance(t := reference[n], torch.Tensor) or t.is_meta)]
        if meta:
            raise ValueError(f"head_from=None takes the head from the architecture's own weights, but it has none "
                             f"for {meta[0]!r}: pass head_from=<index of the expert whose head to keep>")
    if stack_dtype is None:
        stack_dtype = ckpts[0].infos[blended[0]].dtype if blended else dtype
        for ckpt in ckpts:
            for n in blended:
                stack_dtype = torch.promote_types(stack_dtype, ckpt.infos[n].dtype)

    counter_rows: dict[str, list[torch.Tensor]] = {n: [] for n in integer}
    constants: dict[str, torch.Tensor] = {}
    if head and head_from is None:
        for n in names:
            if in_head(n):
                t = torch.as_tensor(reference[n]).detach().to(device)
                constants[n] = t.to(dtype) if t.is_floating_point() else t
    for i, ckpt in enumerate(ckpts):
        for name in integer:
            counter_rows[name].append(ckpt.read(name).to(device))
        if head and i == head_from:
            for n in names:
                if in_head(n):
                    t = ckpt.read(n).to(device)
                    constants[n] = t.to(dtype) if t.is_floating_point() else t
    stored = {n: ckpts[0].infos[n].dtype for n in names if n in ckpts[0].infos}
    counters: dict[str, tuple[torch.Tensor, int | None]] = {}
    for name, rows in counter_rows.items():
        constants[name] = rows[0]
        counters[name] = (torch.stack(rows), group_index.get(_group_of(name)) if granularity == "layer" else 0)
    return ExpertPlan(ckpts, layout, groups, segments, constants, counters, list(reference), has_base=base is not None,
                      aliases=aliases, stored_dtypes=stored, stack_dtype=stack_dtype)


def stack_experts(
    reference: Mapping[str, TensorLike],
    experts: Sequence[ExpertSource],
    *,
    device: torch.device,
    dtype: torch.dtype,
    granularity: str = "model",
    head: Sequence[str] = (),
    head_from: int | None = None,
    base: ExpertSource | None = None,
    aliases: Mapping[str, str] | None = None,
    stack_dtype: torch.dtype | None = None,
    check_dtype: bool = True,
) -> ExpertStack:
    """Check the experts against ``reference`` (the architecture's ``state_dict``, or its
    names, shapes and dtypes) and stack them.

    Floating-point tensors outside ``head`` and ``aliases`` are blended. The buffer's dtype
    is ``stack_dtype``, by default the experts' stored dtype (promoted across tensors and
    experts: bf16 experts give a bf16 buffer). Head tensors come from
    ``experts[head_from]``, or from ``reference`` when ``head_from`` is ``None``, cast to
    ``dtype`` (the forward's). With ``granularity="layer"`` each module that owns blended
    tensors directly is one group (its parameters and buffers share one simplex). With
    ``base`` its tensors form the last row.

    >>> nets = [torch.nn.Linear(2, 1) for _ in range(3)]
    >>> stack = stack_experts(nets[0].state_dict(), nets, device=torch.device("cpu"), dtype=torch.float32)
    >>> stack.weights.shape, stack.layout.names, stack.layout.offsets()
    (torch.Size([3, 256]), ('weight', 'bias'), {'weight': (0, 2), 'bias': (128, 129)})
    """
    plan = plan_experts(reference, experts, device=device, dtype=dtype, granularity=granularity, head=head,
                        head_from=head_from, base=base, aliases=aliases, stack_dtype=stack_dtype,
                        check_dtype=check_dtype)
    return fill_stack(plan, device)


def fill_stack(plan: ExpertPlan, device: torch.device) -> ExpertStack:
    """The resident stack of a plan: every blended tensor of every checkpoint read into its
    row of one ``(R, P)`` buffer on ``device``, in ``plan.stack_dtype``, one tensor at a time."""
    offsets = plan.layout.offsets()
    weights = torch.zeros((len(plan.ckpts), plan.layout.size), device=device, dtype=plan.stack_dtype)  # (R, P)
    for ckpt, row in zip(plan.ckpts, weights, strict=True):  # zero padding between tensors
        for name in plan.layout.names:
            start, stop = offsets[name]
            ckpt.read_into(name, row[start:stop])
    return ExpertStack(weights, plan.layout, plan.groups, plan.segments, plan.constants, plan.counters, plan.names,
                       has_base=plan.has_base, aliases=plan.aliases, stored_dtypes=plan.stored_dtypes)
