"""The task-vector method spaces of BlendedObjective: the search's blend, the exact merge written, mergekit's bits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import spsa_mix
from spsa_mix.blend import BlendedObjective, evaluate, evaluate_blend
from spsa_mix.blend.methods import LEARNED_SPACES, METHODS, tensor_generator
from spsa_mix.blend.methods.space import TaskVectorMethod, as_method


def _family(k: int = 3, seed: int = 0):
    torch.manual_seed(seed)

    def net() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    base = net()
    experts = []
    for _ in range(k):
        e = net()
        e.load_state_dict({n: v + 0.3 * torch.randn_like(v) for n, v in base.state_dict().items()})
        experts.append(e)
    data = (torch.randn(64, 6), torch.randint(0, 3, (64,)))
    return net, base, experts, data


def _params(method: str) -> dict:
    p = {"density": [0.6, 0.5, 0.7]}
    if method.startswith("della"):
        p["epsilon"] = 0.1
    if method.startswith("breadcrumbs"):
        p["gamma"] = 0.05
    return p


def _point(obj: BlendedObjective, alpha: list[float], scale: float) -> np.ndarray:
    simplex = obj.domain.simplex
    return obj.domain.join(np.broadcast_to(np.array(alpha), simplex).copy(), np.array([scale]))


@pytest.mark.parametrize("consensus", ["fixed", "per-probe"])
@pytest.mark.parametrize("method", LEARNED_SPACES)
def test_the_written_merge_is_mergekits_at_the_final_weights(method: str, consensus: str) -> None:
    api = pytest.importorskip("mergekit.merge_methods.api")
    net, base, experts, data = _family()
    space = TaskVectorMethod(method, _params(method), seed=3, consensus=consensus)
    obj = BlendedObjective(net(), experts, base=base, space=space, scale="learned", data=data, device="cpu")
    weights, lam = [0.6, 0.3, 0.1], 0.8
    state = obj.blended_state_dict(_point(obj, weights, lam))
    for name, tensor in state.items():
        torch.manual_seed(tensor_generator(3, name).initial_seed())  # the tensor's masks, drawn by mergekit
        ref = api.merge_tensors([base.state_dict()[name]] + [e.state_dict()[name] for e in experts], method,
                                parameters={"weight": weights, "lambda": lam, **_params(method)}, base_index=0)
        assert torch.equal(tensor, ref), name


@pytest.mark.parametrize("method", LEARNED_SPACES)
def test_the_search_blend_is_exact_at_the_uniform_weights_and_without_consensus(method: str) -> None:
    net, base, experts, data = _family()
    for consensus in ("fixed", "per-probe"):
        obj = BlendedObjective(net(), experts, base=base, space=TaskVectorMethod(method, _params(method),
                                                                                  consensus=consensus),
                               scale="learned", data=data, device="cpu")
        uniform, other = _point(obj, [1 / 3] * 3, 1.2), _point(obj, [0.6, 0.3, 0.1], 0.8)
        for point in (uniform, other):
            searched = evaluate_blend(obj, point, data)["loss"]
            written = evaluate(obj.blended_model(point), data)["loss"]
            exact = point is uniform or consensus == "per-probe" or not METHODS[method].consensus
            if exact:
                assert searched == pytest.approx(written, abs=2e-6)
            else:  # the consensus of the uniform weights, kept: not the merge at these weights
                assert abs(searched - written) > 1e-4


def test_layer_weights_and_every_method_of_minimize_run_on_a_method_space() -> None:
    net, base, experts, data = _family()
    for consensus in ("fixed", "per-probe"):
        obj = BlendedObjective(net(), experts, base=base, space=TaskVectorMethod("ties", {"density": 0.5},
                                                                                  consensus=consensus),
                               granularity="layer", data=data, device="cpu")
        assert obj.shape == (2, 3) and obj.space == "ties"
        for method in ("spsa", "backprop", "forward-grad"):
            res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, method=method, max_evals=24, seed=0)
            assert res.success and np.isfinite(res.fun)
        loss, grad = obj.value_and_grad(np.full((2, 3), 1 / 3))
        assert np.isfinite(loss) and np.abs(grad).sum() > 0


def test_a_method_space_needs_a_base_and_checks_its_parameters() -> None:
    net, base, experts, data = _family()
    with pytest.raises(ValueError, match="space='ties' needs base="):
        BlendedObjective(net(), experts, space="ties", device="cpu")
    with pytest.raises(ValueError, match="density must be a number in \\(0, 1\\]"):
        TaskVectorMethod("ties", {"density": 0})
    with pytest.raises(ValueError, match="lambda is the space's scale"):
        TaskVectorMethod("ties", {"lambda": 2.0})
    with pytest.raises(ValueError, match="consensus must be one of"):
        TaskVectorMethod("ties", consensus="sometimes")
    with pytest.raises(ValueError, match="task-vector method space must be one of"):
        TaskVectorMethod("slerp")
    assert as_method("dare_linear") == TaskVectorMethod("dare_linear") and as_method("task-vectors") is None


def test_a_hugging_face_method_space_writes_mergekits_merge(llama_family, tmp_path) -> None:
    api = pytest.importorskip("mergekit.merge_methods.api")
    from safetensors.torch import load_file

    obj = BlendedObjective.from_pretrained(llama_family.experts, base=llama_family.base,
                                           space=TaskVectorMethod("dare_ties", {"density": 0.5}, seed=7),
                                           device="cpu")
    alpha = np.array([0.5, 0.2, 0.3])
    out = obj.save_pretrained(alpha, tmp_path / "m")
    written = load_file(str(tmp_path / "m" / "model.safetensors"))
    base = llama_family.base_model.state_dict()
    for name, tensor in written.items():
        torch.manual_seed(tensor_generator(7, name).initial_seed())
        ref = api.merge_tensors([base[name]] + [e.state_dict()[name] for e in llama_family.expert_models],
                                "dare_ties", parameters={"weight": alpha.tolist(), "density": 0.5}, base_index=0)
        assert torch.equal(tensor, ref), name
    assert out == str(tmp_path / "m")
