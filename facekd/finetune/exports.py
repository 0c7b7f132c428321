"""What a finetune run exports besides its weights: ``model.onnx`` (the classifier, see :data:`ONNX_INPUT_SPEC`),
checked against torch on real images, and the cards of every ONNX file that ships, timed as it runs."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from facekd.embedder import EMBEDDER_FILE
from facekd.export import check_onnx, export_onnx
from facekd.finetune.model import SpecializedModel
from facekd.finetune.settings import FinetuneSettings
from facekd.modelcard import onnx_card
from facekd.quantize import int8_path

__all__ = ["ONNX_FILE", "ONNX_INPUT_SPEC", "export_classifier", "deployed_cards"]

log = logging.getLogger("facekd.finetune.stage")  # its warnings are the finetune stage's

ONNX_FILE = "model.onnx"
ONNX_INPUT_SPEC = ("input 'images': uint8 RGB, N x 3 x S x S (N dynamic, S = data.image_size), pixels 0-255, "
                   "faces framed square as the data config frames them (data.framing); output 'scores': "
                   "float32 N x K class scores (logits), argmax = index into the 'classes' metadata")


def deployed_cards(run_dir: Path, settings: FinetuneSettings) -> dict[str, Any]:
    """What ships, timed as it runs: each ONNX file of the run under onnxruntime, batch 1, one thread (fastest of
    ``card_repeats``), with its size in MB (:func:`facekd.modelcard.onnx_card`)."""
    files = [f for name in (ONNX_FILE, EMBEDDER_FILE) for f in (name, int8_path(name).name) if (run_dir / f).is_file()]
    return {f: onnx_card(run_dir / f, repeats=max(settings.card_repeats, 5), warmup=3) for f in files}


def export_classifier(model: SpecializedModel, run_dir: Path, images: torch.Tensor, settings: FinetuneSettings,
                      classes: list[str], image_size: int, student: Any) -> dict[str, Any]:
    """Export ``model`` to ONNX and check it against torch on up to ``parity_images`` real images."""
    path = export_onnx(model, run_dir / ONNX_FILE, image_size,
                       metadata={"classes": json.dumps(classes), "input": ONNX_INPUT_SPEC,
                                 "student": student.name, "student_input_size": str(student.input_size)})
    parity = check_onnx(path, model, images[: settings.parity_images], atol=settings.parity_atol)
    if not parity["ok"]:
        log.warning("ONNX export differs from torch by %.3g (> %.3g)", parity["max_abs_diff"], parity["atol"])
    return {"exported": True, "file": ONNX_FILE, "input": ONNX_INPUT_SPEC, "image_size": image_size,
            "parity_images": "val split", **parity}
