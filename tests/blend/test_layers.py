"""The shape of ``spsa_mix.blend``: layers as the data flows, each importing only those below it.

Every import of every module of the package counts: at the top, inside functions and under
``TYPE_CHECKING``. The layers, bottom to top, are those of the package's docstring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import spsa_mix.blend

PACKAGE = Path(spsa_mix.blend.__file__).parent
# Bottom to top; a module is named by its path under spsa_mix/blend ("sources/hub"), a
# folder by its name (every module in it is in that layer).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("support", ("devices", "losses", "batches", "batchnorm", "skeleton")),
    ("where expert weights come from", ("sources",)),
    ("how they are held", ("held",)),
    ("how a point becomes coefficients", ("spaces", "methods")),
    ("how a result is written", ("export", "saving", "lora")),
    ("how experts are loaded", ("pretrained",)),
    ("how probes are scored", ("objective", "multitask", "scoring")),
]


def _modules() -> dict[str, Path]:
    """``"sources.hub" -> path`` for every module of the package but its ``__init__``."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.name != "__init__":
            out[".".join(rel.parts)] = path
    return out


def _layer(module: str) -> int:
    for i, (_, members) in enumerate(LAYERS):
        if module in members or module.split(".")[0] in members:
            return i
    raise AssertionError(f"spsa_mix/blend/{module.replace('.', '/')}.py is in no layer: add it to LAYERS "
                         "(and to the package docstring)")


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("spsa_mix.blend"):
            base = node.module.removeprefix("spsa_mix.blend").lstrip(".")
            names = [f"{base}.{a.name}".lstrip(".") for a in node.names] + [base]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix("spsa_mix.blend").lstrip(".") for a in node.names
                     if a.name.startswith("spsa_mix.blend.")]
        for name in names:
            while name and name not in modules:  # "sources.hub.read_config" -> "sources.hub"
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(p, modules) - {m} for m, p in modules.items()}


def test_every_module_is_in_a_layer():
    for module in _modules():
        _layer(module)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    for target in sorted(_graph()[module]):
        assert _layer(target) <= _layer(module), (
            f"spsa_mix.blend.{module} ({LAYERS[_layer(module)][0]}) imports spsa_mix.blend.{target} "
            f"({LAYERS[_layer(target)][0]}), a layer above it")


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycle = path[path.index(t):] + [m, t] if t in path else [m, t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_the_checker_sees_imports_inside_functions_and_under_type_checking(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from spsa_mix.blend.objective import X\n"
                      "def f():\n    from spsa_mix.blend.sources import hub\n    import spsa_mix.blend.spaces\n")
    assert _imports(source, _modules()) == {"objective", "sources.hub", "spaces"}



@pytest.mark.parametrize("package", ["spsa_mix.blend", "spsa_mix.blend.methods"])
def test_no_lazily_exported_name_is_also_a_submodule(package):
    """The package imports its names on first use (PEP 562): a submodule of the same name
    would replace the name once imported (``spsa_mix.blend.evaluate`` the module, not the
    function), so none may share one."""
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    submodules = {m.name for m in pkgutil.iter_modules(pkg.__path__)}
    for name in pkg.__all__:  # a name may be a submodule only if it exports that very submodule
        value = getattr(pkg, name)
        if name in submodules:
            assert value is importlib.import_module(f"{package}.{name}"), name
