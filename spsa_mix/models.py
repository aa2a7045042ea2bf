"""Architectures by name, shared by the whole package.

:func:`build_model` returns a freshly initialised ``torch.nn.Module`` mapping images of
shape ``(B, in_channels, image_size, image_size)`` to logits ``(B, num_classes)``:

``"small-cnn"``
    three 3x3 convolutions (16, 32, 64 channels) each followed by BatchNorm and ReLU, two
    2x2 max-poolings, global average pooling and a linear head ``fc``; about 24k
    parameters. The CPU default: fast on 8x8 and 28x28 grayscale and 32x32 RGB images.
``"resnet20"``
    the CIFAR ResNet-20 of He et al. (2016), section 4.2: a 3x3 convolution with 16
    channels, three stages of three basic blocks (16, 32, 64 channels, strides 1, 2, 2),
    BatchNorm, the parameter-free shortcut of the paper's CIFAR experiments (option A:
    subsampling and zero-padded channels), global average pooling and a linear head ``fc``;
    about 0.27M parameters, as in the paper's Table 6.
``"mobilenet_v2"``
    ``torchvision.models.mobilenet_v2`` (no pretrained weights) with its first convolution
    taking ``in_channels``; head ``classifier``.
``"vit"``
    ``torchvision.models.VisionTransformer`` with patch size 8, 8 layers, hidden size 192,
    3 heads and an MLP of 384 (this package's small choice), its patch embedding taking
    ``in_channels``; head ``heads``. ``image_size`` must be divisible by 8.

A text architecture maps token ids ``(B, T)`` (with an ``attention_mask``, as keyword
arguments) to next-token logits ``(B, T, vocab_size)``, or, given ``num_classes``, to class
logits ``(B, num_classes)`` of each sequence:

``"tiny-llama"``
    a Hugging Face Llama built from a config (transformers, no download): 2 layers, hidden
    size 32, 4 attention heads (2 key/value heads), an MLP of 64, untied embeddings, padding
    token 0; ``LlamaForCausalLM`` (head ``lm_head``), or ``LlamaForSequenceClassification``
    (head ``score``) with ``num_classes``. About 9k parameters plus ``64 * vocab_size`` per
    embedding; built for tests and the built-in text task.

:func:`load_cifar_resnet` reads the pretrained CIFAR-10 ResNet-20 and ResNet-56 of
akamaster/pytorch_resnet_cifar10 (``../shared/data/resnet_cifar10``) into :class:`ResNet20`.

:func:`head_name` gives the prefix of each architecture's classification head, the
``head=`` argument of :class:`~spsa_mix.blend.BlendedObjective` when experts have
different heads.

Memory layout. The convolutional architectures (``small-cnn``, ``resnet20``,
``mobilenet_v2``) run in channels-last order on the CPU: each converts its input with
:func:`preferred_layout` (:func:`channels_last` on a device of
:data:`CHANNELS_LAST_DEVICES`), and every layer after it keeps that order. Measured with
``benchmarks/memory_format.py`` (one thread, the layouts timed in interleaved rounds;
``benchmarks/results/memory_format_cpu.md``): on the CPU, channels-last takes 0.30-0.65 of
the time for the small CNN, 0.71-1.00 for ResNet-20 and 0.61-0.85 for MobileNetV2 (the
blended objective, a training step, an evaluation), while the ViT (one strided
convolution, then tokens) gains nothing and is left as it is; so are the batched probes of
the blended objective (:func:`torch.func.vmap`), whose batching rules lack some
channels-last kernels. The input's layout is made
explicit rather than left to its strides, which for one channel are ambiguous: an
``(N, 1, H, W)`` tensor is contiguous in both orders, and PyTorch picks its convolution
kernels from the stride of the channel axis, so the same images made by two different
copies once ran through different kernels. The weights keep PyTorch's default layout
(converting them too changed little; the blended objective's weights are views of one
flat buffer). On CUDA the layout is the input's own, as in the recorded GPU runs, until it
is measured there.

Example
-------
>>> import torch
>>> net = build_model("small-cnn", num_classes=10, in_channels=1, image_size=8, seed=0)
>>> net(torch.zeros(2, 1, 8, 8)).shape
torch.Size([2, 10])
>>> available_models()
['mobilenet_v2', 'resnet20', 'small-cnn', 'tiny-llama', 'vit']
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spsa_mix.core.validation import check_int

__all__ = ["build_model", "available_models", "head_name", "SmallCNN", "ResNet20", "load_cifar_resnet",
           "channels_last", "preferred_layout", "CHANNELS_LAST_DEVICES"]

VIT_PATCH_SIZE = 8  # ours: 8x8 patches (16 tokens on 32x32 images, 64 px Imagenette: 64)
VIT_LAYERS = 8  # ours: deep enough to be a transformer, small enough for a CPU
VIT_HIDDEN = 192  # this package's small choice (the width of ViT-Tiny, Touvron et al. 2021)
VIT_HEADS = 3  # ViT-Tiny
VIT_MLP = 384  # this package's choice: 2x hidden (ViT-Tiny uses 4x)
CHANNELS_LAST_DEVICES = frozenset({"cpu"})  # measured: benchmarks/results/memory_format_cpu.md; CUDA not yet


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` with channels-last strides ``(C*H*W, 1, W*C, C)``, copied only
    when its elements are not already in that order.

    For ``C = 1`` the order of the elements is the same in both layouts, but PyTorch reads
    the layout from the strides (a stride of 1 on the channel axis is channels-last): the
    result is a view with those strides, so the layout is explicit.

    >>> x = torch.zeros(2, 1, 4, 4)
    >>> x.stride(), channels_last(x).stride(), channels_last(torch.zeros(2, 3, 4, 4)).stride()
    ((16, 16, 4, 1), (16, 1, 4, 1), (48, 1, 12, 3))
    """
    n, c, h, w = x.shape
    strides = (c * h * w, 1, w * c, c)
    if x.stride() == strides:
        return x
    if c == 1:
        return x.contiguous().as_strided(x.shape, strides)
    return x.contiguous(memory_format=torch.channels_last)


