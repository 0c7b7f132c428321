"""Post-training static int8 quantization of facekd's ONNX models, and the parity check that gates shipping one.

:func:`quantize_onnx` turns an exported ``model.onnx`` or ``embedder.onnx`` (input ``images``, uint8
``N x 3 x S x S``, preprocessing inside) into ``model.int8.onnx`` (:func:`int8_path`) with onnxruntime's
quantization tools: ``quant_pre_process`` (ONNX shape inference and graph clean-up; its symbolic shape
inference is skipped, it fails on the ``Expand`` of the exported L2 normalisation), then ``quantize_static`` in
QDQ format, calibrated on **unlabeled** faces (synthetic ones from a generate run; never labels or test photos).
:func:`int8_parity` compares the two files on the same images, :func:`check_int8_parity` refuses a copy that
lost too much.

Choices, measured on one CPU thread (AVX-512 VNNI) with onnxruntime 1.32 on SFace (real weights), and on a
MobileNet-v2 and a ResNet-18 (random init, BatchNorm statistics re-estimated) at 112 px, calibrated on 64 DCGAN
faces and compared with fp32 on 32 others:

* weights int8 per output channel, activations uint8 per tensor: int8 activations ran 1.8x (MobileNet) to 3.3x
  (ResNet) slower, as the CPU kernels want u8 x s8; per-tensor weights and ``reduce_range`` cost parity (ResNet
  smallest cosine 0.9973 -> 0.9891 and 0.9954) and gained nothing; QDQ and QOperator ran equally fast, and QDQ is
  the portable format; ``quant_pre_process`` changed neither speed nor parity, and is kept as recommended;
* ranges: percentile 99.999 of each activation's histogram (smallest cosine with min-max ranges: SFace 0.9864 ->
  0.9920, ResNet 0.9965 -> 0.9973); min-max when numpy cannot bin a tensor whose values all but coincide;
* in float: everything after the last Conv/Gemm/MatMul (an embedder's L2 normalisation), the outputs of
  Gemm/MatMul (the scores or embedding stay float), unfused BatchNorms, and every depthwise conv followed by an op
  that onnxruntime cannot fuse into an int8 conv (``PRelu``): there int8 only adds a Quantize/Dequantize pair
  around a memory-bound layer (SFace: 22.3 -> 17.7 ms, smallest cosine 0.983 -> 0.992; fp32 ONNX: 24.5 ms).

Calibration runs one batch at a time, so its memory is that of one batch's activations.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from facekd.errors import FacekdError
from facekd.runs import atomic_path

__all__ = ["QuantizeError", "INT8_SUFFIX", "int8_path", "quantize_onnx", "int8_parity", "check_int8_parity", "onnx_outputs"]

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"
PERCENTILE = 99.999
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul")
# ops that onnxruntime's CPU provider runs in int8 after a quantized conv (QDQ fusions); any other consumer of a
# depthwise conv's output runs in float, between a Dequantize and a Quantize
INT8_CONSUMERS = frozenset({"Conv", "Relu", "Clip", "Add", "Mul", "MaxPool", "AveragePool", "GlobalAveragePool",
                            "LeakyRelu", "Sigmoid", "Concat", "Gemm", "MatMul", "Reshape", "Flatten", "Transpose"})
FLOAT_OPS = ("BatchNormalization",)  # no int8 kernel on the CPU: a BatchNorm left unfused runs in float anyway
_WHY = ("int8 quantization needs unlabeled synthetic faces to calibrate on (e.g. the images of a generate run), "
        "never labels or test photos")


class QuantizeError(FacekdError, ValueError):
    """An int8 quantization that cannot be made from the given input, or whose parity with fp32 is too low."""


def int8_path(path: str | os.PathLike) -> Path:
    """Where the int8 copy of an ONNX file goes: ``model.onnx`` -> ``model.int8.onnx`` beside it."""
    path = Path(path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(stem + INT8_SUFFIX)


def _check_images(images: Any, key: str, size: int | None) -> np.ndarray:
    """``images`` as uint8 N x 3 x S x S (S = ``size`` when the model fixes it), or a QuantizeError naming ``key``."""
    arr = images.numpy() if hasattr(images, "numpy") else np.asarray(images)
    shape = tuple(arr.shape)
    if arr.ndim == 0 or arr.size == 0:
        raise QuantizeError(f"{key} holds no images: {_WHY}. Give at least one batch of uint8 N x 3 x S x S faces.")
    if arr.dtype != np.uint8 or arr.ndim != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise QuantizeError(f"{key} must be uint8 RGB faces N x 3 x S x S, got {arr.dtype} {shape}: {_WHY}.")
    if size is not None and shape[2] != size:
        raise QuantizeError(f"{key} faces are {shape[2]} px, the model takes {size} px: resize them to {size} "
                            f"(the model's own input size); {_WHY}.")
    return np.ascontiguousarray(arr)


def _input_spec(model: Any) -> tuple[str, int | None]:
    """Name of the graph's image input and its fixed side S (None when dynamic)."""
    inp = model.graph.input[0]
    dims = inp.type.tensor_type.shape.dim
    side = dims[-1].dim_value if len(dims) == 4 and dims[-1].HasField("dim_value") else None
    return inp.name, side or None


