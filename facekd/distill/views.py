"""Unlabeled image sources for distillation, and deterministic augmented views of them.

A :class:`ViewSource` is a set of unlabeled uint8 images (synthetic shards, the labeled set's training
images with labels withheld, or a folder of unlabeled photos) plus how many augmented views of each
image to make.  View ``(i, v)`` is reproducible: the augmentation is seeded by ``(seed, i, v)``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Sequence

import albumentations as A
import numpy as np

from facekd.data.augment import frame_square
from facekd.errors import ConfigError

__all__ = ["ViewSource", "view_seed", "make_views", "fresh_views"]


@dataclass
class ViewSource:
    """Unlabeled images to distill on.

    ``read(indices)`` returns N x H x W x 3 uint8 images (all the same size); ``fingerprint`` identifies
    the exact images (used in cache keys); ``augment`` makes the views (None: the image itself, once);
    ``files`` names the image files of photo sources (for the train/val/test leakage guard);
    ``targets`` is what a view is trained towards: ``view`` (the teacher's feature of that view) or
    ``image_mean`` (the mean teacher feature over the image's views: view-invariant targets).
    """

    name: str
    size: int
    read: Callable[[np.ndarray], np.ndarray]
    fingerprint: str
    views: int = 1
    augment: A.Compose | None = None
    augment_spec: object = None
    weight: float = 1.0
    seed: int = 0
    files: Sequence[str] | None = None
    targets: str = "view"

    TARGETS = ("view", "image_mean")

    def __post_init__(self) -> None:
        if self.targets not in self.TARGETS:
            raise ConfigError(f"source '{self.name}': targets must be one of {', '.join(self.TARGETS)}, "
                              f"got {self.targets!r}")
        if self.size <= 0:
            raise ConfigError(f"source '{self.name}' holds no images")
        if self.views < 1:
            raise ConfigError(f"source '{self.name}': views must be >= 1, got {self.views}")
        if self.views > 1 and self.augment is None:
            raise ConfigError(f"source '{self.name}': {self.views} views of each image need an augmentation")
        if self.weight < 0:
            raise ConfigError(f"source '{self.name}': weight must be >= 0, got {self.weight}")

    def __len__(self) -> int:
        return self.size * self.views

    def key(self) -> dict:
        """What the views depend on, for cache keys."""
        return {"source": self.name, "images": self.fingerprint, "views": self.views,
                "augment": self.augment_spec, "seed": self.seed}


def view_seed(seed: int, image: int, view: int) -> int:
    """A 32-bit seed for view ``view`` of image ``image``, independent of batching."""
    digest = hashlib.blake2b(f"{seed}/{image}/{view}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def _finish(img: np.ndarray, out_size: int | None) -> np.ndarray:
    if out_size is not None and img.shape[:2] != (out_size, out_size):
        img = frame_square(img, out_size, "squash")
    return img


def make_views(source: ViewSource, flat: Sequence[int], out_size: int | None = None) -> np.ndarray:
    """The views with flat indices ``flat`` (``image * views + view``) as N x S x S x 3 uint8.

    View 0 of every image is the unaugmented image when ``views > 1`` so the clean face is always seen.
    """
    flat = np.asarray(flat, dtype=np.int64)
    images = source.read(flat // source.views)
    out = []
    for img, f in zip(images, flat):
        i, v = divmod(int(f), source.views)
        if source.augment is not None and (v > 0 or source.views == 1):
            source.augment.set_random_seed(view_seed(source.seed, i, v))
            img = source.augment(image=img)["image"]
        out.append(_finish(img, out_size))
    return np.stack(out)


def fresh_views(source: ViewSource, images: Sequence[int], seeds: Sequence[int],
                out_size: int | None = None) -> np.ndarray:
    """One augmented view of each image in ``images``, the augmentation seeded by ``seeds`` (online mode).

    Unlike :func:`make_views` every draw is a new augmentation (no clean view 0); without an
    augmentation the images are returned as they are.
    """
    imgs = source.read(np.asarray(images, dtype=np.int64))
    out = []
    for img, seed in zip(imgs, seeds):
        if source.augment is not None:
            source.augment.set_random_seed(int(seed) % 2**32)
            img = source.augment(image=img)["image"]
        out.append(_finish(img, out_size))
    return np.stack(out)
