"""facenet-pytorch's InceptionResnetV1 as a frozen teacher, loaded from a local state dict.

The published weights are plain state dicts: ``20180402-114759-vggface2.pt`` (VGGFace2, 8631 classes) and
``20180408-102900-casia-webface.pt`` (CASIA-WebFace, 10575 classes).  They cannot be downloaded here; point
``teacher.weights`` at a copy.  The file is loaded with ``weights_only=True`` (no code runs), strictly:
every backbone key must be present with the right shape.  The classifier (``logits``) is checked against
the variant and then dropped; only the embedding is used.

Input: 160 x 160 RGB with facenet's ``fixed_image_standardization``, ``(x - 127.5) / 128``.  Faces
should be cropped and aligned (facenet-pytorch's MTCNN does this for raw photos).

Features: ``embedding`` (default): the 512-d L2-normalised embedding, what facenet outputs;
``last_bn``: the same 512 values before L2 normalisation.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from facekd.assets import sha256_file
from facekd.data.preprocess import Preprocess
from facekd.models.base import ModelWeightsError, Teacher, load_state_strict, require_weights_file
from facekd.models.registry import TEACHERS
from facekd.models.taps import register_tap_sets
from facekd.errors import ConfigError

__all__ = ["FacenetTeacher", "FacenetVGGFace2Teacher", "FacenetCasiaTeacher", "inception_resnet_v1"]

_FEATURES = {"embedding": (512,), "last_bn": (512,)}
# Tap sets (facekd.models.taps), bottom to top; both facenet teachers share the network.
TAP_SETS = register_tap_sets("facenet_vggface2", {
    "stages": ["net.repeat_1", "net.repeat_2", "net.repeat_3", "net.block8"],
    "top": ["net.block8"],
    "embedding": ["net.last_bn"],
})
register_tap_sets("facenet_casia", TAP_SETS)


def inception_resnet_v1() -> nn.Module:
    """facenet-pytorch's InceptionResnetV1 without a classifier and without weights."""
    from facenet_pytorch.models.inception_resnet_v1 import InceptionResnetV1

    return InceptionResnetV1(pretrained=None, classify=False)


class FacenetTeacher(Teacher):
    """InceptionResnetV1 (facenet-pytorch); subclasses fix the training set (file name, class count)."""

    variant = ""
    weights_file = ""
    num_classes = 0

    def __init__(self, feature: str = "embedding") -> None:
        super().__init__()
        if feature not in _FEATURES:
            raise ConfigError(f"unknown facenet feature '{feature}'; choose one of {', '.join(_FEATURES)}")
        self.name, self.feature, self.feature_shape = f"facenet_{self.variant}", feature, _FEATURES[feature]
        self.preprocess = Preprocess(size=160, scale=1.0, mean=(127.5,) * 3, std=(128.0,) * 3)
        self.net = inception_resnet_v1()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        for layer in (n.conv2d_1a, n.conv2d_2a, n.conv2d_2b, n.maxpool_3a, n.conv2d_3b, n.conv2d_4a, n.conv2d_4b,
                      n.repeat_1, n.mixed_6a, n.repeat_2, n.mixed_7a, n.repeat_3, n.block8, n.avgpool_1a):
            x = layer(x)
        x = n.last_bn(n.last_linear(x.flatten(1)))
        return x if self.feature == "last_bn" else F.normalize(x, p=2, dim=1)

    @classmethod
    def from_config(cls, feature: str = "embedding", weights: str | os.PathLike | None = None) -> "FacenetTeacher":
        path = require_weights_file(weights, "teacher.weights", cls.weights_file, f"the facenet {cls.variant} teacher")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelWeightsError(f"teacher.weights={path} is not a torch state dict ({cls.weights_file}): {e}") from e
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelWeightsError(f"teacher.weights={path} must hold a state dict of tensors, like {cls.weights_file}")
        state = dict(state)
        logits = state.pop("logits.weight", None)
        state.pop("logits.bias", None)
        if logits is not None and logits.shape[0] != cls.num_classes:
            raise ModelWeightsError(
                f"teacher.weights={path} has a {logits.shape[0]}-class classifier; the {cls.variant} weights "
                f"({cls.weights_file}) have {cls.num_classes}. Pick the teacher that matches the file.")
        teacher = cls(feature)
        load_state_strict(teacher.net, state, f"teacher.weights={path}")
        teacher.weights_id = sha256_file(path)
        return teacher

    @classmethod
    def architecture(cls, feature: str = "embedding") -> "FacenetTeacher":
        teacher = cls(feature)
        teacher.weights_id = "random-init"
        return teacher


@TEACHERS.register("facenet_vggface2")
class FacenetVGGFace2Teacher(FacenetTeacher):
    variant, weights_file, num_classes = "vggface2", "20180402-114759-vggface2.pt", 8631


@TEACHERS.register("facenet_casia")
class FacenetCasiaTeacher(FacenetTeacher):
    variant, weights_file, num_classes = "casia", "20180408-102900-casia-webface.pt", 10575
