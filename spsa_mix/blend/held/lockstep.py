"""Probes in lockstep: one module's blended tensors at a time, for every probe of a call.

With streamed experts (:mod:`spsa_mix.blend.held.streamed`) the probe model holds no
weights: every module that owns blended tensors (a *block*: a linear layer, a norm, an
embedding; a tied output layer is one too) gets them just in time. :class:`Lockstep` hooks
each block so that, for a call of ``n`` probes,

1. the first probe to reach a block blends its tensors for all ``n`` probes at once, from
   one read of their ``R`` rows (:func:`~spsa_mix.blend.held.streamed.blend_rows`);
2. each probe runs the block on its own copy, then hands over to the next probe, which
   runs up to and through the same block;
3. after the last probe has run it, the block's copies are freed and its tensors replaced
   by placeholders (:class:`Unbound`: the shape, dtype and device, no data, an error on use).

So the probes advance block by block, in order (probe 0, 1, ..., n - 1, then the next
block), and only one block's ``n`` copies (with those of the modules that enclose it, for
tensors a module owns beside its children, such as a ViT's position embedding) exist at a
time. Each probe's forward runs in its own thread (kept between calls), but only one runs at
any moment: they pass a turn, so the order and the numbers are those of a sequential run,
and the activations held are those of ``n`` forwards in progress (each between two blocks).
Every probe must run the same modules in the same order (control flow that does not depend
on the weights; checked: a probe that runs another module is an error). An architecture that
reads a module's weights outside that module's forward (a parent using ``child.weight``)
gets a placeholder, and computing with it is an error that says so (not the meta device's
silence: ``x @ w`` with ``w`` on meta returns uninitialised memory in PyTorch 2.x).

Grad mode and inference mode are per thread in PyTorch: each probe's thread runs in the
caller's. On a GPU (``staged``, by default when the experts' device is CUDA) the rows of
each block are copied to the device through :class:`~spsa_mix.blend.held.staging.Stager`,
the next block's copy overlapping the current block's compute.

Example
-------
>>> import torch
>>> from spsa_mix.blend.held.streamed import stream_experts
>>> nets = [torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU(), torch.nn.Linear(2, 1)) for _ in range(2)]
>>> experts = stream_experts(nets[0].state_dict(), nets, device=torch.device("cpu"), dtype=torch.float32)
>>> from spsa_mix.blend.skeleton import skeleton_of
>>> runner = Lockstep(skeleton_of(nets[0], device=torch.device("cpu")), experts, dtype=torch.float32)
>>> x = torch.ones(1, 2)
>>> coeffs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])       # (n, G, R): each expert alone
>>> outs = runner.run(coeffs, lambda: runner.model(x))
>>> [torch.allclose(o, net(x)) for o, net in zip(outs, nets)]
[True, True]
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from spsa_mix.blend.held.functional import Layout, bind_to_buffer
from spsa_mix.blend.held.staging import Stager
from spsa_mix.blend.held.streamed import StreamedExperts

__all__ = ["Lockstep", "ProbeOrderError", "Unbound", "UnboundWeightError", "STREAMED_PROBES"]

STREAMED_PROBES = 2  # ours: probes blended from one read (SPSA's pair); the objective runs more in turns

T = TypeVar("T")
_METADATA = frozenset({"size", "dim", "numel", "nelement", "is_floating_point", "is_complex", "element_size",
                       "stride", "is_contiguous", "__repr__", "__format__", "__hash__", "__eq__"})


class UnboundWeightError(RuntimeError):
    """A streamed module's weight was used outside that module's forward."""


class Unbound(torch.Tensor):
    """The placeholder of a blended tensor while its module is not running: its shape,
    dtype and device (a zero-stride view of one element), and an :class:`UnboundWeightError`
    on any computation.

    >>> w = Unbound.like((2, 3), torch.float32, torch.device("cpu"))
    >>> w.shape, w.dtype, w.device.type
    (torch.Size([2, 3]), torch.float32, 'cpu')
    >>> torch.ones(1, 3) @ w.T
    Traceback (most recent call last):
    ...
    spsa_mix.blend.held.lockstep.UnboundWeightError: a streamed module's weight was used outside that module's forward (by Tensor.T.__get__): the streamed engine binds each module's blended tensors only while that module runs; use memory='resident' for this architecture
    """

    @staticmethod
    def like(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Unbound:
        return torch.Tensor._make_subclass(Unbound, torch.empty((), dtype=dtype, device=device).expand(shape), False)

    @classmethod
    def __torch_function__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name in _METADATA or (name == "__get__" and _getter_name(func) not in ("T", "mT", "H", "mH", "data")):
            with torch._C.DisableTorchFunctionSubclass():
                return func(*args, **(kwargs or {}))
        where = getattr(func, "__qualname__", name)
        if name == "__get__":
            where = f"Tensor.{_getter_name(func)}.__get__"
        raise UnboundWeightError(f"a streamed module's weight was used outside that module's forward (by {where}): "
                                 "the streamed engine binds each module's blended tensors only while that module "
                                 "runs; use memory='resident' for this architecture")


def _getter_name(func: Any) -> str:
    owner = getattr(func, "__self__", None)
    return str(getattr(owner, "__name__", "")) or str(owner)


class ProbeOrderError(RuntimeError):
    """The probes of one call ran different modules (control flow that depends on the weights)."""


class _Aborted(Exception):
    """Another probe failed: unwind this one."""


@dataclass
class _Entry:
    module: nn.Module
    copies: list[dict[str, torch.Tensor]]  # per probe: leaf name -> tensor
    exited: int = 0


@dataclass
class _Run:
    """The state of one call: whose turn it is, the blocks entered, the first error."""

    n: int
    coeffs: torch.Tensor  # (n, G, R)
    turn: list[threading.Semaphore] = field(default_factory=list)
    entries: dict[int, _Entry] = field(default_factory=dict)
    count: list[int] = field(default_factory=list)  # blocks entered, per probe
    open: list[list[int]] = field(default_factory=list)  # entries a probe is inside, innermost last
    done: list[bool] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.turn = [threading.Semaphore(0) for _ in range(self.n)]
        self.count = [0] * self.n
        self.open = [[] for _ in range(self.n)]
        self.done = [False] * self.n

    def next_probe(self, p: int) -> int | None:
        """The next probe after ``p`` (cyclically) that has not finished."""
        for step in range(1, self.n):
            q = (p + step) % self.n
            if not self.done[q]:
                return q
        return None


class Lockstep:
    """Run ``n`` probes through ``model`` with each block's tensors blended just in time
    (see the module docstring).

    Parameters
    ----------
    model:
        The weightless architecture (parameters on meta; :mod:`spsa_mix.blend.skeleton`),
        modified in place: ``experts``' constants are bound to it and its blocks hooked.
    experts:
        The streamed experts.
    dtype:
        The dtype of the blended tensors (the forward's).
    """

    def __init__(self, model: nn.Module, experts: StreamedExperts, *, dtype: torch.dtype,
                 staged: bool | None = None) -> None:
        self.model = model
        self.experts = experts
        self.dtype = dtype
        constant_aliases = {a: s for a, s in experts.aliases.items() if s in experts.constants}
        bind_to_buffer(model, Layout((), ()), torch.empty(0), experts.constants, constant_aliases)
        blended = set(experts.layout.names)
        self.blocks: dict[nn.Module, list[tuple[str, str]]] = {}  # module -> [(leaf, blended name)]
        names = list(experts.layout.names) + [a for a, s in experts.aliases.items() if s in blended]
        for name in names:
            path, _, leaf = name.rpartition(".")
            self.blocks.setdefault(model.get_submodule(path), []).append((leaf, experts.aliases.get(name, name)))
        self._placeholders = {m: {leaf: Unbound.like(tuple(_get(m, leaf).shape), _get(m, leaf).dtype, experts.device)
                                  for leaf, _ in pairs} for m, pairs in self.blocks.items()}
        for module, tensors in self._placeholders.items():
            self._bind(module, tensors)
        self._names = {m: path for path, m in model.named_modules(remove_duplicate=False) if m in self.blocks}
        for module in self.blocks:
            module.register_forward_pre_hook(self._enter)
            module.register_forward_hook(self._exit)
        self._block_ids = {m: i for i, m in enumerate(self.blocks)}
        if staged is None:
            staged = experts.device.type == "cuda"
        self.stager = Stager(experts.rows, [[name for _, name in pairs] for pairs in self.blocks.values()],
                             device=experts.device) if staged else None
        self._run: _Run | None = None
        self._local = threading.local()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_size = 0

    # ------------------------------------------------------------------ running
    def run(self, coeffs: torch.Tensor, fn: Callable[[], T]) -> list[T]:
        """``[fn() for each probe]``, probe ``p`` seeing the blend of ``coeffs[p]``
        (``(n, G, R)``, the accumulation dtype, on the experts' device)."""
        if self._run is not None:
            raise RuntimeError("Lockstep.run is not reentrant")
        n = int(coeffs.shape[0])
        run = self._run = _Run(n, coeffs)
        results: list[Any] = [None] * n
        try:
            if n == 1:
                self._local.p = 0
                results[0] = fn()
            else:
                self._threads(run, fn, results)
            if run.error is not None:
                raise run.error
            if len(set(run.count)) > 1:
                raise ProbeOrderError(f"the probes of one call ran different numbers of blocks ({run.count}): "
                                      "the streamed engine needs an architecture whose control flow does not "
                                      "depend on its weights (use memory='resident')")
        finally:
            self._run = None
            for entry in run.entries.values():
                self._unbind(entry.module)
            run.entries.clear()
            if self.stager is not None:
                self.stager.end_call()
        return results

    def _threads(self, run: _Run, fn: Callable[[], Any], results: list[Any]) -> None:
        inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

        def work(p: int) -> None:
            self._local.p = p
            run.turn[p].acquire()
            try:
                if run.error is not None:
                    raise _Aborted
                with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                    results[p] = fn()
            except _Aborted:
                pass
            except BaseException as e:  # noqa: BLE001  # handed to the caller's thread
                if run.error is None:
                    run.error = e
            finally:
                run.done[p] = True
                q = run.next_probe(p)
                if q is not None:
                    run.turn[q].release()

        if self._pool is None or self._pool_size < run.n:  # threads kept between calls (and their malloc arenas)
            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ThreadPoolExecutor(max_workers=run.n, thread_name_prefix="spsa-mix-probe")
            self._pool_size = run.n
        futures = [self._pool.submit(work, p) for p in range(run.n)]
        run.turn[0].release()
        for f in futures:
            f.result()

    def _handoff(self, run: _Run, p: int) -> None:
        """Pass the turn to the next probe; wait for it to come back; bind this probe's tensors."""
        q = run.next_probe(p)
        if q is None:
            return
        run.turn[q].release()
        run.turn[p].acquire()
        if run.error is not None:
            raise _Aborted
        for k in run.open[p]:  # the blocks this probe is inside: another probe bound its own copies
            entry = run.entries[k]
            self._bind(entry.module, entry.copies[p])

    # ------------------------------------------------------------------ hooks
    def _enter(self, module: nn.Module, args: Any) -> None:
        run = self._run
        if run is None:
            raise RuntimeError("a streamed objective's model ran outside a call of the objective (its weights are "
                               "formed just in time for each call)")
        p = self._local.p
        k = run.count[p]
        run.count[p] += 1
        entry = run.entries.get(k)
        if entry is None:
            if p != 0:
                raise ProbeOrderError(f"probe {p} ran block {self._names[module]!r} (its block {k}), which probe 0 "
                                      "did not: the streamed engine needs the same modules in the same order")
            entry = run.entries[k] = _Entry(module, self._materialize(module, run.coeffs, k))
        elif entry.module is not module:
            raise ProbeOrderError(f"probe {p} ran block {self._names[module]!r} where probe 0 ran "
                                  f"{self._names[entry.module]!r} (block {k}): the streamed engine needs the same "
                                  "modules in the same order")
        self._bind(module, entry.copies[p])
        run.open[p].append(k)

    def _exit(self, module: nn.Module, args: Any, output: Any) -> None:
        run = self._run
        if run is None:
            return
        p = self._local.p
        k = run.open[p].pop()
        entry = run.entries[k]
        entry.exited += 1
        if entry.exited == run.n:  # the last probe through this block: free its copies
            self._unbind(module)
            del run.entries[k]
        self._handoff(run, p)

    # ------------------------------------------------------------------ tensors
    def _materialize(self, module: nn.Module, coeffs: torch.Tensor, position: int) -> list[dict[str, torch.Tensor]]:
        """The block's tensors blended for every probe: ``n`` dicts of leaf name -> tensor
        (from its rows staged on the device, with a stager; ``position``: the block's place
        in the call)."""
        copies: list[dict[str, torch.Tensor]] = [{} for _ in range(coeffs.shape[0])]
        block = self._block_ids[module]
        staged = self.stager.take(block) if self.stager is not None else {}
        for leaf, name in self.blocks[module]:
            out = self.experts.blend_probes(name, coeffs[:, self.experts.group_of[name]], self.dtype,
                                            rows=staged.get(name))  # (n, *shape)
            for p, copy in enumerate(copies):
                copy[leaf] = out[p]
        if self.stager is not None:
            self.stager.done(block, position)
        return copies

    def bound(self) -> list[str]:
        """The blended tensors bound now (none between calls)."""
        return [f"{self._names[m]}.{leaf}".lstrip(".") for m, tensors in self._placeholders.items()
                for leaf, t in tensors.items() if _get(m, leaf) is not t]

    @staticmethod
    def _bind(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        for leaf, tensor in tensors.items():  # plain tensors, as torch.func.functional_call binds them
            if leaf in module._parameters:
                module._parameters[leaf] = tensor  # type: ignore[assignment]
            else:
                module._buffers[leaf] = tensor

    def _unbind(self, module: nn.Module) -> None:
        self._bind(module, self._placeholders[module])


def _get(module: nn.Module, leaf: str) -> torch.Tensor:
    t = module._parameters.get(leaf)
    if t is None:
        t = module._buffers[leaf]
    if t is None:
        raise ValueError(f"internal error: {leaf!r} of {type(module).__name__} is None")
    return t
