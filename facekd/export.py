"""ONNX export of an image model, and a parity check of the export against torch with onnxruntime.

The exported graph takes what a camera pipeline has: ``images``, uint8 RGB ``N x 3 x S x S`` (N dynamic),
and returns whatever the model returns (``scores`` for a classifier).  Any preprocessing the model does
in ``forward`` (resize, scaling, mean/std) is part of the graph, so deployment needs no Python.
The export uses ``torch.onnx.export(dynamo=True)`` (which needs ``onnxscript``); PReLUs are exported as
``relu(x) + a * min(x, 0)`` (:func:`fast_prelu`), the same values in ops onnxruntime runs fast.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from facekd.runs import atomic_path
from facekd.errors import FacekdError

__all__ = ["ExportError", "export_onnx", "check_onnx", "fast_prelu", "ReluPReLU", "INPUT_NAME", "OUTPUT_NAME"]

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "scores"


class ExportError(FacekdError, RuntimeError):
    """The model could not be exported, or the export disagrees with torch."""


class ReluPReLU(nn.Module):
    """A PReLU written as ``relu(x) + a * min(x, 0)``: the same values, exported as ops onnxruntime runs fast.

    onnxruntime's PRelu kernel is slow on the CPU and breaks its blocked conv layout: SFace's fp32 export spent
    about 12 of its 27 ms in PRelu on one thread.
    """

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.weight if self.weight.numel() == 1 else self.weight.view(1, -1, *([1] * (x.ndim - 2)))
        return torch.relu(x) + a * torch.clamp(x, max=0.0)


def fast_prelu(model: nn.Module) -> nn.Module:
    """Replace every ``nn.PReLU`` of ``model`` (in place) by :class:`ReluPReLU`; returns ``model``."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.PReLU):
            setattr(model, name, ReluPReLU(child))
        else:
            fast_prelu(child)
    return model


def export_onnx(model: nn.Module, path: str | os.PathLike, image_size: int, *,
                metadata: Mapping[str, Any] | None = None, opset: int = 18, output_name: str = OUTPUT_NAME) -> Path:
    """Export ``model`` (uint8 ``N x 3 x S x S`` images -> ``N x K``) to ``path`` as one self-contained ONNX file.

    The batch dimension is dynamic, ``S = image_size`` is fixed.  ``metadata`` (string values, e.g. the
    class names as JSON) is stored in the file's ``metadata_props``.  The model is exported from a CPU
    float32 copy in eval mode; the original is left untouched.
    """
    import copy

    import onnx

    cpu = fast_prelu(copy.deepcopy(model).to("cpu").float().eval())
    example = torch.zeros(2, 3, image_size, image_size, dtype=torch.uint8)
    arg = next(iter(_forward_args(cpu)))
    batch = torch.export.Dim("batch", min=1, max=4096)
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings(), _quiet_loggers(), \
            contextlib.redirect_stdout(io.StringIO()) as out:
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(cpu, (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[output_name], dynamic_shapes={arg: {0: batch}},
                                        opset_version=opset, external_data=False, verbose=False)
        except Exception as e:  # the exporter raises many types; report them as one
            raise ExportError(f"ONNX export of {type(model).__name__} failed: {type(e).__name__}: {e}\n"
                              f"{out.getvalue()[-2000:]}") from e
        proto = program.model_proto
        for k, v in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = str(k), str(v)
        onnx.save_model(proto, str(tmp))
    onnx.checker.check_model(str(path))
    return path


@contextlib.contextmanager
def _quiet_loggers(names: tuple[str, ...] = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export")):
    """Silence the exporter's INFO chatter (its optimizer passes log every step)."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _forward_args(model: nn.Module) -> list[str]:
    import inspect

    return [n for n, p in inspect.signature(model.forward).parameters.items()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@torch.no_grad()
def check_onnx(path: str | os.PathLike, model: nn.Module, images: torch.Tensor, *, atol: float = 1e-3) -> dict[str, Any]:
    """Run the ONNX file with onnxruntime (CPU) and the torch ``model`` (CPU, float32) on the same uint8 images.

    Returns ``{"images", "max_abs_diff", "argmax_agreement", "min_cosine", "atol", "ok"}``; ``ok`` is whether the largest
    absolute difference of the outputs is within ``atol``.
    """
    import copy

    import onnxruntime as ort

    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"check_onnx needs a uint8 N x 3 x S x S batch, got {images.dtype} {tuple(images.shape)}")
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: images.cpu().numpy()})[0]
    cpu = copy.deepcopy(model).to("cpu").float().eval()
    want = cpu(images.cpu()).float().numpy()
    if got.shape != want.shape:
        raise ExportError(f"ONNX output has shape {got.shape}, torch {want.shape}")
    diff = float(np.abs(got - want).max())
    agree = float((got.argmax(1) == want.argmax(1)).mean()) if want.ndim == 2 else float("nan")
    g, w = got.reshape(len(got), -1).astype(np.float64), want.reshape(len(want), -1).astype(np.float64)
    cos = (g * w).sum(1) / np.maximum(np.linalg.norm(g, axis=1) * np.linalg.norm(w, axis=1), 1e-12)
    return {"images": int(len(images)), "max_abs_diff": diff, "argmax_agreement": agree,
            "min_cosine": float(cos.min()) if len(cos) else float("nan"), "atol": atol, "ok": bool(diff <= atol)}
