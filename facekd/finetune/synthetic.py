"""Unlabeled synthetic faces for the finetune stage: those of the generate run the student was distilled on.

Used to calibrate the int8 copies (``finetune.int8``) and to hold the embedding near the teacher's
(``finetune.hold``); never a labeled or a test photo.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from facekd.data.synthetic import SyntheticFaces, render_synthetic
from facekd.errors import ArtifactError
from facekd.runs import RunError

__all__ = ["student_synthetic_faces"]


def student_synthetic_faces(student_manifest: Mapping[str, Any], n: int, image_size: int, grey: bool, key: str,
                            spread: bool = False) -> np.ndarray:
    """``n`` faces of the student's generate run as ``render_synthetic`` shows them (N x 3 x S x S uint8): the last
    ``n`` (its held-out end), or with ``spread`` ``n`` faces evenly spread over the whole run.

    A student run that names no generate run, one that is gone or damaged, or one remade with another
    configuration is refused with a :class:`facekd.quantize.QuantizeError`-style message naming ``key``."""
    off = f"set {key}{'.enabled=false' if key.endswith('int8') else '.weight=0'}"
    run = student_manifest.get("generate_run")
    if not run:
        raise ArtifactError(f"{key} needs the synthetic faces the student was distilled on, but the student run "
                            f"names no generate run; distill on a generate run (distill.generate_run) or {off}")
    try:
        faces = SyntheticFaces(run)
    except RunError as e:
        raise ArtifactError(f"{key} needs the synthetic faces the student was distilled on, but its generate run "
                            f"{run} cannot be read: {e}. Rerun the generate stage there, or {off}") from None
    expected = student_manifest.get("generate_config_hash")
    if expected and faces.config_hash != expected:
        raise ArtifactError(f"the generate run {run} was remade with another configuration since the student was "
                            f"distilled on it; {key} takes its faces from the run the student names. Regenerate it "
                            f"as it was, or {off}")
    total = len(faces)
    idx = (np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(int)) if spread
           else np.arange(max(0, total - n), total))
    return render_synthetic(faces.batch(idx), image_size, grey).numpy()
