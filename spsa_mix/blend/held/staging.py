"""The next block's rows copied to the device while the current block runs (streamed experts on a GPU).

Streamed experts live in the host's page cache; a GPU blends a block only once its ``R``
rows are on the device. :class:`Stager` keeps two slots (double buffering), each a pinned
host buffer and a device buffer the size of the largest block's rows. When the first probe
of a call enters block ``k`` (:mod:`spsa_mix.blend.held.lockstep`), its rows are taken
from their slot (waiting, on the GPU's own stream, for their copy) and block ``k + 1``'s
are prefetched into the other slot: the host copies them from the page cache into pinned
memory while the GPU still runs the kernels already queued, and a side stream copies them
to the device, so the transfer overlaps the current block's compute. A slot is refilled
only after the blend that read it is done (events order the two streams). The order of the
blocks is the one the first call ran (every call runs the same modules, checked by the
lockstep), so the first call stages each block on demand and the later ones prefetch.

Off CUDA the same bookkeeping runs with plain buffers and no streams (``pinned=False``):
that is how the tests check it on a CPU; on a CPU the rows need no staging, so the
objective does not use it there. The GPU's copy/compute overlap itself is measured only
where a GPU is (it was not, when this was written: see ``docs/blend.md``).

Example
-------
>>> import torch
>>> rows = {"w": [torch.ones(2, 3), 2 * torch.ones(2, 3)]}
>>> stager = Stager(rows, [["w"]], device=torch.device("cpu"))
>>> staged = stager.take(0)                        # block 0, staged on demand
>>> staged["w"][1].tolist(), staged["w"][1].data_ptr() != rows["w"][1].data_ptr()
([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]], True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["Stager"]

_ALIGN = 256  # bytes between rows in a slot (CUDA's allocation granularity)


def _round(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class _Slot:
    """A pinned host buffer and a device buffer, and the events that order their reuse."""

    def __init__(self, nbytes: int, device: torch.device, pinned: bool) -> None:
        self.host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pinned)
        self.device = torch.empty(nbytes, dtype=torch.uint8, device=device) if device.type != "cpu" else None
        self.block: int | None = None  # which block it holds (or is being filled with)
        self.copied: Any = None  # event: the host-to-device copy is done
        self.consumed: Any = None  # event: the blend that read the device buffer is done


class Stager:
    """Double-buffered staging of the rows of ``blocks`` (lists of blended names) to
    ``device`` (see the module docstring).

    Parameters
    ----------
    rows:
        Each blended name's ``R`` rows, on the host (memory-mapped).
    blocks:
        The blocks, each the blended names it needs (in any order; a name may recur).
    device:
        Where the rows go.
    """

    def __init__(self, rows: dict[str, list[torch.Tensor]], blocks: Sequence[Sequence[str]], *,
                 device: torch.device) -> None:
        self.rows = rows
        self.blocks = [list(dict.fromkeys(names)) for names in blocks]
        self.device = device
        self.cuda = device.type == "cuda"
        size = max((self._nbytes(names) for names in self.blocks), default=0)
        self.slots = [_Slot(size, device, pinned=self.cuda) for _ in range(2)]
        self.stream = torch.cuda.Stream(device) if self.cuda else None
        self.sequence: list[int] = []  # the blocks in the order the first call ran them
        self.recording = True
        self.prefetched = 0  # blocks found already staged when taken

    def _nbytes(self, names: Sequence[str]) -> int:
        return sum(_round(r.numel() * r.element_size()) for n in names for r in self.rows[n])

    @property
    def nbytes(self) -> int:
        """Bytes held: two slots, each on the host (pinned on CUDA) and on the device."""
        return sum(s.host.numel() + (s.device.numel() if s.device is not None else 0) for s in self.slots)

    # ------------------------------------------------------------------ staging
    def _fill(self, slot: _Slot, block: int) -> None:
        """Copy ``block``'s rows into ``slot``: page cache -> host buffer -> device (side stream)."""
        if slot.copied is not None:
            slot.copied.synchronize()  # the host buffer's previous copy to the device is done
        offset = 0
        for name in self.blocks[block]:
            for r in self.rows[name]:
                n = r.numel() * r.element_size()
                slot.host[offset:offset + n].copy_(r.reshape(-1).view(torch.uint8))
                offset += _round(n)
        slot.block = block
        if not self.cuda:
            return
        stream = self.stream
        assert stream is not None and slot.device is not None
        if slot.consumed is not None:
            stream.wait_event(slot.consumed)  # the blend that read the device buffer is done
        with torch.cuda.stream(stream):
            slot.device[:offset].copy_(slot.host[:offset], non_blocking=True)
            slot.copied = torch.cuda.Event()
            slot.copied.record(stream)

    def _views(self, slot: _Slot, block: int) -> dict[str, list[torch.Tensor]]:
        buf = slot.device if slot.device is not None else slot.host
        out: dict[str, list[torch.Tensor]] = {}
        offset = 0
        for name in self.blocks[block]:
            views = []
            for r in self.rows[name]:
                n = r.numel() * r.element_size()
                views.append(buf[offset:offset + n].view(r.dtype).view(r.shape))
                offset += _round(n)
            out[name] = views
        return out

    def take(self, block: int) -> dict[str, list[torch.Tensor]]:
        """``block``'s rows on the device, each name's ``R`` views; then the next block of the
        recorded sequence is prefetched into the other slot. Call :meth:`done` once the
        blend has read them (before the slot is refilled)."""
        if self.recording:
            self.sequence.append(block)
        slot = next((s for s in self.slots if s.block == block), None)
        self.prefetched += slot is not None
        if slot is None:  # not prefetched: stage it now, in the slot not holding the previous block
            slot = self.slots[len(self.sequence) % 2] if self.recording else self._free_slot()
            self._fill(slot, block)
        if self.cuda and slot.copied is not None:
            torch.cuda.current_stream(self.device).wait_event(slot.copied)
        return self._views(slot, block)

    def done(self, block: int, position: int) -> None:
        """The blend of ``block`` (the ``position``-th of the call) has been queued: mark its
        slot for reuse after it, and prefetch the next block of the recorded sequence."""
        slot = next(s for s in self.slots if s.block == block)
        if self.cuda:
            slot.consumed = torch.cuda.Event()
            slot.consumed.record(torch.cuda.current_stream(self.device))
        if self.recording or position + 1 >= len(self.sequence):
            return
        following = self.sequence[position + 1]
        if any(s.block == following for s in self.slots):
            return
        self._fill(next(s for s in self.slots if s is not slot), following)

    def _free_slot(self) -> _Slot:
        return self.slots[0] if self.slots[0].block is None else self.slots[1]

    def end_call(self) -> None:
        """A call is over: the first call's order is the sequence the next calls prefetch."""
        self.recording = False
        for s in self.slots:
            s.block = None
