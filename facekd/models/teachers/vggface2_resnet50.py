"""The paper's teacher: VGGFace2 ResNet-50 (``resnet50_ft_weight.pkl``, the Caffe model converted to PyTorch).

The architecture is **Caffe-style**, not torchvision's, although the key names are the same:

* the stride of each stage sits on the first 1x1 conv of its first bottleneck (torchvision: on the 3x3);
* the stem max-pool is ``MaxPool2d(3, 2, padding=0, ceil_mode=True)``;
* the final pool is ``AvgPool2d(7, 1)``, so the input must be 224 x 224.

The trap: torchvision's ``resnet50`` loads these weights without a complaint and computes wrong features.
:func:`load_vggface2_resnet50` therefore refuses a network that is not laid out Caffe-style, and refuses
files in torchvision's own layout (``num_batches_tracked`` buffers, torch checkpoints).

Preprocessing (done by the teacher's :class:`Preprocess`): short side to 256, centre crop 224, RGB -> BGR,
floats in 0-255, minus the mean BGR ``(91.4953, 103.8827, 131.0912)``, no std scaling.

Security: the weights file is a Python pickle, and a pickle can run code when loaded.  The loader uses a
restricted unpickler that only rebuilds numpy arrays, but only load files from a source you trust.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from facekd.assets import sha256_file
from facekd.data.preprocess import Preprocess
from facekd.models.base import ModelWeightsError, Teacher, load_state_strict, require_weights_file
from facekd.models.registry import TEACHERS
from facekd.models.taps import register_tap_sets
from facekd.errors import ConfigError

__all__ = ["CaffeResNet50", "VGGFace2ResNet50Teacher", "read_vggface2_pickle", "load_vggface2_resnet50",
           "check_caffe_layout", "VGGFACE2_MEAN_BGR", "VGGFACE2_CLASSES", "WEIGHTS_FILE"]

VGGFACE2_MEAN_BGR = (91.4953, 103.8827, 131.0912)
VGGFACE2_CLASSES = 8631
WEIGHTS_FILE = "resnet50_ft_weight.pkl"
_N_KEYS = 267
_FEATURES = {"pool5": (2048,), "layer4_map": (2048, 7, 7)}
# Tap sets (facekd.models.taps), bottom to top.
TAP_SETS = register_tap_sets("vggface2_resnet50", {
    "stages": ["net.layer1", "net.layer2", "net.layer3", "net.layer4"],
    "top": ["net.layer4"],
    "embedding": ["net.avgpool"],
})

# Globals a pickle of {name: numpy array} may reference (Python 2 and 3 numpy spellings).
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    ("collections", "OrderedDict"): ("collections", "OrderedDict"),
    ("_codecs", "encode"): ("_codecs", "encode"),
}


class CaffeResNet50(ResNet):
    """ResNet-50 laid out like the VGGFace2 Caffe model (torchvision key names, Caffe strides and pools)."""

    def __init__(self, num_classes: int = VGGFACE2_CLASSES) -> None:
        super().__init__(Bottleneck, [3, 4, 6, 3], num_classes=num_classes)
        for layer in (self.layer2, self.layer3, self.layer4):
            first = layer[0]
            first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=0, ceil_mode=True)
        self.avgpool = nn.AvgPool2d(kernel_size=7, stride=1)

    def layer4_map(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (224, 224):
            raise ValueError(f"the VGGFace2 ResNet-50 takes 224 x 224 input (AvgPool2d(7)), got {tuple(x.shape[-2:])}")
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def pool5(self, x: torch.Tensor) -> torch.Tensor:
        return self.avgpool(self.layer4_map(x)).flatten(1)


def check_caffe_layout(model: nn.Module) -> None:
    """Raise unless ``model`` is a Caffe-style ResNet-50 (stride on the first 1x1, ceil-mode max-pool, 7x7 avg-pool)."""
    problems = []
    if not isinstance(model, ResNet) or [len(getattr(model, f"layer{i}", [])) for i in range(1, 5)] != [3, 4, 6, 3]:
        problems.append(f"{type(model).__name__} is not a ResNet-50")
    else:
        for i in (2, 3, 4):
            b = getattr(model, f"layer{i}")[0]
            if tuple(b.conv1.stride) != (2, 2) or tuple(b.conv2.stride) != (1, 1):
                problems.append(f"layer{i}.0 has its stride on conv{1 if tuple(b.conv1.stride) == (2, 2) else 2} "
                                f"(Caffe puts it on the first 1x1, conv1)")
        mp = model.maxpool
        if not (isinstance(mp, nn.MaxPool2d) and mp.ceil_mode and mp.padding == 0):
            problems.append("the stem max-pool must be MaxPool2d(3, 2, padding=0, ceil_mode=True)")
        if not isinstance(model.avgpool, nn.AvgPool2d):
            problems.append("the final pool must be AvgPool2d(7, 1)")
    if problems:
        raise ModelWeightsError(
            "refusing to load VGGFace2 ResNet-50 weights into this network: " + "; ".join(problems) +
            ". torchvision's resnet50 accepts these weights silently and computes wrong features; "
            "use facekd.models.teachers.vggface2_resnet50.CaffeResNet50.")


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            hint = (" It holds torch objects: this is a torch checkpoint, not the VGGFace2 pickle of numpy arrays."
                    if module.startswith("torch") else "")
            raise ModelWeightsError(f"{self.source}: refusing to unpickle {module}.{name}; the VGGFace2 weights file "
                                    f"holds only numpy arrays.{hint}")
        module, name = _ALLOWED[(module, name)]
        return getattr(__import__(module, fromlist=[name]), name)


def read_vggface2_pickle(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read ``resnet50_ft_weight.pkl``: a Python-2 pickle of {name: numpy array}, decoded as latin1.

    Only numpy arrays are rebuilt (a restricted unpickler); torch checkpoints, torchvision-layout state
    dicts (``num_batches_tracked``) and anything else are refused with the reason.
    """
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith(b"PK\x03\x04"):
            raise ModelWeightsError(f"{path} is a torch checkpoint (torch.save zip), not {WEIGHTS_FILE}, the latin1 "
                                    f"pickle of numpy arrays from the VGGFace2 Caffe conversion")
        f.seek(0)
        unpickler = _ArraysOnly(f, encoding="latin1")
        unpickler.source = str(path)
        try:
            obj = unpickler.load()
        except ModelWeightsError:
            raise
        except Exception as e:
            raise ModelWeightsError(f"{path} is not a readable {WEIGHTS_FILE} pickle: {e}") from e
    if not isinstance(obj, dict):
        raise ModelWeightsError(f"{path} holds a {type(obj).__name__}, expected a dict of numpy arrays")
    tracked = [k for k in obj if str(k).endswith("num_batches_tracked")]
    if tracked:
        raise ModelWeightsError(f"{path} is a torchvision-layout state dict ({tracked[0]} ...), not the VGGFace2 "
                                f"Caffe conversion; its weights would not fit the Caffe-style network")
    not_arrays = [str(k) for k, v in obj.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise ModelWeightsError(f"{path}: values must be numpy arrays; not for {', '.join(not_arrays[:5])}")
    return {str(k): v for k, v in obj.items()}


def load_vggface2_resnet50(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Strictly load ``resnet50_ft_weight.pkl`` into a Caffe-style ResNet-50 (refuses torchvision's layout)."""
    check_caffe_layout(model)
    arrays = read_vggface2_pickle(path)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
    load_state_strict(model, state, f"{path} ({len(arrays)} keys; {WEIGHTS_FILE} has {_N_KEYS})")
    return model


@TEACHERS.register("vggface2_resnet50")
class VGGFace2ResNet50Teacher(Teacher):
    """The VGGFace2 ResNet-50 as a frozen teacher; feature ``pool5`` (2048-d, default) or ``layer4_map`` (2048x7x7)."""

    def __init__(self, feature: str = "pool5") -> None:
        super().__init__()
        if feature not in _FEATURES:
            raise ConfigError(f"unknown vggface2_resnet50 feature '{feature}'; choose one of {', '.join(_FEATURES)}")
        self.name, self.feature, self.feature_shape = "vggface2_resnet50", feature, _FEATURES[feature]
        self.preprocess = Preprocess(size=224, resize=256, bgr=True, scale=1.0, mean=VGGFACE2_MEAN_BGR)
        self.net = CaffeResNet50()

    def _drop_classifier(self) -> None:
        self.net.fc = nn.Identity()  # the 8631-way VGGFace2 classifier is checked on load, then not needed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.layer4_map(x) if self.feature == "layer4_map" else self.net.pool5(x)

    @classmethod
    def from_config(cls, feature: str = "pool5", weights: str | os.PathLike | None = None) -> "VGGFace2ResNet50Teacher":
        path = require_weights_file(weights, "teacher.weights", WEIGHTS_FILE, "the VGGFace2 ResNet-50 teacher")
        teacher = cls(feature)
        load_vggface2_resnet50(teacher.net, path)
        teacher._drop_classifier()
        teacher.weights_id = sha256_file(path)
        return teacher

    @classmethod
    def architecture(cls, feature: str = "pool5") -> "VGGFace2ResNet50Teacher":
        teacher = cls(feature)
        teacher._drop_classifier()
        teacher.weights_id = "random-init"
        return teacher
