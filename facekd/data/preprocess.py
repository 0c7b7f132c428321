"""Per-network preprocessing: each network declares how its input must look.

Data pipelines hand over uint8 RGB batches (B x 3 x H x W, values 0-255).  A network's
:class:`Preprocess` turns them into its input tensor on whatever device they live: resize (short side,
then centre crop), colour order, value range, mean and std.  Preprocessing therefore belongs to the
network that consumes the images, never to a global setting.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["Preprocess", "resize_short_center_crop"]


def resize_short_center_crop(x: torch.Tensor, size: int, resize: int | None = None) -> torch.Tensor:
    """Resize float B x C x H x W so the short side is ``resize`` (default ``size``), then centre-crop ``size``.

    Uses antialiased bilinear interpolation.  A batch already at ``size`` x ``size`` is returned as is.
    """
    h, w = x.shape[-2:]
    resize = resize or size
    if (h, w) == (size, size) and resize == size:
        return x
    if min(h, w) != resize:
        scale = resize / min(h, w)
        nh, nw = max(resize, round(h * scale)), max(resize, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        h, w = nh, nw
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


@dataclass(frozen=True)
class Preprocess:
    """How a network wants its input.

    Applied to uint8 (or float 0-255) RGB batches: resize/crop to ``size``, optionally swap to BGR,
    multiply by ``scale``, then ``(x - mean) / std`` per channel.  ``mean``/``std`` are given in the
    network's own channel order (BGR when ``bgr``).
    """

    size: int
    resize: int | None = None
    bgr: bool = False
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.size <= 0 or (self.resize is not None and self.resize < self.size):
            raise ValueError(f"bad preprocessing sizes: size={self.size}, resize={self.resize}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a B x 3 x H x W RGB batch, got shape {tuple(images.shape)}")
        x = images.float()
        x = resize_short_center_crop(x, self.size, self.resize)
        if self.bgr:
            x = x.flip(1)
        x = x * self.scale
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    def as_dict(self) -> dict:
        """A JSON-able description, used in cache keys and manifests."""
        return asdict(self)
