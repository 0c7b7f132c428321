"""Augmentations that move synthetic faces toward target photos (used from config with ``_target_``).

The embedded DCGAN faces are tight colour crops; target photos (e.g. ORL) show the head and shoulders,
smaller in the frame, often grey, on a plain background.  :class:`ZoomOut` shrinks the face and places
it on a background, the framing half of that gap; albumentations' own ``ToGray``, ``GaussianBlur`` and
``RandomBrightnessContrast`` cover the rest (see the ``target_like`` preset in ``configs/distill.yaml``).
"""
from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from facekd.errors import ConfigError

__all__ = ["ZoomOut"]

BACKGROUNDS = ("replicate", "flat", "noise")


class ZoomOut(A.ImageOnlyTransform):
    """Shrink the image by ``scale`` (width additionally by ``aspect``) and place it on a background.

    The output keeps the input size.  The face lands at a random offset of up to ``shift`` of the free
    margin from the centre.  Backgrounds, drawn with ``background_weights``: ``replicate`` (the border
    pixels stretched outward, as when a photo is padded to a square), ``flat`` (one grey level from
    ``grey``) and ``noise`` (smooth grey noise).  Parameters are drawn per call from albumentations'
    seeded generator, so seeded views are reproducible.
    """

    def __init__(self, scale: tuple[float, float] = (0.6, 0.85), aspect: tuple[float, float] = (0.85, 1.0),
                 shift: float = 0.5, background_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
                 grey: tuple[int, int] = (20, 200), p: float = 1.0) -> None:
        super().__init__(p=p)
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < aspect[0] <= aspect[1] <= 1:
            raise ConfigError(f"ZoomOut: scale and aspect must lie in (0, 1], got {scale}, {aspect}")
        if len(background_weights) != len(BACKGROUNDS) or sum(background_weights) <= 0:
            raise ConfigError(f"ZoomOut: background_weights needs {len(BACKGROUNDS)} weights for {BACKGROUNDS}")
        self.scale, self.aspect, self.shift = tuple(scale), tuple(aspect), float(shift)
        self.background_weights, self.grey = tuple(background_weights), tuple(grey)

    def get_params(self) -> dict[str, Any]:
        r = self.py_random
        return {"scale": r.uniform(*self.scale), "aspect": r.uniform(*self.aspect),
                "dx": r.uniform(-1, 1) * self.shift, "dy": r.uniform(-1, 1) * self.shift,
                "background": r.choices(BACKGROUNDS, weights=self.background_weights)[0],
                "grey": r.randint(*self.grey), "noise_seed": r.randrange(2**31)}

    def apply(self, img: np.ndarray, scale: float = 1.0, aspect: float = 1.0, dx: float = 0.0, dy: float = 0.0,
              background: str = "replicate", grey: int = 128, noise_seed: int = 0, **_: Any) -> np.ndarray:
        h, w = img.shape[:2]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale * aspect))
        small = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        top = int(round((h - nh) / 2 * (1 + dy)))
        left = int(round((w - nw) / 2 * (1 + dx)))
        if background == "replicate":
            return cv2.copyMakeBorder(small, top, h - nh - top, left, w - nw - left, cv2.BORDER_REPLICATE)
        if background == "flat":
            out = np.full_like(img, grey)
        else:
            rng = np.random.default_rng(noise_seed)
            coarse = rng.normal(grey, 40, size=(4, 4)).clip(0, 255).astype(np.float32)
            out = np.repeat(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255)
                            .astype(np.uint8)[..., None], img.shape[2], axis=2)
        out[top : top + nh, left : left + nw] = small
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "aspect", "shift", "background_weights", "grey")
