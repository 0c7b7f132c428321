"""The ``target_like`` augmentation as batched tensor operations on the training device (stream mode).

Each sample gets its own parameters, drawn on the CPU from a seeded ``torch.Generator`` (so a batch is
reproducible from its seed, whatever the device), then applied to the whole batch at once:

* :func:`warp`: zoom-out framing (shrink by ``scale``, width also by ``aspect``, shifted within the free
  margin), rotation and horizontal flip in one ``affine_grid`` / ``grid_sample``; the background is the
  border pixels stretched outward (``replicate``), one grey level (``flat``) or smooth grey noise (``noise``:
  a 4 x 4 grid of grey levels around the drawn grey, upsampled bicubically, as ``ZoomOut`` makes it);
* :func:`to_grey`: a per-sample blend towards the luma image;
* :func:`gaussian_blur`: a separable Gaussian blur with a per-sample sigma (0 = unchanged);
* :func:`brightness_contrast`: ``x * (1 + contrast) + brightness``, clamped to [0, 1].

Images are float ``B x 3 x H x W`` in [0, 1].  Every operation is the identity at zero strength.  The
settings mirror the albumentations ``target_like`` preset (``ZoomOut``, ``Affine``, ``HorizontalFlip``,
``ToGray``, ``GaussianBlur``, ``RandomBrightnessContrast``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

import torch
import torch.nn.functional as F

from facekd.errors import ConfigError

__all__ = ["DeviceAugment", "warp", "to_grey", "gaussian_blur", "brightness_contrast"]

_LUMA = (0.299, 0.587, 0.114)
NOISE_STD = 40 / 255  # the spread of the noise background's grey levels, as ZoomOut draws them


def warp(x: torch.Tensor, scale: torch.Tensor, aspect: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor,
         angle: torch.Tensor, flip: torch.Tensor, flat: torch.Tensor, grey: torch.Tensor,
         out_size: int | None = None) -> torch.Tensor:
    """Zoom out, shift, rotate (degrees) and flip each sample; ``out_size`` square output (default: input's).

    ``flat`` (bool, per sample) fills the background with ``grey`` instead of replicating the border: one
    level per sample (``B``, in [0, 1]) or a background image per sample (``B x 1 x h x w``, resized to the
    output bicubically).  ``dx``, ``dy`` in [-1, 1] place the face within the free margin (0 = centred).
    """
    b, c, h, w = x.shape
    size = (b, c, out_size or h, out_size or w)
    sx, sy = scale * aspect, scale
    cx, cy = (1 - sx) * dx, (1 - sy) * dy  # the face's centre, in the output's normalised coordinates
    rad = angle * (math.pi / 180)
    cos, sin = torch.cos(rad), torch.sin(rad)
    sign = 1 - 2 * flip.to(x.dtype)
    # input = D^-1 R^-1 (output - c): shrink by (sx, sy) around c, rotate by angle, then mirror x
    theta = torch.zeros(b, 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0], theta[:, 0, 1] = sign * cos / sx, sign * sin / sx
    theta[:, 1, 0], theta[:, 1, 1] = -sin / sy, cos / sy
    theta[:, :, 2] = -(theta[:, :, :2] @ torch.stack([cx, cy], 1).unsqueeze(-1)).squeeze(-1)
    grid = F.affine_grid(theta, list(size), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if flat.any():
        outside = (grid.abs() > 1).any(-1, keepdim=True).permute(0, 3, 1, 2)  # B x 1 x H x W
        fill = outside & flat.view(b, 1, 1, 1)
        bg = grey.to(x.dtype)
        bg = (bg.view(b, 1, 1, 1) if bg.dim() == 1 else
              F.interpolate(bg, size=size[-2:], mode="bicubic", align_corners=False).clamp(0, 1))
        out = torch.where(fill, bg.expand_as(out), out)
    return out


def to_grey(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Blend each sample towards its luma image by ``amount`` in [0, 1] (0 = unchanged, 1 = grey)."""
    luma = (x * x.new_tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    a = amount.to(x.dtype).view(-1, 1, 1, 1)
    return x * (1 - a) + luma * a


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """A separable Gaussian blur of each sample with its own ``sigma`` in pixels (0 = unchanged); reflect padding."""
    b, c, h, w = x.shape
    top = float(max_sigma if max_sigma is not None else sigma.max().item())
    radius = max(1, min(math.ceil(3 * top), (min(h, w) - 1) // 2))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x.dtype).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C) x K
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)
    return y.view(b, c, h, w)


def brightness_contrast(x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """``x * (1 + contrast) + brightness`` per sample, clamped to [0, 1] (0, 0 = unchanged)."""
    view = (-1, 1, 1, 1)
    return (x * (1 + contrast.to(x.dtype).view(view)) + brightness.to(x.dtype).view(view)).clamp(0, 1)


@dataclass(frozen=True)
class DeviceAugment:
    """Per-sample random ``target_like`` augmentation; ``p_*`` are the probabilities of each step.

    :meth:`params` draws the parameters of ``n`` samples from a CPU generator; :meth:`apply` runs them on
    the images' device.  ``from_config`` builds it from ``distill.sources.synthetic.stream.augment``.
    """

    scale: tuple[float, float] = (0.6, 0.9)
    aspect: tuple[float, float] = (0.8, 1.0)
    shift: float = 0.5
    p_zoom: float = 0.8
    flat_background: float = 0.5   # share of zoomed samples on a flat grey background
    noise_background: float = 0.0  # share of zoomed samples on smooth grey noise (the rest: replicate)
    grey_level: tuple[float, float] = (20 / 255, 200 / 255)
    rotate: float = 10.0
    p_rotate: float = 0.5
    p_flip: float = 0.5
    p_grey: float = 0.7
    blur_sigma: tuple[float, float] = (0.1, 1.0)  # pixels at the generator's native size
    p_blur: float = 0.3
    brightness: float = 0.25
    contrast: float = 0.3
    p_brightness_contrast: float = 0.7

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.startswith("p_") or f.name.endswith("_background"):
                if not 0 <= float(v) <= 1:
                    raise ConfigError(f"stream augment: {f.name} is a probability in [0, 1], got {v}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1 or not 0 < self.aspect[0] <= self.aspect[1] <= 1:
            raise ConfigError(f"stream augment: scale and aspect must lie in (0, 1], got {self.scale}, {self.aspect}")
        if self.flat_background + self.noise_background > 1 + 1e-9:
            raise ConfigError("stream augment: flat_background + noise_background is a share of the zoomed faces, "
                              f"at most 1; got {self.flat_background} + {self.noise_background}")
        if not 0 <= self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"stream augment: blur_sigma must be 0 <= low <= high, got {self.blur_sigma}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> "DeviceAugment | None":
        """None for a null section; unknown keys are refused, naming the known ones."""
        if cfg is None:
            return None
        names = {f.name for f in fields(cls)}
        unknown = set(cfg) - names
        if unknown:
            raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))} in "
                              f"distill.sources.synthetic.stream.augment; known: {', '.join(sorted(names))}")
        return cls(**{k: tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else float(v)
                      for k, v in cfg.items()})

    def params(self, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """The per-sample parameters of ``n`` samples (CPU float tensors), drawn from ``gen``."""
        def uniform(lo: float, hi: float) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=gen)

        def coin(p: float) -> torch.Tensor:
            return torch.rand(n, generator=gen) < p

        zoom = coin(self.p_zoom)
        one = torch.ones(n)
        out = {
            "scale": torch.where(zoom, uniform(*self.scale), one),
            "aspect": torch.where(zoom, uniform(*self.aspect), one),
            "dx": uniform(-1, 1) * self.shift, "dy": uniform(-1, 1) * self.shift,
            "flat": zoom & coin(self.flat_background), "grey": uniform(*self.grey_level),
            "angle": uniform(-self.rotate, self.rotate) * coin(self.p_rotate),
            "flip": coin(self.p_flip),
            "grey_amount": coin(self.p_grey).float(),
            "sigma": uniform(*self.blur_sigma) * coin(self.p_blur),
            "brightness": uniform(-self.brightness, self.brightness),
            "contrast": uniform(-self.contrast, self.contrast),
            "bc": coin(self.p_brightness_contrast).float(),
        }
        if self.noise_background > 0:  # drawn last, so the draws above do not depend on it
            rest = 1 - self.flat_background
            out["noisy"] = zoom & ~out["flat"] & coin(self.noise_background / rest if rest > 0 else 0.0)
            out["noise"] = (out["grey"].view(n, 1, 1, 1) + NOISE_STD * torch.randn(n, 1, 4, 4, generator=gen)).clamp(0, 1)
        return out

    def apply(self, x: torch.Tensor, p: Mapping[str, torch.Tensor], out_size: int | None = None) -> torch.Tensor:
        """Augment float images ``x`` (B x 3 x H x W in [0, 1]) with parameters ``p``; ``out_size`` square output."""
        p = {k: v.to(x.device, non_blocking=True) for k, v in p.items()}
        fill, background = p["flat"], p["grey"]
        if "noisy" in p:  # flat samples get a constant 4 x 4 grid, noisy ones the noise
            fill = fill | p["noisy"]
            background = torch.where(p["noisy"].view(-1, 1, 1, 1), p["noise"],
                                     p["grey"].view(-1, 1, 1, 1).expand_as(p["noise"]))
        y = warp(x, p["scale"], p["aspect"], p["dx"], p["dy"], p["angle"], p["flip"], fill, background, out_size)
        y = to_grey(y, p["grey_amount"])
        ratio = y.shape[-1] / x.shape[-1]  # sigma was given at the input's size
        if self.p_blur > 0 and self.blur_sigma[1] > 0:
            y = gaussian_blur(y, p["sigma"] * ratio, self.blur_sigma[1] * ratio)
        return brightness_contrast(y, p["brightness"] * p["bc"], p["contrast"] * p["bc"])
