"""mergekit both ways: the merge written as a mergekit config, and a mergekit config read as a merge to learn.

**Export** (:func:`export_config`): the model ``spsa-mix merge`` wrote, as the mergekit 0.1.5
config that writes the same tensors, where mergekit can express it:

==========================  ====================================================================
what was written            mergekit config
==========================  ====================================================================
a convex blend              ``linear`` (weights ``alpha``, ``normalize: false``)
task vectors                ``task_arithmetic`` (``base_model``, weights ``alpha``, ``lambda: s``)
a method space (TIES, ...)  the method, its ``density`` (``gamma``, ``epsilon``) per model,
                            ``normalize``, ``rescale``, ``lambda: s``
``granularity: layer``      the same, each weight a list of ``{filter: <tensor>, value: ...}``
                            (one per tensor, the longest names first: mergekit takes the
                            first filter that is a substring of the tensor's name)
LoRA adapters               ``linear`` of ``base+adapter`` models (mergekit merges each
                            adapter into the base: it writes the full model)
a fixed baseline            its method (``model_stock``, ``slerp``, ``nuslerp``, ...)
==========================  ====================================================================

Paths are relative to the config's own folder, so ``cd <output> && mergekit-yaml
mergekit.yaml out`` works; ``dtype`` is the dtype the merge was computed in and
``out_dtype`` the one written (``--dtype``). Plain ``.pt``/``.safetensors`` experts and
layer-wise LoRA weights cannot be expressed (mergekit merges Hugging Face directories): the
recipe says so. DARE's and DELLA's masks are spsa_mix's (seeded per tensor); mergekit draws
its own from torch's global generator, so its file gives another draw of the same method.

**Import** (:func:`read_config`): a mergekit config's models, base, method, parameters,
weights and dtype as ``spsa-mix merge`` keys (the weights become the starting point).

Example
-------
>>> import types
>>> mk = {"merge_method": "ties", "base_model": "base", "parameters": {"lambda": 0.8, "normalize": True},
...       "models": [{"model": "a", "parameters": {"weight": 1.0, "density": 0.5}},
...                  {"model": "b", "parameters": {"weight": 3.0, "density": 0.5}}], "dtype": "bfloat16"}
>>> keys = config_values(mk, root=Path("."))
>>> keys["space"], keys["experts"], keys["base"], keys["density"], keys["scale"], keys["start"]
('ties', ['a', 'b'], 'base', 0.5, 0.8, [0.25, 0.75])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["export_config", "read_config", "config_values", "LEARNABLE"]

# mergekit's methods whose weights spsa_mix learns, and the space each one is
LEARNABLE = {"linear": "convex", "task_arithmetic": "task-vectors", "ties": "ties", "dare_ties": "dare_ties",
             "dare_linear": "dare_linear", "breadcrumbs": "breadcrumbs", "breadcrumbs_ties": "breadcrumbs_ties",
             "della": "della", "della_linear": "della_linear"}
_SHARED = ("normalize", "rescale", "lambda", "int8_mask")
_PER_MODEL = ("weight", "density", "gamma", "epsilon")


def _rel(path: str | os.PathLike[str], root: Path) -> str:
    return os.path.relpath(os.path.abspath(path), os.path.abspath(root))


def _weight(values: Sequence[float] | None, per_tensor: dict[str, int] | None, index: int) -> Any:
    """One model's weight: a number, or per-tensor filters (``per_tensor``: name -> group)."""
    if per_tensor is None:
        assert values is not None
        return float(values[index])
    rows = values  # (G, K)
    names = sorted(per_tensor, key=lambda n: (-len(n), n))
    return [{"filter": n, "value": float(rows[per_tensor[n]][index])} for n in names]  # type: ignore[index]


