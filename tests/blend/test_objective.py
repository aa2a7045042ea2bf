"""BlendedObjective: the loss of theta(alpha), its gradients, the probes, and every error."""

from __future__ import annotations

import copy
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import spsa_mix
from spsa_mix.blend import BlendedObjective, evaluate_experts
from spsa_mix.blend import objective as objective_module
from spsa_mix.core.errors import NonFiniteLossError
from spsa_mix.core.result import Status
from spsa_mix.models import build_model

from .blend_helpers import TinyNet, make_tiny_experts, tiny_batch


def hand_blend(experts: list[nn.Module], alpha: np.ndarray) -> nn.Module:
    """A model whose float tensors are sum_i alpha_i theta_i, computed tensor by tensor."""
    net = copy.deepcopy(experts[0])
    states = [e.state_dict() for e in experts]
    blended = {}
    for name, ref in states[0].items():
        if ref.is_floating_point():
            blended[name] = sum(float(a) * s[name].double() for a, s in zip(alpha, states, strict=True)).to(ref.dtype)
        else:
            blended[name] = ref
    net.load_state_dict(blended)
    return net.eval()


def make_obj(experts=None, data=None, **kw) -> BlendedObjective:
    experts = experts if experts is not None else make_tiny_experts(3)
    data = data if data is not None else tiny_batch()
    kw.setdefault("device", "cpu")
    return BlendedObjective(TinyNet(), experts, data=data, **kw)


# ---------------------------------------------------------------------- the loss
@pytest.mark.parametrize("batched", [False, True])
def test_blended_loss_equals_hand_blended_model(batched):
    experts, (x, y) = make_tiny_experts(3), tiny_batch()
    obj = make_obj(experts, (x, y), batched=batched)
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=4)
    losses = obj(points)
    with torch.no_grad():
        expected = [F.cross_entropy(hand_blend(experts, a)(x), y).item() for a in points]
    np.testing.assert_allclose(losses, expected, rtol=1e-5, atol=1e-6)
    assert losses.dtype == np.float64 and losses.shape == (4,)


def test_single_point_gives_a_float():
    obj = make_obj()
    value = obj(np.full(3, 1 / 3))
    assert isinstance(value, float)
    assert value == pytest.approx(obj(np.full((1, 3), 1 / 3))[0], rel=1e-6)


def test_one_hot_reproduces_each_expert_exactly(digits_experts):
    experts, x, y = digits_experts
    arch = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    obj = BlendedObjective(arch, experts, data=(x[:64], y[:64]), device="cpu")
    losses = obj(np.eye(3))
    for i, expert in enumerate(experts):
        with torch.no_grad():
            own = F.cross_entropy(expert.eval()(x[:64]), y[:64]).item()
        assert losses[i] == pytest.approx(own, rel=1e-6, abs=1e-7)
        state = obj.blended_state_dict(np.eye(3)[i])
        for name, tensor in expert.state_dict().items():
            assert torch.equal(state[name], tensor), name  # bit for bit, integer buffers included


def test_forward_only_eval_mode_no_graph():
    seen = []

    def hook(module, inputs, output):
        seen.append((module.training, output.requires_grad, output.grad_fn, torch.is_inference_mode_enabled()))

    arch = TinyNet()
    arch.register_forward_hook(hook)
    arch.train()
    obj = make_obj(make_tiny_experts(3), tiny_batch(), batched=False)
    obj._model.register_forward_hook(hook)  # the objective's private copy
    obj(np.full((2, 3), 1 / 3))
    assert seen and all(s == (False, False, None, True) for s in seen)
    assert all(p.grad is None for p in obj._model.parameters())
    assert arch.training  # the user's model is untouched


def test_all_probes_of_a_call_share_one_minibatch_and_it_advances_once():
    experts = make_tiny_experts(3)
    batches = [tiny_batch(16, seed=s) for s in range(3)]
    obj = make_obj(experts, batches)
    a = np.full(3, 1 / 3)
    with torch.no_grad():
        per_batch = [F.cross_entropy(hand_blend(experts, a)(x), y).item() for x, y in batches]
    got = [obj(np.stack([a, a, a])) for _ in range(4)]
    for call, losses in enumerate(got):
        assert losses[0] == losses[1] == losses[2]  # same minibatch for every probe
        assert losses[0] == pytest.approx(per_batch[call % 3], rel=1e-5)  # cycles through the loader
    assert obj.batches_drawn == 4
    obj.value_and_grad(a)
    obj.jvp(a, np.array([[1.0, -1.0, 0.0]]))
    assert obj.batches_drawn == 6


