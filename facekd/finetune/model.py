"""The specialized model: the distilled student, a feature normalization and a linear head, in one module.

``SpecializedModel(images)`` takes what a camera pipeline has, uint8 (or float 0-255) RGB
``N x 3 x S x S``, runs the student's own preprocessing, the student (its distilled output ``embed`` or its
penultimate ``backbone`` features), the normalization and the head, and returns ``N x K`` class scores
(logits; argmax = predicted class).  That whole path is what the ONNX export holds.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facekd.models import CosineHead, LinearHead, Student
from facekd.models.standardize import Standardize
from facekd.errors import ConfigError

__all__ = ["FEATURES", "HEADS", "NORMS", "FeatureNorm", "SpecializedModel", "Preprocessed"]

FEATURES = ("embed", "backbone")
HEADS = ("linear", "cosine")
NORMS = ("none", "standardize", "l2")


class FeatureNorm(Standardize):
    """``none``; ``standardize``: ``(x - mean) / std`` with per-dimension statistics fitted on the training
    images (held as buffers, so they travel with the weights); ``l2``: unit-length rows."""

    def __init__(self, dim: int, mode: str = "none") -> None:
        if mode not in NORMS:
            raise ConfigError(f"unknown feature norm '{mode}'; use one of {', '.join(NORMS)}")
        super().__init__(dim)
        self.mode = mode

    def fit(self, feats: torch.Tensor, unbiased: bool = False) -> "FeatureNorm":
        """Set mean / std from N x D training features (only used by ``standardize``)."""
        return super().fit(feats, unbiased)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "standardize":
            return super().forward(x)
        if self.mode == "l2":
            return F.normalize(x, dim=1)
        return x

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


class SpecializedModel(nn.Module):
    """Student (``features``: ``embed`` = its distilled ``out_dim`` output, or ``backbone`` = its
    ``feature_dim`` penultimate features) -> :class:`FeatureNorm` -> :class:`LinearHead` (``head="linear"``) or
    :class:`CosineHead` (``head="cosine"``, for the cosine-margin loss)."""

    def __init__(self, student: Student, num_classes: int, features: str = "embed", norm: str = "none",
                 head: str = "linear") -> None:
        super().__init__()
        if features not in FEATURES:
            raise ConfigError(f"unknown features '{features}'; use one of {', '.join(FEATURES)}")
        self.student = student
        self.features = features
        dim = student.out_dim if features == "embed" else student.feature_dim
        self.norm = FeatureNorm(dim, norm)
        if head not in HEADS:
            raise ConfigError(f"unknown head '{head}'; use one of {', '.join(HEADS)}")
        self.head = LinearHead(dim, num_classes) if head == "linear" else CosineHead(dim, num_classes)

    @property
    def preprocess(self):
        return self.student.preprocess

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input -> the student features the head reads (before normalization)."""
        return self.student.embed(x) if self.features == "embed" else self.student.backbone_features(x)

    def classify(self, feats: torch.Tensor) -> torch.Tensor:
        """Student features -> class scores."""
        return self.head(self.norm(feats))

    def forward_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.extract(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0-255) RGB ``N x 3 x S x S`` -> ``N x K`` class scores."""
        return self.forward_preprocessed(self.student.preprocess(images))


class Preprocessed(nn.Module):
    """The network of a :class:`SpecializedModel` on its preprocessed input (what model cards count and time,
    as for every other method's row); ``preprocess`` gives the card its input size."""

    def __init__(self, model: SpecializedModel) -> None:
        super().__init__()
        self.model = model
        self.preprocess = model.preprocess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_preprocessed(x)
