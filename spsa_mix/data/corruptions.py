"""Image shifts for experts and targets: corruptions of images in ``[0, 1]``, as CIFAR-10-C.

Each corruption maps a float batch ``(N, C, H, W)`` with values in ``[0, 1]`` to one of the
same shape and range; a shift is named by a string ``"name=level"``, and shifts compose
left to right with ``+`` (``"gaussian-blur=1.0+gaussian-noise=0.08"`` blurs, then adds
noise). The levels are the corruption's own parameter, not a severity index:

==================  ======================================================  =================
name                what it does                                            level
==================  ======================================================  =================
``gaussian-noise``  ``x + level * N(0, 1)``, clipped                        noise std
``gaussian-blur``   separable Gaussian kernel (radius ``ceil(3 level)``),   sigma in pixels
                    reflected borders
``contrast``        ``mean + level * (x - mean)``, mean per image           contrast factor
``jpeg``            re-encoded as JPEG by Pillow                            quality (1-95)
``pixelate``        box-downsampled by ``level``, nearest-upsampled back    kept fraction
==================  ======================================================  =================

Hendrycks and Dietterich's CIFAR-10-C (ICLR 2019, ``make_cifar_c.py``) uses, from severity
1 to 5, noise std 0.04-0.10, blur sigma 0.4-1.0, contrast 0.75-0.15, JPEG quality 80-40
and pixelation 0.95-0.65 on this scale. Noise is drawn from an explicit
``torch.Generator``: same generator state, same images.

Example
-------
>>> import torch
>>> x = torch.full((2, 3, 8, 8), 0.5)
>>> y = corrupt(x, "contrast=0.5+gaussian-noise=0.1", generator=torch.Generator().manual_seed(0))
>>> tuple(y.shape), bool(y.min() >= 0 and y.max() <= 1)
((2, 3, 8, 8), True)
>>> parse_shift("gaussian-blur=1+jpeg=40")
[('gaussian-blur', 1.0), ('jpeg', 40.0)]
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CORRUPTIONS", "parse_shift", "corrupt", "gaussian_noise", "gaussian_blur", "contrast", "jpeg",
           "pixelate"]


def _check_images(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"shape {tuple(x.shape)}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W) with values in [0, 1], but got {got}")


def gaussian_noise(x: torch.Tensor, std: float, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``clip(x + std * N(0, 1), 0, 1)``.

    >>> float(gaussian_noise(torch.zeros(1, 1, 2, 2), 0.0).sum())
    0.0
    """
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + std * noise).clamp_(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur, kernel radius ``ceil(3 sigma)`` (at least 1), reflected borders.

    >>> x = torch.zeros(1, 1, 11, 11); x[..., 5, 5] = 1.0
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 4), round(float(y[..., 5, 5]), 4)   # 1 / (2 pi) at the centre
    (1.0, 0.1592)
    """
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    if radius >= min(x.shape[-2:]):  # reflect padding needs a pad smaller than the image
        radius = min(x.shape[-2:]) - 1
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (t / float(sigma)) ** 2)  # float64: a tiny sigma underflows in float32
    kernel = (kernel / kernel.sum()).to(dtype=x.dtype, device=x.device)  # (2r + 1,)
    c = x.shape[1]
    out = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)  # along W
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)  # along H
    return out.clamp_(0.0, 1.0)


def contrast(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``mean + factor * (x - mean)``, the mean over each image's pixels and channels.

    >>> contrast(torch.tensor([[[[0.0, 1.0]]]]), 0.5).tolist()
    [[[[0.25, 0.75]]]]
    """
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor * (x - mean)).clamp_(0.0, 1.0)


def jpeg(x: torch.Tensor, quality: float) -> torch.Tensor:
    """Each image encoded as JPEG at ``quality`` by Pillow and decoded (RGB or grayscale).

    >>> y = jpeg(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(0)), 20)
    >>> tuple(y.shape)
    (1, 3, 8, 8)
    """
    from PIL import Image

    q = int(round(quality))
    if not 1 <= q <= 95:
        raise ValueError(f"jpeg quality must be in [1, 95], but got {quality!r}")
    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="JPEG", quality=q)
        decoded = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
        out[i] = decoded[..., None] if decoded.ndim == 2 else decoded
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(dtype=x.dtype, device=x.device) / 255.0


def pixelate(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """Box-downsampled to ``fraction`` of the size, then nearest-upsampled back.

    >>> pixelate(torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]), 0.5).tolist()
    [[[[0.5, 0.5], [0.5, 0.5]]]]
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"pixelate fraction must be in (0, 1], but got {fraction!r}")
    h, w = x.shape[-2:]
    small = F.adaptive_avg_pool2d(x, (max(1, round(h * fraction)), max(1, round(w * fraction))))
    return F.interpolate(small, size=(h, w), mode="nearest")


Corruption = Callable[..., torch.Tensor]
#: name -> function(images, level[, generator=...]); only ``gaussian-noise`` is random.
CORRUPTIONS: dict[str, Corruption] = {
    "gaussian-noise": gaussian_noise,
    "gaussian-blur": gaussian_blur,
    "contrast": contrast,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def parse_shift(shift: str) -> list[tuple[str, float]]:
    """``"name=level+name=level"`` as ``[(name, level), ...]``; ``""`` or ``"clean"`` is no shift.

    >>> parse_shift("clean"), parse_shift("contrast=0.3")
    ([], [('contrast', 0.3)])
    >>> parse_shift("blur=1")
    Traceback (most recent call last):
    ...
    ValueError: unknown corruption 'blur' in shift 'blur=1'; known: ['gaussian-noise', 'gaussian-blur', 'contrast', 'jpeg', 'pixelate']
    """
    if not isinstance(shift, str):
        raise ValueError(f"shift must be a string such as 'gaussian-noise=0.08', but got {shift!r}")
    if shift.strip() in ("", "clean"):
        return []
    out = []
    for part in shift.split("+"):
        name, sep, level = part.strip().partition("=")
        if name not in CORRUPTIONS:
            raise ValueError(f"unknown corruption {name!r} in shift {shift!r}; known: {list(CORRUPTIONS)}")
        try:
            value = float(level) if sep else math.nan
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"corruption {name!r} in shift {shift!r} needs a level 'name=<number >= 0>', "
                             f"but got {level!r}")
        out.append((name, value))
    return out


def corrupt(images: torch.Tensor, shift: str, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``images`` (float ``(N, C, H, W)`` in ``[0, 1]``) under ``shift`` (see :func:`parse_shift`),
    a new tensor; the corruptions apply left to right.

    >>> x = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    >>> torch.equal(corrupt(x, "clean"), x)
    True
    """
    _check_images(images)
    steps = parse_shift(shift)
    out = images.clone()
    for name, level in steps:
        fn = CORRUPTIONS[name]
        out = fn(out, level, generator=generator) if name == "gaussian-noise" else fn(out, level)
    return out