def test_dataloader_is_cycled():
    x, y = tiny_batch(10)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=4)
    obj = make_obj(data=loader)
    for _ in range(7):  # 3 batches per epoch
        obj(np.full((2, 3), 1 / 3))
    assert obj.batches_drawn == 7


# ---------------------------------------------------------------------- gradients
def _fd(obj64: BlendedObjective, alpha: np.ndarray, direction: np.ndarray, eps: float = 1e-6) -> float:
    plus, minus = obj64(alpha + eps * direction), obj64(alpha - eps * direction)
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_backprop_gradient_matches_finite_differences(granularity):
    experts = make_tiny_experts(3, dtype=torch.float64)
    obj = BlendedObjective(TinyNet().double(), experts, data=tiny_batch(dtype=torch.float64), device="cpu",
                           dtype=torch.float64, granularity=granularity, simplex_atol=None)
    rng = np.random.default_rng(1)
    alpha = rng.dirichlet(np.ones(3), size=obj.shape[:-1]).reshape(obj.shape)
    value, grad = obj.value_and_grad(alpha)
    assert grad.shape == obj.shape and value == pytest.approx(obj(alpha), rel=1e-10)
    for direction in np.eye(grad.size):  # every coordinate, BatchNorm statistics included
        d = direction.reshape(obj.shape)
        assert float((grad * d).sum()) == pytest.approx(_fd(obj, alpha, d), rel=1e-6, abs=1e-9)


def test_backprop_gradient_includes_running_statistics():
    """A model whose only blended difference is in BatchNorm's running mean still has a gradient."""
    experts = make_tiny_experts(2, dtype=torch.float64)
    state = experts[0].state_dict()
    for name in state:
        if "running" not in name:
            experts[1].state_dict()[name].copy_(state[name])
    obj = BlendedObjective(TinyNet().double(), experts, data=tiny_batch(dtype=torch.float64), device="cpu",
                           dtype=torch.float64, simplex_atol=None)
    _, grad = obj.value_and_grad(np.array([0.5, 0.5]))
    d = np.array([1.0, -1.0])
    assert abs(grad @ d) > 1e-4
    assert grad @ d == pytest.approx(_fd(obj, np.array([0.5, 0.5]), d), rel=1e-6)


@pytest.mark.parametrize("batched", [False, True])
def test_jvp_matches_finite_differences_and_the_gradient(batched):
    experts = make_tiny_experts(4, dtype=torch.float64)
    obj = BlendedObjective(TinyNet().double(), experts, data=tiny_batch(dtype=torch.float64), device="cpu",
                           dtype=torch.float64, batched=batched, simplex_atol=None)
    rng = np.random.default_rng(2)
    alpha = rng.dirichlet(np.ones(4))
    tangents = rng.standard_normal((3, 4))
    tangents -= tangents.mean(axis=1, keepdims=True)
    value, derivs = obj.jvp(alpha, tangents)
    _, grad = obj.value_and_grad(alpha)
    assert value == pytest.approx(obj(alpha), rel=1e-10)
    np.testing.assert_allclose(derivs, tangents @ grad, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(derivs, [_fd(obj, alpha, t) for t in tangents], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("granularity", ["model", "layer"])
def test_batched_and_looped_probes_agree(digits_experts, granularity):
    experts, x, y = digits_experts
    arch = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    objs = [BlendedObjective(arch, experts, data=(x[:64], y[:64]), device="cpu", batched=b, granularity=granularity)
            for b in (False, True)]
    shape = objs[0].shape
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=(6, *shape[:-1])).reshape(6, *shape)
    looped, batched = objs[0](points), objs[1](points)
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)
    alpha, tangents = points[0], points[1:3] - points[0]
    np.testing.assert_allclose(objs[1].jvp(alpha, tangents)[1], objs[0].jvp(alpha, tangents)[1], rtol=1e-4, atol=1e-6)


