import pytest
import torch

from facekd.models import ModelWeightsError, build_teacher
from facekd.models.teachers.facenet import inception_resnet_v1


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(0)
    return inception_resnet_v1().eval()


def _save(source, path, classes):
    """A state dict laid out like 20180402-114759-vggface2.pt: the backbone plus a ``logits`` classifier."""
    state = dict(source.state_dict())
    state["logits.weight"] = torch.randn(classes, 512)
    state["logits.bias"] = torch.zeros(classes)
    torch.save(state, path)
    return path


def test_loads_state_dict_and_matches_facenet(source, tmp_path):
    path = _save(source, tmp_path / "20180402-114759-vggface2.pt", 8631)
    teacher = build_teacher({"name": "facenet_vggface2", "weights": str(path)})
    pre = teacher.preprocess
    assert (pre.size, pre.scale, pre.mean, pre.std, pre.bgr) == (160, 1.0, (127.5,) * 3, (128.0,) * 3, False)
    images = torch.randint(0, 256, (1, 3, 160, 160), dtype=torch.uint8)
    feats = teacher.features(images)
    assert feats.shape == (1, 512) and teacher.feature_dim == 512
    with torch.no_grad():
        expected = source((images.float() - 127.5) / 128)  # facenet's own forward: L2-normalised embedding
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-4)
    raw = build_teacher({"name": "facenet_vggface2", "weights": str(path), "feature": "last_bn"}).features(images)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), feats, atol=1e-5, rtol=1e-4)


def test_wrong_variant_and_shapes(source, tmp_path):
    casia = _save(source, tmp_path / "casia.pt", 10575)
    with pytest.raises(ModelWeightsError, match="10575-class"):
        build_teacher({"name": "facenet_vggface2", "weights": str(casia)})
    assert build_teacher({"name": "facenet_casia", "weights": str(casia)}).name == "facenet_casia"
    state = dict(source.state_dict())
    state["last_linear.weight"] = torch.zeros(128, 1792)
    del state["block8.conv2d.weight"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ModelWeightsError, match=r"missing keys: block8\.conv2d\.weight"):
        build_teacher({"name": "facenet_vggface2", "weights": str(tmp_path / "bad.pt")})
    del state["last_linear.weight"]
    state["block8.conv2d.weight"] = source.state_dict()["block8.conv2d.weight"]
    state["last_linear.weight"] = torch.zeros(128, 1792)
    torch.save(state, tmp_path / "shape.pt")
    with pytest.raises(ModelWeightsError, match=r"last_linear\.weight \(128, 1792\) != \(512, 1792\)"):
        build_teacher({"name": "facenet_vggface2", "weights": str(tmp_path / "shape.pt")})


def test_missing_weights_name_the_config_key():
    with pytest.raises(ModelWeightsError, match=r"teacher\.weights=.*20180402-114759-vggface2\.pt"):
        build_teacher({"name": "facenet_vggface2"})
