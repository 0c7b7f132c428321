"""ONNX export with the preprocessing inside the graph, checked against torch on real ORL faces."""
import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from facekd.data.datasets import load_images
from facekd.data.preprocess import Preprocess
from facekd.export import ExportError, check_onnx, export_onnx


class TinyClassifier(nn.Module):
    """uint8 images -> preprocess (48 px resize, mean/std) -> conv -> pool -> linear scores."""

    def __init__(self) -> None:
        super().__init__()
        self.preprocess = Preprocess(size=48, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
        self.conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(8, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(self.preprocess(images)).flatten(1))


@pytest.fixture(scope="module")
def faces(orl):
    """Six real ORL faces framed at 96 px, uint8 N x 3 x S x S."""
    return torch.from_numpy(load_images(orl.root, orl.paths[:6], 96)).permute(0, 3, 1, 2).contiguous()


def test_export_matches_torch_on_real_faces_at_any_batch(tmp_path, faces):
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.conv[1].running_mean.uniform_(-0.5, 0.5)
        model.conv[1].running_var.uniform_(0.5, 2.0)
    path = export_onnx(model, tmp_path / "m.onnx", 96, metadata={"classes": json.dumps(list("abcde"))})
    parity = check_onnx(path, model, faces)
    assert parity["ok"] and parity["images"] == 6 and parity["max_abs_diff"] < 1e-4
    assert parity["argmax_agreement"] == 1.0

    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    assert inp.name == "images" and inp.type == "tensor(uint8)" and inp.shape[1:] == [3, 96, 96]
    assert sess.get_outputs()[0].name == "scores"
    assert json.loads(sess.get_modelmeta().custom_metadata_map["classes"]) == list("abcde")
    for n in (1, 5):  # the batch dimension is dynamic
        got = sess.run(None, {"images": faces[:n].numpy()})[0]
        with torch.no_grad():
            want = model(faces[:n]).numpy()
        assert got.shape == (n, 5) and np.abs(got - want).max() < 1e-4


def test_check_onnx_refuses_float_input_and_flags_a_mismatch(tmp_path, faces):
    torch.manual_seed(0)
    model = TinyClassifier().eval()
    path = export_onnx(model, tmp_path / "m.onnx", 96)
    with pytest.raises(ValueError, match="uint8"):
        check_onnx(path, model, faces.float())
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.fc.bias.add_(1.0)
    bad = check_onnx(path, other, faces)
    assert not bad["ok"] and bad["max_abs_diff"] == pytest.approx(1.0, abs=1e-4)


def test_export_failure_is_one_clear_error(tmp_path):
    class Unexportable(nn.Module):
        def forward(self, images):  # control flow on pixel values: no static graph
            return images.float() if images.float().mean() > 100 else -images.float()

    with pytest.raises(ExportError, match="ONNX export of Unexportable failed"):
        export_onnx(Unexportable(), tmp_path / "x.onnx", 8)
    assert not (tmp_path / "x.onnx").exists()


def test_prelu_is_exported_as_relu_ops_with_the_same_values(tmp_path):
    import onnx

    from facekd.export import ReluPReLU, export_onnx, fast_prelu

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.PReLU(4), torch.nn.Flatten(1), torch.nn.Linear(4 * 6 * 6, 5),
                              torch.nn.PReLU())
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([0.1, -0.5, 2.0, 0.0]))
    x = torch.randn(3, 3, 8, 8)
    fast = fast_prelu(copy.deepcopy(net))
    assert isinstance(fast[1], ReluPReLU) and isinstance(fast[4], ReluPReLU)
    assert torch.allclose(fast(x), net(x), atol=1e-6)

    class OnImages(torch.nn.Module):
        def __init__(self, body):
            super().__init__()
            self.body = body

        def forward(self, images):
            return self.body(images.float() / 255.0)

    model = OnImages(net).eval()
    path = export_onnx(model, tmp_path / "m.onnx", 8)
    assert "PRelu" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    assert isinstance(model.body[1], torch.nn.PReLU)  # the caller's model is left as it was
    assert check_onnx(path, model, torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8))["ok"]
