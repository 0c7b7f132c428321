"""Training views the distillation rows share: augmented views of the train photos, and augmented synthetic faces."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from facekd.data.labeled import LabeledData, split_datasets
from facekd.distill.sources import open_generate_run
from facekd.distill.views import ViewSource, make_views
from facekd.errors import ConfigError
from facekd.pipeline import augment_preset

__all__ = ["augmented_views", "synthetic_views"]


def augmented_views(data: LabeledData, views: int, seed: int, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``views`` views of every train image: view 0 clean, the others augmented with ``data.augment``, drawn
    reproducibly from ``seed``.  Returns ``(uint8 images, labels)``, view-major."""
    if views < 1:
        raise ConfigError(f"kd.views must be >= 1, got {views}")
    train = split_datasets(data, ("train",), augment_train=augment)["train"]
    images, labels = train.tensors()
    out = [images]
    if views > 1 and train.augment is not None:
        train.augment.set_random_seed(seed)  # albumentations draws from its own generators
        out += [torch.stack([train[i][0] for i in range(len(train))]) for _ in range(views - 1)]
    return torch.cat(out), labels.repeat(len(out))


def synthetic_views(run: Path, count: int, augment: Any, size: int, seed: int,
                    key: str = "kd.synthetic.count") -> torch.Tensor:
    """``count`` synthetic faces of the generate ``run``, each with one augmented view (``augment``: a
    ``distill.augment_presets`` name), as ``count x 3 x size x size`` uint8 images; reproducible from ``seed``."""
    faces = open_generate_run(run)  # its shards checked against the recorded checksums
    if count > len(faces):
        raise ConfigError(f"{key}={count}, but the generate run {run} holds "
                           f"{len(faces)} faces; generate more or lower the count")
    steps, aug = augment_preset(augment)
    source = ViewSource("synthetic", count, lambda idx: faces.batch(idx), faces.config_hash, 1, aug, steps,
                        seed=seed)
    views = make_views(source, np.arange(count), out_size=size)
    return torch.from_numpy(views).permute(0, 3, 1, 2).contiguous()