def export_config(*, kind: str, space: str, experts: Sequence[Path], base: str | None, root: Path,
                  alpha: Any = None, scale: float | None = None, method_record: dict[str, Any] | None = None,
                  candidate: Any = None, per_tensor: dict[str, int] | None = None, dtype: str, out_dtype: str | None
                  ) -> tuple[dict[str, Any] | None, str | None]:
    """The mergekit config of what was written, or ``None`` and why mergekit cannot express it.

    Parameters
    ----------
    kind:
        The experts' kind: ``"hf"``, ``"adapter"`` or ``"file"``.
    space:
        The learned space (``convex``, ``task-vectors``, ``lora``, a method).
    experts, base, root:
        The experts' and the base's paths, and the folder the config is written into.
    alpha, scale:
        The written weights (``(K,)``, or ``(G, K)`` with ``per_tensor``) and ``lambda``.
    method_record:
        A method space's :meth:`~spsa_mix.blend.methods.space.MethodBlend.record`.
    candidate:
        A fixed baseline that was written instead (:class:`~spsa_mix.merge.candidates.Candidate`).
    per_tensor:
        Layer-wise weights: each tensor's name and its group (the row of ``alpha``).
    dtype, out_dtype:
        The dtype the merge was computed in, and the one written (``None``: the same).
    """
    if kind == "file":
        return None, ("mergekit merges Hugging Face model directories; these experts are .pt/.safetensors state "
                      "dicts (mergekit's Python API, mergekit.merge_methods.api.merge_state_dicts, merges them "
                      "with the method and weights of this recipe)")
    if kind == "adapter" and per_tensor is not None:
        return None, ("layer-wise LoRA weights: mergekit merges each base+adapter model whole, so per-layer weights "
                      "of the adapters have no mergekit form")
    if kind == "adapter" and candidate is not None:
        return None, f"the written {candidate.name} is not a mergekit merge of adapters"

    def ref(i: int) -> str:
        path = _rel(experts[i], root)
        return f"{_rel(base, root)}+{path}" if kind == "adapter" else path  # type: ignore[arg-type]

    out: dict[str, Any]
    if candidate is not None:
        out = _candidate_config(candidate, experts, base, root)
    else:
        method = {"convex": "linear", "lora": "linear", "task-vectors": "task_arithmetic"}.get(space, space)
        models = []
        record = method_record or {}
        per_expert = {k: v for k, v in record.get("parameters", {}).items() if k in ("density", "gamma", "epsilon")}
        for i in range(len(experts)):
            params: dict[str, Any] = {"weight": _weight(alpha, per_tensor, i)}
            params.update({k: float(v[i]) for k, v in per_expert.items()})
            models.append({"model": ref(i), "parameters": params})
        out = {"merge_method": method}
        if method != "linear":
            out["base_model"] = _rel(base, root)  # type: ignore[arg-type]
        out["models"] = models
        shared: dict[str, Any] = {"normalize": False}
        if method not in ("linear",):
            shared = {"normalize": bool(record.get("parameters", {}).get("normalize", False)),
                      "lambda": float(scale if scale is not None else 1.0)}
            if "rescale" in record.get("parameters", {}):
                shared["rescale"] = bool(record["parameters"]["rescale"])
        out["parameters"] = shared
    out["dtype"] = dtype
    if out_dtype and out_dtype != dtype:
        out["out_dtype"] = out_dtype
    return out, None


