"""The model card's deployed columns: each network as the ONNX file it would ship as, fp32 and int8, timed.

With ``deployed`` (:func:`facekd.modelcard.model_cards`), every student (at each input size, random init) and
SFace (the torch port, embedded weights) is wrapped as :mod:`facekd.embedder` ships a model,
``ImagesToEmbeddings``: uint8 faces in, the preprocessing inside, the L2-normalised ``embed`` out.  It is exported to
fp32 ONNX in a temporary folder, quantized to int8 by :func:`facekd.quantize.quantize_onnx` calibrated on
:data:`CALIBRATION_FACES` faces of the embedded DCGAN generator (seeds ``0..N-1``, resized to the network's input),
and both files are timed by :func:`facekd.modelcard.onnx_card`.

SFace's own file (OpenCV Zoo, int8 block-quantized: float 0-255 input ``data``, batch 1) is timed as shipped, as
one more row, through :func:`~facekd.models.teachers.sface.sface_onnxruntime_session` (which makes it loadable;
its defaults are the card's options).  The speed-up column divides SFace's fp32 ONNX time, measured in the same
run (also when SFace has no row of its own), by each int8 time.  Teachers that need a user weights file get no
deployed figures.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch import nn

from facekd.assets import EMBEDDED_ASSETS, resolve
from facekd.embedder import EMBEDDER_OUTPUT, Features, ImagesToEmbeddings
from facekd.export import export_onnx
from facekd.generators import GENERATORS
from facekd.modelcard import onnx_card, session_card
from facekd.models.teachers.sface import sface_onnxruntime_session
from facekd.quantize import int8_path, quantize_onnx

__all__ = ["CALIBRATION_FACES", "REFERENCE", "Deployment", "deployment", "calibration_faces"]

log = logging.getLogger(__name__)

CALIBRATION_FACES = 64
REFERENCE = "sface"  # the teacher whose fp32 ONNX time is the speed-up's reference
DEPLOYED_KEYS = ("onnx_fp32_ms", "onnx_fp32_busy", "onnx_int8_ms", "onnx_int8_busy", "int8_mb", "x_faster",
                 "x_faster_fp32")


@functools.lru_cache(maxsize=4)
def calibration_faces(size: int, n: int = CALIBRATION_FACES) -> np.ndarray:
    """``n`` faces of the embedded DCGAN generator (seeds ``0..n-1``) at ``size`` px: uint8 n x 3 x S x S, read-only."""
    sampler = GENERATORS.get("dcgan")(device="cpu")
    faces = sampler.sample(list(range(n)), size).permute(0, 3, 1, 2).contiguous().numpy()
    faces.setflags(write=False)
    return faces


class Deployment:
    """One card run's deployed measurements: a temporary folder for the files, and the timing settings."""

    def __init__(self, folder: Path, repeats: int, warmup: int) -> None:
        self.folder, self.repeats, self.warmup = Path(folder), int(repeats), int(warmup)
        self.reference_ms: float | None = None

    def _time(self, path: Path) -> dict[str, Any]:
        return onnx_card(path, repeats=self.repeats, warmup=self.warmup)

    def export(self, model: nn.Module, size: int, tag: str) -> Path:
        """``model`` (uint8 images -> embeddings) as fp32 ONNX in the temporary folder."""
        return export_onnx(model, self.folder / f"{tag}.onnx", size, output_name=EMBEDDER_OUTPUT)

    def embedder(self, model: nn.Module, size: int, tag: str) -> dict[str, Any]:
        """Export ``model`` to fp32 ONNX, quantize it to int8 on DCGAN faces, and time both files."""
        log.info("deployed card: %s (%d px): export, int8 quantization, timing", tag, size)
        fp32 = self.export(model, size, tag)
        int8 = quantize_onnx(fp32, int8_path(fp32), calibration_faces(size), key="model_card calibration faces")
        a, b = self._time(fp32), self._time(int8)
        return {"onnx_fp32_ms": a["onnx_ms_per_img"], "onnx_fp32_busy": a["busy"], "onnx_int8_ms": b["onnx_ms_per_img"],
                "onnx_int8_busy": b["busy"], "int8_mb": b["file_mb"]}

    def student(self, net: nn.Module, size: int) -> dict[str, Any]:
        """Deployed figures of a student: its L2-normalised ``embed`` behind its own preprocessing."""
        return self.embedder(ImagesToEmbeddings(Features(net, "embed"), net.preprocess), size, f"{net.name}-{size}")

    def teacher(self, name: str, net: nn.Module, row: dict[str, Any], *, real_weights: bool) -> list[dict[str, Any]]:
        """Deployed figures of a teacher's ``row`` (SFace only), and the row of SFace's file as shipped."""
        if name != REFERENCE or not real_weights:
            return []
        row.update(self.embedder(ImagesToEmbeddings(net, net.preprocess), net.preprocess.size, name))
        self.reference_ms = row["onnx_fp32_ms"]
        return [self.shipped_sface(row)]

    def shipped_sface(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row of SFace's own int8 block-quantized ONNX file, timed as shipped (same network as ``row``)."""
        path = resolve("sface")
        card = session_card(sface_onnxruntime_session(path, outputs=(), threads=1), repeats=self.repeats,
                            warmup=self.warmup)
        return {**{k: row[k] for k in ("role", "input", "params", "mflops")}, "network": "sface (file as shipped)",
                "output": "128 (fc1)", "cpu_ms_per_img": None, "cpu_share": None, "load1": card["load1"], "busy": False,
                "weights": f"{EMBEDDED_ASSETS['sface'].filename}: int8 block-quantized weights, float activations",
                "onnx_fp32_ms": None, "onnx_int8_ms": card["onnx_ms_per_img"], "onnx_int8_busy": card["busy"],
                "int8_mb": path.stat().st_size / 1e6}

    def reference(self) -> float:
        """SFace's fp32 ONNX time in this run (exported and timed now when SFace has no row)."""
        if self.reference_ms is None:
            from facekd.embedder import ImagesToEmbeddings
            from facekd.models import build_teacher

            net = build_teacher({"name": REFERENCE})
            self.reference_ms = self._time(self.export(ImagesToEmbeddings(net, net.preprocess), net.preprocess.size,
                                                       f"{REFERENCE}-reference"))["onnx_ms_per_img"]
        return self.reference_ms

    def add_speedups(self, rows: list[dict[str, Any]]) -> None:
        """Fill every row's deployed keys (None where not measured), ``x_faster`` (reference / int8 time) and
        ``x_faster_fp32`` (reference / fp32 time)."""
        ref = self.reference() if any(r.get("onnx_int8_ms") for r in rows) else None
        for r in rows:
            for k in DEPLOYED_KEYS:
                r.setdefault(k, None)
            r["x_faster"] = ref / r["onnx_int8_ms"] if ref and r["onnx_int8_ms"] else None
            r["x_faster_fp32"] = ref / r["onnx_fp32_ms"] if ref and r["onnx_fp32_ms"] else None


@contextlib.contextmanager
def deployment(enabled: bool, *, repeats: int, warmup: int) -> Iterator[Deployment | None]:
    """A :class:`Deployment` over a temporary folder (removed afterwards), or None when ``enabled`` is false."""
    if not enabled:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="facekd-model-card-") as tmp:
        yield Deployment(Path(tmp), repeats, warmup)
