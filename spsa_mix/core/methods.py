"""The methods of :func:`~spsa_mix.core.minimize.minimize`: what a method is, and where they come from.

A method is a :class:`MethodSpec`. The built-in ones (``"spsa"``, ``"forward-grad"``,
``"backprop"``) are registered by :mod:`spsa_mix.core.minimize` with :func:`register_method`,
which users may call too. Every other method comes from an installed package through the
entry-point group ``spsa_mix.methods`` (:data:`ENTRY_POINT_GROUP`), so the core names no
plugin module (this package's own ``pyproject.toml`` declares ``nevergrad`` and ``optuna``
so); in the ``pyproject.toml`` of a package ``mypkg``::

    [project.entry-points."spsa_mix.methods"]
    mypkg = "mypkg.methods:method_spec"                  # a family: "mypkg:<name>"
    "mypkg:annealing" = "mypkg.methods:annealing_spec"   # one method

An entry point named ``prefix`` provides the family ``"prefix:<suffix>"``: its object is
called with the suffix and returns the :class:`MethodSpec` (``method_spec("CMA")`` for
``"nevergrad:CMA"``). An entry point named with a full method name provides that method: its
object is a :class:`MethodSpec` or a callable of no argument returning one. A name is looked
up as a registered method, then as the full name of an entry point, then as
``prefix:<suffix>``.

Entry points are discovered, not loaded, until a method of theirs is asked for, so listing
the methods (:func:`available_methods`) imports no plugin and no optional library. The
listing cannot tell a family from a single method without loading it: a name without a
colon is listed as the family ``name:<name>``, a name with one as itself.

Example
-------
>>> import spsa_mix
>>> available_methods()
['backprop', 'forward-grad', 'spsa', 'nevergrad:<name>', 'optuna:<name>']
>>> lookup_method("spsa").description
'two-point SPSA with Adam on softmax logits (GLUE)'
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spsa_mix.core.result import OptimizeResult

if TYPE_CHECKING:
    from importlib import metadata

__all__ = ["MethodSpec", "ENTRY_POINT_GROUP", "register_method", "available_methods", "lookup_method"]

ENTRY_POINT_GROUP = "spsa_mix.methods"


@dataclass(frozen=True)
class MethodSpec:
    """A method of :func:`~spsa_mix.core.minimize.minimize`.

    ``run(objective, shape, rng=..., run_kwargs=..., final_eval=..., total_steps=...,
    **options)`` returns the result, with ``run_kwargs`` the keyword arguments of
    :class:`~spsa_mix.core.driver.Run` and ``options`` those given among ``self.options``;
    ``options`` names the keyword arguments of ``minimize`` the method accepts beyond the
    ones every method takes (passing another is an error); ``final_eval`` says whether it
    reserves one evaluation to score its answer; ``cost_per_step(options)`` is the budget
    one step spends; ``domains`` says whether it optimises coordinates beside the simplex
    (then, for such a ``k``, ``shape`` is the :class:`~spsa_mix.core.domain.Domain` and the
    objective takes its flat points; ``minimize`` refuses such a ``k`` for the others, which
    always get the shape of the simplex weights); ``resumable`` says whether it takes
    ``checkpoint=`` (then ``run_kwargs["checkpoint"]`` is a
    :class:`~spsa_mix.core.checkpoint.Checkpoint`, or ``None``, which its
    :class:`~spsa_mix.core.driver.Run` takes with the other ``run_kwargs``: the method
    restores its own state from ``checkpoint.method_state`` when resuming and gives
    ``method_state=`` to :meth:`Run.execute <spsa_mix.core.driver.Run.execute>`).
    """

    name: str
    run: Callable[..., OptimizeResult]
    options: frozenset[str]
    final_eval: bool = True
    cost_per_step: Callable[[dict[str, Any]], float] = lambda opts: 1.0
    description: str = ""
    domains: bool = False
    resumable: bool = False


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> None:
    """Make ``spec`` available under ``spec.name`` (replacing a method of that name).

    >>> spec = lookup_method("spsa")
    >>> register_method(spec)  # what spsa_mix.core.minimize does for the built-in methods
    """
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"spec must be a MethodSpec, but got {type(spec).__name__}")
    _METHODS[spec.name] = spec


@functools.lru_cache(maxsize=1)
def _entry_points() -> dict[str, metadata.EntryPoint]:
    """The entry points of :data:`ENTRY_POINT_GROUP` by name (discovered once, not loaded)."""
    from importlib import metadata  # on first use: importing it costs as much as the rest of the core

    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)  # the first installed package wins a name
    return found


def available_methods() -> list[str]:
    """Names accepted by ``method``: the registered methods (sorted), then those of the
    installed packages, families listed as ``prefix:<name>``; nothing is imported.

    >>> available_methods()[:3]
    ['backprop', 'forward-grad', 'spsa']
    """
    plugins = [name if ":" in name else f"{name}:<name>" for name in sorted(_entry_points()) if name not in _METHODS]
    return sorted(_METHODS) + plugins


def lookup_method(method: Any) -> MethodSpec:
    """The :class:`MethodSpec` of ``method`` (see the module docstring for the order).

    >>> lookup_method("adam")
    Traceback (most recent call last):
    ...
    ValueError: unknown method 'adam'; available: ['backprop', 'forward-grad', 'spsa', 'nevergrad:<name>', 'optuna:<name>']
    """
    if not isinstance(method, str):
        raise ValueError(f"method must be a string, but got {method!r}")
    if method in _METHODS:
        return _METHODS[method]
    eps = _entry_points()
    if method in eps:
        obj = _load(eps[method])
        if not isinstance(obj, MethodSpec) and callable(obj) and not _takes_no_argument(obj):
            raise ValueError(f"method {method!r} is a family of methods: give {method + ':<name>'!r}")
        return _as_spec(obj, eps[method])
    prefix, sep, suffix = method.partition(":")
    if sep and prefix in eps:
        return _as_spec(_load(eps[prefix])(suffix), eps[prefix])
    raise ValueError(f"unknown method {method!r}; available: {available_methods()}")


_LOADED: dict[str, Any] = {}


def _load(ep: metadata.EntryPoint) -> Any:
    """The object of ``ep``, imported on first use."""
    if ep.name not in _LOADED:
        _LOADED[ep.name] = ep.load()
    return _LOADED[ep.name]


def _as_spec(obj: Any, ep: metadata.EntryPoint) -> MethodSpec:
    """``obj`` if it is a MethodSpec, else what it returns when called with no argument."""
    if not isinstance(obj, MethodSpec) and callable(obj) and _takes_no_argument(obj):
        obj = obj()
    if not isinstance(obj, MethodSpec):
        raise TypeError(f"entry point {ep.name!r} = {ep.value!r} of group {ENTRY_POINT_GROUP!r} must give a "
                        f"MethodSpec, but gave {type(obj).__name__}")
    return obj


def _takes_no_argument(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature (some builtins): call it
        return True
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