def _candidate_config(cand: Any, experts: Sequence[Path], base: str | None, root: Path) -> dict[str, Any]:
    m = cand.method
    rel = [_rel(p, root) for p in experts]
    if m == "base":
        return {"merge_method": "linear", "models": [{"model": _rel(base, root), "parameters": {"weight": 1.0}}],  # type: ignore[arg-type]
                "parameters": {"normalize": False}}
    if m == "expert":
        return {"merge_method": "linear", "models": [{"model": rel[cand.index], "parameters": {"weight": 1.0}}],
                "parameters": {"normalize": False}}
    if m == "slerp":
        return {"merge_method": "slerp", "base_model": rel[0], "models": [{"model": rel[0]}, {"model": rel[1]}],
                "parameters": {"t": float(cand.parameters["t"])}}
    out: dict[str, Any] = {"merge_method": m}
    if base is not None and m != "linear":
        out["base_model"] = _rel(base, root)
    models = []
    per_model = {k: v for k, v in cand.parameters.items() if k in ("density", "gamma", "epsilon")}
    for i, path in enumerate(rel):
        params: dict[str, Any] = {}
        if cand.weights:
            params["weight"] = float(cand.weights[i])
        params.update({k: float(v[i]) for k, v in per_model.items()})
        models.append({"model": path, "parameters": params} if params else {"model": path})
    out["models"] = models
    shared = {k: v for k, v in cand.parameters.items() if k not in per_model}
    if shared:
        out["parameters"] = shared
    return out


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A mergekit config file read as ``spsa-mix merge`` keys (:func:`config_values`); a
    relative model path is taken relative to the file's folder where it exists there (as
    spsa_mix exports them), else relative to the working directory (as mergekit reads it)."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"mergekit: no such config file {str(p)!r}")
    try:
        loaded = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"mergekit: cannot read {str(p)!r}: {e}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"mergekit: {str(p)!r} must hold a mapping (merge_method, models, ...), but holds "
                         f"{type(loaded).__name__}")
    return config_values(loaded, root=p.parent, where=p.name)


