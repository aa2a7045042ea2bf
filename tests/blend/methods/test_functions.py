"""The merge methods of spsa_mix.blend.methods against mergekit 0.1.5's own functions, tensor by tensor."""

from __future__ import annotations

import pytest
import torch

from spsa_mix.blend.methods import METHODS, check_parameters, interpolation, merge_tensor, tensor_generator
from spsa_mix.blend.methods.task_arithmetic import combine, fixed_rows, sparsified_deltas

SHAPES = [(7,), (5, 9), (3, 4, 6)]


def _tensors(shape: tuple[int, ...], dtype: torch.dtype, k: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g)
    experts = [(base + 0.3 * torch.randn(shape, generator=g)).to(dtype) for _ in range(k)]
    return base.to(dtype), experts


def _raw(method: str) -> dict:
    raw: dict = {"lambda": 1.3}
    if METHODS[method].sparsification:
        raw["density"] = [0.6, 0.5, 0.7]
    if method.startswith("della"):
        raw["epsilon"] = 0.1
    if method.startswith("breadcrumbs"):
        raw["gamma"] = 0.1
    return raw


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", list(METHODS))
def test_each_task_vector_method_gives_mergekits_bits(method: str, shape, dtype) -> None:
    api = pytest.importorskip("mergekit.merge_methods.api")
    base, experts = _tensors(shape, dtype)
    weights = [0.2, 0.5, 0.3]
    raw = _raw(method)
    torch.manual_seed(42)  # mergekit draws DARE's and DELLA's masks from torch's global generator
    ref = api.merge_tensors([base, *experts], method, parameters={"weight": weights, **raw}, base_index=0)
    ours = merge_tensor(method, base, experts, weights, check_parameters(method, raw, k=3),
                        generator=torch.Generator().manual_seed(42))
    assert ours.dtype == ref.dtype and torch.equal(ours, ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_fixed_merges_give_mergekits_bits(dtype) -> None:
    api = pytest.importorskip("mergekit.merge_methods.api")
    for shape in SHAPES:
        base, ex = _tensors(shape, dtype)
        pairs = [
            (api.merge_tensors([base, *ex], "model_stock", base_index=0), interpolation.model_stock(base, ex)),
            (api.merge_tensors(ex, "linear", parameters={"weight": [0.2, 0.5, 0.3]}),
             interpolation.linear(ex, [0.2, 0.5, 0.3])),
            (api.merge_tensors(ex, "linear", parameters={"weight": [0.2, 0.5, 0.3], "normalize": False}),
             interpolation.linear(ex, [0.2, 0.5, 0.3], normalize=False)),
            (api.merge_tensors(ex[:2], "slerp", parameters={"t": 0.3}, base_index=0),
             interpolation.slerp(0.3, ex[0], ex[1])),
            (api.merge_tensors([base, *ex[:2]], "nuslerp", parameters={"weight": [0.3, 0.6]}, base_index=0),
             interpolation.nuslerp(ex[:2], [0.3, 0.6], base=base)),
            (api.merge_tensors(ex[:2], "nuslerp", parameters={"weight": [0.3, 0.6], "nuslerp_flatten": False,
                                                              "nuslerp_row_wise": True}),
             interpolation.nuslerp(ex[:2], [0.3, 0.6], row_wise=True, flatten=False)),
        ]
        for ref, ours in pairs:
            assert ours.dtype == ref.dtype and torch.equal(ours, ref)


def test_slerp_is_linear_for_parallel_tensors_and_keeps_its_ends() -> None:
    a = torch.tensor([1.0, 2.0, 3.0])
    assert torch.allclose(interpolation.slerp(0.25, a, 2 * a), 1.25 * a)
    b = torch.tensor([3.0, -1.0, 0.5])
    assert torch.allclose(interpolation.slerp(0.0, a, b), a) and torch.allclose(interpolation.slerp(1.0, a, b), b)


def test_the_random_masks_depend_on_the_seed_and_the_tensor_name_only() -> None:
    base, experts = _tensors((40,), torch.float32)
    p = check_parameters("dare_linear", {"density": 0.5}, k=3)

    def deltas(seed: int, name: str) -> torch.Tensor:
        return sparsified_deltas("dare_linear", base, experts, p, generator=tensor_generator(seed, name))

    assert torch.equal(deltas(0, "a.weight"), deltas(0, "a.weight"))
    assert not torch.equal(deltas(0, "a.weight"), deltas(1, "a.weight"))
    assert not torch.equal(deltas(0, "a.weight"), deltas(0, "b.weight"))


@pytest.mark.parametrize("method", list(METHODS))
def test_the_fixed_rows_are_the_merge_at_the_weights_they_were_fixed_at(method: str) -> None:
    base, experts = _tensors((6, 8), torch.float32, seed=3)
    p = check_parameters(method, _raw(method), k=3)
    deltas = sparsified_deltas(method, base, experts, p, generator=tensor_generator(0, "w"))
    start = [1 / 3] * 3
    rows = fixed_rows(method, deltas, start, p)
    linear = base + p["lambda"] * sum(w * r for w, r in zip(start, rows, strict=True))
    assert torch.allclose(linear, combine(method, base, deltas, start, p), atol=1e-6)
    other = [0.6, 0.3, 0.1]
    away = base + p["lambda"] * sum(w * r for w, r in zip(other, rows, strict=True))
    exact = combine(method, base, deltas, other, p)
    if not METHODS[method].consensus:  # linear in the weights: exact everywhere on the simplex
        assert torch.allclose(away, exact, atol=1e-6)
    else:  # the consensus of `start` is kept: it differs from the exact merge elsewhere
        assert not torch.allclose(away, exact, atol=1e-6)


def test_parameters_are_checked_with_the_value_received() -> None:
    with pytest.raises(ValueError, match="density must be a number in \\(0, 1\\]"):
        check_parameters("ties", {"density": 0.0}, k=2)
    with pytest.raises(ValueError, match="list of 2"):
        check_parameters("ties", {"density": [0.5, 0.5, 0.5]}, k=2)
    with pytest.raises(ValueError, match="ties has no parameter 'gamma'"):
        check_parameters("ties", {"gamma": 0.1}, k=2)
    with pytest.raises(ValueError, match="density \\+/- epsilon"):
        check_parameters("della", {"density": 0.1, "epsilon": 0.15}, k=2)
    with pytest.raises(ValueError, match="method must be one of"):
        check_parameters("dare", {}, k=2)
    assert check_parameters("breadcrumbs", {"density": [0.9, 0.8]}, k=2) == {
        "density": (0.9, 0.8), "gamma": (0.01, 0.01), "normalize": False, "rescale": False, "lambda": 1.0}