def _batches(images: np.ndarray, name: str, batch_size: int) -> Any:
    """A CalibrationDataReader over ``images`` in batches; ``set_range`` lets onnxruntime calibrate one at a time."""
    from onnxruntime.quantization import CalibrationDataReader

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = [{name: images[i:i + batch_size]} for i in range(0, len(images), batch_size)]
            self.set_range(0, len(self.feeds))

        def __len__(self) -> int:
            return len(self.feeds)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.todo = iter(self.feeds[start_index:end_index])

        def get_next(self) -> dict | None:
            return next(self.todo, None)

    return Batches()


def _float_nodes(model: Any) -> list[str]:
    """Nodes kept in float: depthwise convs feeding a float-only op, unfused BatchNorms, and the tail after the last
    weighted op."""
    nodes = list(model.graph.node)
    weighted = [i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS]
    tail = nodes[weighted[-1] + 1:] if weighted else []
    consumers: dict[str, set[str]] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, set()).add(n.op_type)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    depthwise = [n for n in nodes if n.op_type == "Conv" and len(n.input) > 1
                 and len(shapes.get(n.input[1], ())) == 4 and shapes[n.input[1]][1] == 1
                 and _group(n) > 1 and not consumers.get(n.output[0], set()) <= INT8_CONSUMERS]
    unfused = [n for n in nodes if n.op_type in FLOAT_OPS]
    return list(dict.fromkeys(n.name for n in depthwise + unfused + tail))


def _group(node: Any) -> int:
    return next((int(a.i) for a in node.attribute if a.name == "group"), 1)


def _named(model: Any) -> None:
    """Give every unnamed node a unique name (the quantizer selects nodes to exclude by name)."""
    seen = {n.name for n in model.graph.node if n.name}
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
            while n.name in seen:
                n.name += "_"
            seen.add(n.name)