def _number(value: Any, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: {what} must be a number (spsa_mix does not express mergekit's gradients or "
                         f"filters for it), but got {value!r}")
    return float(value)


def config_values(mk: dict[str, Any], *, root: Path, where: str = "the mergekit config") -> dict[str, Any]:
    """The keys of ``spsa-mix merge`` a mergekit config gives: ``space``, ``experts``, ``base``,
    the method's parameters, ``scale`` (``lambda``), ``dtype``, and ``start`` (the weights,
    normalised to the simplex: the starting point). Raises ``ValueError`` naming what spsa_mix
    cannot express (a method it does not learn, slices, per-layer gradients or filters, a
    tokenizer merge, models of different kinds)."""
    for key in ("slices", "modules"):
        if mk.get(key):
            raise ValueError(f"{where}: {key} (layer ranges taken from several models) cannot be expressed by "
                             "spsa_mix, which blends whole models of one architecture")
    known = {"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "tokenizer_source",
             "tokenizer", "chat_template", "slices", "modules"}
    for key in mk:
        if key not in known:
            raise ValueError(f"{where}: unknown mergekit key {key!r}")
    method = mk.get("merge_method")
    if method not in LEARNABLE:
        raise ValueError(f"{where}: merge_method {method!r} cannot be learned by spsa_mix; the methods it learns: "
                         f"{', '.join(LEARNABLE)} (slerp, nuslerp and model_stock are scored as fixed baselines)")
    tok = mk.get("tokenizer_source")
    if mk.get("tokenizer") or (tok is not None and tok != "base"):
        raise ValueError(f"{where}: tokenizer_source {tok!r} / tokenizer (a merged vocabulary) cannot be expressed: "
                         "spsa_mix keeps the base's (or the first expert's) tokenizer")
    models = mk.get("models")
    if not isinstance(models, list) or len(models) < 2:
        raise ValueError(f"{where}: models must list at least two models, but got {models!r}")
    shared = dict(mk.get("parameters") or {})
    for key in shared:
        if key not in _SHARED + _PER_MODEL:
            raise ValueError(f"{where}: parameter {key!r} of {method} cannot be expressed by spsa_mix")
    base = mk.get("base_model")
    paths, adapters, weights = [], [], []
    per: dict[str, list[float]] = {k: [] for k in ("density", "gamma", "epsilon")}
    for i, entry in enumerate(models):
        if isinstance(entry, str):
            entry = {"model": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("model"), str):
            raise ValueError(f"{where}: models[{i}] must be a mapping with a model path, but got {entry!r}")
        ref = entry["model"]
        params = dict(entry.get("parameters") or {})
        for key in params:
            if key not in _PER_MODEL:
                raise ValueError(f"{where}: models[{i}]'s parameter {key!r} cannot be expressed by spsa_mix")
        if "+" in ref:
            model, adapter = ref.split("+", 1)
            adapters.append((model, adapter))
        elif base is not None and ref == base:
            continue  # mergekit lists the base among the models too: it is the base, not an expert
        else:
            paths.append(ref)
        w = params.get("weight", shared.get("weight", 1.0 if method != "linear" else None))
        if w is None:
            raise ValueError(f"{where}: models[{i}] has no weight (linear needs one per model)")
        weights.append(_number(w, f"models[{i}]'s weight", where))
        for key in per:
            if key in params or key in shared:
                per[key].append(_number(params.get(key, shared.get(key)), f"models[{i}]'s {key}", where))
    out: dict[str, Any] = {}
    if adapters:
        if paths:
            raise ValueError(f"{where}: models mix base+adapter references and full models; spsa_mix blends one kind")
        bases = {m for m, _ in adapters}
        if len(bases) != 1 or method not in ("linear", "task_arithmetic"):
            raise ValueError(f"{where}: base+adapter models are blended as LoRA adapters of one base with linear "
                             f"weights, but got {method} over bases {sorted(bases)}")
        out.update(space="lora", base=next(iter(bases)), experts=[a for _, a in adapters])
    else:
        out.update(space=LEARNABLE[method], experts=paths)
        if base is not None:
            out["base"] = base
        elif method != "linear":
            raise ValueError(f"{where}: {method} needs base_model")
    if len(out["experts"]) < 2:
        raise ValueError(f"{where}: spsa_mix needs at least two models besides the base, but got {out['experts']}")
    for key, values in per.items():
        if values:
            if len(values) != len(out["experts"]):
                raise ValueError(f"{where}: {key} is set for some models only")
            out[key] = values[0] if len(set(values)) == 1 else values
    for key in ("normalize", "rescale"):
        if key in shared:
            if out["space"] in ("convex", "task-vectors", "lora"):
                continue  # on the simplex the weights sum to 1: normalizing changes nothing
            out[key] = shared[key]
    total = sum(weights)
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"{where}: the weights must be non-negative with a positive sum (spsa_mix learns weights "
                         f"on the simplex), but got {weights}")
    out["start"] = [w / total for w in weights]
    # theta = base + lambda * sum_i w_i delta'_i (/ the divisor when normalize): on the simplex,
    # alpha = w / sum(w) and scale = lambda * sum(w) (or lambda alone when the divisor removes sum(w))
    from spsa_mix.blend.methods.registry import METHODS

    normalize = bool(shared.get("normalize", True if method == "linear" else METHODS[method].default_normalize))
    lam = _number(shared.get("lambda", 1.0), "lambda", where)
    scale = lam * (1.0 if normalize else total)
    if out["space"] in ("convex", "lora"):
        if abs(scale - 1.0) > 1e-9:
            raise ValueError(f"{where}: linear with normalize: false and weights summing to {total:g} leaves the "
                             "simplex; spsa_mix's convex blends have weights summing to 1")
    elif abs(scale - 1.0) > 0:
        out["scale"] = scale
    dtype = mk.get("out_dtype") or mk.get("dtype")
    if dtype is not None:
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"{where}: dtype {dtype!r} cannot be expressed (float32, bfloat16 or float16)")
        out["dtype"] = dtype
    out["experts"] = [_resolve(p, root) for p in out["experts"]]
    if "base" in out:
        out["base"] = _resolve(out["base"], root)
    return out


def _resolve(path: str, root: Path) -> str:
    """A model path of a mergekit config: relative to the config's folder when it exists there
    (as spsa_mix writes them), else as mergekit reads it (relative to the working directory)."""
    if os.path.isabs(path) or not (root / path).exists():
        return path
    return str(root / path)
