"""Static int8 quantization of exported ONNX models: the int8 file runs, agrees with fp32, is smaller, keeps
metadata."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from facekd.data.preprocess import Preprocess
from facekd.embedder import Features, ImagesToEmbeddings
from facekd.export import export_onnx
from facekd.quantize import INT8_SUFFIX, QuantizeError, check_int8_parity, int8_parity, int8_path, quantize_onnx

SIZE = 32


class TinyDepthwiseNet(nn.Module):
    """uint8 images -> preprocess -> conv, depthwise conv + PReLU, pointwise conv, depthwise conv + ReLU -> 32
    scores."""

    def __init__(self) -> None:
        super().__init__()
        self.preprocess = Preprocess(size=SIZE, mean=(0.5,) * 3, std=(0.25,) * 3)
        self.body = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.BatchNorm2d(16), nn.PReLU(16),
            nn.Conv2d(16, 64, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(64 * 8 * 8, 32)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.preprocess(images))


def _images(n: int, seed: int) -> np.ndarray:
    """Smooth random uint8 'faces' N x 3 x S x S (blurred noise, so activations are not pure noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIZE // 4, SIZE // 4, generator=g)
    x = nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny net exported as a score model and as an embedder, each quantized on 48 calibration images."""
    torch.manual_seed(0)
    net = TinyDepthwiseNet().eval()
    with torch.no_grad():  # BatchNorm statistics of the calibration-like data, as training would leave them
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = None
        net.train()(torch.from_numpy(_images(64, 1)))
        net.eval()
    folder = tmp_path_factory.mktemp("quantize")
    scores = export_onnx(net, folder / "model.onnx", SIZE, metadata={"classes": json.dumps(list(range(32)))})
    embedder = export_onnx(ImagesToEmbeddings(Features(net, "features"), net.preprocess), folder / "embedder.onnx", SIZE,
                           output_name="embeddings")
    cal = _images(48, 2)
    return {"folder": folder, "scores": scores, "embedder": embedder, "cal": cal,
            "scores_int8": quantize_onnx(scores, int8_path(scores), cal, batch_size=16),
            "embedder_int8": quantize_onnx(embedder, int8_path(embedder), cal)}


def test_int8_path_sits_beside_the_fp32_file(tmp_path):
    assert INT8_SUFFIX == ".int8.onnx"
    assert int8_path(tmp_path / "model.onnx") == tmp_path / "model.int8.onnx"
    assert int8_path("run/embedder.onnx").as_posix() == "run/embedder.int8.onnx"
    assert int8_path("net").name == "net.int8.onnx"


def test_int8_score_model_runs_agrees_and_is_smaller(exported):
    import onnx
    import onnxruntime as ort

    src, dst = exported["scores"], exported["scores_int8"]
    assert dst == exported["folder"] / "model.int8.onnx"
    assert sorted(p.name for p in exported["folder"].iterdir()) == ["embedder.int8.onnx", "embedder.onnx",
                                                                    "model.int8.onnx", "model.onnx"]  # no leftovers
    sess = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "images" and sess.get_inputs()[0].type == "tensor(uint8)"
    for n in (1, 5):  # the batch stays dynamic
        assert sess.run(None, {"images": _images(n, 3)})[0].shape == (n, 32)
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    assert dst.stat().st_size < 0.5 * src.stat().st_size
    report = int8_parity(src, dst, _images(32, 4))
    assert set(report) == {"images", "min_cosine", "mean_cosine", "top1_agreement", "max_abs_diff"}
    assert report["images"] == 32 and report["min_cosine"] > 0.98 and report["top1_agreement"] >= 0.8
    check_int8_parity(report, min_cosine=0.98, min_agreement=0.8, what="classifier", key="finetune.int8")


def test_metadata_is_kept_and_the_quantization_described(exported):
    import onnx
    import onnxruntime as ort

    meta = ort.InferenceSession(str(exported["scores_int8"]), providers=["CPUExecutionProvider"]) \
        .get_modelmeta().custom_metadata_map
    assert json.loads(meta["classes"]) == list(range(32))
    how = json.loads(meta["quantization"])
    assert how["format"] == "QDQ static int8" and "48 unlabeled images" in how["calibration"]
    # the export writes the PReLU as relu ops, so every conv runs in int8; nothing follows the last Gemm
    assert how["float_nodes"] == []
    embedder = ort.InferenceSession(str(exported["embedder_int8"]), providers=["CPUExecutionProvider"])
    floats = json.loads(embedder.get_modelmeta().custom_metadata_map["quantization"])["float_nodes"]
    assert floats and not any("Conv" in n or "Gemm" in n for n in floats)  # only the L2 normalisation after it
    assert "PRelu" not in {n.op_type for n in onnx.load(str(exported["embedder_int8"])).graph.node}


def test_int8_embedder_keeps_unit_rows(exported):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported["embedder_int8"]), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].name == "embeddings"
    out = sess.run(None, {"images": _images(8, 5)})[0]
    assert out.shape == (8, 32) and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert int8_parity(exported["embedder"], exported["embedder_int8"], _images(16, 6))["min_cosine"] > 0.98


@pytest.mark.parametrize("calibration, match", [
    (np.zeros((0, 3, SIZE, SIZE), np.uint8), "holds no images"),
    (np.zeros((4, 3, SIZE, SIZE), np.float32), "must be uint8"),
    (np.zeros((4, SIZE, SIZE, 3), np.uint8), "must be uint8"),
    (np.zeros((4, 3, 16, 16), np.uint8), "take 32 px|takes 32 px"),
])
def test_bad_calibration_is_refused_naming_the_key(exported, tmp_path, calibration, match):
    with pytest.raises(QuantizeError, match=match) as err:
        quantize_onnx(exported["scores"], tmp_path / "x.int8.onnx", calibration, key="quantize.calibration")
    assert "quantize.calibration" in str(err.value) and "unlabeled synthetic faces" in str(err.value)
    assert not list(tmp_path.iterdir())


def test_check_int8_parity_refuses_below_a_bound_and_passes_above():
    report = {"images": 10, "min_cosine": 0.95, "mean_cosine": 0.99, "top1_agreement": 0.9, "max_abs_diff": 0.1}
    check_int8_parity(report, min_cosine=0.95, min_agreement=0.9, what="classifier", key="finetune.int8")
    check_int8_parity(report, min_cosine=0.9, min_agreement=None, what="embedder", key="finetune.int8")
    with pytest.raises(QuantizeError, match=r"refused, not shipped.*0\.9500.*finetune\.int8\.min_cosine=0\.97"):
        check_int8_parity(report, min_cosine=0.97, min_agreement=None, what="embedder", key="finetune.int8")
    with pytest.raises(QuantizeError, match=r"top-1 agreement.*0\.9000.*finetune\.int8\.min_agreement=0\.95"):
        check_int8_parity(report, min_cosine=0.9, min_agreement=0.95, what="classifier", key="finetune.int8")
    with pytest.raises(QuantizeError, match="min_cosine"):  # a NaN figure is not a pass
        check_int8_parity({**report, "min_cosine": float("nan")}, min_cosine=0.9, min_agreement=None, what="x", key="k")


def test_min_max_ranges_when_percentile_calibration_fails(exported, tmp_path, monkeypatch):
    """numpy cannot bin a tensor whose values all but coincide (a collapsed random net's norm): min-max ranges then."""
    import onnxruntime as ort
    import onnxruntime.quantization as oq

    real = oq.quantize_static

    def percentile_fails(*args, **kwargs):
        if kwargs["calibrate_method"] == oq.CalibrationMethod.Percentile:
            raise ValueError("Too many bins for data range. Cannot create 2048 finite-sized bins.")
        return real(*args, **kwargs)

    monkeypatch.setattr(oq, "quantize_static", percentile_fails)
    dst = quantize_onnx(exported["scores"], tmp_path / "m.int8.onnx", exported["cal"])
    how = json.loads(ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
                     .get_modelmeta().custom_metadata_map["quantization"])
    assert how["calibration"].startswith("min-max (percentile failed: Too many bins")
    assert int8_parity(exported["scores"], dst, _images(16, 7))["min_cosine"] > 0.98