def _under_vmap() -> bool:
    """Whether the call runs inside :func:`torch.func.vmap` (the batched probes): its
    batching rules fall back to a loop for some channels-last ops (``as_strided_`` in the
    average pooling), which made batched probes 1.15-1.2x slower; there the input keeps its
    own layout."""
    try:
        from torch._C._functorch import TransformType, get_interpreter_stack
    except ImportError:  # pragma: no cover - a torch without functorch's C API
        return False
    return any(i.key() == TransformType.Vmap for i in (get_interpreter_stack() or ()))


def preferred_layout(x: torch.Tensor) -> torch.Tensor:
    """The input of a convolutional architecture of this module in the layout it runs in:
    :func:`channels_last` for a 4-D tensor on a device of :data:`CHANNELS_LAST_DEVICES`
    (the CPU), outside :func:`torch.func.vmap`; else ``x`` as it is.

    >>> preferred_layout(torch.zeros(2, 1, 4, 4)).stride()
    (16, 1, 4, 1)
    """
    if x.ndim == 4 and x.device.type in CHANNELS_LAST_DEVICES and not _under_vmap():
        return channels_last(x)
    return x


def _layout_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """A forward pre-hook giving a module's first input :func:`preferred_layout`."""
    if args and isinstance(args[0], torch.Tensor):
        return (preferred_layout(args[0]), *args[1:])
    return args


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks (16, 32, 64 channels), two max-poolings, a linear head.

    >>> SmallCNN(num_classes=3, in_channels=1)(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 3])
    """

    def __init__(self, *, num_classes: int, in_channels: int) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(in_channels, 16), nn.MaxPool2d(2),  # (B, 16, H/2, W/2)
            *block(16, 32), nn.MaxPool2d(2),  # (B, 32, H/4, W/4)
            *block(32, 64),  # (B, 64, H/4, W/4)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 64)
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(preferred_layout(x)))  # (B, num_classes)


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with the identity (option A) shortcut of He et al. 2016."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.stride = stride
        self.pad = c_out - c_in  # zero channels added to the shortcut

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1 and self.pad == 0:
            return x
        x = x[:, :, :: self.stride, :: self.stride]  # subsample, no parameters
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016, section 4.2): 6n+2 layers with n=3.

    >>> sum(p.numel() for p in ResNet20(num_classes=10, in_channels=3).parameters())
    269722
    """

    def __init__(self, *, num_classes: int, in_channels: int, blocks_per_stage: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages: list[nn.Module] = []
        c_in = 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = [_BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                      for i in range(blocks_per_stage)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for mod in self.modules():  # He et al. 2015 initialisation, as in the paper
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(preferred_layout(x))))  # (B, 16, H, W)
        out = self.layer3(self.layer2(self.layer1(out)))  # (B, 64, H/4, W/4)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)  # (B, 64)
        return self.fc(out)  # (B, num_classes)


