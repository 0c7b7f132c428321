"""The on-device target_like augmentation: each op on known inputs, identity at zero strength, seeded draws."""
import pytest
import torch

from facekd.distill.device_augment import DeviceAugment, brightness_contrast, gaussian_blur, to_grey, warp
from facekd.errors import ConfigError


def _warp(x, scale=1.0, aspect=1.0, dx=0.0, dy=0.0, angle=0.0, flip=False, flat=False, grey=0.5, out_size=None):
    n = len(x)

    def full(v):
        return torch.full((n,), float(v))

    return warp(x, full(scale), full(aspect), full(dx), full(dy), full(angle), torch.full((n,), flip),
                torch.full((n,), flat), full(grey), out_size)


def test_warp_identity_flip_and_zoom_out():
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(_warp(x), x, atol=1e-5)
    assert torch.allclose(_warp(x, flip=True), x.flip(-1), atol=1e-5)
    ones = torch.ones(1, 3, 16, 16)
    y = _warp(ones, scale=0.5, flat=True, grey=0.25)
    assert y.shape == ones.shape and y.dtype == ones.dtype
    assert torch.allclose(y[0, :, 8, 8], torch.ones(3)) and torch.allclose(y[0, :, 0, 0], torch.full((3,), 0.25))
    right = _warp(ones, scale=0.5, dx=1.0, flat=True, grey=0.0)[0, 0, 8]  # face pushed to the right margin
    assert right[:8].sum() == 0 and right[8:].min() == 1
    assert _warp(x, scale=0.7, angle=10.0, out_size=24).shape == (2, 3, 24, 24)
    replicate = _warp(x, scale=0.5)  # border pixels stretched outward: values stay within the image's range
    assert replicate.min() >= x.min() - 1e-6 and replicate.max() <= x.max() + 1e-6


def test_noise_background_fills_only_the_margin_and_varies():
    ones = torch.ones(1, 3, 16, 16)
    coarse = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
    y = warp(ones, *(torch.full((1,), v) for v in (0.5, 1.0, 0.0, 0.0, 0.0)), torch.zeros(1, dtype=torch.bool),
             torch.ones(1, dtype=torch.bool), coarse)
    assert torch.allclose(y[0, :, 8, 8], torch.ones(3))  # the face
    margin = y[0, 0, :3]  # the top rows: the upsampled grid, not the face and not one level
    assert margin.std() > 0.05 and margin.min() >= 0 and margin.max() <= 1
    aug = DeviceAugment(p_zoom=1.0, flat_background=0.0, noise_background=1.0, p_rotate=0, p_flip=0, p_grey=0,
                        p_blur=0, p_brightness_contrast=0)
    p = aug.params(4, torch.Generator().manual_seed(0))
    assert p["noisy"].all() and p["noise"].shape == (4, 1, 4, 4)
    out = aug.apply(ones.expand(4, 3, 16, 16), p)
    assert (out < 1).any() and torch.equal(out[:, 0], out[:, 1])  # grey noise, identical across channels
    base = DeviceAugment()  # without a noise share the draws are those of before it existed
    assert "noisy" not in base.params(2, torch.Generator().manual_seed(0))


def test_grey_blur_brightness_contrast():
    x = torch.rand(3, 3, 12, 12)
    assert torch.equal(to_grey(x, torch.zeros(3)), x)
    g = to_grey(x, torch.tensor([1.0, 0.0, 1.0]))
    assert torch.allclose(g[0, 0], g[0, 1]) and torch.allclose(g[0, 1], g[0, 2]) and torch.equal(g[1], x[1])
    assert torch.allclose(gaussian_blur(x, torch.zeros(3)), x)
    flat = torch.full((1, 3, 12, 12), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.ones(1)), flat, atol=1e-6)  # a blur keeps a flat image
    b = gaussian_blur(x, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.allclose(b[0], x[0]) and b[2].std() < b[1].std() < x[1].std()
    assert torch.equal(brightness_contrast(x, torch.zeros(3), torch.zeros(3)), x)
    y = brightness_contrast(x, torch.full((3,), 0.5), torch.full((3,), 1.0))
    assert y.min() >= 0 and y.max() <= 1 and (y >= x).all()


def test_augment_is_reproducible_from_the_seed_and_in_range():
    aug, x = DeviceAugment(), torch.rand(8, 3, 16, 16)

    def run(seed):
        return aug.apply(x, aug.params(8, torch.Generator().manual_seed(seed)), out_size=20)

    a, b, c = run(0), run(0), run(1)
    assert a.shape == (8, 3, 20, 20) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c) and a.min() >= 0 and a.max() <= 1
    off = DeviceAugment(p_zoom=0, p_rotate=0, p_flip=0, p_grey=0, p_blur=0, p_brightness_contrast=0)
    assert torch.allclose(off.apply(x, off.params(8, torch.Generator().manual_seed(0))), x, atol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="p_grey is a probability"):
        DeviceAugment.from_config({"p_grey": 2})
    with pytest.raises(ConfigError, match="unknown key.*sharpen"):
        DeviceAugment.from_config({"sharpen": 1})
    with pytest.raises(ConfigError, match="flat_background \\+ noise_background"):
        DeviceAugment.from_config({"flat_background": 0.6, "noise_background": 0.6})
    with pytest.raises(ConfigError, match="scale and aspect"):
        DeviceAugment.from_config({"scale": [0.0, 0.5]})
    assert DeviceAugment.from_config(None) is None
