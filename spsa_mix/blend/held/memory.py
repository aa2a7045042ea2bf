"""Resident or streamed: the experts held by the memory budget, and the choice said.

``memory="resident"`` stacks the experts on the device (:func:`~spsa_mix.blend.held.experts.stack_experts`,
``R P b_s`` bytes held, plus the probe model's blended buffer ``P b_c``); ``"streamed"``
maps them where they lie and blends each module just in time
(:mod:`spsa_mix.blend.held.streamed`, :mod:`spsa_mix.blend.held.lockstep`: ``n`` copies of
the largest module held at a time); ``"auto"`` takes the resident stack when it fits in
half the budget (the other half is left to the activations, the forward's temporaries and,
on the CPU, the page cache that keeps the experts' files), else streams. The budget is
``max_memory`` (bytes, or a string such as ``"20GB"``), by default
``AUTO_BUDGET_SHARE`` of the memory free on the device now (CUDA:
``torch.cuda.mem_get_info``; CPU: ``MemAvailable`` of ``/proc/meminfo``, which counts the
page cache the kernel can reclaim).

:func:`hold_experts` checks the experts once (:func:`~spsa_mix.blend.held.experts.plan_experts`),
chooses, and returns the holder with a one-line account of the choice, which the objective
logs and keeps (``obj.memory_choice``).

Example
-------
>>> budget, how = memory_budget(torch.device("cpu"), "8GB")
>>> budget, how
(8000000000, 'max_memory=8GB')
>>> choose_memory("auto", resident=3 * 10**9, budget=budget)
'resident'
>>> choose_memory("auto", resident=5 * 10**9, budget=budget)
'streamed'
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from spsa_mix.blend.held.experts import ExpertPlan, ExpertSource, ExpertStack, TensorLike, fill_stack, plan_experts
from spsa_mix.blend.held.lockstep import STREAMED_PROBES
from spsa_mix.blend.held.streamed import STREAM_CHUNK, StreamedExperts, map_rows
from spsa_mix.io import parse_size

__all__ = ["MEMORY_MODES", "RESIDENT_SHARE", "AUTO_BUDGET_SHARE", "memory_budget", "choose_memory",
           "decide_memory", "resident_bytes", "hold_experts", "check_memory", "format_bytes", "memory_estimate"]

MEMORY_MODES = ("auto", "resident", "streamed")
RESIDENT_SHARE = 0.5  # ours: the resident stack may take half the budget; activations and page cache the rest
AUTO_BUDGET_SHARE = 0.9  # ours: without max_memory, the budget is 90 % of the memory free now


def format_bytes(n: float) -> str:
    """``1.5e9`` -> ``'1.50 GB'`` (powers of 1000, as ``max_memory`` strings read them).

    >>> format_bytes(1.5e9), format_bytes(2048)
    ('1.50 GB', '2.05 kB')
    """
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def check_memory(memory: Any, max_memory: Any) -> None:
    """Raise ``ValueError`` for a ``memory`` mode or a ``max_memory`` that is not one.

    >>> check_memory("streaming", None)
    Traceback (most recent call last):
    ...
    ValueError: memory must be one of ['auto', 'resident', 'streamed'], but got 'streaming'
    """
    if not isinstance(memory, str) or memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {list(MEMORY_MODES)}, but got {memory!r}")
    if max_memory is not None:
        _parse_max_memory(max_memory)


def _parse_max_memory(max_memory: Any) -> int:
    return parse_size(max_memory, "max_memory")


def _available_cpu() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def memory_budget(device: torch.device, max_memory: int | str | None) -> tuple[int, str]:
    """The budget in bytes and how it was set (see the module docstring)."""
    if max_memory is not None:
        return _parse_max_memory(max_memory), f"max_memory={max_memory}"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        where = f"free on {device}"
    else:
        free, where = _available_cpu(), "available on the host"
    return int(AUTO_BUDGET_SHARE * free), f"{AUTO_BUDGET_SHARE:.0%} of {format_bytes(free)} {where}"


def resident_bytes(plan: ExpertPlan, dtype: torch.dtype) -> int:
    """What the resident stack holds: ``R P b_s`` and the probe buffer ``P b_c``."""
    size = plan.layout.size
    b_s = torch.empty((), dtype=plan.stack_dtype).element_size()
    b_c = torch.empty((), dtype=dtype).element_size()
    return len(plan.ckpts) * size * b_s + size * b_c


def choose_memory(memory: str, *, resident: int, budget: int) -> str:
    """``"resident"`` or ``"streamed"``: ``memory`` itself, or for ``"auto"`` resident when
    ``resident`` bytes fit in ``RESIDENT_SHARE`` of ``budget``."""
    if memory != "auto":
        return memory
    return "resident" if resident <= RESIDENT_SHARE * budget else "streamed"


def decide_memory(memory: str, max_memory: int | str | None, device: torch.device, need: int, *,
                  what: str) -> tuple[str, str]:
    """``("resident" | "streamed", why)``: :func:`choose_memory` with the budget of
    :func:`memory_budget`, ``need`` the resident bytes of ``what``.

    >>> decide_memory("auto", "1GB", torch.device("cpu"), 6 * 10**8, what="the stack")
    ('streamed', 'the stack (600.00 MB) exceeds half the budget of 1.00 GB (max_memory=1GB)')
    """
    if memory != "auto":
        return memory, f"memory={memory!r}"
    budget, how = memory_budget(device, max_memory)
    mode = choose_memory(memory, resident=need, budget=budget)
    return mode, (f"{what} ({format_bytes(need)}) {'fits in' if mode == 'resident' else 'exceeds'} half the "
                  f"budget of {format_bytes(budget)} ({how})")


def memory_estimate(params: int, largest: int, rows: int, *, mode: str, device: str = "cpu",
                    stored_bytes: int = 2, forward_bytes: int = 2, probes: int = STREAMED_PROBES) -> dict[str, int]:
    """The bytes a blend holds beyond the activations and the runtime, by the formulas of
    ``docs/blend.md``: ``device`` (the blend's device: the host on a CPU), ``pinned`` (host
    buffers of a GPU's staging) and ``page cache`` (the experts' files, which the kernel may
    drop and read again).

    ``params`` are the blended scalars ``P``, ``largest`` those of the largest module ``L``,
    ``rows`` the experts (and a base) ``R``, ``stored_bytes`` and ``forward_bytes`` the bytes
    of a stored and a forward element ``b_s``, ``b_c``, ``probes`` the probes blended at once
    ``n``. Resident: ``R P b_s + P b_c``. Streamed: ``n L b_c + (R + n) C 4`` (``C =
    STREAM_CHUNK``), and on a GPU two staging slots of ``R L b_s`` each on the device and
    pinned on the host; the files' ``R P b_s`` in the page cache.

    >>> memory_estimate(10**9, 6 * 10**7, 4, mode="resident")
    {'device': 10000000000, 'pinned': 0, 'page cache': 0}
    >>> memory_estimate(10**9, 6 * 10**7, 4, mode="streamed", device="cuda")["pinned"]
    960000000
    """
    if mode == "resident":
        return {"device": rows * params * stored_bytes + params * forward_bytes, "pinned": 0, "page cache": 0}
    if mode != "streamed":
        raise ValueError(f"mode must be 'resident' or 'streamed', but got {mode!r}")
    slots = 2 * rows * largest * stored_bytes if device == "cuda" else 0
    blocks = probes * largest * forward_bytes + (rows + probes) * STREAM_CHUNK * 4
    return {"device": blocks + slots, "pinned": slots, "page cache": rows * params * stored_bytes}


def hold_experts(reference: Mapping[str, TensorLike], experts: Sequence[ExpertSource], *, memory: str,
                 max_memory: int | str | None, device: torch.device, dtype: torch.dtype,
                 **options: Any) -> tuple[ExpertStack | StreamedExperts, str]:
    """The experts, resident or streamed (see the module docstring), and the choice as one line."""
    check_memory(memory, max_memory)
    if memory == "streamed" and options.get("stack_dtype") is not None:
        raise ValueError("stack_dtype applies to the resident stack (memory='resident'): streamed experts are "
                         "read as stored, and blended in float32")
    plan = plan_experts(reference, experts, device=device, dtype=dtype, **options)
    mode, why = decide_memory(memory, max_memory, device, resident_bytes(plan, dtype), what="the resident stack")
    if mode == "resident":
        return fill_stack(plan, device), f"experts resident on {device}: {why}"
    held = map_rows(plan, device)
    how = (" through pinned host memory, each block's copy overlapping the previous block's compute"
           if device.type == "cuda" else "")
    return held, (f"experts streamed from their files ({format_bytes(held.mapped_bytes)} mapped) to {device}"
                  f"{how}, blended module by module: {why}")
