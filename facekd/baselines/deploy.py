"""A comparison row's deployable model, for ``scripts/identify.py``.

A row whose predictor outputs class scores (``scratch``, ``transfer``, ``kd_labels``, ``subclass_kd``, ``skd``...)
saves, beside its ``result.json``:

* ``model.onnx``: uint8 RGB ``N x 3 x S x S`` faces framed as the data config frames them (``S`` =
  ``data.image_size``) -> ``N x C`` class scores, the row's preprocessing inside (the same input contract as a
  finetune run's ``model.onnx``), checked against torch on the val faces;
* ``open_set.json`` on an open-set split: the rejection threshold the row calibrated on the calibration
  unknowns;
* ``manifest.json`` (stage ``baseline``): the class names, the framing and the sha256 of both files.

Rows that output embeddings (classified by nearest class mean: ``pixels``, ``triplet``) save none.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from facekd.config import plain
from facekd.data.labeled import LabeledData, split_datasets

__all__ = ["STAGE", "ImagesToScores", "export_predictor"]

log = logging.getLogger(__name__)

STAGE = "baseline"


class ImagesToScores(nn.Module):
    """A scores :class:`~facekd.baselines.base.Predictor` on uint8 images: ``preprocess`` then the network."""

    def __init__(self, predictor: nn.Module) -> None:
        super().__init__()
        self.predictor = predictor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.predictor.preprocess(images))


def export_predictor(predictor: Any, data: LabeledData, run_dir: Path, method: str, cfg: Mapping[str, Any],
                     open_set: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """Save the row's model for ``identify`` (see module doc); returns what was saved, or ``None`` (embedding rows,
    or a network the ONNX exporter cannot trace: a warning says so and the row's result is unaffected)."""
    from facekd.export import ExportError, check_onnx, export_onnx
    from facekd.finetune.stage import ONNX_FILE, ONNX_INPUT_SPEC
    from facekd.hashing import artifact_checksums
    from facekd.openset import OPEN_SET_FILE, write_open_set
    from facekd.runs import write_manifest

    if predictor.output != "scores":
        return None
    classes = list(data.split.classes)
    size = int(data.cfg.get("image_size", 112))
    model = ImagesToScores(predictor).to("cpu").eval()
    try:
        path = export_onnx(model, Path(run_dir) / ONNX_FILE, size,
                           metadata={"classes": json.dumps(classes), "input": ONNX_INPUT_SPEC, "method": method})
    except ExportError as e:
        log.warning("%s: no model.onnx for identify (%s)", method, str(e).splitlines()[0])
        return None
    images = split_datasets(data, ("val",))["val"].tensors()[0][:16]
    parity = check_onnx(path, model, images)
    if not parity["ok"]:
        log.warning("%s: model.onnx differs from torch by %.3g (> %.3g)", method, parity["max_abs_diff"], parity["atol"])
    files = [ONNX_FILE]
    if open_set:
        write_open_set(run_dir, open_set["threshold"], open_set["far_target"], open_set["n_calibration"],
                       far_calibration=open_set.get("far_calibration"), split_id=data.split.id,
                       test={k: open_set[k] for k in ("dir", "far", "n_known", "n_unknown") if k in open_set})
        files.append(OPEN_SET_FILE)
    write_manifest(run_dir, STAGE, {"method": method, "method_config": plain(cfg), "data": plain(data.cfg)},
                   classes=classes, image_size=size, framing=data.cfg.get("framing", "pad"),
                   onnx_input=ONNX_INPUT_SPEC, split_id=data.split.id, parity=parity,
                   artifacts=artifact_checksums(run_dir, files), complete=True)
    return {"file": ONNX_FILE, "parity_max_abs_diff": parity["max_abs_diff"]}
