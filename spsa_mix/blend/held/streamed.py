"""Experts streamed from their files: rows memory-mapped, each tensor blended just in time.

The resident stack (:class:`~spsa_mix.blend.held.experts.ExpertStack`) copies the K experts
into one ``(R, P)`` buffer: ``R P b_s`` bytes held for the whole run. A
:class:`StreamedExperts` holds none of them: each blended tensor of each expert (and of the
base) is a view of its checkpoint where it lies (:meth:`Checkpoint.mapped
<spsa_mix.blend.sources.checkpoints.Checkpoint.mapped>`: a private memory map of a
safetensors shard, whose pages the operating system keeps in its page cache and may drop
under pressure; a module's or state dict's own tensor). A blended tensor is formed when it
is needed, for every probe of a call at once, from one pass over its ``R`` rows
(:func:`blend_rows`), used, and freed; :mod:`spsa_mix.blend.held.lockstep` runs the probes'
forwards so that only one module's blended tensors exist at a time.

:func:`blend_rows` works by blocks of ``STREAM_CHUNK`` columns: the block of each row is
upcast into a small ``(R, C)`` buffer of the accumulation dtype (float32, float64 if a
row or the output is) and the ``n`` probes' block is one product ``(n, R) @ (R, C)``, cast
to the output's dtype. The rows are read once per call whatever ``n``, and the buffers
(``(R + n) C`` accumulation-dtype scalars) stay in the processor's caches. On a GPU the
rows' blocks are copied to the device as they are blended (see
:mod:`spsa_mix.blend.held.lockstep` for the overlap of that copy with the forward).

Memory, with ``n`` probes blended at once: ``n`` copies of the largest module's blended
tensors (in the forward's dtype) and the two buffers, beyond the constants (kept heads,
integer buffers); nothing grows with ``K`` or ``P``. Measured in ``docs/blend.md``.

Example
-------
>>> import torch
>>> rows = [torch.tensor([1.0, 2.0, 3.0]).to(torch.bfloat16), torch.tensor([3.0, 2.0, 1.0]).to(torch.bfloat16)]
>>> out = torch.empty(2, 3, dtype=torch.bfloat16)
>>> blend_rows(rows, torch.tensor([[0.5, 0.5], [1.0, 0.0]]), out).tolist()
[[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from spsa_mix.blend.held.experts import ExpertPlan, ExpertSource, TensorLike, Grouped, plan_experts
from spsa_mix.blend.held.functional import Layout

__all__ = ["StreamedExperts", "stream_experts", "map_rows", "blend_rows", "STREAM_CHUNK"]

STREAM_CHUNK = 1 << 17  # columns blended at a time: (R + n) x 512 KiB of float32 buffers, in the caches
# Measured on this 2-core machine (one thread, bf16 rows, K = 4, n = 2, 16 M columns): 62 ms a
# blend with 2^17 columns, 78 ms with 2^16, against 192 ms for two probes blended one by one
# as the resident loop does (each reading the K rows again).


def blend_rows(rows: Sequence[torch.Tensor], coeffs: torch.Tensor, out: torch.Tensor, *,
               chunk: int = STREAM_CHUNK) -> torch.Tensor:
    """``out[p] = sum_i coeffs[p, i] rows[i]`` for the ``n`` probes, in place.

    Parameters
    ----------
    rows:
        ``R`` tensors of one shape (any dtype and device; each read once, block by block).
    coeffs:
        ``(n, R)`` coefficients, in the accumulation dtype, on ``out``'s device.
    out:
        ``(n, *shape)`` result, in any floating dtype, on any device.

    Returns
    -------
    torch.Tensor
        ``out``, accumulated in ``coeffs``' dtype (at least float32) and cast.
    """
    n, r = coeffs.shape
    if len(rows) != r:
        raise ValueError(f"coeffs has {r} columns but there are {len(rows)} rows")
    flat_out = out.view(n, -1)
    numel = flat_out.shape[1]
    if numel == 0:
        return out
    acc = coeffs.dtype
    width = min(chunk, numel)
    block = torch.empty((r, width), dtype=acc, device=out.device)  # (R, C): the rows' block, upcast
    summed = torch.empty((n, width), dtype=acc, device=out.device)  # (n, C)
    flat_rows = [row.reshape(-1) for row in rows]
    for a in range(0, numel, width):
        b = min(a + width, numel)
        blk = block[:, : b - a]
        for i, row in enumerate(flat_rows):
            blk[i].copy_(row[a:b], non_blocking=True)
        acc_block = summed[:, : b - a]
        torch.mm(coeffs, blk, out=acc_block)  # (n, R) @ (R, C)
        flat_out[:, a:b].copy_(acc_block)
    return out


@dataclass
class StreamedExperts(Grouped):
    """The experts as memory-mapped rows, blended tensor by tensor (see the module docstring).

    The attributes of :class:`~spsa_mix.blend.held.experts.ExpertStack` but ``weights``:
    ``rows`` maps each blended name to its ``R`` rows (CPU tensors in their stored dtype,
    the base last with ``has_base``), ``device`` is where blends are formed, ``dtype`` the
    rows' promoted dtype.
    """

    rows: dict[str, list[torch.Tensor]]
    layout: Layout
    groups: list[str]
    segments: list[tuple[int, int]]
    constants: dict[str, torch.Tensor]
    counters: dict[str, tuple[torch.Tensor, int | None]]
    names: list[str]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    num_rows: int = 0
    has_base: bool = False
    aliases: dict[str, str] = field(default_factory=dict)
    stored_dtypes: dict[str, torch.dtype] = field(default_factory=dict)

    @property
    def k(self) -> int:
        """Number of experts (the base row excluded)."""
        return self.num_rows - int(self.has_base)

    @property
    def nbytes(self) -> int:
        """Bytes held for the rows: none (they are views of the files or of the experts)."""
        return 0

    @property
    def mapped_bytes(self) -> int:
        """Bytes of the rows where they lie (the page cache holds what has been read)."""
        return sum(t.numel() * t.element_size() for rows in self.rows.values() for t in rows)

    def blend_probes(self, name: str, coeffs: torch.Tensor, dtype: torch.dtype,
                     rows: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """``(n, *shape)``: tensor ``name`` blended for ``n`` probes, ``coeffs`` ``(n, R)`` in
        the accumulation dtype, the result in ``dtype`` on ``device``; from ``rows`` (the same
        rows staged elsewhere, :mod:`spsa_mix.blend.held.staging`) when given."""
        out = torch.empty((coeffs.shape[0], *self.shapes[name]), dtype=dtype, device=self.device)
        return blend_rows(self.rows[name] if rows is None else rows, coeffs, out)

    def blend_tensor(self, name: str, coeffs: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """One blended tensor, ``coeffs (R,)``, accumulated and returned in ``dtype`` (as
        :meth:`ExpertStack.blend_tensor <spsa_mix.blend.held.experts.ExpertStack.blend_tensor>`)."""
        return self.blend_probes(name, coeffs[None], dtype)[0]


def stream_experts(reference: Mapping[str, TensorLike], experts: Sequence[ExpertSource], *, device: torch.device,
                   dtype: torch.dtype, **options: Any) -> StreamedExperts:
    """The experts (and ``base``) checked against ``reference`` as
    :func:`~spsa_mix.blend.held.experts.stack_experts` checks them (same options, but
    ``stack_dtype``: the rows stay as stored), their blended tensors mapped, not read.

    >>> nets = [torch.nn.Linear(2, 1) for _ in range(3)]
    >>> st = stream_experts(nets[0].state_dict(), nets, device=torch.device("cpu"), dtype=torch.float32)
    >>> st.k, st.nbytes, st.rows["weight"][1].data_ptr() == nets[1].weight.data_ptr()
    (3, 0, True)
    """
    if options.get("stack_dtype") is not None:
        raise ValueError("stack_dtype applies to the resident stack (memory='resident'): streamed experts are "
                         "read as stored, and blended in float32")
    return map_rows(plan_experts(reference, experts, device=device, dtype=dtype, **options), device)


def map_rows(plan: ExpertPlan, device: torch.device) -> StreamedExperts:
    """The streamed experts of a plan: each blended tensor of each checkpoint mapped, not read."""
    rows = {name: [ckpt.mapped(name) for ckpt in plan.ckpts] for name in plan.layout.names}
    return StreamedExperts(rows, plan.layout, plan.groups, plan.segments, plan.constants, plan.counters, plan.names,
                           device=device, dtype=plan.stack_dtype, num_rows=len(plan.ckpts), has_base=plan.has_base,
                           aliases=plan.aliases, stored_dtypes=plan.stored_dtypes)
