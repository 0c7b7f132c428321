"""Optional face filter: keep only samples in which MTCNN (facenet-pytorch) finds a face.

MTCNN's weights ship inside the facenet-pytorch wheel, so this works offline.  A sample is kept when its
most likely face has probability >= ``threshold``; a sample with no detection has probability 0.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import GeneratorError

__all__ = ["FaceFilter"]


class FaceFilter:
    """``filter(images)`` -> boolean mask of the uint8 B x H x W x 3 RGB ``images`` to keep."""

    def __init__(self, threshold: float = 0.95, device: torch.device | str = "cpu", min_face_size: int = 20) -> None:
        if not 0.0 < threshold <= 1.0:
            raise GeneratorError(f"filter.threshold must be in (0, 1], got {threshold}")
        from facenet_pytorch import MTCNN

        self.threshold = float(threshold)
        self.mtcnn = MTCNN(device=torch.device(device), min_face_size=min_face_size, keep_all=False,
                           select_largest=False, post_process=False)

    def probabilities(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        """Face probability of each image (0 where MTCNN finds none)."""
        x = torch.as_tensor(np.asarray(images)).float()
        if x.shape[0] == 0:
            return np.zeros(0)
        with torch.inference_mode():
            _, probs = self.mtcnn.detect(x)
        return np.array([0.0 if p is None or p[0] is None else float(np.max(p)) for p in probs])

    def __call__(self, images: torch.Tensor | np.ndarray) -> np.ndarray:
        return self.probabilities(images) >= self.threshold

    def describe(self) -> dict:
        return {"detector": "facenet_pytorch.MTCNN", "threshold": self.threshold,
                "min_face_size": self.mtcnn.min_face_size}