def test_auto_falls_back_to_a_loop_where_vmap_fails(caplog, monkeypatch):
    class NoVmap(TinyNet):
        def forward(self, x):
            if self.fc.bias.sum().item() > 1e9:  # data-dependent control flow: vmap refuses .item()
                return x
            return super().forward(x)

    experts = [NoVmap() for _ in range(2)]
    data = tiny_batch()
    strict = BlendedObjective(NoVmap(), experts, data=data, device="cpu", batched=True)
    with pytest.raises(RuntimeError, match="item"):
        strict(np.full((2, 2), 0.5))
    auto = BlendedObjective(NoVmap(), experts, data=data, device="cpu", batched="auto")
    monkeypatch.setattr(objective_module, "auto_batches", lambda device, n, convolutional: True)  # as off the CPU
    assert auto.uses_vmap(2)
    with caplog.at_level(logging.WARNING, logger="spsa_mix"):
        losses = auto(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert "loop" in caplog.text and auto.batched is False and not auto.uses_vmap(2)
    loop = BlendedObjective(NoVmap(), experts, data=data, device="cpu", batched=False)
    np.testing.assert_allclose(losses, loop(np.array([[1.0, 0.0], [0.0, 1.0]])), rtol=1e-6)


# ---------------------------------------------------------------------- learning alpha
def _target_task(digits_experts):
    experts, x, y = digits_experts
    mask = np.isin(y.numpy(), [0, 1, 2, 3, 4])  # the classes expert 0 saw most
    xt, yt = x[mask][:200], y[mask][:200]
    arch = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    return arch, experts, xt, yt


@pytest.mark.parametrize("method", ["spsa", "backprop", "forward-grad"])
def test_minimize_reduces_the_loss_of_a_real_blended_network(digits_experts, method):
    arch, experts, xt, yt = _target_task(digits_experts)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=50, shuffle=True,
                                         generator=torch.Generator().manual_seed(0))
    obj = BlendedObjective(arch, experts, data=loader, device="cpu")
    full = BlendedObjective(arch, experts, data=(xt, yt), device="cpu")
    uniform = full(np.full(3, 1 / 3))
    res = spsa_mix.minimize(obj, k=obj.k, vectorized=True, method=method, maxiter=60, lr=0.1, seed=0)
    assert res.success, res.message
    assert full(res.x) < 0.5 * uniform  # the uniform blend is poor on this target
    assert res.x[0] > 0.8  # the expert trained on the target's classes dominates


