"""Image corruptions: shapes, ranges, what each one computes, composition, seeds, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from spsa_mix.data.corruptions import CORRUPTIONS, contrast, corrupt, gaussian_blur, parse_shift, pixelate


def images(seed: int = 0, n: int = 3, c: int = 3, size: int = 16) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name,level", [("gaussian-noise", 0.1), ("gaussian-blur", 1.0), ("contrast", 0.3),
                                        ("jpeg", 20), ("pixelate", 0.5)])
def test_each_corruption_keeps_shape_dtype_and_range_and_changes_the_images(name, level):
    x = images()
    y = corrupt(x, f"{name}={level}", generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not torch.allclose(y, x, atol=1e-3)
    assert torch.equal(x, images())  # the input is not modified


def test_noise_is_reproducible_from_the_generator_and_has_the_asked_std():
    x = torch.full((4, 3, 32, 32), 0.5)
    a = corrupt(x, "gaussian-noise=0.05", generator=torch.Generator().manual_seed(3))
    b = corrupt(x, "gaussian-noise=0.05", generator=torch.Generator().manual_seed(3))
    c = corrupt(x, "gaussian-noise=0.05", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert float((a - x).std()) == pytest.approx(0.05, rel=0.05)  # 0.5 +- 0.05: the clip never acts


def test_blur_conserves_the_mean_of_a_constant_and_matches_a_dense_gaussian_in_the_interior():
    x = torch.full((1, 1, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(x, 0.8), x)
    spike = torch.zeros(1, 1, 15, 15)
    spike[..., 7, 7] = 1.0
    y = gaussian_blur(spike, 1.0)[0, 0]
    r = 3  # ceil(3 sigma)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * t**2)
    g = g / g.sum()
    torch.testing.assert_close(y[7 - r: 8 + r, 7 - r: 8 + r].double(), torch.outer(g, g), atol=1e-6, rtol=0)


def test_contrast_and_pixelate_by_hand():
    x = torch.tensor([[[[0.2, 0.6], [0.4, 0.8]]]])
    torch.testing.assert_close(contrast(x, 0.5), 0.5 + 0.5 * (x - 0.5))
    torch.testing.assert_close(contrast(x, 1.0), x)
    torch.testing.assert_close(pixelate(x, 0.5), torch.full_like(x, 0.5))
    torch.testing.assert_close(pixelate(x, 1.0), x)


def test_jpeg_of_a_flat_image_is_nearly_the_image():
    x = torch.full((2, 3, 8, 8), 0.5)
    assert float((corrupt(x, "jpeg=50") - x).abs().max()) < 2 / 255


def test_shifts_compose_left_to_right():
    x = images(1)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    both = corrupt(x, "gaussian-blur=1.0+gaussian-noise=0.05", generator=gen())
    by_hand = corrupt(corrupt(x, "gaussian-blur=1.0"), "gaussian-noise=0.05", generator=gen())
    torch.testing.assert_close(both, by_hand)
    assert not torch.allclose(both, corrupt(corrupt(x, "gaussian-noise=0.05", generator=gen()), "gaussian-blur=1.0"))


@given(level=st.floats(0.0, 3.0))
def test_blur_never_leaves_the_unit_range_and_keeps_the_mean_roughly(level):
    x = images(2, n=1, size=12)
    y = gaussian_blur(x, level)
    assert float(y.min()) >= 0 and float(y.max()) <= 1
    assert math.isclose(float(y.mean()), float(x.mean()), abs_tol=0.05)


def test_parse_shift_and_its_errors():
    assert parse_shift("gaussian-noise=0.08+jpeg=10") == [("gaussian-noise", 0.08), ("jpeg", 10.0)]
    assert parse_shift("") == [] and parse_shift("clean") == []
    with pytest.raises(ValueError, match="unknown corruption 'fog' in shift 'fog=1'; known: "):
        parse_shift("fog=1")
    with pytest.raises(ValueError, match=r"corruption 'contrast' in shift 'contrast' needs a level"):
        parse_shift("contrast")
    with pytest.raises(ValueError, match=r"needs a level .* but got '-1'"):
        parse_shift("gaussian-blur=-1")
    with pytest.raises(ValueError, match="jpeg quality must be in \\[1, 95\\], but got 0.0"):
        corrupt(images(), "jpeg=0")
    with pytest.raises(ValueError, match="pixelate fraction must be in \\(0, 1\\], but got 2.0"):
        corrupt(images(), "pixelate=2")
    with pytest.raises(ValueError, match=r"images must be a float tensor \(N, C, H, W\)"):
        corrupt(torch.zeros(3, 8, 8), "clean")
    with pytest.raises(ValueError, match="images must be a float tensor"):
        corrupt(np.zeros((1, 3, 8, 8)), "clean")  # type: ignore[arg-type]
    assert sorted(CORRUPTIONS) == ["contrast", "gaussian-blur", "gaussian-noise", "jpeg", "pixelate"]
