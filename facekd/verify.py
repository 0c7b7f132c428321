"""Verify: are two photos the same person? (``python scripts/verify.py``)

``verify(cfg)`` finds the largest face in each of the two photos of ``verify.photos`` with MTCNN, frames and embeds
both with the run's ``embedder.onnx`` (exactly as enroll and identify do) and prints their cosine similarity and
the verdict: *same person* when it reaches the threshold.  The threshold is ``verify.threshold`` or, with
``verify.gallery``, the threshold that gallery was calibrated with (at its FAR against all its people, so a strict
one for a single comparison); with neither, the score is printed without a verdict.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from facekd.data.faces import read_image
from facekd.embedder import PRECISIONS, load_embedder
from facekd.errors import ConfigError, InputFileError
from facekd.gallery import Gallery, check_threshold
from facekd.identify import detect_faces, frame_faces, make_detector
from facekd.validate import check_choice, check_float, check_int, check_path, known_section, show_value

__all__ = ["VerifySettings", "verify"]


@dataclass(frozen=True)
class VerifySettings:
    """The ``verify`` config section, checked (see ``configs/verify.yaml``)."""

    model: str | None
    photos: tuple[str, str]
    gallery: str | None = None
    precision: str = "fp32"
    threshold: float | None = None
    min_face_prob: float = 0.9
    min_face_size: int = 20
    margin: float = 0.15

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "VerifySettings":
        sec = known_section(section, cls.__dataclass_fields__, "verify")
        photos = sec.get("photos")
        if not isinstance(photos, (list, tuple)) or len(photos) != 2 or not all(isinstance(p, str) and p for p in photos):
            raise ConfigError(f"verify.photos must be two photos, got {show_value(photos)}; set it like "
                              "'verify.photos=[a.jpg,b.jpg]'")
        if sec.get("model") is None and sec.get("gallery") is None:
            raise ConfigError("set verify.model=RUN (a run with embedder.onnx) or verify.gallery=FILE (its embedder "
                              "and threshold are used)")
        threshold = sec.get("threshold")
        return cls(model=check_path(sec.get("model"), "verify.model"),
                   photos=(check_path(photos[0], "verify.photos"), check_path(photos[1], "verify.photos")),
                   gallery=check_path(sec.get("gallery"), "verify.gallery"),
                   precision=check_choice(sec.get("precision", "fp32"), "verify.precision", PRECISIONS,
                                          what="which of the run's embedders to use (a gallery's own wins)"),
                   threshold=None if threshold is None else check_threshold(threshold, "verify.threshold"),
                   min_face_prob=check_float(sec.get("min_face_prob", 0.9), "verify.min_face_prob", minimum=0.0,
                                             maximum=1.0),
                   min_face_size=check_int(sec.get("min_face_size", 20), "verify.min_face_size", minimum=1),
                   margin=check_float(sec.get("margin", 0.15), "verify.margin", minimum=0.0, maximum=2.0))


def verify(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Compare the faces of two photos; returns ``{"score", "threshold", "same"}`` (``same`` None without a
    threshold)."""
    s = VerifySettings.from_config(cfg["verify"])
    gallery = Gallery.load(s.gallery) if s.gallery else None
    model = s.model or (gallery.embedder.get("path") if gallery else None)
    run = load_embedder(model, precision=s.precision, sha256=gallery.embedder_sha256 if gallery else None)
    if gallery is not None:
        gallery = Gallery.load(s.gallery, run.sha256)  # refuses a gallery of another embedder
    threshold = s.threshold if s.threshold is not None else ((gallery.threshold or {}).get("value") if gallery else None)
    detector = make_detector(s.min_face_size)
    crops = []
    for photo in s.photos:
        if not Path(photo).is_file():
            raise InputFileError(f"verify.photos: {photo} does not exist; give two photos, e.g. "
                                 "'verify.photos=[a.jpg,b.jpg]'")
        image = read_image(photo)
        found = detect_faces(image, detector, s.min_face_prob)
        if not found:
            raise InputFileError(f"verify.photos: no face found in {photo} (MTCNN probability >= "
                                 f"{s.min_face_prob}); give a photo with a visible face, or lower verify.min_face_prob")
        box = max(found, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))[0]
        crops.append(frame_faces(image, [box], run, s.margin)[0])
    e = run.embed(np.stack(crops))
    score = float(e[0] @ e[1])
    same = None if threshold is None else bool(score >= threshold)
    verdict = ("no threshold: set verify.threshold or verify.gallery for a verdict" if same is None else
               f"{'same person' if same else 'different people'} (threshold {threshold:.4f})")
    print(f"verify: cosine {score:.4f}: {verdict}")
    return {"score": score, "threshold": threshold, "same": same}
