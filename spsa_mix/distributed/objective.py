"""``DistributedObjective``: one objective scored by many ranks, the same losses on all.

Every rank runs the same optimiser with the same seed, so every rank asks for the same
probes; nothing but losses (and gradients of K floats) is sent. Each call of the wrapper
on every rank

1. scores this rank's part with the wrapped objective: its probe group's contiguous chunk
   of the ``n`` probes (probe parallelism), on its shard of the minibatch (data
   parallelism; :mod:`spsa_mix.distributed.shard`);
2. puts ``mean * w`` for each of its probes and its shard's weight ``w`` (examples or
   scored tokens, :mod:`spsa_mix.distributed.weights`) in a float64 vector of
   ``n + P (+ 2)`` entries, zeros elsewhere, with ``P`` the number of probe groups (plus a
   checksum of the points and its square);
3. makes **one** collective of that vector over all ranks (an all-reduce by default), and
   divides: ``loss_i = sum_r mean_ri w_r / sum_r w_r`` over the data ranks of probe
   ``i``'s group, the mean over the whole global minibatch.

So every rank returns the same float64 losses, tells the same values, and the optimiser
states stay identical. With data parallelism only (``P = 1``) the vector holds ``2 m + 1``
floats for SPSA (``2 m + 3`` with the checksum); with probe parallelism only (``P`` = the
world size) each rank's losses are sent as they are (no weight is needed, the division is
by one), so the losses equal a single process's bit for bit.

An objective of several parts, each a mean over a minibatch of its own (the targets of a
:class:`~spsa_mix.blend.multitask.MultiTaskObjective`: ``weights`` ``(T,)``,
``part_losses(points) -> (T, n)`` and ``part_shard_weights() -> (T,)``), has each part's
shards weighted apart under data parallelism: the vector holds ``T (n + P)`` entries and the
loss is ``sum_t weights_t sum_r mean_rti w_rt / sum_r w_rt``, the weighted mean of each
part's mean over its whole global minibatch, as one process computes it (its
``part_value_and_grad`` and ``part_jvp`` likewise).

The same holds for ``value_and_grad`` (the K-float gradient of alpha, weighted and summed:
``method="backprop"``) and ``jvp`` (the tangents split over the probe groups:
``method="forward-grad"``), which exist when the wrapped objective has them.

Numerics: the sum over ranks is the backend's (``reduction="all-reduce"``: exact for two
ranks, the order of the backend's ring or tree beyond); ``reduction="all-gather"`` gathers
every rank's vector and adds them with :func:`math.fsum`, correctly rounded whatever the
order, the backend or the layout. ``mean_r * w_r`` is exact for float32 losses (24
mantissa bits times a count below ``2**29``). ``docs/distributed.md`` gives the
measurements against a single process.

Failure semantics: every rank calls the wrapped objective exactly once per call (a
probe group with no probe to score scores the first one and drops it), so the ranks'
minibatch streams stay in step. A rank whose objective raises still joins the
collective, flagging its failure; it then raises its own exception and every other rank a
:class:`~spsa_mix.distributed.errors.PeerError` naming it. A non-finite loss on any shard
makes every rank raise :class:`~spsa_mix.core.errors.NonFiniteLossError` (``minimize``
stops cleanly, everywhere at the same step). Every ``check_every`` calls the checksum
detects ranks that scored different points (:class:`DivergenceError`, naming them). A
rank that dies or hangs makes the others raise
:class:`~spsa_mix.distributed.errors.RankFailureError` within ``timeout`` seconds.

Example
-------
Two ranks as threads of this process (under ``torchrun`` each rank runs the same lines
with ``group=None``):

>>> import numpy as np, spsa_mix
>>> from spsa_mix.distributed import DistributedObjective, ThreadWorld
>>> c = np.array([0.5, 0.3, 0.2])
>>> def rank_main(comm):
...     quadratic = lambda points: ((points - c) ** 2).sum(axis=1)     # (n, 3) -> (n,)
...     obj = DistributedObjective(quadratic, probe_groups="all", group=comm)   # split the probes
...     res = spsa_mix.minimize(obj, k=3, vectorized=True, m=2, maxiter=200, lr=0.05, seed=0)
...     return res.x
>>> xs = ThreadWorld(2).run(rank_main)
>>> bool(np.array_equal(xs[0], xs[1])), bool(np.abs(xs[0] - c).max() < 0.02)
(True, True)
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.core.validation import check_int, normalize_shape
from spsa_mix.distributed.comm import DEFAULT_TIMEOUT_S, Communicator, resolve_communicator
from spsa_mix.distributed.errors import DivergenceError, PeerError
from spsa_mix.distributed.layout import Layout
from spsa_mix.distributed.weights import shard_weight

__all__ = ["DistributedObjective", "points_digest", "REDUCTIONS"]

FloatArray = NDArray[np.float64]
Reduction = Literal["all-reduce", "all-gather"]
REDUCTIONS = ("all-reduce", "all-gather")
DIGEST_BITS = 20  # checksum bits: exact sums of digests and their squares in float64 up to 8192 ranks


def _point_shape(shape: Any) -> tuple[int, ...] | None:
    """The shape of one point: a ``Domain``'s ``point_shape`` (weights and extra
    coordinates, flat), else ``shape`` itself (``k`` or ``(groups, k)``).

    >>> from spsa_mix.core.domain import Domain
    >>> _point_shape(3), _point_shape((2, 3)), _point_shape(Domain(3, positive=1)), _point_shape(None)
    ((3,), (2, 3), (4,), None)
    """
    if shape is None:
        return None
    inner = getattr(shape, "point_shape", None)
    return tuple(int(d) for d in inner) if inner is not None else normalize_shape(shape)


def points_digest(*arrays: ArrayLike, tag: str = "", world_size: int = 1) -> int:
    """A checksum of float64 arrays (their shapes and bytes) and a ``tag``: an integer
    below ``2**b``, ``b = min(20, (53 - ceil(log2 world_size)) // 2)``, so that the sum over
    ranks of the checksums and of their squares is exact in float64.

    >>> points_digest(np.eye(2), tag="call 0") == points_digest(np.eye(2), tag="call 0")
    True
    >>> points_digest(np.eye(2), tag="call 0") < 2 ** 20
    True
    """
    h = hashlib.blake2b(tag.encode(), digest_size=8)
    for a in arrays:
        arr = np.ascontiguousarray(a, dtype=np.float64)
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    bits = min(DIGEST_BITS, (53 - math.ceil(math.log2(max(world_size, 1)))) // 2)
    return int.from_bytes(h.digest(), "little") & ((1 << bits) - 1)


class DistributedObjective:
    """An objective scored by every rank of a process group (see the module docstring).

    Parameters
    ----------
    objective:
        The objective each rank scores on its own shard: vectorized,
        ``objective(points (n, *shape)) -> (n,)`` mean losses (a
        :class:`~spsa_mix.blend.BlendedObjective`, or any callable); its ``value_and_grad``
        and ``jvp``, if it has them, are wrapped too. With data parallelism and no
        ``weight``, an objective of several parts (``weights``, ``part_losses``,
        ``part_shard_weights``; see the module docstring) has each part weighted apart.
    probe_groups:
        ``P``, the number of groups that split the probes of a call; must divide the world
        size. ``1`` (default): data parallel only, each rank scores every probe on its
        shard; ``"all"`` (the world size): probe parallel only, each rank scores its probes
        on the whole minibatch; in between, both (a ``P x D`` grid,
        :class:`~spsa_mix.distributed.layout.Layout`).
    group:
        A ``torch.distributed`` process group, ``None`` for the default one (or, without
        ``torch.distributed`` initialised, a single process), or a
        :class:`~spsa_mix.distributed.comm.Communicator`.
    weight:
        With data parallelism, this rank's shard weight for the last call: ``None``
        (default) asks the objective (:func:`~spsa_mix.distributed.weights.shard_weight`:
        the examples or tokens of a ``BlendedObjective``'s last batch); a number (``1.0``
        when all shards have the same size); or a callable of no argument.
    reduction:
        ``"all-reduce"`` (default: one all-reduce, the fewest bytes and the lowest latency
        at scale) or ``"all-gather"`` (exact sums, the same bits for any order of ranks).
    check_every:
        Compare a checksum of the points across ranks every that many calls (at no extra
        collective: two more floats in the vector), starting with the first; ``None``
        never.
    timeout:
        Seconds a collective may wait for the slowest rank before every waiting rank raises
        :class:`~spsa_mix.distributed.errors.RankFailureError` (used when ``group`` is a
        process group).
    shape:
        The shape of one point (``k``, ``(groups, k)`` or a :class:`~spsa_mix.core.domain.Domain`);
        default ``objective.shape`` if it has one. Without a shape a 1-D array is one point
        and anything else a batch of points.

    Attributes
    ----------
    layout:
        This rank's place (:class:`~spsa_mix.distributed.layout.Layout`).
    shape, point_shape:
        ``shape`` as given (the wrapped objective's: what ``minimize``'s ``k`` takes), and the
        shape of one point it means.
    calls, collectives, bytes_sent:
        Calls made; collectives and payload bytes this wrapper put on the wire (the
        vectors' sizes; what a ring or tree moves per byte is the backend's).
    last_weight:
        The total weight (examples or tokens of the global minibatch, over group 0's data
        ranks) of the last call; ``1.0`` without data parallelism.
    """

    def __init__(
        self,
        objective: Callable[..., Any],
        *,
        probe_groups: int | Literal["all"] = 1,
        group: Any = None,
        weight: float | Callable[[], float] | None = None,
        reduction: Reduction = "all-reduce",
        check_every: int | None = 1,
        timeout: float = DEFAULT_TIMEOUT_S,
        shape: Any = None,
    ) -> None:
        if not callable(objective):
            raise ValueError(f"objective must be callable, but got {type(objective).__name__}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {list(REDUCTIONS)}, but got {reduction!r}")
        if weight is not None and not callable(weight) and (
                isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight < math.inf):
            raise ValueError(f"weight must be None, a finite non-negative number or a callable, but got {weight!r}")
        self.objective = objective
        self.comm: Communicator = resolve_communicator(group, timeout=timeout)
        world = self.comm.world_size
        if isinstance(probe_groups, str):
            if probe_groups != "all":
                raise ValueError(f"probe_groups must be a positive integer or 'all', but got {probe_groups!r}")
            probe_groups = world
        self.layout = Layout(world_size=world, rank=self.comm.rank,
                             probe_groups=check_int(probe_groups, "probe_groups", minimum=1))
        self.reduction: Reduction = reduction
        self.check_every = check_int(check_every, "check_every", minimum=1, allow_none=True)
        self.weight = weight
        if shape is None:
            shape = getattr(objective, "shape", None)
        self.shape: Any = shape  # as the wrapped objective gives it: what minimize's k takes
        self.point_shape: tuple[int, ...] | None = _point_shape(shape)
        self.calls = 0
        self.collectives = 0
        self.bytes_sent = 0
        self.last_weight = math.nan

    # ------------------------------------------------------------------ properties
    @property
    def rank(self) -> int:
        """This rank."""
        return self.comm.rank

    @property
    def world_size(self) -> int:
        """Number of ranks."""
        return self.comm.world_size

    @property
    def k(self) -> int:
        """Number of experts (the wrapped objective's ``k``, else the last entry of ``shape``)."""
        k = getattr(self.objective, "k", None)
        if isinstance(k, numbers.Integral):
            return int(k)
        if self.point_shape is None:
            raise AttributeError("the wrapped objective has no k and no shape was given")
        return self.point_shape[-1]

    @property
    def value_and_grad(self) -> Callable[[ArrayLike], tuple[float, FloatArray]]:
        """``value_and_grad(alpha) -> (loss, grad)`` over all ranks (exists when the wrapped
        objective has ``value_and_grad``)."""
        if not callable(getattr(self.objective, "value_and_grad", None)):
            raise AttributeError(f"the wrapped objective ({type(self.objective).__name__}) has no value_and_grad")
        return self._value_and_grad

    @property
    def jvp(self) -> Callable[[ArrayLike, ArrayLike], tuple[float, FloatArray]]:
        """``jvp(alpha, tangents) -> (loss, derivs)`` over all ranks, the tangents split over
        the probe groups (exists when the wrapped objective has ``jvp``)."""
        if not callable(getattr(self.objective, "jvp", None)):
            raise AttributeError(f"the wrapped objective ({type(self.objective).__name__}) has no jvp")
        return self._jvp

    # ------------------------------------------------------------------ the objective
    def __call__(self, points: ArrayLike) -> FloatArray | float:
        """Mean losses of ``points`` over the global minibatch, the same on every rank.

        Parameters
        ----------
        points:
            ``(n, *shape)`` points, or one point of ``shape`` (a float is returned).

        Returns
        -------
        numpy.ndarray
            ``(n,)`` float64 losses.

        Raises
        ------
        NonFiniteLossError
            On every rank, if a loss is NaN or infinite on any rank's shard.
        PeerError, RankFailureError, DivergenceError
            See the module docstring.
        """
        pts, single = self._as_points(points)
        n = pts.shape[0]
        call = self._start()
        what = f"call {call} ({n} point{'s' if n > 1 else ''})"
        layout = self.layout
        groups = layout.probe_groups
        lo, hi = layout.probe_chunk(n)
        parts = self._parts()
        t_parts = 1 if parts is None else len(parts)
        payload = np.zeros(t_parts * (n + groups))  # [mean * w per part and probe | weight per part and probe group]
        weight_slots = [t_parts * n + t * groups + layout.probe_group for t in range(t_parts)]
        error: Exception | None = None
        try:
            chunk = pts[lo:hi] if hi > lo else pts[:1]  # an idle group still advances its minibatch
            if parts is None:
                out = self.objective(chunk)
                local = np.asarray(out, dtype=np.float64).reshape(1, -1)
            else:
                out = self.objective.part_losses(chunk)  # type: ignore[attr-defined]
                local = np.asarray(out, dtype=np.float64)
            if local.shape != (t_parts, len(chunk)):
                raise ValueError(f"the objective must return {len(chunk)} losses for points of shape "
                                 f"{chunk.shape}, but returned shape {np.shape(out)}")
            w = self._part_weights(parts)
            for t in range(t_parts):
                payload[t * n + lo: t * n + hi] = local[t, : hi - lo] * w[t] if self._sharded else local[t, : hi - lo]
            payload[weight_slots] = w
        except NonFiniteLossError as e:  # this shard's loss is not finite: so is the mean, on every rank
            bad = [t * n + lo + min(e.index, hi - lo - 1) for t in range(t_parts)] if hi > lo else []
            error = self._flag_nonfinite(payload, weight_slots, bad, parts)
        except Exception as e:
            error = e
            payload[weight_slots] = math.nan
        total = self._reduce(payload, slice(t_parts * n, t_parts * (n + groups)), error, what, pts, tag=f"call {call}")
        means = [self._divide(total[t * n: (t + 1) * n],
                              total[t_parts * n + t * groups: t_parts * n + (t + 1) * groups][layout.group_of_probes(n)],
                              what) for t in range(t_parts)]
        losses = self._combine(parts, np.stack(means))
        self._check_finite(losses, what, "loss")
        return float(losses[0]) if single else losses

    def _value_and_grad(self, alpha: ArrayLike) -> tuple[float, FloatArray]:
        point = self._as_point(alpha)
        call = self._start()
        what = f"call {call} (value_and_grad)"
        size = point.size
        parts = self._parts()
        t_parts = 1 if parts is None else len(parts)
        first = self.layout.probe_group == 0  # one point: only group 0's data ranks count
        payload = np.zeros(t_parts * (size + 2))  # [grad * w per part | loss * w per part | weight per part]
        weight_slots = list(range(t_parts * (size + 1), t_parts * (size + 2)))
        error: Exception | None = None
        try:
            if parts is None:
                loss, grad = self.objective.value_and_grad(point)  # type: ignore[attr-defined]
                values, g = np.array([float(loss)]), np.asarray(grad, dtype=np.float64).reshape(1, -1)
            else:
                loss, grad = self.objective.part_value_and_grad(point)  # type: ignore[attr-defined]
                values = np.asarray(loss, dtype=np.float64).reshape(-1)
                g = np.asarray(grad, dtype=np.float64).reshape(t_parts, -1)
            if g.shape != (t_parts, size) or values.shape != (t_parts,):
                raise ValueError(f"value_and_grad must return a gradient of {size} entries, but returned "
                                 f"shape {np.shape(grad)}")
            w = self._part_weights(parts)
            if first:
                scale = w if self._sharded else np.ones(t_parts)
                payload[: t_parts * size] = (g * scale[:, None]).reshape(-1)
                payload[t_parts * size: t_parts * (size + 1)] = values * scale
                payload[weight_slots] = w
        except NonFiniteLossError:
            error = self._flag_nonfinite(payload, weight_slots, list(range(t_parts * (size + 1))) if first else [],
                                         parts, count=first)
        except Exception as e:
            error = e
            payload[weight_slots] = math.nan
        total = self._reduce(payload, slice(t_parts * (size + 1), t_parts * (size + 2)), error, what, point,
                             tag=f"call {call} grad")
        w_total = total[t_parts * (size + 1):]
        grads = np.stack([self._divide(total[t * size: (t + 1) * size], np.full(size, w_total[t]), what)
                          for t in range(t_parts)])
        values = self._divide(total[t_parts * size: t_parts * (size + 1)], w_total, what)
        value = self._combine(parts, values[:, None])
        gradient = self._combine(parts, grads)
        self._check_finite(value, what, "loss")
        self._check_finite(gradient, what, "gradient")
        return float(value[0]), gradient.reshape(point.shape)

    def _jvp(self, alpha: ArrayLike, tangents: ArrayLike) -> tuple[float, FloatArray]:
        point = self._as_point(alpha)
        tan = np.asarray(tangents, dtype=np.float64)
        if tan.ndim != point.ndim + 1 or tan.shape[1:] != point.shape or tan.shape[0] < 1:
            raise ValueError(f"tangents must have shape (m, {', '.join(map(str, point.shape))}), "
                             f"but got shape {tan.shape}")
        m = tan.shape[0]
        call = self._start()
        what = f"call {call} (jvp, {m} tangent{'s' if m > 1 else ''})"
        layout = self.layout
        groups, g = layout.probe_groups, layout.probe_group
        lo, hi = layout.probe_chunk(m)
        parts = self._parts()
        t_parts = 1 if parts is None else len(parts)
        # [deriv * w per part and tangent | loss * w per part (group 0) | weight per part and group]
        payload = np.zeros(t_parts * (m + 1 + groups))
        weight_slots = [t_parts * (m + 1) + t * groups + g for t in range(t_parts)]
        error: Exception | None = None
        try:
            chunk = tan[lo:hi] if hi > lo else tan[:1]
            if parts is None:
                loss, derivs = self.objective.jvp(point, chunk)  # type: ignore[attr-defined]
                values, d = np.array([float(loss)]), np.asarray(derivs, dtype=np.float64).reshape(1, -1)
            else:
                loss, derivs = self.objective.part_jvp(point, chunk)  # type: ignore[attr-defined]
                values = np.asarray(loss, dtype=np.float64).reshape(-1)
                d = np.asarray(derivs, dtype=np.float64).reshape(t_parts, -1)
            if d.shape != (t_parts, len(chunk)):
                raise ValueError(f"jvp must return {len(chunk)} directional derivatives, but returned "
                                 f"shape {np.shape(derivs)}")
            w = self._part_weights(parts)
            scale = w if self._sharded else np.ones(t_parts)
            for t in range(t_parts):
                payload[t * m + lo: t * m + hi] = d[t, : hi - lo] * scale[t]
            if g == 0:
                payload[t_parts * m: t_parts * (m + 1)] = values * scale
            payload[weight_slots] = w
        except NonFiniteLossError:
            bad = [t * m + j for t in range(t_parts) for j in range(lo, hi)]
            bad += list(range(t_parts * m, t_parts * (m + 1))) if g == 0 else []
            error = self._flag_nonfinite(payload, weight_slots, bad, parts)
        except Exception as e:
            error = e
            payload[weight_slots] = math.nan
        total = self._reduce(payload, slice(t_parts * (m + 1), t_parts * (m + 1 + groups)), error, what, point, tan,
                             tag=f"call {call} jvp")
        base = t_parts * (m + 1)
        derivs_t, values_t = [], []
        for t in range(t_parts):
            w_t = total[base + t * groups: base + (t + 1) * groups]
            derivs_t.append(self._divide(total[t * m: (t + 1) * m], w_t[layout.group_of_probes(m)], what))
            values_t.append(self._divide(total[t_parts * m + t: t_parts * m + t + 1], w_t[:1], what))
        value = self._combine(parts, np.stack(values_t))
        deriv = self._combine(parts, np.stack(derivs_t))
        self._check_finite(value, what, "loss")
        self._check_finite(deriv, what, "directional derivative")
        return float(value[0]), deriv

    # ------------------------------------------------------------------ helpers
    @property
    def _sharded(self) -> bool:
        return self.layout.data_size > 1

    def _start(self) -> int:
        call = self.calls
        self.calls += 1
        return call

    def _as_points(self, points: ArrayLike) -> tuple[FloatArray, bool]:
        try:
            arr = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"points must be an array of floats, but got {points!r:.100}") from e
        shape = self.point_shape
        if shape is None:
            if arr.ndim == 0:
                raise ValueError(f"points must be an array of shape (n, ...) or one point, but got {points!r:.100}")
            return (arr[None], True) if arr.ndim == 1 else (arr, False)
        if arr.shape == shape:
            return arr[None], True
        if arr.ndim == len(shape) + 1 and arr.shape[1:] == shape and arr.shape[0] >= 1:
            return arr, False
        raise ValueError(f"points must have shape {shape} or (n, {', '.join(map(str, shape))}), "
                         f"but got shape {arr.shape}")

    def _as_point(self, alpha: ArrayLike) -> FloatArray:
        arr = np.asarray(alpha, dtype=np.float64)
        if self.point_shape is not None and arr.shape != self.point_shape:
            raise ValueError(f"alpha must have shape {self.point_shape}, but got shape {arr.shape}")
        return arr

    def _weight(self) -> float:
        """This rank's shard weight for the call just made (1 without data parallelism)."""
        if not self._sharded:
            return 1.0
        if self.weight is None:
            w = shard_weight(self.objective)
        else:
            w = float(self.weight() if callable(self.weight) else self.weight)
        if not 0 <= w < math.inf:
            raise ValueError(f"the shard weight must be a finite non-negative number, but got {w!r}")
        return w

    def _parts(self) -> FloatArray | None:
        """The weights ``(T,)`` of an objective of several parts scored on shards of their own
        minibatches (see :meth:`__init__`'s ``objective``), else ``None``: only with data
        parallelism, where each part's shards are weighted apart."""
        if not self._sharded or self.weight is not None or not callable(getattr(self.objective, "part_losses", None)):
            return None
        parts = np.asarray(self.objective.weights, dtype=np.float64).reshape(-1)  # type: ignore[attr-defined]
        if parts.size < 1 or not np.all(np.isfinite(parts)) or not np.all(parts > 0):
            raise ValueError(f"the objective's part weights must be positive finite numbers, but got {parts!r}")
        return parts

    def _part_weights(self, parts: FloatArray | None) -> FloatArray:
        """This rank's shard weight per part (one entry without parts)."""
        if parts is None:
            return np.array([self._weight()])
        w = np.asarray(self.objective.part_shard_weights(), dtype=np.float64).reshape(-1)  # type: ignore[attr-defined]
        if w.shape != parts.shape or not np.all((w >= 0) & (w < math.inf)):
            raise ValueError(f"the shard weights of the {parts.size} parts must be finite non-negative numbers, "
                             f"but got {w!r}")
        return w

    @staticmethod
    def _combine(parts: FloatArray | None, values: FloatArray) -> FloatArray:
        """``values (T, ...)`` of the parts combined by their weights (the one part as it is)."""
        return values[0] if parts is None else np.tensordot(parts, values, axes=1)

    def _flag_nonfinite(self, payload: FloatArray, weight_slots: list[int], slots: list[int],
                        parts: FloatArray | None, *, count: bool = True) -> Exception | None:
        """Put NaN in ``slots`` and this rank's weights in their slots; an exception if even
        the weights cannot be had (then reported as this rank's error)."""
        try:
            w = self._part_weights(parts)
        except Exception as e:
            payload[weight_slots] = math.nan
            return e
        payload[slots] = math.nan
        if count:
            payload[weight_slots] = w
        return None

    def _reduce(self, payload: FloatArray, weight_slots: slice, error: Exception | None, what: str,
                *arrays: FloatArray, tag: str) -> FloatArray:
        """The one collective of a call; raises the ranks' errors and divergence everywhere alike."""
        check = self.check_every is not None and (self.calls - 1) % self.check_every == 0
        digest = points_digest(*arrays, tag=tag, world_size=self.world_size) if check else 0
        vec = np.concatenate([payload, [float(digest), float(digest) ** 2]]) if check else payload
        if self.reduction == "all-reduce":
            total = self.comm.all_reduce_sum(vec, what=f"the losses of {what}")
        else:
            rows = self.comm.all_gather(vec, what=f"the losses of {what}")  # (world, len)
            total = np.array([math.fsum(rows[:, j]) for j in range(rows.shape[1])])
        self.collectives += 1
        self.bytes_sent += vec.nbytes
        if np.isnan(total[weight_slots]).any():
            self._raise_errors(error, what)
        if check:
            s1, s2 = int(total[-2]), int(total[-1])
            if self.world_size * s2 != s1 * s1:  # sum of squares = (sum)^2 / W only if all are equal
                self._raise_divergence(digest, what)
        return total[: payload.size]

    def _raise_errors(self, error: Exception | None, what: str) -> None:
        message = None if error is None else f"{type(error).__name__}: {error}"[:500]
        messages = self.comm.all_gather_object(message, what=f"the errors of {what}")
        self.collectives += 1
        failed = {r: m for r, m in enumerate(messages) if m is not None}
        if error is not None:
            raise error
        ranks = sorted(failed)
        shown = "; ".join(f"rank {r}: {m}" for r, m in failed.items()) or "a shard weight was NaN"
        raise PeerError(f"spsa_mix.distributed: the objective raised on rank{'s' if len(ranks) > 1 else ''} "
                        f"{', '.join(map(str, ranks))} at {what} (see that rank's log): {shown}",
                        ranks=ranks, messages=failed)

    def _raise_divergence(self, digest: int, what: str) -> None:
        digests = self.comm.all_gather(np.array([float(digest)]), what=f"the checksums of {what}")[:, 0]
        self.collectives += 1
        differ = [r for r in range(self.world_size) if digests[r] != digests[0]]
        raise DivergenceError(
            f"spsa_mix.distributed: the ranks scored different points at {what}: rank"
            f"{'s' if len(differ) > 1 else ''} {', '.join(map(str, differ))} "
            f"differ{'' if len(differ) > 1 else 's'} from rank 0 "
            f"(checksums {[int(d) for d in digests]}). Every rank must build the optimiser with the same seed "
            "and options, start from the same state and call the objective the same way",
            ranks=differ,
        )

    @staticmethod
    def _divide(sums: FloatArray, weights: FloatArray, what: str) -> FloatArray:
        if not np.all(weights > 0):
            raise ValueError(f"the shards of {what} hold no example (total weight {weights.min():g}): "
                             "every probe group needs a non-empty minibatch")
        return sums / weights

    @staticmethod
    def _check_finite(values: FloatArray, what: str, name: str) -> None:
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            i = int(bad[0])
            raise NonFiniteLossError(f"the {name} at entry {i} of {what} is {float(values[i])!r} "
                                     "(on at least one rank's shard)", index=i, value=float(values[i]))

    def __repr__(self) -> str:
        lay = self.layout
        return (f"DistributedObjective({type(self.objective).__name__}, rank={lay.rank}, "
                f"world_size={lay.world_size}, probe_groups={lay.probe_groups}, data_size={lay.data_size}, "
                f"reduction={self.reduction!r})")
