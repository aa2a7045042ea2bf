"""Architectures by name."""

from __future__ import annotations

import copy

import pytest
import torch

from spsa_mix.models import available_models, build_model, head_name


@pytest.mark.parametrize(
    ("name", "in_channels", "image_size"),
    [("small-cnn", 1, 8), ("small-cnn", 1, 28), ("small-cnn", 3, 32), ("resnet20", 3, 32), ("resnet20", 1, 28),
     ("mobilenet_v2", 3, 32), ("mobilenet_v2", 1, 8), ("vit", 3, 32), ("vit", 1, 8)],
)
def test_every_model_maps_images_to_logits(name, in_channels, image_size):
    net = build_model(name, num_classes=7, in_channels=in_channels, image_size=image_size, seed=0).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, in_channels, image_size, image_size))
    assert out.shape == (2, 7)
    assert head_name(name) in {n.split(".")[0] for n in net.state_dict()}


def test_batchnorm_where_promised():
    for name in ("small-cnn", "resnet20", "mobilenet_v2"):
        net = build_model(name, num_classes=10, in_channels=3, image_size=32)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()), name


def test_resnet20_is_the_papers_network():
    net = build_model("resnet20", num_classes=10, in_channels=3, image_size=32)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(convs) + len(linears) == 20  # 6n + 2 weighted layers with n = 3
    assert {c.out_channels for c in convs} == {16, 32, 64}
    assert sum(p.numel() for p in net.parameters()) == 269_722  # "0.27M" in He et al. (2016), Table 6


def test_vit_configuration():
    net = build_model("vit", num_classes=10, in_channels=3, image_size=32)
    assert net.patch_size == 8 and len(net.encoder.layers) == 8 and net.hidden_dim == 192


def test_seed_is_reproducible_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=3)
    b = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=3)
    c = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[n], b.state_dict()[n]) for n in a.state_dict())
    assert not torch.equal(a.fc.weight, c.fc.weight)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("vgg", {}, r"unknown model name 'vgg'; available: \['mobilenet_v2', 'resnet20', 'small-cnn', 'tiny-llama', 'vit'\]"),
        ("vit", {"image_size": 28}, "image_size must be divisible by the ViT patch size 8 for 'vit', but got 28"),
        ("small-cnn", {"num_classes": 0}, "num_classes must be an integer >= 1, but got 0"),
        ("small-cnn", {"in_channels": 1.5}, "in_channels must be an integer >= 1, but got 1.5"),
        ("small-cnn", {"image_size": 2}, "image_size must be at least 4 for 'small-cnn', but got 2"),
        ("small-cnn", {"seed": -1}, "seed must be an integer >= 0, but got -1"),
    ],
)
def test_errors(name, kwargs, message):
    args = {"num_classes": 10, "in_channels": 3, "image_size": 32} | kwargs
    with pytest.raises(ValueError, match=message):
        build_model(name, **args)


def test_available_models_and_head_name():
    assert available_models() == ["mobilenet_v2", "resnet20", "small-cnn", "tiny-llama", "vit"]
    with pytest.raises(ValueError, match="unknown model name 'x'"):
        head_name("x")


def test_tiny_llama_is_a_causal_lm_or_a_sequence_classifier():
    pytest.importorskip("transformers")
    ids = torch.randint(1, 50, (3, 7))
    lm = build_model("tiny-llama", vocab_size=50, max_length=16, seed=0)
    assert lm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.shape == (3, 7, 50)
    cls = build_model("tiny-llama", vocab_size=50, max_length=16, num_classes=4, seed=0)
    assert cls(input_ids=ids).logits.shape == (3, 4)
    again = build_model("tiny-llama", vocab_size=50, max_length=16, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(lm.state_dict().values(), again.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 2, but got None"):
        build_model("tiny-llama", max_length=16)
    with pytest.raises(ValueError, match="in_channels must be an integer >= 1, but got None"):
        build_model("small-cnn", num_classes=10, image_size=8)


# ---------------------------------------------------------------------- memory layout
def _first_conv_input_strides(net: torch.nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    seen: list[tuple[int, ...]] = []
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].stride()))
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        hook.remove()
    return seen[0]


def test_channels_last_is_explicit_for_one_channel_too():
    from spsa_mix.models import channels_last

    for c in (1, 3):
        x = torch.randn(2, c, 5, 4)
        y = channels_last(x)
        assert y.stride() == (c * 20, 1, 4 * c, c) and torch.equal(x, y)
        assert channels_last(y) is y  # already in that order: no copy
    one = torch.randn(2, 1, 5, 4)
    assert channels_last(one).data_ptr() == one.data_ptr()  # one channel: a view with other strides
    sliced = torch.randn(2, 1, 5, 8)[..., ::2]  # not contiguous
    assert torch.equal(channels_last(sliced), sliced) and channels_last(sliced).stride() == (20, 1, 4, 1)


@pytest.mark.parametrize(("name", "in_channels"), [("small-cnn", 1), ("small-cnn", 3), ("resnet20", 1), ("resnet20", 3),
                                                   ("mobilenet_v2", 3)])
def test_convolutional_models_run_channels_last_on_the_cpu_whatever_the_input(name, in_channels):
    net = build_model(name, num_classes=10, in_channels=in_channels, image_size=16, seed=0)
    x = torch.randn(4, in_channels, 16, 16, generator=torch.Generator().manual_seed(0))
    nhwc = (in_channels * 256, 1, 16 * in_channels, in_channels)
    variants = [x, x.contiguous(memory_format=torch.channels_last), x.as_strided(x.shape, nhwc)]
    if in_channels == 1:
        variants.append(x.as_strided(x.shape, (256, 0, 16, 1)))  # numpy's a[:, None]
    assert {_first_conv_input_strides(net, v) for v in variants} == {nhwc}
    assert {_first_conv_input_strides(copy.deepcopy(net), v) for v in variants} == {nhwc}  # kept by copies


@pytest.mark.parametrize(("name", "in_channels"), [("small-cnn", 1), ("resnet20", 3), ("mobilenet_v2", 3)])
def test_the_layout_changes_the_outputs_only_to_float_tolerance(name, in_channels, monkeypatch):
    import spsa_mix.models as models

    net = build_model(name, num_classes=10, in_channels=in_channels, image_size=16, seed=0).eval()
    x = torch.randn(8, in_channels, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = net(x)
        monkeypatch.setattr(models, "CHANNELS_LAST_DEVICES", frozenset())
        assert _first_conv_input_strides(net, x) == x.stride()  # the input's own layout again
        plain = net(x)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-5)


def test_the_vit_keeps_the_inputs_layout():
    net = build_model("vit", num_classes=10, in_channels=3, image_size=16, seed=0)
    x = torch.randn(2, 3, 16, 16)
    assert _first_conv_input_strides(net, x) == x.stride()


def test_under_vmap_the_input_keeps_its_layout_outside_it_does_not():
    from spsa_mix.models import preferred_layout

    x = torch.zeros(2, 3, 4, 4)
    seen = []

    def probe(w):
        seen.append(preferred_layout(x).stride())
        return w.sum()

    torch.func.vmap(probe)(torch.zeros(3, 2))  # the blended objective's batched probes
    torch.func.jvp(probe, (torch.zeros(2),), (torch.ones(2),))  # its forward gradients, looped
    assert seen == [x.stride(), (48, 1, 12, 3)]
