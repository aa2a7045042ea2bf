"""The method registry: built-in methods, entry points (families and single methods), and the
options of minimize declared once, in its signature."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
import types
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import spsa_mix
from spsa_mix.core import methods
from spsa_mix.core.methods import (
    ENTRY_POINT_GROUP,
    MethodSpec,
    available_methods,
    lookup_method,
    register_method,
)
from spsa_mix.core.optimizer import SimplexForwardGradient, SimplexGradient, SimplexSPSA
from spsa_mix.core.result import OptimizeResult

mz = sys.modules["spsa_mix.core.minimize"]  # spsa_mix.core.minimize is also the function
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def registry(monkeypatch):
    """A scratch copy of the registry, restored after the test."""
    monkeypatch.setattr(methods, "_METHODS", dict(methods._METHODS))
    monkeypatch.setattr(methods, "_LOADED", {})
    return monkeypatch


@pytest.fixture
def plugin(registry, tmp_path):
    """Install entry points of a fake package ``fakeplugin`` (a module written to tmp_path)."""
    (tmp_path / "fakeplugin.py").write_text(textwrap.dedent('''
        import numpy as np
        from spsa_mix.core.methods import MethodSpec
        from spsa_mix.core.result import OptimizeResult

        def _run(objective, shape, *, rng, run_kwargs, final_eval, total_steps, **options):
            x = np.full(shape, 1.0 / shape[-1])
            return OptimizeResult(x=x, fun=float(objective(x)), options=options)

        def family(suffix):
            return MethodSpec(f"fake:{suffix}", _run, frozenset({"x0"}), final_eval=False)

        def single():
            return MethodSpec("single", _run, frozenset(), final_eval=False)

        CONSTANT = MethodSpec("fake:constant", _run, frozenset({"lr"}), final_eval=False)
        NOT_A_SPEC = 3
    '''))
    registry.syspath_prepend(str(tmp_path))
    sys.modules.pop("fakeplugin", None)
    eps = {name: metadata.EntryPoint(name, value, ENTRY_POINT_GROUP) for name, value in [
        ("fake", "fakeplugin:family"),
        ("single", "fakeplugin:single"),
        ("fake:constant", "fakeplugin:CONSTANT"),
        ("broken", "fakeplugin:NOT_A_SPEC"),
    ]}
    registry.setattr(methods, "_entry_points", lambda: eps)
    yield
    sys.modules.pop("fakeplugin", None)


# ---------------------------------------------------------------- the registry
def test_installed_families_are_listed_without_importing_them():
    code = ("import sys, spsa_mix; print(spsa_mix.available_methods()); "
            "print(sorted(m for m in sys.modules if m.startswith('spsa_mix.adapters') or m in ('nevergrad', 'optuna')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.splitlines() == [
        "['backprop', 'forward-grad', 'spsa', 'nevergrad:<name>', 'optuna:<name>']", "[]"]


def test_the_core_names_no_adapter_module():
    core = Path(methods.__file__).parent
    hits = [p.name for p in core.glob("*.py") if "spsa_mix.adapters" in p.read_text()]
    assert hits == []


def test_families_come_from_entry_points():
    spec = lookup_method("optuna:tpe")
    assert spec.name == "optuna:tpe" and spec.options == frozenset({"x0", "options"})
    assert "optuna:tpe" not in available_methods()  # a family is listed once, as optuna:<name>


def test_plugin_entry_points(plugin):
    assert available_methods()[-4:] == ["broken:<name>", "fake:<name>", "fake:constant", "single:<name>"]
    assert "fakeplugin" not in sys.modules  # discovered, not loaded
    assert lookup_method("fake:abc").name == "fake:abc"  # a family: called with the suffix
    assert "fakeplugin" in sys.modules
    assert lookup_method("fake:constant").options == frozenset({"lr"})  # a full name wins over the family
    assert lookup_method("single").name == "single"  # a callable of no argument
    res = spsa_mix.minimize(lambda a: float(a[0]), k=4, method="fake:xyz", x0=[0.1, 0.2, 0.3, 0.4])
    assert res.fun == 0.25 and list(res.options) == ["x0"]
    with pytest.raises(ValueError, match=r"method 'fake' is a family of methods: give 'fake:<name>'"):
        lookup_method("fake")
    with pytest.raises(TypeError, match=r"entry point 'broken' = 'fakeplugin:NOT_A_SPEC' of group "
                                         r"'spsa_mix.methods' must give a MethodSpec, but gave int"):
        lookup_method("broken")
    with pytest.raises(ValueError, match=re.escape("unknown method 'fak:x'; available: ['backprop', 'forward-grad', "
                                                   "'spsa', 'broken:<name>', 'fake:<name>', 'fake:constant', "
                                                   "'single:<name>']")):  # the same listing as before loading
        lookup_method("fak:x")


def test_register_method_at_run_time(registry):
    seen = {}

    def run(objective, shape, *, rng, run_kwargs, final_eval, total_steps, **options):
        seen.update(options)
        return OptimizeResult(x=np.full(shape, 1.0 / shape[-1]), fun=0.0)

    register_method(MethodSpec("recorder", run, frozenset({"x0", "lr"}), final_eval=False))
    assert "recorder" in available_methods()
    spsa_mix.minimize(lambda a: 0.0, k=3, method="recorder", lr=0.1)
    assert seen == {"lr": 0.1}  # given options only, nothing else
    with pytest.raises(ValueError, match=re.escape("method 'recorder' does not use mu=0.1; it accepts ['lr', 'x0']")):
        spsa_mix.minimize(lambda a: 0.0, k=3, method="recorder", mu=0.1)
    with pytest.raises(TypeError, match="spec must be a MethodSpec, but got dict"):
        register_method({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method must be a string, but got 3"):
        lookup_method(3)


# ---------------------------------------------------------------- options declared once
def test_builtin_methods_accept_their_optimiser_hyperparameters():
    common = {"x0", "lr", "betas", "eps", "update", "momentum", "lr_schedule", "initial_state"}
    directional = {"m", "directions", "sum_zero", "orthogonal"}
    assert lookup_method("spsa").options == common | directional | {"mu", "mu_schedule"}
    assert lookup_method("forward-grad").options == common | directional
    assert lookup_method("backprop").options == common | {"backward_cost"}


def test_every_optimiser_hyperparameter_is_an_option_of_minimize():
    set_by_minimize = {"total_steps", "seed", "rng"}  # from the budget and seed of the run
    for cls in (SimplexSPSA, SimplexForwardGradient, SimplexGradient):
        names = {n for klass in cls.__mro__[:-1] if "__init__" in vars(klass)
                 for n, p in inspect.signature(klass.__init__).parameters.items() if p.kind is p.KEYWORD_ONLY}
        assert names - set_by_minimize == mz._constructor_options(cls), cls.__name__


def test_every_option_is_used_by_a_method_and_every_argument_is_documented():
    used = set().union(*(lookup_method(m).options for m in ("spsa", "forward-grad", "backprop", "optuna:tpe")))
    assert set(mz.OPTION_NAMES) == used
    params = set(inspect.signature(spsa_mix.minimize).parameters)
    assert mz._RUN_ARGUMENTS <= params and set(mz.OPTION_NAMES) == params - mz._RUN_ARGUMENTS - {"objective", "k"}
    doc = spsa_mix.minimize.__doc__
    section = doc[doc.index("Parameters\n"):doc.index("Returns\n")]
    documented = {n for line in re.findall(r"^    (\w[\w, ]*):$", section, flags=re.M) for n in line.split(", ")}
    assert documented == params


def test_a_new_option_is_one_line_in_the_signature_of_minimize(registry):
    """Add ``weight_decay`` to the signature of a copy of spsa_mix/core/minimize.py, nothing
    else: minimize forwards it to a method that accepts it and rejects it for the others,
    and a built-in optimiser whose constructor takes it accepts it."""
    source = Path(mz.__file__).read_text()
    anchor = "    options: dict[str, Any] | None = None,\n) -> OptimizeResult:"
    assert source.count(anchor) == 1
    edited = types.ModuleType("edited_minimize")
    exec(compile(source.replace(anchor, "    weight_decay: float | None = None,\n" + anchor), "edited", "exec"),
         edited.__dict__)  # also re-registers the built-in methods, in the scratch registry
    assert "weight_decay" in edited.OPTION_NAMES

    seen = {}

    def run(objective, shape, *, rng, run_kwargs, final_eval, total_steps, **options):
        seen.update(options)
        return OptimizeResult(x=np.full(shape, 1.0 / shape[-1]), fun=0.0)

    register_method(MethodSpec("decayed", run, frozenset({"weight_decay"}), final_eval=False))
    edited.minimize(lambda a: 0.0, k=3, method="decayed", weight_decay=0.1)
    assert seen == {"weight_decay": 0.1}
    with pytest.raises(ValueError, match=r"method 'spsa' does not use weight_decay=0\.1"):
        edited.minimize(lambda a: 0.0, k=3, weight_decay=0.1)
    edited.check_method("decayed", {"weight_decay": 0.1})
    with pytest.raises(ValueError, match=r"method 'backprop' does not use weight_decay=0\.1"):
        edited.check_method("backprop", {"weight_decay": 0.1})

    class DecayedSPSA(SimplexSPSA):
        def __init__(self, k, *, weight_decay: float = 0.0, **kwargs):
            super().__init__(k, **kwargs)
            self.weight_decay = weight_decay

    assert edited._constructor_options(DecayedSPSA) == lookup_method("spsa").options - {"initial_state"} | {
        "weight_decay"}


def test_a_method_without_domains_gets_the_shape_and_refuses_extra_coordinates(plugin):
    res = spsa_mix.minimize(lambda a: float(a[0]), spsa_mix.Domain(3), method="fake:x")
    assert res.x.shape == (3,)  # a simplex-only Domain reaches it as the shape of the weights
    assert lookup_method("fake:x").domains is False and lookup_method("spsa").domains is True
    message = (r"method 'fake:x' optimises simplex weights only, but k=Domain\(simplex=\(3,\), positive=1\) "
               r"has coordinates beside them")
    with pytest.raises(ValueError, match=message):
        spsa_mix.minimize(lambda a: 0.0, spsa_mix.Domain(3, positive=1), method="fake:x")
    with pytest.raises(ValueError, match=message):
        mz.check_method("fake:x", {"k": spsa_mix.Domain(3, positive=1)})
    mz.check_method("spsa", {"k": spsa_mix.Domain(3, positive=1)})
