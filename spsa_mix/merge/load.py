"""Load what ``spsa-mix merge`` wrote, whatever the experts were.

* Hugging Face model directories: the class its ``config.json`` names
  (``AutoModelForCausalLM.from_pretrained(path)`` does the same);
* PEFT adapters: the base named in ``recipe.json`` with the merged adapter on it
  (``PeftModel.from_pretrained(base_model, path)``);
* plain state dicts (``.pt``/``.safetensors`` experts): the architecture as
  ``recipe.json`` records it (``architecture``: the ``model`` of the config and, for an
  architecture of :func:`spsa_mix.models.available_models`, the arguments it was built
  with, e.g. ``{"model": "small-cnn", "kwargs": {"num_classes": 10, "in_channels": 1,
  "image_size": 8}}``), then the merged weights.

Example
-------
>>> build_architecture({"model": "small-cnn", "kwargs": {"num_classes": 10, "in_channels": 1, "image_size": 8}}).fc
Linear(in_features=64, out_features=10, bias=True)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["load_merged", "build_architecture", "architecture_record"]


def architecture_record(model: str, dims: dict[str, Any] | None = None) -> dict[str, Any]:
    """What rebuilds the architecture ``model`` (a config's ``model``): the name and, for an
    architecture of :mod:`spsa_mix.models`, the arguments it is built with (``dims``).

    >>> architecture_record("small-cnn", {"num_classes": 3})
    {'model': 'small-cnn', 'kwargs': {'num_classes': 3}}
    >>> architecture_record("pkg.mod:make")
    {'model': 'pkg.mod:make'}
    """
    from spsa_mix.models import available_models

    if model in available_models():
        return {"model": model, "kwargs": dict(dims or {})}
    return {"model": str(model)}


def build_architecture(record: dict[str, Any]) -> Any:
    """The module an :func:`architecture_record` names, with fresh weights."""
    from spsa_mix.data.files import load_reference
    from spsa_mix.models import available_models, build_model

    model = record["model"]
    if model in available_models():
        return build_model(model, **record.get("kwargs", {}))
    if Path(model).is_dir():
        from transformers import AutoConfig, AutoModel

        return AutoModel.from_config(AutoConfig.from_pretrained(model, local_files_only=True))
    made = load_reference(model)
    return made() if callable(made) and not hasattr(made, "state_dict") else made


def _hf_model(folder: Path) -> Any:
    import transformers

    archs = json.loads((folder / "config.json").read_text()).get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    return (cls or transformers.AutoModel).from_pretrained(folder, local_files_only=True)


def load_merged(path: str | os.PathLike[str]) -> Any:
    """The merged model at ``path`` (the output folder, or the ``.safetensors`` file of
    plain experts), as a module with the merged weights (see the module docstring).

    Raises ``ValueError`` when ``path`` holds no merge (no ``recipe.json`` beside plain
    weights) or its base cannot be found.
    """
    p = Path(path)
    folder = p.parent if p.suffix == ".safetensors" else p
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = _recipe(folder)["config"].get("base")
        if not base or not Path(base).is_dir():
            raise ValueError(f"{folder}: the adapter's base {base!r} (recipe.json, config.base) is not a folder here")
        return PeftModel.from_pretrained(_hf_model(Path(base)), folder)
    if (folder / "config.json").is_file():
        return _hf_model(folder)
    recipe = _recipe(folder)
    if "architecture" not in recipe:
        raise ValueError(f"{folder / 'recipe.json'} does not say which architecture to build (no 'architecture': "
                         "written by an older spsa_mix); build it as the experts were and load the weights")
    from safetensors.torch import load_file

    weights = p if p.suffix == ".safetensors" else folder / "model.safetensors"
    module = build_architecture(recipe["architecture"])
    module.load_state_dict(load_file(str(weights)))
    return module


def _recipe(folder: Path) -> dict[str, Any]:
    file = folder / "recipe.json"
    if not file.is_file():
        raise ValueError(f"{folder}: no recipe.json here: not the output of spsa-mix merge")
    return dict(json.loads(file.read_text()))
