"""The face embedding a specialized model ships: ``embedder.onnx``, uint8 faces in, unit vectors out.

Every finetune run (and every comparison row that saves a model) writes, beside its classifier, an
``embedder.onnx``: input ``images``, uint8 RGB ``N x 3 x S x S`` framed as the run's training images were
(``data.image_size``, ``data.framing``), the preprocessing inside; output ``embeddings``, float32 ``N x D``
L2-normalised rows, so the cosine of two faces is the dot product of their rows.  Its parity with torch is
checked on real images at export, and its sha256 is recorded in the run's manifest; a gallery records that
sha256 (:mod:`facekd.gallery`), so embeddings of two models are never compared.

:func:`load_embedder` opens it from a run folder for enroll, identify and verify (checked against the
manifest's checksum first).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facekd.deploy import read_deployed
from facekd.errors import ArtifactError, ConfigError
from facekd.export import check_onnx, export_onnx
from facekd.quantize import int8_path
from facekd.runs import RunError

__all__ = ["EMBEDDER_FILE", "EMBEDDER_OUTPUT", "EMBEDDER_SPEC", "Features", "ImagesToEmbeddings", "export_embedder",
           "EmbedderRun", "load_embedder"]

log = logging.getLogger(__name__)

EMBEDDER_FILE = "embedder.onnx"
EMBEDDER_OUTPUT = "embeddings"
EMBEDDER_SPEC = ("input 'images': uint8 RGB, N x 3 x S x S (N dynamic, S = data.image_size), pixels 0-255, faces framed "
                 "square as the data config frames them (data.framing); output 'embeddings': float32 N x D, unit "
                 "length rows (cosine similarity = dot product)")


class Features(nn.Module):
    """One method of a network as a module: ``Features(net, "backbone_features")(x) == net.backbone_features(x)``
    (an embedding taken from inside a classifier)."""

    def __init__(self, net: nn.Module, method: str) -> None:
        super().__init__()
        self.net, self.method = net, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.net, self.method)(x)


class ImagesToEmbeddings(nn.Module):
    """uint8 images -> ``preprocess`` -> ``features`` -> flattened, L2-normalised rows."""

    def __init__(self, features: nn.Module, preprocess: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.features, self.preprocess = features, preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.features(self.preprocess(images)).flatten(1).float(), dim=1)


def export_embedder(features: nn.Module, preprocess: Any, run_dir: str | os.PathLike, image_size: int,
                    parity_images: torch.Tensor, *, metadata: Mapping[str, Any] | None = None,
                    min_cosine: float = 0.9999) -> dict[str, Any]:
    """Write ``run_dir/embedder.onnx`` and check it against torch on ``parity_images`` (uint8 N x 3 x S x S).

    Returns ``{"file", "dim", "parity": {...}}``; a parity whose smallest cosine to torch is below ``min_cosine``
    is logged as a warning and recorded (``parity.ok`` false).
    """
    model = ImagesToEmbeddings(features, preprocess).to("cpu").float().eval()
    with torch.no_grad():
        dim = int(model(parity_images[:1].cpu()).shape[1])
    meta = {"input": EMBEDDER_SPEC, "dim": str(dim), **{k: str(v) for k, v in (metadata or {}).items()}}
    path = export_onnx(model, Path(run_dir) / EMBEDDER_FILE, image_size, metadata=meta, output_name=EMBEDDER_OUTPUT)
    parity = check_onnx(path, model, parity_images.cpu(), atol=1e-3)
    parity["ok"] = bool(parity["ok"] and parity["min_cosine"] >= min_cosine)
    if not parity["ok"]:
        log.warning("%s differs from torch (largest difference %.3g, smallest cosine %.6f)", path,
                    parity["max_abs_diff"], parity["min_cosine"])
    return {"file": EMBEDDER_FILE, "dim": dim, "input": EMBEDDER_SPEC, "parity": parity}


@dataclass
class EmbedderRun:
    """A run's ``embedder.onnx`` on onnxruntime's CPU provider, with what framing its faces need."""

    path: Path
    sha256: str
    image_size: int
    framing: str
    aligned: bool
    dim: int
    session: Any

    def embed(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Unit embeddings (N x D) of N x S x S x 3 uint8 face crops (framed as :func:`frame_faces` frames them)."""
        if not len(crops):
            return np.zeros((0, self.dim), np.float32)
        chw = np.ascontiguousarray(np.asarray(crops, dtype=np.uint8).transpose(0, 3, 1, 2))
        name = self.session.get_inputs()[0].name
        out = [self.session.run(None, {name: chw[i:i + batch_size]})[0] for i in range(0, len(chw), batch_size)]
        return np.concatenate(out).astype(np.float32)


PRECISIONS = ("fp32", "int8")


def _embedder_file(run_dir: Path, artifacts: Mapping[str, Any], precision: str, sha256: str | None) -> str:
    """Which embedder file of a run to load: the one whose recorded sha256 is ``sha256`` (a gallery's), else the
    file of ``precision`` (``embedder.onnx`` or its int8 copy ``embedder.int8.onnx``)."""
    files = {"fp32": EMBEDDER_FILE, "int8": int8_path(EMBEDDER_FILE).name}
    if sha256 is not None:
        for name in files.values():
            if (artifacts.get(name) or {}).get("sha256") == sha256:
                return name
        return EMBEDDER_FILE  # none matches: the gallery check that follows names both sides
    if precision not in files:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and files["int8"] not in artifacts:
        raise RunError(f"{run_dir} holds no {files['int8']}: its finetune stage ran without int8 copies; rerun it "
                       "with finetune.int8.enabled=true (and a new finetune.name), or use precision=fp32")
    return files[precision]


def load_embedder(run_dir: str | os.PathLike, threads: int | None = None, precision: str = "fp32",
                  sha256: str | None = None) -> EmbedderRun:
    """The embedder of a finished finetune run or comparison row, checked against its manifest's sha256:
    ``embedder.onnx`` (``precision="fp32"``), its int8 copy (``"int8"``), or whichever of them has the recorded
    ``sha256`` (a gallery's embedder)."""
    import onnxruntime as ort

    run = read_deployed(run_dir)
    artifacts = run.manifest.get("artifacts") or {}
    name = _embedder_file(run.path, artifacts, precision, sha256)
    recorded = artifacts.get(name)
    if recorded is None:
        raise RunError(f"{run.path} holds no {EMBEDDER_FILE}: it was made with finetune.export_onnx=false; rerun its "
                       "finetune stage with a new run name to get one")
    run.verify([name])
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    try:
        session = ort.InferenceSession(str(run.path / name), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own types for a file it cannot load
        raise ArtifactError(f"{run.path / name} cannot be loaded by onnxruntime ({type(e).__name__}: {e}); "
                            "rerun the stage that made it") from e
    info = run.manifest.get("embedder") or {}
    return EmbedderRun(path=run.path, sha256=str(recorded["sha256"]), image_size=run.image_size, framing=run.framing,
                       aligned=run.aligned, dim=int(info.get("dim", 0)) or int(session.get_outputs()[0].shape[1]),
                       session=session)

