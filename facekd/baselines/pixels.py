"""``pixels``: nearest class mean on raw pixels, the floor every learned model must beat."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from facekd.baselines.base import METHODS, Fitted, Method, Predictor
from facekd.data.labeled import LabeledData, split_datasets
from facekd.data.preprocess import Preprocess
from facekd.models.standardize import Standardize

__all__ = ["PixelFeatures", "Pixels"]


class PixelFeatures(Standardize):
    """Preprocessed ``B x 3 x S x S`` input in [0, 1] -> grey (or RGB) pixels, standardised per pixel.

    ``mean`` / ``std`` are per-pixel statistics of the training images (buffers, no parameters).
    """

    def __init__(self, dim: int, grey: bool = True) -> None:
        super().__init__(dim, eps=1e-3)
        self.grey = grey

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        if self.grey:
            w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        return x.flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.raw(x))


@METHODS.register("pixels")
class Pixels(Method):
    """Raw ``size`` px pixels (grey by default), standardised with the train images' per-pixel mean and std;
    classified by the nearest class mean (cosine) like every embedding method.  Nothing is trained."""

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        return f"pixels {int(cfg.get('size', 32))}px" + (" grey" if cfg.get("grey", True) else "")

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        size, grey = int(cfg.get("size", 32)), bool(cfg.get("grey", True))
        pre = Preprocess(size=size, scale=1.0 / 255.0)
        body = PixelFeatures(size * size * (1 if grey else 3), grey)
        x, _ = split_datasets(data, ("train",), augment_train=False)["train"].tensors()
        body.fit(body.raw(pre(x)))
        return Fitted(Predictor(body, pre, output="embedding"), self.student_name(cfg))