def _description(n_images: int, method: str, per_channel: bool, float_nodes: list[str]) -> str:
    import onnxruntime

    return json.dumps({"format": "QDQ static int8", "weights": "int8 symmetric " + (
        "per output channel" if per_channel else "per tensor"), "activations": "uint8 per tensor",
        "calibration": f"{method} over {n_images} unlabeled images", "float_nodes": float_nodes,
        "onnxruntime": onnxruntime.__version__})


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """Hide the quantizer's chatter: the histogram calibrator prints its progress, and the quantizer logs each
    weight scale it widens to the root logger at INFO."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _quantize_static(src: Path, dst: Path, reader: Any, per_channel: bool, float_nodes: list[str], source: Path) -> str:
    """onnxruntime's ``quantize_static`` of ``source`` (prepared as ``src``) with the measured choices (see the module
    docstring); returns how the ranges were calibrated."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    def run(method: CalibrationMethod) -> None:
        reader.set_range(0, len(reader))
        with _quiet_onnxruntime():
            quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            reduce_range=False, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            nodes_to_exclude=float_nodes, calibrate_method=method,
                            extra_options={"CalibPercentile": PERCENTILE, "CalibStridedMinMax": 1,
                                           "OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"]})

    try:
        run(CalibrationMethod.Percentile)
        return f"percentile {PERCENTILE}"
    except ValueError as e:  # numpy cannot bin a tensor whose values all but coincide (a collapsed random net's norm)
        log.info("percentile calibration of %s failed (%s); calibrating on min-max ranges", source, e)
        run(CalibrationMethod.MinMax)
        return f"min-max (percentile failed: {e})"


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike, calibration: np.ndarray, *,
                  per_channel: bool = True, batch_size: int = 32, key: str = "calibration") -> Path:
    """Static int8 (QDQ, weights QInt8 per channel, activations QUInt8) of ``src`` calibrated on ``calibration``.

    ``calibration``: uint8 N x 3 x S x S faces, no labels (``key`` names it in errors). The result is written
    atomically to ``dst``; the ``metadata_props`` of ``src`` are kept, plus a ``quantization`` entry (JSON)
    describing how it was made. Intermediate files live in a temporary folder.
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise QuantizeError(f"{src} does not exist: export the fp32 ONNX model first (facekd.export.export_onnx)")
    model = onnx.load(str(src))
    name, side = _input_spec(model)
    images = _check_images(calibration, key, side)
    if batch_size < 1:
        raise QuantizeError(f"batch_size must be >= 1 (calibration images per onnxruntime run), got {batch_size}")
    with tempfile.TemporaryDirectory(prefix="facekd-quantize-") as tmp:
        pre, out = Path(tmp) / "pre.onnx", Path(tmp) / "int8.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        prepared = onnx.load(str(pre))
        _named(prepared)
        onnx.save_model(prepared, str(pre))
        float_nodes = _float_nodes(prepared)
        reader = _batches(images, name, batch_size)
        method = _quantize_static(pre, out, reader, per_channel, float_nodes, source=src)
        quantized = onnx.load(str(out))
    del quantized.metadata_props[:]
    for entry in model.metadata_props:
        if entry.key != "quantization":
            quantized.metadata_props.add(key=entry.key, value=entry.value)
    how = _description(len(images), method, per_channel, float_nodes)
    quantized.metadata_props.add(key="quantization", value=how)
    with atomic_path(dst) as tmp_dst:
        onnx.save_model(quantized, str(tmp_dst))
    return dst


def _session(path: str | os.PathLike) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a file it cannot load
        raise QuantizeError(f"{path} cannot be loaded by onnxruntime ({type(e).__name__}: {e}); "
                            "export or quantize it again") from e


def onnx_outputs(path: str | os.PathLike, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """The first output of an ONNX file on uint8 ``images`` (onnxruntime, CPU), in batches, as float64."""
    sess = _session(path)
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: images[i:i + batch_size]})[0]
                           for i in range(0, len(images), batch_size)]).astype(np.float64)


def int8_parity(fp32: str | os.PathLike, int8: str | os.PathLike, images: np.ndarray) -> dict:
    """Both files on the same uint8 N x 3 x S x S images (onnxruntime, CPU).

    Returns ``{"images", "min_cosine", "mean_cosine", "top1_agreement", "max_abs_diff"}``: the cosine of each
    image's two output rows, the share of images whose largest output has the same index in both (the class of
    a score model), and the largest absolute difference of any output.
    """
    images = _check_images(images, "parity images", None)
    want, got = onnx_outputs(fp32, images), onnx_outputs(int8, images)
    if want.shape != got.shape:
        raise QuantizeError(f"{int8} outputs {got.shape}, {fp32} {want.shape}: they are not the same model")
    w, g = want.reshape(len(want), -1), got.reshape(len(got), -1)
    cos = (w * g).sum(1) / np.maximum(np.linalg.norm(w, axis=1) * np.linalg.norm(g, axis=1), 1e-12)
    return {"images": int(len(images)), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "top1_agreement": float((w.argmax(1) == g.argmax(1)).mean()),
            "max_abs_diff": float(np.abs(w - g).max())}


def check_int8_parity(report: dict, *, min_cosine: float, min_agreement: float | None, what: str, key: str) -> None:
    """Refuse (QuantizeError) an int8 ``what`` whose :func:`int8_parity` ``report`` is below a bound.

    ``min_agreement`` None skips the top-1 check (embeddings). The message names the figure, the bound and the
    config key to relax (``<key>.min_cosine`` or ``<key>.min_agreement``).
    """
    n = report.get("images", 0)
    checks = [("min_cosine", "smallest cosine to the fp32 outputs", report["min_cosine"], min_cosine)]
    if min_agreement is not None:
        checks.append(("min_agreement", "top-1 agreement with fp32", report["top1_agreement"], min_agreement))
    for name, figure, value, bound in checks:
        if not value >= bound:  # a NaN fails too
            raise QuantizeError(
                f"the int8 {what} was refused, not shipped: its {figure} over {n} images is {value:.4f}, below "
                f"{key}.{name}={bound}. Calibrate on more (or more varied) synthetic faces, ship the fp32 model "
                f"only, or relax {key}.{name} if this loss is acceptable.")
