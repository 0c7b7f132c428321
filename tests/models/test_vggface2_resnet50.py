import pickle

import numpy as np
import pytest
import torch
import torchvision

from facekd.models import ModelWeightsError, build_teacher
from facekd.models.teachers.vggface2_resnet50 import (VGGFACE2_MEAN_BGR, CaffeResNet50, load_vggface2_resnet50,
                                                       read_vggface2_pickle)
from py2pickle import write_py2_pickle


@pytest.fixture(scope="module")
def source():
    """A random-weight Caffe-style network: the fixture file is its state, the way the real file is laid out."""
    torch.manual_seed(0)
    net = CaffeResNet50().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong layout cannot go unnoticed
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


@pytest.fixture(scope="module")
def arrays(source):
    """{name: numpy array}: 267 keys, no num_batches_tracked, fc 8631 x 2048, like resnet50_ft_weight.pkl."""
    state = {k: v.numpy().copy() for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(state) == 267 and state["fc.weight"].shape == (8631, 2048)
    return state


@pytest.fixture(scope="module")
def weights_file(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("vggface2") / "resnet50_ft_weight.pkl"
    write_py2_pickle(arrays, path)
    return path


def test_fixture_is_a_python2_pickle(weights_file):
    with open(weights_file, "rb") as f, pytest.raises(UnicodeDecodeError):
        pickle.load(f)  # Python 2 str payloads need encoding="latin1"
    loaded = read_vggface2_pickle(weights_file)
    assert len(loaded) == 267 and all(isinstance(v, np.ndarray) for v in loaded.values())


def test_loads_and_reproduces_the_caffe_network(weights_file, source):
    teacher = build_teacher({"name": "vggface2_resnet50", "weights": str(weights_file)})
    assert teacher.feature_dim == 2048 and not teacher.training
    images = torch.randint(0, 256, (1, 3, 250, 300), dtype=torch.uint8)
    feats = teacher.features(images)
    assert feats.shape == (1, 2048)
    with torch.no_grad():
        x = teacher.preprocess(images)
        # features() feeds the network channels_last (faster CPU convolutions), so the reference does too
        expected = source.avgpool(source.layer4_map(x.contiguous(memory_format=torch.channels_last))).flatten(1)
        torch.testing.assert_close(feats, expected)
        # The trap, shown: torchvision's resnet50 takes the same weights without complaint ...
        tv = torchvision.models.resnet50(num_classes=8631).eval()
        missing, unexpected = tv.load_state_dict(source.state_dict(), strict=False)
        assert not missing and not unexpected
        tv.fc = torch.nn.Identity()
        # ... and computes different features.
        wrong = tv(x)
        assert ((wrong - expected).norm(dim=1) / expected.norm(dim=1)).min() > 0.01  # 5% with random weights


def test_refuses_torchvision_resnet50(weights_file):
    with pytest.raises(ModelWeightsError, match="torchvision"):
        load_vggface2_resnet50(torchvision.models.resnet50(num_classes=8631), weights_file)


def test_caffe_layout():
    net = CaffeResNet50()
    for layer in (net.layer2, net.layer3, net.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
    assert net.maxpool.ceil_mode and net.maxpool.padding == 0 and isinstance(net.avgpool, torch.nn.AvgPool2d)
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(torch.zeros(1, 3, 224, 224)))))
    assert stem.shape[-2:] == (56, 56)
    with pytest.raises(ValueError, match="224"):
        net.layer4_map(torch.zeros(1, 3, 112, 112))


def test_preprocessing_known_pixel():
    from facekd.models.teachers.vggface2_resnet50 import VGGFace2ResNet50Teacher

    pre = VGGFace2ResNet50Teacher.architecture().preprocess
    img = torch.zeros(1, 3, 256, 256, dtype=torch.uint8)
    img[0, :, 16, 16] = torch.tensor([200, 100, 50], dtype=torch.uint8)  # RGB; the 224 crop starts at (16, 16)
    x = pre(img)
    assert x.shape == (1, 3, 224, 224)
    b, g, r = VGGFACE2_MEAN_BGR
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([50 - b, 100 - g, 200 - r]))  # BGR, 0-255, no std
    torch.testing.assert_close(x[0, :, 1, 1], torch.tensor([-b, -g, -r]))
    wide = pre(torch.full((1, 3, 300, 400), 128, dtype=torch.uint8))  # short side 300 -> 256, then crop 224
    assert wide.shape == (1, 3, 224, 224)
    torch.testing.assert_close(wide[0, :, 100, 100], torch.tensor([128 - b, 128 - g, 128 - r]))


def test_missing_and_unexpected_keys_are_listed(arrays, tmp_path):
    some = dict(arrays)
    del some["layer3.2.bn2.running_var"]
    some["layer5.0.conv1.weight"] = np.zeros((1,), np.float32)
    path = tmp_path / "bad.pkl"
    write_py2_pickle(some, path)
    with pytest.raises(ModelWeightsError, match=r"missing keys: layer3\.2\.bn2\.running_var.*unexpected keys: layer5"):
        build_teacher({"name": "vggface2_resnet50", "weights": str(path)})


def test_wrong_shapes_are_listed(arrays, tmp_path):
    imagenet = dict(arrays, **{"fc.weight": np.zeros((1000, 2048), np.float32), "fc.bias": np.zeros(1000, np.float32)})
    path = tmp_path / "imagenet.pkl"
    write_py2_pickle(imagenet, path)
    with pytest.raises(ModelWeightsError, match=r"wrong shape.*fc\.bias \(1000,\) != \(8631,\).*fc\.weight"):
        build_teacher({"name": "vggface2_resnet50", "weights": str(path)})


def test_refuses_torchvision_layout_and_torch_files(arrays, source, tmp_path):
    tracked = dict(arrays, **{"bn1.num_batches_tracked": np.array(0)})
    write_py2_pickle(tracked, tmp_path / "tv.pkl")
    with pytest.raises(ModelWeightsError, match="torchvision-layout"):
        read_vggface2_pickle(tmp_path / "tv.pkl")
    torch.save(source.state_dict(), tmp_path / "resnet50.pth")
    with pytest.raises(ModelWeightsError, match="torch checkpoint"):
        read_vggface2_pickle(tmp_path / "resnet50.pth")
    with open(tmp_path / "tensors.pkl", "wb") as f:
        pickle.dump({"conv1.weight": torch.zeros(2)}, f)
    with pytest.raises(ModelWeightsError, match="torch"):
        read_vggface2_pickle(tmp_path / "tensors.pkl")
    with open(tmp_path / "code.pkl", "wb") as f:
        pickle.dump({"x": print}, f)  # anything beyond numpy arrays is refused, never called
    with pytest.raises(ModelWeightsError, match="refusing to unpickle builtins.print"):
        read_vggface2_pickle(tmp_path / "code.pkl")


def test_missing_weights_name_the_config_key(tmp_path):
    with pytest.raises(ModelWeightsError, match=r"teacher\.weights=.*resnet50_ft_weight\.pkl"):
        build_teacher({"name": "vggface2_resnet50", "weights": None})
    with pytest.raises(ModelWeightsError, match=r"teacher\.weights=.*no such file.*resnet50_ft_weight\.pkl"):
        build_teacher({"name": "vggface2_resnet50", "weights": str(tmp_path / "nope.pkl")})
