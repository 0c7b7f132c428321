"""What every teacher and student looks like, plus strict weight loading shared by all networks.

* A :class:`Teacher` maps uint8 RGB images to features through its own :class:`Preprocess`; it is always
  frozen and in eval mode, whatever the caller does.
* A :class:`Student` is a trainable backbone (``backbone_features``, ``feature_dim``) followed by a
  projection to the teacher's dimension (``embed``, ``out_dim``).  The finetune head sits on ``embed``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from facekd.data.preprocess import Preprocess
from facekd.errors import FacekdError

__all__ = ["ModelWeightsError", "Teacher", "Student", "load_state_strict", "require_weights_file"]


class ModelWeightsError(FacekdError, ValueError):
    """A weights file that is missing, of the wrong format, or does not fit the network."""


def _first(items: list[str], n: int = 8) -> str:
    more = f" ... (+{len(items) - n} more)" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def load_state_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``module``; every key must exist on both sides with the same shape.

    BatchNorm ``num_batches_tracked`` buffers carry no weights: they may be absent from ``state`` and are
    ignored when present (a format that must not hold them checks that itself).
    Raises :class:`ModelWeightsError` listing the first missing, unexpected or mis-shaped keys.
    """
    own = module.state_dict()
    wanted = {k for k in own if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(wanted - set(state))
    unexpected = sorted(set(state) - wanted)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {_first(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {_first(unexpected)}")
        raise ModelWeightsError(f"{source} does not fit {type(module).__name__}: " + "; ".join(parts))
    bad = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in sorted(wanted)
           if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise ModelWeightsError(f"{source} has {len(bad)} keys of the wrong shape (file != network): {_first(bad, 5)}")
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(torch.as_tensor(state[k]).to(own[k].dtype))


def require_weights_file(path: str | os.PathLike | None, key: str, expected: str, what: str) -> Path:
    """Check that a user-supplied weights file exists; the error names the config ``key`` and ``expected`` file."""
    if path is None or str(path).strip() in {"", "null", "None"}:
        raise ModelWeightsError(
            f"{what} needs its weights file: set {key}=/path/to/{expected} (expected file: {expected}). "
            f"It cannot be downloaded here; copy it from a machine that has it.")
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelWeightsError(f"{key}={path}: no such file (expected the weights file {expected} of {what})")
    return p


class Teacher(nn.Module):
    """A frozen face network giving features of shape ``B x *feature_shape`` (``B x D`` for vector features).

    Subclasses set ``name``, ``feature``, ``feature_shape``, ``preprocess`` and implement ``forward`` on
    preprocessed input.  ``features`` is the entry point for uint8 images.
    """

    name: str = "teacher"
    feature: str = ""
    feature_shape: tuple[int, ...] = ()
    preprocess: Preprocess
    weights_id: str = ""  # sha256 (or description) of the weights, for cache keys and manifests

    @property
    def feature_dim(self) -> int:
        """D: the channel count of the selected feature (vector length, or C of a C x H x W map)."""
        return int(self.feature_shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def signature(self) -> dict[str, Any]:
        """Everything that determines the features: cache key material for teacher-feature caches."""
        return {"name": self.name, "feature": self.feature, "feature_shape": list(self.feature_shape),
                "preprocess": self.preprocess.as_dict(), "weights": self.weights_id}

    def freeze(self) -> "Teacher":
        for p in self.parameters():
            p.requires_grad = False
        return super().train(False)

    def train(self, mode: bool = True) -> "Teacher":
        """Teachers stay in eval mode (BatchNorm statistics and dropout never change)."""
        return super().train(False)

    def requires_grad_(self, requires_grad: bool = True) -> "Teacher":
        if requires_grad:
            raise RuntimeError(f"teacher '{self.name}' is frozen; train a head or connector on its features instead")
        return super().requires_grad_(False)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (or float 0-255) RGB ``B x 3 x H x W`` -> float32 features, computed on the teacher's device.

        The input goes in channels_last, which the CPU convolutions run about 1.4x faster (same values to ~1e-6).
        """
        x = self.preprocess(images.to(self.device, non_blocking=True))
        return self(x.contiguous(memory_format=torch.channels_last)).float()

    def extra_repr(self) -> str:
        return f"feature={self.feature}, feature_shape={self.feature_shape}"


class Student(nn.Module):
    """A trainable student: ``backbone_features`` (``feature_dim``) then ``proj`` to ``out_dim`` = the teacher's D.

    ``embed(x)`` (= ``forward``) is the distilled output, matched to the teacher.  The finetune stage puts
    its linear head on ``embed`` (dimension ``out_dim``), with the student frozen.
    """

    name: str = "student"
    feature_dim: int
    out_dim: int
    input_size: int
    preprocess: Preprocess
    proj: nn.Module

    SIZES = (64, 112, 224)  # what the pipeline configures; any size from MIN_SIZE up works
    MIN_SIZE = 32

    def _setup(self, input_size: int, out_dim: int) -> None:
        if int(input_size) < self.MIN_SIZE:
            raise ValueError(f"student input_size must be at least {self.MIN_SIZE} (the pipeline uses "
                             f"{', '.join(map(str, self.SIZES))}), got {input_size}")
        if int(out_dim) < 1:
            raise ValueError(f"out_dim must be positive, got {out_dim}")
        self.input_size = int(input_size)
        self.out_dim = int(out_dim)
        self.preprocess = Preprocess(size=self.input_size, scale=1.0 / 255.0, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input -> ``B x feature_dim`` penultimate features."""
        raise NotImplementedError

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed input -> ``B x out_dim``: the output distilled towards the teacher."""
        return self.proj(self.backbone_features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)