def test_layer_wise_granularity(digits_experts):
    arch, experts, xt, yt = _target_task(digits_experts)
    obj = BlendedObjective(arch, experts, data=(xt, yt), device="cpu", granularity="layer")
    convs_and_bns = [n for n, m in arch.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    assert obj.groups == convs_and_bns and obj.shape == (len(convs_and_bns), 3)
    rng = np.random.default_rng(0)
    alpha = rng.dirichlet(np.ones(3), size=len(obj.groups))  # (G, K)
    state = obj.blended_state_dict(alpha)
    states = [e.state_dict() for e in experts]
    for g, group in enumerate(obj.groups):
        for name in states[0]:
            if name.rpartition(".")[0] == group and states[0][name].is_floating_point():
                expected = sum(alpha[g, i] * states[i][name].double() for i in range(3)).float()
                torch.testing.assert_close(state[name], expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        expected_loss = F.cross_entropy(obj.blended_model(alpha).eval()(xt), yt).item()
    assert obj(alpha) == pytest.approx(expected_loss, rel=1e-5)
    start = obj(np.full(obj.shape, 1 / 3))
    res = spsa_mix.minimize(obj, k=obj.shape, vectorized=True, maxiter=40, lr=0.1, seed=0)
    assert res.x.shape == obj.shape and res.fun < start


def test_layer_wise_one_hot_per_row_reproduces_an_expert(tiny_experts, tiny_data):
    obj = make_obj(tiny_experts, tiny_data, granularity="layer")
    assert obj.groups == ["body", "bn", "fc"]
    one_hot = np.tile(np.eye(3)[1], (3, 1))
    with torch.no_grad():
        own = F.cross_entropy(tiny_experts[1].eval()(tiny_data[0]), tiny_data[1]).item()
    assert obj(one_hot) == pytest.approx(own, rel=1e-6)


# ---------------------------------------------------------------------- heads
def _headed_experts(num_classes: list[int]) -> list[nn.Module]:
    experts = make_tiny_experts(len(num_classes))
    for e, c in zip(experts, num_classes, strict=True):
        e.fc = nn.Linear(6, c)
    return experts


def test_different_heads_keep_the_models_head(tiny_data):
    experts = _headed_experts([3, 7, 4])  # different class counts
    target = TinyNet(d_out=3)
    obj = BlendedObjective(target, experts, data=tiny_data, device="cpu", head="fc")
    alpha = np.array([0.2, 0.5, 0.3])
    state = obj.blended_state_dict(alpha)
    assert torch.equal(state["fc.weight"], target.fc.weight.detach())
    expected = sum(a * e.body.weight.detach() for a, e in zip(alpha, experts, strict=True))
    torch.testing.assert_close(state["body.weight"], expected.float())
    net = obj.blended_model(alpha).eval()
    with torch.no_grad():
        assert obj(alpha) == pytest.approx(F.cross_entropy(net(tiny_data[0]), tiny_data[1]).item(), rel=1e-6)


def test_different_heads_from_an_expert(tiny_data):
    experts = _headed_experts([5, 3, 5])
    obj = BlendedObjective(TinyNet(d_out=3), experts, data=tiny_data, device="cpu", head="fc", head_from=1)
    state = obj.blended_state_dict(np.array([0.3, 0.3, 0.4]))
    assert torch.equal(state["fc.weight"], experts[1].fc.weight.detach())
    with pytest.raises(ValueError, match=r"experts\[0\] does not match the architecture: tensor 'fc.weight' has shape"):
        BlendedObjective(TinyNet(d_out=3), experts, data=tiny_data, device="cpu", head="fc", head_from=0)


def test_head_errors(tiny_experts, tiny_data):
    with pytest.raises(ValueError, match=r"head='classifier' matches no tensor of the model; its top-level names are \['bn', 'body', 'fc'\]"):
        make_obj(tiny_experts, tiny_data, head="classifier")
    with pytest.raises(ValueError, match="head_from=1 needs head="):
        make_obj(tiny_experts, tiny_data, head_from=1)
    with pytest.raises(ValueError, match=r"head_from must be an expert index in \[0, 2\] or None, but got 3"):
        make_obj(tiny_experts, tiny_data, head="fc", head_from=3)
    with pytest.raises(ValueError, match="head must be a non-empty string"):
        make_obj(tiny_experts, tiny_data, head=[""])
    with pytest.raises(ValueError, match=r"experts\[1\] does not match the architecture: tensor 'fc.weight' has shape \(7, 6\)"):
        make_obj(_headed_experts([3, 7, 3]), tiny_data)  # without head=, heads must match


# ---------------------------------------------------------------------- blended models
def test_blended_model_is_a_fresh_trainable_copy(tiny_experts, tiny_data):
    obj = make_obj(tiny_experts, tiny_data)
    alpha = np.array([0.25, 0.25, 0.5])
    net = obj.blended_model(alpha)
    assert net.training and all(p.requires_grad for p in net.parameters())
    for name, tensor in obj.blended_state_dict(alpha).items():
        assert torch.equal(net.state_dict()[name], tensor)
    # num_batches_tracked (10, 20, 30): the rounded weighted average
    assert int(net.bn.num_batches_tracked) == round(0.25 * 10 + 0.25 * 20 + 0.5 * 30)
    before = obj(alpha)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    assert obj(alpha) == before  # the objective holds its own copy
    loss = F.cross_entropy(net(tiny_data[0]), tiny_data[1])
    loss.backward()
    assert net.fc.weight.grad is not None


def test_blended_state_dict_saves_with_safetensors(tiny_experts, tmp_path):
    from safetensors.torch import load_file, save_file

    obj = make_obj(tiny_experts)
    state = obj.blended_state_dict(np.full(3, 1 / 3))
    save_file(state, tmp_path / "blend.safetensors")  # refuses tensors sharing memory
    loaded = load_file(tmp_path / "blend.safetensors")
    assert all(torch.equal(loaded[n], t) for n, t in state.items())


def test_objective_without_data_builds_models_but_has_no_loss(tiny_experts):
    obj = BlendedObjective(TinyNet(), tiny_experts, device="cpu")
    assert isinstance(obj.blended_model(np.full(3, 1 / 3)), TinyNet)
    with pytest.raises(ValueError, match=r"has no data \(data=None\)"):
        obj(np.full(3, 1 / 3))


def test_properties_and_repr(tiny_experts, tiny_data):
    obj = make_obj(tiny_experts, tiny_data)
    assert obj.k == 3 and obj.shape == (3,) and obj.groups == ["model"]
    assert obj.num_blended == sum(t.numel() for t in tiny_experts[0].state_dict().values() if t.is_floating_point())
    assert obj.device == torch.device("cpu") and obj.dtype == torch.float32
    assert obj.batched == "auto" and not obj.uses_vmap(8)  # "auto" on the CPU: the loop
    assert "BlendedObjective(k=3" in repr(obj)
    assert len(evaluate_experts(obj, tiny_data)) == 3


def test_float64_blend_casts_inputs(tiny_data):
    experts = make_tiny_experts(2, dtype=torch.float64)
    obj = BlendedObjective(TinyNet().double(), experts, data=tiny_data, device="cpu", dtype=torch.float64)
    assert np.isfinite(obj(np.array([0.5, 0.5])))  # float32 inputs are cast to float64


# ---------------------------------------------------------------------- errors
def test_no_experts_and_one_expert_are_errors(tiny_data):
    with pytest.raises(ValueError, match="experts is empty: pass at least two experts"):
        BlendedObjective(TinyNet(), [], data=tiny_data, device="cpu")
    with pytest.raises(ValueError, match="experts holds 1 expert, but a blend needs at least two"):
        BlendedObjective(TinyNet(), [TinyNet()], data=tiny_data, device="cpu")
    with pytest.raises(ValueError, match="experts must be a list of nn.Modules, state_dicts or checkpoint paths, but got TinyNet"):
        BlendedObjective(TinyNet(), TinyNet(), data=tiny_data, device="cpu")


def test_mismatched_experts_name_the_tensor_and_the_index(tiny_data):
    experts = make_tiny_experts(3)
    experts[2].body = nn.Linear(5, 7)
    with pytest.raises(ValueError, match=r"experts\[2\] does not match the architecture: tensor 'body.weight' has shape \(7, 5\), but the architecture has \(6, 5\)"):
        BlendedObjective(TinyNet(), experts, data=tiny_data, device="cpu")
    experts = make_tiny_experts(3)
    experts[1] = experts[1].double()
    with pytest.raises(ValueError, match=r"experts\[1\] does not match the architecture: tensor 'body.weight' has dtype torch.float64, but the architecture has torch.float32"):
        BlendedObjective(TinyNet(), experts, data=tiny_data, device="cpu")
    states = [e.state_dict() for e in make_tiny_experts(2)]
    del states[1]["bn.running_var"]
    with pytest.raises(ValueError, match=r"experts\[1\] does not match the architecture: it has no tensor 'bn.running_var'"):
        BlendedObjective(TinyNet(), states, data=tiny_data, device="cpu")
    states = [e.state_dict() for e in make_tiny_experts(2)]
    states[0]["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"experts\[0\] does not match the architecture: it has a tensor 'extra.weight' that the architecture does not have"):
        BlendedObjective(TinyNet(), states, data=tiny_data, device="cpu")


def test_loss_fn_returning_a_non_scalar_is_an_error(tiny_experts, tiny_data):
    for batched in (False, True):
        obj = make_obj(tiny_experts, tiny_data, loss_fn=lambda out, y: F.cross_entropy(out, y, reduction="none"),
                       batched=batched)
        with pytest.raises(ValueError, match=r"loss_fn must return a scalar tensor .* but it returned shape \(32,\)"):
            obj(np.full((2, 3), 1 / 3))
    obj = make_obj(tiny_experts, tiny_data, loss_fn=lambda out, y: 1.0)
    with pytest.raises(ValueError, match="loss_fn must return a scalar tensor .* but it returned a float"):
        obj.value_and_grad(np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="loss_fn must be callable, but got 3"):
        make_obj(tiny_experts, tiny_data, loss_fn=3)


def test_nan_losses_are_clear_errors_and_stop_minimize(tiny_experts, tiny_data):
    obj = make_obj(tiny_experts, tiny_data, loss_fn=lambda out, y: out.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"the loss of the blended network is nan at probe 0"):
        obj(np.full((2, 3), 1 / 3))
    with pytest.raises(NonFiniteLossError, match="the loss of the blended network is nan"):
        obj.value_and_grad(np.full(3, 1 / 3))
    with pytest.raises(NonFiniteLossError, match="the loss of the blended network is nan"):
        obj.jvp(np.full(3, 1 / 3), np.array([[1.0, -1.0, 0.0]]))
    res = spsa_mix.minimize(obj, k=3, vectorized=True, maxiter=5, seed=0)
    assert res.status == Status.NONFINITE and not res.success and "nan at probe 0" in res.message


def test_alphas_of_the_wrong_shape_are_errors(tiny_experts, tiny_data):
    obj = make_obj(tiny_experts, tiny_data)
    with pytest.raises(ValueError, match=r"points must have shape \(3,\) or \(n, 3\), but got shape \(2, 4\)"):
        obj(np.full((2, 4), 0.25))
    with pytest.raises(ValueError, match=r"points must have shape \(3,\) or \(n, 3\), but got shape \(0, 3\)"):
        obj(np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"alpha must have shape \(3,\), but got shape \(2, 3\)"):
        obj.value_and_grad(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match=r"tangents must have shape \(m, 3\), but got shape \(3,\)"):
        obj.jvp(np.full(3, 1 / 3), np.array([1.0, -1.0, 0.0]))
    with pytest.raises(ValueError, match=r"alpha must have shape \(3,\) or \(n, 3\), but got shape \(4,\)"):
        obj.blended_state_dict(np.full(4, 0.25))
    layer = make_obj(tiny_experts, tiny_data, granularity="layer")
    with pytest.raises(ValueError, match=r"points must have shape \(3, 3\) or \(n, 3, 3\), but got shape \(3,\) \(granularity='layer': one row of 3 weights per group, 3 groups\)"):
        layer(np.full(3, 1 / 3))


def test_alphas_off_the_simplex_or_not_finite_are_errors(tiny_experts, tiny_data):
    obj = make_obj(tiny_experts, tiny_data)
    with pytest.raises(ValueError, match=r"points must lie on the probability simplex .* \(sum 1.5\)"):
        obj(np.array([[0.5, 0.5, 0.5]]))
    with pytest.raises(ValueError, match="points must be finite"):
        obj(np.array([[np.nan, 0.5, 0.5]]))
    loose = make_obj(tiny_experts, tiny_data, simplex_atol=None)
    assert np.isfinite(loose(np.array([1.5, -0.5, 0.0])))  # extrapolation allowed on request


def test_unavailable_device_is_an_error(tiny_experts, tiny_data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda' is not available: torch.cuda.is_available\(\) is False"):
        make_obj(tiny_experts, tiny_data, device="cuda")
    assert make_obj(tiny_experts, tiny_data, device=None).device == torch.device("cpu")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"granularity": "tensor"}, "granularity must be 'model' or 'layer', but got 'tensor'"),
        ({"batched": "yes"}, "batched must be True, False or 'auto', but got 'yes'"),
        ({"batched": 1}, "batched must be True, False or 'auto', but got 1"),
        ({"dtype": torch.int32}, "dtype must be a floating-point torch dtype such as torch.float32, but got torch.int32"),
        ({"simplex_atol": -1.0}, "simplex_atol must be a non-negative number or None, but got -1.0"),
        ({"device": "gpu"}, "device must be a torch device such as 'cpu' or 'cuda', but got 'gpu'"),
    ],
)
def test_bad_arguments(tiny_experts, tiny_data, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_obj(tiny_experts, tiny_data, **kwargs)


def test_model_must_be_a_module(tiny_experts):
    with pytest.raises(ValueError, match="model must be an nn.Module .*, but got dict"):
        BlendedObjective({}, tiny_experts, device="cpu")


def test_bad_data_is_an_error(tiny_experts):
    with pytest.raises(ValueError, match="data must be an iterable of .* but got int"):
        make_obj(tiny_experts, data=3)
    obj = make_obj(tiny_experts, data=[])
    with pytest.raises(ValueError, match="data yielded no batch"):
        obj(np.full(3, 1 / 3))
    obj = make_obj(tiny_experts, data=[torch.zeros(4, 5)])
    with pytest.raises(ValueError, match="each batch of data must be a pair .* but got a Tensor"):
        obj(np.full(3, 1 / 3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(digits_experts):
    experts, x, y = digits_experts
    arch = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8)
    points = np.random.default_rng(0).dirichlet(np.ones(3), size=4)
    cpu = BlendedObjective(arch, experts, data=(x[:64], y[:64]), device="cpu")
    for batched in (False, True, "auto"):
        gpu = BlendedObjective(arch, experts, data=(x[:64], y[:64]), device="cuda", batched=batched)
        assert gpu._stack.weights.device.type == "cuda"
        np.testing.assert_allclose(gpu(points), cpu(points), rtol=1e-4, atol=1e-5)
        alpha, tangents = points[0], points[1:] - points[0]
        np.testing.assert_allclose(gpu.jvp(alpha, tangents)[1], cpu.jvp(alpha, tangents)[1], rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(gpu.value_and_grad(alpha)[1], cpu.value_and_grad(alpha)[1], rtol=1e-3, atol=1e-5)
    assert BlendedObjective(arch, experts, data=(x[:64], y[:64])).device.type == "cuda"  # the default


def test_no_copies_per_step(tiny_experts, tiny_data, monkeypatch):
    """The experts are stacked once; a step blends into one buffer and copies no module."""
    obj = make_obj(tiny_experts, tiny_data)
    weights_ptr, theta_ptr = obj._stack.weights.data_ptr(), obj._theta.data_ptr()
    obj.value_and_grad(np.full(3, 1 / 3))  # builds the gradient model once
    calls, deepcopy = [], copy.deepcopy

    def spy(x, *args, **kwargs):
        if isinstance(x, (nn.Module, torch.Tensor)):
            calls.append(type(x).__name__)
        return deepcopy(x, *args, **kwargs)

    monkeypatch.setattr(copy, "deepcopy", spy)
    res = spsa_mix.minimize(obj, k=3, vectorized=True, maxiter=5, seed=0)
    spsa_mix.minimize(obj, k=3, vectorized=True, maxiter=2, method="backprop", seed=0)
    spsa_mix.minimize(obj, k=3, vectorized=True, maxiter=2, method="forward-grad", seed=0)
    assert res.success and not calls
    assert obj._stack.weights.data_ptr() == weights_ptr and obj._theta.data_ptr() == theta_ptr
    assert obj._model.body.weight.untyped_storage().data_ptr() == obj._theta.untyped_storage().data_ptr()


def test_task_vectors_over_a_module_base_with_batchnorm(tiny_data):
    *experts, base = make_tiny_experts(4)
    obj = BlendedObjective(TinyNet(), experts, base=base, space="task-vectors", scale=2.0, data=tiny_data,
                           device="cpu", dtype=torch.float64)
    assert obj.shape == (3,) and obj.space == "task-vectors" and obj._stack.weights.shape[0] == 4
    alpha = np.array([0.2, 0.3, 0.5])
    got = obj.blended_state_dict(alpha)
    b = base.state_dict()
    for name, t in b.items():
        if t.is_floating_point():
            want = b[name].double() + 2.0 * sum(a * (e.state_dict()[name].double() - b[name].double())
                                                for a, e in zip(alpha, experts, strict=True))
            torch.testing.assert_close(got[name], want, rtol=0, atol=1e-6)
    counts = 2.0 * (0.2 * 10 + 0.3 * 20 + 0.5 * 30) - 1.0 * 40  # (1 - 2 sum alpha) for the base's 40
    assert int(got["bn.num_batches_tracked"]) == round(counts)
    net = obj.blended_model(alpha).eval()
    with torch.no_grad():
        expected = F.cross_entropy(net(tiny_data[0].double()), tiny_data[1]).item()
    assert obj(alpha) == pytest.approx(expected, rel=1e-9)
    with pytest.raises(ValueError, match="space='lora' blends PEFT adapter directories: use BlendedObjective.from_pretrained"):
        BlendedObjective(TinyNet(), experts, base=base, space="lora", device="cpu")
