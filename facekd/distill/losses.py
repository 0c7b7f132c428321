"""Feature-distillation losses: ``loss(student_out, teacher_feat) -> scalar``, chosen by name.

=========  =================================================================================
``mse``    mean squared error on raw teacher features, or (``standardize: true``) on teacher
           features standardized per dimension with training-set statistics; the student then
           predicts the standardized features.
``bce``    label-free sigmoid-BCE: targets ``sigmoid(z / temperature)`` with ``z`` the standardized
           teacher features (``targets: standardized``, the default), ``sigmoid(t / temperature)``
           on raw ones (``targets: raw``), or features that already are probabilities
           (``targets: probabilities``, e.g. the sigmoid output of the paper's label-trained
           connector on the teacher); the student emits logits (``BCEWithLogits``).
``cosine`` ``1 - cos(student, teacher)`` per sample (optionally on standardized teacher features).
=========  =================================================================================

Any of them takes ``relational: w`` (default 0): ``w`` times :func:`similarity_loss` is added, the mean
squared difference between the in-batch cosine-similarity matrices of the student (mapped to teacher
space) and the teacher, so the student also keeps *which faces look alike* (:class:`WithRelational`).

Statistics (:class:`FeatureStats`: per-dimension mean and std, shaped like one teacher feature) come
from the teacher-feature cache of the training set, e.g. ``FeatureStats.from_batches(cache_batches)``.
Every loss also maps between spaces, so metrics are computed in the teacher's own feature space:
``loss.target(t)`` is what the student is trained to output for teacher feature ``t``, and
``loss.to_teacher(s)`` is the teacher feature a student output ``s`` stands for.

Build one from config with ``build_loss({"name": "bce", "temperature": 1.0}, stats)``; add a loss by
decorating a :class:`FeatureLoss` subclass with ``@LOSSES.register("name")``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from facekd.metrics import RunningMoments
from facekd.models.standardize import Standardize
from facekd.registry import Registry
from facekd.errors import ConfigError

__all__ = ["LOSSES", "FeatureStats", "FeatureLoss", "MSEFeatureLoss", "BCEFeatureLoss", "CosineFeatureLoss",
           "WithRelational", "similarity_loss", "build_loss"]

LOSSES: Registry = Registry("loss")


@dataclass
class FeatureStats:
    """Per-dimension mean and std of teacher features (each shaped like one feature, e.g. (D,))."""

    mean: torch.Tensor
    std: torch.Tensor

    def __post_init__(self) -> None:
        self.mean, self.std = torch.as_tensor(self.mean).float(), torch.as_tensor(self.std).float()
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean has shape {tuple(self.mean.shape)} but std has {tuple(self.std.shape)}")

    @classmethod
    def from_batches(cls, batches: Iterable[Any]) -> "FeatureStats":
        """Stream N x ... feature batches (tensors or arrays) once; memory does not grow with N."""
        moments, shape = RunningMoments(), None
        for b in batches:
            b = torch.as_tensor(b)
            shape = shape or tuple(b.shape[1:])
            moments.update(b)
        if shape is None:
            raise ValueError("FeatureStats.from_batches got no batches")
        return cls(moments.mean.reshape(shape), moments.std.reshape(shape))


def _standardizer(name: str, stats: FeatureStats | None, eps: float) -> Standardize:
    if stats is None:
        raise ValueError(f"loss '{name}' standardizes teacher features and needs their statistics: pass "
                         "stats=FeatureStats(mean, std) computed on the training set's teacher-feature cache")
    return Standardize.from_stats(stats.mean, stats.std, eps)


class FeatureLoss(nn.Module):
    """Base class: ``forward(student_out, teacher_feat)`` returns a scalar loss (mean over the batch)."""

    name = "feature"

    def target(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        """The value the student is trained to output for ``teacher_feat``."""
        return teacher_feat.float()

    def to_teacher(self, student_out: torch.Tensor) -> torch.Tensor:
        """The teacher feature that ``student_out`` stands for (for metrics in teacher space)."""
        return student_out.float()

    def _check(self, s: torch.Tensor, t: torch.Tensor) -> None:
        if s.shape != t.shape:
            raise ValueError(f"{self.name}: student output has shape {tuple(s.shape)} but the teacher feature has "
                             f"{tuple(t.shape)}; give the student a projection to the teacher's dimension")


class _OptionallyStandardized(FeatureLoss):
    """A loss whose target is the teacher feature itself, optionally standardized per dimension."""

    def __init__(self, standardize: bool = False, stats: FeatureStats | None = None, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = _standardizer(self.name, stats, eps) if standardize else None

    def target(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        return self.norm(teacher_feat) if self.norm is not None else teacher_feat.float()

    def to_teacher(self, student_out: torch.Tensor) -> torch.Tensor:
        return self.norm.inverse(student_out) if self.norm is not None else student_out.float()


@LOSSES.register("mse")
class MSEFeatureLoss(_OptionallyStandardized):
    """MSE to the teacher features, raw or standardized per dimension (``standardize=True``)."""

    name = "mse"

    def forward(self, student_out: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        self._check(student_out, teacher_feat)
        return F.mse_loss(student_out.float(), self.target(teacher_feat))


@LOSSES.register("bce")
class BCEFeatureLoss(FeatureLoss):
    """Sigmoid-BCE between student logits and sigmoid targets made from the teacher features."""

    name = "bce"
    TARGETS = ("standardized", "raw", "probabilities")

    def __init__(self, temperature: float = 1.0, targets: str = "standardized", stats: FeatureStats | None = None,
                 eps: float = 1e-6) -> None:
        super().__init__()
        if targets not in self.TARGETS:
            raise ConfigError(f"bce: unknown targets '{targets}'; use one of {', '.join(self.TARGETS)}")
        if temperature <= 0:
            raise ConfigError(f"bce: temperature must be positive, got {temperature}")
        self.temperature, self.targets = float(temperature), targets
        self.norm = _standardizer(self.name, stats, eps) if targets == "standardized" else None

    def target(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        if self.targets == "probabilities":
            return teacher_feat.float()
        z = self.norm(teacher_feat) if self.norm is not None else teacher_feat.float()
        return torch.sigmoid(z / self.temperature)

    def to_teacher(self, student_out: torch.Tensor) -> torch.Tensor:
        if self.targets == "probabilities":
            return torch.sigmoid(student_out.float())
        z = student_out.float() * self.temperature
        return self.norm.inverse(z) if self.norm is not None else z

    def forward(self, student_out: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        self._check(student_out, teacher_feat)
        return F.binary_cross_entropy_with_logits(student_out.float(), self.target(teacher_feat))


@LOSSES.register("cosine")
class CosineFeatureLoss(_OptionallyStandardized):
    """``1 - cosine similarity`` per sample (features flattened), averaged over the batch."""

    name = "cosine"

    def forward(self, student_out: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        self._check(student_out, teacher_feat)
        s, t = student_out.float().flatten(1), self.target(teacher_feat).flatten(1)
        return (1 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


def similarity_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the B x B in-batch cosine-similarity matrices of two feature batches."""
    s = F.normalize(student_feat.float().flatten(1), dim=1, eps=1e-8)
    t = F.normalize(teacher_feat.float().flatten(1), dim=1, eps=1e-8)
    return F.mse_loss(s @ s.T, t @ t.T)


