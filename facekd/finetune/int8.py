"""The finetune stage's int8 copies: ``model.int8.onnx`` and ``embedder.int8.onnx`` beside the fp32 files.

Static int8 (:mod:`facekd.quantize`) calibrated on **unlabeled synthetic faces**: the last ``faces`` faces of the
generate run the student was distilled on (its held-out end), framed and coloured as the labeled photos are
shown to the model.  No label and no test photo is used to make them.  Each copy is compared with its fp32
file on the val photos; one below ``finetune.int8.min_cosine`` (or, for the classifier, below
``finetune.int8.min_agreement`` top-1 agreement) is refused and not written, with a warning that says why.
The report also gives the int8 classifier's test accuracy beside the fp32 one (reported, never used to choose).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from facekd.errors import ConfigError
from facekd.finetune.synthetic import student_synthetic_faces
from facekd.quantize import QuantizeError, check_int8_parity, int8_parity, int8_path, onnx_outputs, quantize_onnx

__all__ = ["INT8_DEFAULTS", "check_int8", "calibration_faces", "ship_int8"]

log = logging.getLogger(__name__)

INT8_DEFAULTS = {"enabled": False, "faces": 256, "min_cosine": 0.98, "min_agreement": 0.95}
KEY = "finetune.int8"


def check_int8(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``finetune.int8`` section with defaults filled in; unknown keys and bad bounds are refused by name."""
    sec = dict(section or {})
    unknown = sorted(set(sec) - set(INT8_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown {KEY} key(s) {', '.join(unknown)}; it accepts: {', '.join(INT8_DEFAULTS)}")
    out = {**INT8_DEFAULTS, **sec}
    if not isinstance(out["enabled"], bool):
        raise ConfigError(f"{KEY}.enabled must be true or false, got {out['enabled']!r}")
    if not (isinstance(out["faces"], int) and out["faces"] >= 1):
        raise ConfigError(f"{KEY}.faces must be a positive number of synthetic calibration faces, got {out['faces']!r}")
    for k in ("min_cosine", "min_agreement"):
        if not (isinstance(out[k], (int, float)) and 0.0 <= float(out[k]) <= 1.0):
            raise ConfigError(f"{KEY}.{k} must lie in [0, 1], got {out[k]!r}")
    return out


def calibration_faces(student_manifest: Mapping[str, Any], n: int, image_size: int, grey: bool) -> np.ndarray:
    """The last ``n`` faces of the student's generate run (its held-out end), shown as the labeled photos are."""
    return student_synthetic_faces(student_manifest, n, image_size, grey, KEY)


def ship_int8(run_dir: Path, files: list[str], calibration: np.ndarray, val_images: torch.Tensor,
              test_images: torch.Tensor, test_labels: torch.Tensor, section: Mapping[str, Any]) -> dict[str, Any]:
    """Quantize each ONNX file of ``files`` in ``run_dir``; keep the copies whose val parity holds.

    Returns ``{file: {"file", "shipped", parity figures, "refused" (the reason) | "test_accuracy" figures}}``."""
    report: dict[str, Any] = {}
    val = val_images.numpy()
    for name in files:
        src = Path(run_dir) / name
        dst = quantize_onnx(src, int8_path(src), calibration, key=f"{KEY}.faces")
        info: dict[str, Any] = {"file": dst.name, "calibration_faces": int(len(calibration)),
                                **{f"val_{k}": v for k, v in int8_parity(src, dst, val).items()}}
        scores = name.startswith("model")
        try:
            check_int8_parity({k[4:]: v for k, v in info.items() if k.startswith("val_")},
                              min_cosine=float(section["min_cosine"]),
                              min_agreement=float(section["min_agreement"]) if scores else None,
                              what=f"copy of {name}", key=KEY)
        except QuantizeError as e:
            dst.unlink(missing_ok=True)
            log.warning("%s", e)
            report[name] = {**info, "file": None, "shipped": False, "refused": str(e)}
            continue
        if scores and len(test_images):
            labels = test_labels.numpy()
            acc = {p: float((onnx_outputs(f, test_images.numpy()).argmax(1) == labels).mean()) for p, f in
                   (("fp32", src), ("int8", dst))}
            info["test_accuracy"] = acc
        report[name] = {**info, "shipped": True}
        log.info("int8 %s: smallest cosine to fp32 on val %.4f, top-1 agreement %.3f", dst.name,
                 info["val_min_cosine"], info["val_top1_agreement"])
    return report
