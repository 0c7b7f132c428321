"""torch Datasets over labeled face splits: images framed square, held in memory as uint8.

Datasets return ``(uint8 tensor 3 x S x S, label)``; each network applies its own
:class:`~facekd.data.preprocess.Preprocess`.  Training augmentation (if any) runs per sample.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from facekd.data.augment import frame_square
from facekd.data.faces import read_image

__all__ = ["LabeledFaces", "load_images"]


def load_images(root: str | os.PathLike, paths: Sequence[str], size: int, framing: str = "pad",
                progress: bool = False) -> np.ndarray:
    """Read and frame images into one N x S x S x 3 uint8 array."""
    root = Path(root)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(tqdm(paths, desc="loading faces", disable=not progress, leave=False)):
        out[i] = frame_square(read_image(root / p), size, framing)
    return out


class LabeledFaces(Dataset):
    """One part of a split (``items`` = [(relative path, label)]) as framed uint8 images."""

    def __init__(self, root: str | os.PathLike, items: Sequence[tuple[str, int]], size: int,
                 framing: str = "pad", augment: A.Compose | None = None, progress: bool = False) -> None:
        self.items = list(items)
        self.images = load_images(root, [p for p, _ in self.items], size, framing, progress)
        self.labels = torch.tensor([y for _, y in self.items], dtype=torch.long)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        img = self.images[i]
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1), self.labels[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All (unaugmented) images as a B x 3 x S x S uint8 tensor, with labels."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).contiguous(), self.labels