class WithRelational(FeatureLoss):
    """``base(s, t) + weight * similarity_loss(base.to_teacher(s), t)``; maps spaces as ``base`` does."""

    def __init__(self, base: FeatureLoss, weight: float) -> None:
        super().__init__()
        if weight < 0:
            raise ConfigError(f"{base.name}: relational weight must be >= 0, got {weight}")
        self.base, self.weight, self.name = base, float(weight), base.name

    def target(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        return self.base.target(teacher_feat)

    def to_teacher(self, student_out: torch.Tensor) -> torch.Tensor:
        return self.base.to_teacher(student_out)

    def forward(self, student_out: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        rel = similarity_loss(self.base.to_teacher(student_out), teacher_feat)
        return self.base(student_out, teacher_feat) + self.weight * rel


def build_loss(cfg: Mapping[str, Any] | str, stats: FeatureStats | None = None) -> FeatureLoss:
    """Build a loss from ``{"name": ..., **options}`` (or a bare name); ``stats`` goes to losses that use it.

    ``relational: w > 0`` wraps it in :class:`WithRelational`.  An unknown name raises ``KeyError``
    listing the known losses; an unknown option raises ``ValueError``.
    """
    if isinstance(cfg, str):
        cfg = {"name": cfg}
    else:
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        cfg = dict(cfg)
    if "name" not in cfg:
        raise ConfigError(f"loss config needs a 'name' (one of {', '.join(LOSSES.names())})")
    name = cfg.pop("name")
    relational = float(cfg.pop("relational", 0.0) or 0.0)
    cls = LOSSES.get(name)
    params = inspect.signature(cls).parameters
    unknown = sorted(set(cfg) - set(params) | ({"stats"} & set(cfg)))
    if unknown:
        allowed = ", ".join([*(p for p in params if p != "stats"), "relational"])
        raise ConfigError(f"loss '{name}' has no option(s) {', '.join(unknown)}; its options: {allowed}")
    if "stats" in params:
        cfg["stats"] = stats
    loss = cls(**cfg)
    return WithRelational(loss, relational) if relational else loss
