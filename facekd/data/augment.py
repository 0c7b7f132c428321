"""Image augmentation pipelines (albumentations), built from config.

A pipeline is a list of albumentations transforms given with ``_target_`` in the config, so any
albumentations transform can be added without code.  Parameters are drawn anew for every sample by
albumentations itself: nothing is drawn once at import (the upstream code's bug).
"""
from __future__ import annotations

from typing import Any, Sequence

import albumentations as A
import numpy as np
from hydra.utils import instantiate

from facekd.config import plain as _plain
from facekd.errors import ConfigError
from facekd.validate import check_choice

__all__ = ["build_augmentation", "frame_square", "seed_augmentation"]


def seed_augmentation(dataset: Any, seed: int) -> Any:
    """Seed a dataset's albumentations pipeline, if it has one: albumentations draws from its own generators,
    which neither ``random``, NumPy's nor torch's seed reaches."""
    augment = getattr(dataset, "augment", None)
    if augment is not None:
        augment.set_random_seed(int(seed))
    return dataset


def _tuples(value: Any) -> Any:
    """albumentations wants tuples where YAML gives lists."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def build_augmentation(steps: Sequence[Any] | None, key: str = "augment") -> A.Compose | None:
    """Build an ``A.Compose`` from a list of ``{_target_: albumentations.X, ...}`` entries (None/empty -> None).

    A step without ``_target_``, an unknown transform or a bad argument is a ConfigError naming ``key[i]``;
    ``key`` is the config key the steps came from (``data.augment`` for the labeled set).
    """
    steps = _plain(steps)
    if not steps:
        return None
    if not isinstance(steps, list):
        raise ConfigError(f"{key} must be a list of albumentations steps ({{_target_: albumentations.X, ...}}) "
                          f"or null, got {steps!r}")
    transforms = []
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or "_target_" not in step:
            raise ConfigError(f"{key}[{i}] needs a _target_ naming an albumentations transform, e.g. "
                              f"{{_target_: albumentations.HorizontalFlip, p: 0.5}}; got {step!r}")
        target = step["_target_"]
        kwargs = {k: _tuples(v) for k, v in step.items() if k != "_target_"}
        try:
            transforms.append(instantiate({"_target_": target, **kwargs}, _convert_="all"))
        except Exception as e:  # an unknown transform or argument: hydra wraps the cause
            why = str(e).split(", set env var HYDRA_FULL_ERROR")[0].rstrip(". ")
            raise ConfigError(f"{key}[{i}]: cannot build {target} with {kwargs}: {why}. Check the transform's "
                              f"name and arguments (albumentations {A.__version__} is installed)") from e
    return A.Compose(transforms)


def frame_square(image: np.ndarray, size: int, mode: str = "pad") -> np.ndarray:
    """Make an H x W x 3 uint8 image square at ``size``.

    ``pad``: pad the short side with replicated borders (keeps the whole face and its aspect);
    ``squash``: resize without keeping the aspect; ``crop``: centre-crop the long side.
    """
    h, w = image.shape[:2]
    if mode == "pad" and h != w:
        side = max(h, w)
        image = A.PadIfNeeded(min_height=side, min_width=side, border_mode=1, p=1.0)(image=image)["image"]
    elif mode == "crop" and h != w:
        side = min(h, w)
        image = A.CenterCrop(side, side, p=1.0)(image=image)["image"]
    elif mode not in {"pad", "crop", "squash"}:
        check_choice(mode, "framing", ("pad", "squash", "crop"), what="how non-square photos become square")
    if image.shape[:2] != (size, size):
        image = A.Resize(size, size, interpolation=3, p=1.0)(image=image)["image"]  # INTER_AREA
    return np.ascontiguousarray(image)
