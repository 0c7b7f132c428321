"""ConvNet-9 student: the paper's plain nine-block network (17.4M parameters, 2048-d at 224 px)."""
from __future__ import annotations

import torch
from torch import nn

from facekd.models.base import Student
from facekd.models.registry import STUDENTS
from facekd.models.taps import register_tap_sets

__all__ = ["ConvNet9Student", "CONVNET9_LAYERS"]

# (in, out, kernel, stride, padding) of the nine Conv-BN-ReLU blocks; "M" is a 2x2 max-pool.
CONVNET9_LAYERS: list = [
    (3, 32, 3, 1, 1), "M",
    (32, 128, 3, 2, 1), (128, 64, 3, 2, 1), (64, 256, 3, 2, 1), "M",
    (256, 128, 3, 2, 1), (128, 512, 3, 2, 1), (512, 1024, 2, 2, 1), "M",
    (1024, 512, 3, 2, 1), (512, 2048, 3, 2, 1),
]


# Tap sets (facekd.models.taps), bottom to top.  The body is a Sequential of (conv, bn, relu) triples and
# max-pools: the ReLUs before each pool (blocks 1, 4, 7) and the last one (block 9).
TAP_SETS = register_tap_sets("convnet9", {
    "stages": ["body.2", "body.12", "body.22", "body.29"],
    "top": ["body.29"],
    "embedding": ["proj"],
})


@STUDENTS.register("convnet9")
class ConvNet9Student(Student):
    """Nine Conv-BN-ReLU blocks and three max-pools, exactly per the paper's table (``CONVNET9_LAYERS``).

    At 224 px the last block's map is 1 x 1 x 2048.  Two choices keep 64 and 112 px input working without
    changing anything at 224 px: the max-pools use ``ceil_mode=True`` (identical on the even sizes met at
    224 px, but a 1 x 1 map stays 1 x 1 instead of collapsing to 0), and an adaptive average pool ends the
    network (a no-op on a 1 x 1 map).  ``backbone_features`` is that 2048-d vector (post-ReLU); ``proj`` is
    the identity when ``out_dim`` is 2048 (as with the VGGFace2 ResNet-50's 2048-d pool5, which is also
    post-ReLU) and otherwise ``Linear(2048, out_dim)``.
    """

    name = "convnet9"

    def __init__(self, out_dim: int, input_size: int = 64) -> None:
        super().__init__()
        self._setup(input_size, out_dim)
        layers: list[nn.Module] = []
        for spec in CONVNET9_LAYERS:
            if spec == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
                continue
            cin, cout, k, s, p = spec
            layers += [nn.Conv2d(cin, cout, k, s, p, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(1)]
        self.body = nn.Sequential(*layers)
        self.feature_dim = 2048
        self.proj = nn.Identity() if self.out_dim == self.feature_dim else nn.Linear(self.feature_dim, self.out_dim)

    def backbone_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
