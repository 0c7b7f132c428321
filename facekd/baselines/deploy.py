"""A comparison row's deployable model, for ``scripts/identify.py``.

A row whose predictor outputs class scores (``scratch``, ``teacher_probe``, ``hinton_kd``, ``subclass_kd``, ``skd``...)
saves, beside its ``result.json``:

* ``model.onnx``: uint8 RGB ``N x 3 x S x S`` faces framed as the data config frames them (``S`` =
  ``data.image_size``) -> ``N x C`` class scores, the row's preprocessing inside (the same input contract as a
  finetune run's ``model.onnx``), checked against torch on the val faces;
* ``open_set.json`` on an open-set split: the rejection threshold the row calibrated on the calibration
  unknowns;
* ``manifest.json`` (stage ``baseline``): the class names, the framing and the sha256 of both files.

Every row also saves its face embedding as ``embedder.onnx`` (:mod:`facekd.embedder`) for ``scripts/enroll.py``;
rows that output embeddings (``pixels``, ``triplet``) save only that.
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
from facekd.deploy import deploy_section
from facekd.embedder import EMBEDDER_FILE, export_embedder
from facekd.export import ExportError, check_onnx, export_onnx
from facekd.finetune.stage import ONNX_FILE, ONNX_INPUT_SPEC
from facekd.hashing import artifact_checksums
from facekd.openset import OPEN_SET_FILE, write_open_set
from facekd.runs import write_manifest

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
                     open_set: Mapping[str, Any] | None = None, embedder: Any = None) -> dict[str, Any] | None:
    """Save the row's model for ``identify`` and ``enroll`` (see module doc); returns what was saved, or ``None`` (a
    network the ONNX exporter cannot trace: a warning says so and the row's result is unaffected).

    ``embedder``: the row's embedding (a Predictor with ``output="embedding"``), saved as ``embedder.onnx``
    (:mod:`facekd.embedder`); an embedding row saves only that."""
    classes = list(data.split.classes)
    size = int(data.cfg.get("image_size", 112))
    images = split_datasets(data, ("val",))["val"].tensors()[0][:16]
    files: list[str] = []
    parity: dict[str, Any] = {}
    embedder_info = None
    try:
        if predictor.output == "scores":
            model = ImagesToScores(predictor).to("cpu").eval()
            path = export_onnx(model, Path(run_dir) / ONNX_FILE, size,
                               metadata={"classes": json.dumps(classes), "input": ONNX_INPUT_SPEC, "method": method})
            parity = check_onnx(path, model, images)
            if not parity["ok"]:
                log.warning("%s: model.onnx differs from torch by %.3g (> %.3g)", method, parity["max_abs_diff"],
                            parity["atol"])
            files.append(ONNX_FILE)
        if embedder is not None:
            embedder = embedder.to("cpu").eval()
            embedder_info = export_embedder(embedder.body, embedder.preprocess, run_dir, size, images,
                                            metadata={"method": method})
            files.append(EMBEDDER_FILE)
    except ExportError as e:
        log.warning("%s: no ONNX model for identify (%s)", method, str(e).splitlines()[0])
        return None
    if not files:
        return None
    if open_set:
        write_open_set(run_dir, open_set["threshold"], open_set["far_target"], open_set["n_calibration"],
                       far_calibration=open_set.get("far_calibration"), split_id=data.split.id,
                       test={k: open_set[k] for k in ("dir", "far", "n_known", "n_unknown") if k in open_set})
        files.append(OPEN_SET_FILE)
    write_manifest(run_dir, STAGE, {"method": method, "method_config": plain(cfg), "data": plain(data.cfg)},
                   classes=classes, image_size=size, framing=data.cfg.get("framing", "pad"),
                   onnx_input=ONNX_INPUT_SPEC if ONNX_FILE in files else None, split_id=data.split.id, parity=parity,
                   embedder=embedder_info, artifacts=artifact_checksums(run_dir, files), complete=True,
                   deploy=deploy_section(backends=("onnx",) if ONNX_FILE in files else (), data_cfg=data.cfg,
                                         writer="scripts/compare_baselines.py",
                                         remake="delete the row's folder and rerun the comparison"))
    out: dict[str, Any] = {"files": files}
    if parity:
        out.update(file=ONNX_FILE, parity_max_abs_diff=parity["max_abs_diff"])
    if embedder_info:
        out["embedder_min_cosine"] = embedder_info["parity"]["min_cosine"]
    return out
