import pytest
import torch
from torch import nn

from facekd.models import build_student
from facekd.errors import ConfigError
from facekd.models.students.convnet9 import CONVNET9_LAYERS
from facekd.models.students.mobilefacenet import InvertedResidual


@pytest.mark.parametrize("name", ["resnet18", "convnet9", "mobilefacenet"])
@pytest.mark.parametrize("size", [64, 112, 224])
def test_students_accept_every_input_size(name, size):
    student = build_student({"name": name, "input_size": size}, out_dim=128).eval()
    pre = student.preprocess
    assert (pre.size, pre.scale, pre.mean, pre.std, pre.bgr) == (size, 1 / 255, (0.5,) * 3, (0.5,) * 3, False)
    x = pre(torch.randint(0, 256, (1, 3, 100, 90), dtype=torch.uint8))
    with torch.no_grad():
        assert student.backbone_features(x).shape == (1, student.feature_dim)
        assert student.embed(x).shape == (1, 128) and student(x).shape == (1, 128)
    assert any(p.requires_grad for p in student.parameters())


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_convnet9_matches_the_paper():
    net = build_student({"name": "convnet9", "input_size": 224}, out_dim=2048)
    assert isinstance(net.proj, nn.Identity)
    assert _count(net) == 17_405_984  # "17.4M parameters"
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and sum(isinstance(m, nn.MaxPool2d) for m in net.modules()) == 3
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == \
        [s for s in CONVNET9_LAYERS if s != "M"]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 9
    with torch.no_grad():
        body = net.body.eval()
        x = torch.zeros(1, 3, 224, 224)
        for layer in body[:-2]:
            x = layer(x)
        assert x.shape == (1, 2048, 1, 1)  # 2048-d output at 224 px before any adaptive pooling
        # ceil-mode pools change nothing at 224 px: same sizes as the plain floor-mode pools
        floor = nn.Sequential(*[nn.MaxPool2d(2) if isinstance(m, nn.MaxPool2d) else m for m in body[:-2]])
        assert floor(torch.zeros(1, 3, 224, 224)).shape == x.shape
    projected = build_student({"name": "convnet9", "input_size": 64}, out_dim=128)
    assert isinstance(projected.proj, nn.Linear) and _count(projected) == 17_405_984 + 2048 * 128 + 128


def test_resnet18_is_torchvision_random_init():
    a = build_student({"name": "resnet18"}, out_dim=1024)
    assert a.input_size == 64 and a.feature_dim == 512 and a.proj.out_features == 1024
    assert _count(a) == 11_176_512 + 512 * 1024 + 1024  # torchvision resnet18 without its fc, plus the projection


def test_bad_student_options():
    with pytest.raises(ValueError, match="at least 32"):
        build_student({"name": "resnet18", "input_size": 16}, out_dim=128)
    with pytest.raises(ValueError, match=r"student\.width.*student\.input_size"):
        build_student({"name": "resnet18", "width": 2}, out_dim=128)


def test_mobilefacenet_matches_the_paper():
    """Chen et al. 2018, Table 1 at 112 px: 0.99 M parameters and 221 M multiply-adds, a 7x7 GDConv."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_student({"name": "mobilefacenet", "input_size": 112, "activation": "prelu"}, out_dim=128).eval()
    blocks = [m for m in net.modules() if isinstance(m, InvertedResidual)]
    assert len(blocks) == 15 and sum(b.residual for b in blocks) == 12  # 5 + 1 + 6 + 1 + 2; the 3 stride-2 blocks have none
    assert net.gdc[0].kernel_size == (7, 7) and net.gdc[0].groups == 512
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, 3, 112, 112))
    assert round(counter.get_total_flops() / 2e6) == 221  # multiply-adds, in millions
    prelus = sum(m.num_parameters for m in net.modules() if isinstance(m, nn.PReLU))
    assert 0.95e6 < _count(net) < 1.05e6
    relu = build_student({"name": "mobilefacenet", "input_size": 112}, out_dim=128)
    assert _count(relu) == _count(net) - prelus and not any(isinstance(m, nn.PReLU) for m in relu.modules())


def test_mobilefacenet_sizes_and_width():
    small = build_student({"name": "mobilefacenet", "input_size": 64}, out_dim=128)
    assert small.map_size == 4 and small.gdc[0].kernel_size == (4, 4)
    assert _count(small) < 2_000_000  # the edge budget
    half = build_student({"name": "mobilefacenet", "width": 0.5}, out_dim=128)
    assert half.stem[0][0].out_channels == 32 and _count(half) < _count(small)
    with pytest.raises(ValueError, match="feed 64 px"):
        small.backbone_features(torch.zeros(1, 3, 112, 112))
    with pytest.raises(ConfigError, match="student.activation"):
        build_student({"name": "mobilefacenet", "activation": "gelu"}, out_dim=128)
    with pytest.raises(ConfigError, match="student.width"):
        build_student({"name": "mobilefacenet", "width": 0}, out_dim=128)