def _mobilenet_v2(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None, num_classes=num_classes)
    if in_channels != 3:
        old = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                                       padding=old.padding, bias=False)
    net.register_forward_pre_hook(_layout_hook)  # channels-last on the CPU (module docstring)
    return net


def _vit(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    from torchvision.models import VisionTransformer

    if image_size % VIT_PATCH_SIZE:
        raise ValueError(
            f"image_size must be divisible by the ViT patch size {VIT_PATCH_SIZE} for 'vit', but got "
            f"{image_size} (resize or pad the images, e.g. to {VIT_PATCH_SIZE * (image_size // VIT_PATCH_SIZE + 1)})"
        )
    net = VisionTransformer(image_size=image_size, patch_size=VIT_PATCH_SIZE, num_layers=VIT_LAYERS,
                            num_heads=VIT_HEADS, hidden_dim=VIT_HIDDEN, mlp_dim=VIT_MLP, num_classes=num_classes)
    if in_channels != 3:
        old = net.conv_proj
        net.conv_proj = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, stride=old.stride)
    return net


def _tiny_llama(*, vocab_size: int, max_length: int, num_classes: int | None) -> nn.Module:
    try:
        import transformers
    except ImportError as e:
        raise ValueError("the architecture 'tiny-llama' needs transformers (pip install 'spsa-mix[hf]')") from e
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=max_length,
                                   tie_word_embeddings=False, pad_token_id=0, use_cache=False,
                                   num_labels=num_classes or 2)  # type: ignore[call-arg]  # a PretrainedConfig keyword
    if num_classes is None:
        return transformers.LlamaForCausalLM(cfg)
    return transformers.LlamaForSequenceClassification(cfg)


_TEXT = frozenset({"tiny-llama"})
_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "small-cnn": lambda *, num_classes, in_channels, image_size: SmallCNN(num_classes=num_classes,
                                                                           in_channels=in_channels),
    "resnet20": lambda *, num_classes, in_channels, image_size: ResNet20(num_classes=num_classes,
                                                                          in_channels=in_channels),
    "mobilenet_v2": _mobilenet_v2,
    "vit": _vit,
    "tiny-llama": _tiny_llama,
}
_HEADS = {"small-cnn": "fc", "resnet20": "fc", "mobilenet_v2": "classifier", "vit": "heads", "tiny-llama": "lm_head"}
_MIN_SIZE = {"small-cnn": 4, "resnet20": 4, "mobilenet_v2": 1, "vit": VIT_PATCH_SIZE}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted.

    >>> "resnet20" in available_models()
    True
    """
    return sorted(_BUILDERS)


def head_name(name: str) -> str:
    """Prefix of the classification head of architecture ``name`` in its ``state_dict``.

    >>> head_name("resnet20"), head_name("vit")
    ('fc', 'heads')
    """
    _check_name(name)
    return _HEADS[name]


def _check_name(name: str) -> None:
    if name not in _BUILDERS:
        raise ValueError(f"unknown model name {name!r}; available: {available_models()}")


def build_model(name: str, *, num_classes: int | None = None, in_channels: int | None = None,
                image_size: int | None = None, vocab_size: int | None = None, max_length: int | None = None,
                seed: int | None = None) -> nn.Module:
    """A freshly initialised architecture by name (see the module docstring).

    Parameters
    ----------
    name:
        One of :func:`available_models`.
    num_classes, in_channels, image_size:
        Image architectures: output logits, input channels and the side of the (square)
        input images (all three required).
    vocab_size, max_length, num_classes:
        Text architectures: the vocabulary, the longest sequence, and ``num_classes`` for a
        sequence classifier (``None``: a causal language model).
    seed:
        Seed of the initialisation, drawn from a forked torch RNG so the global state is
        left untouched; ``None`` draws from the global RNG.

    Returns
    -------
    torch.nn.Module
        In training mode, on the CPU, float32.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the available ones), missing or
        non-positive sizes, or an ``image_size`` the architecture cannot take (``"vit"``
        needs a multiple of 8).

    Examples
    --------
    >>> net = build_model("resnet20", num_classes=10, in_channels=3, image_size=32, seed=0)
    >>> net(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    >>> build_model("vgg", num_classes=10, in_channels=3, image_size=32)
    Traceback (most recent call last):
    ...
    ValueError: unknown model name 'vgg'; available: ['mobilenet_v2', 'resnet20', 'small-cnn', 'tiny-llama', 'vit']
    """
    _check_name(name)
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
    build = _BUILDERS[name]
    if name in _TEXT:
        dims: dict[str, int | None] = {"vocab_size": check_int(vocab_size, "vocab_size", minimum=2),
                                       "max_length": check_int(max_length, "max_length", minimum=2),
                                       "num_classes": None if num_classes is None else
                                       check_int(num_classes, "num_classes", minimum=2)}
    else:
        dims = {"num_classes": check_int(num_classes, "num_classes", minimum=1),
                "in_channels": check_int(in_channels, "in_channels", minimum=1),
                "image_size": check_int(image_size, "image_size", minimum=1)}
        if dims["image_size"] < _MIN_SIZE[name]:  # type: ignore[operator]
            raise ValueError(f"image_size must be at least {_MIN_SIZE[name]} for {name!r}, but got {image_size}")
    if seed is None:
        return build(**dims)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(**dims)


def load_cifar_resnet(path: str | os.PathLike[str]) -> ResNet20:
    """A pretrained CIFAR ResNet of akamaster/pytorch_resnet_cifar10 as a :class:`ResNet20`.

    The files (``resnet20-12fca82f.th``, ``resnet56-4bfd9763.th``) hold ``{"best_prec1",
    "state_dict"}`` saved from ``DataParallel`` (``module.`` names) with the head named
    ``linear``; the architecture is the same (option-A shortcuts, 16/32/64 channels), so the
    names map one to one (``linear.*`` to ``fc.*``), the depth ``6 n + 2`` is read from the
    number of blocks, and the BatchNorm counters the files lack start at 0. Read with
    ``weights_only=True`` (no code runs). Returned in eval mode; inputs are normalised with
    ImageNet's channel statistics (:data:`spsa_mix.data.real.IMAGENET_MEAN`, ``IMAGENET_STD``).

    >>> import tempfile, os
    >>> net = ResNet20(num_classes=10, in_channels=3)
    >>> state = {"module." + k.replace("fc.", "linear."): v for k, v in net.state_dict().items()
    ...          if not k.endswith("num_batches_tracked")}
    >>> path = os.path.join(tempfile.mkdtemp(), "r20.th")
    >>> torch.save({"best_prec1": 0.0, "state_dict": state}, path)
    >>> torch.equal(load_cifar_resnet(path).fc.weight, net.fc.weight)
    True
    """
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:
        raise ValueError(f"cannot read a CIFAR ResNet checkpoint from {str(path)!r}: {e}") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or "module.conv1.weight" not in state and "conv1.weight" not in state:
        raise ValueError(f"{str(path)!r} does not hold a CIFAR ResNet state dict (no 'conv1.weight')")
    renamed = {}
    for name, tensor in state.items():
        name = name.removeprefix("module.")
        renamed["fc." + name[len("linear."):] if name.startswith("linear.") else name] = tensor
    blocks = 1 + max(int(n.split(".")[1]) for n in renamed if n.startswith("layer1."))
    net = ResNet20(num_classes=int(renamed["fc.weight"].shape[0]), in_channels=int(renamed["conv1.weight"].shape[1]),
                   blocks_per_stage=blocks)
    for name, buf in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            renamed.setdefault(name, torch.zeros_like(buf))
    net.load_state_dict(renamed, strict=True)
    return net.eval()
