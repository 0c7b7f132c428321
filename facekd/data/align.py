"""Optional MTCNN face alignment for folders of raw photos (facenet-pytorch; its weights ship in its wheel).

:func:`align_folder` detects the largest face in every image of a one-folder-per-identity tree,
saves the aligned crop as PNG into a cache folder keyed by (source folder, settings) and returns that
folder, which then loads like any other face folder.  Finished images are skipped on rerun.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from facekd.assets import cache_dir
from facekd.data.faces import FaceDataError, IMAGE_SUFFIXES, read_image
from facekd.runs import atomic_path, config_hash, read_json, write_json

__all__ = ["align_folder"]

log = logging.getLogger(__name__)


def _mtcnn(size: int, margin: int, device: str = "cpu"):
    from facenet_pytorch import MTCNN

    return MTCNN(image_size=size, margin=margin, post_process=False, select_largest=True, device=device)


def align_folder(root: str | os.PathLike, size: int = 160, margin: int = 20, min_prob: float = 0.9,
                 on_no_face: str = "skip", out_dir: str | os.PathLike | None = None) -> Path:
    """Align every image under ``root/<identity>/`` and return the folder of aligned crops.

    ``on_no_face``: ``skip`` leaves an image without a confident face out (listed in ``failed.json``),
    ``error`` stops naming it.
    """
    if on_no_face not in {"skip", "error"}:
        raise ValueError(f"on_no_face must be skip or error, got {on_no_face!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FaceDataError(f"face folder {root} does not exist")
    key = config_hash({"root": str(root), "size": size, "margin": margin, "min_prob": min_prob})
    out = Path(out_dir) if out_dir else cache_dir() / "aligned" / f"{root.name}-{key}"
    failed_path = out / "failed.json"
    failed: dict[str, str] = read_json(failed_path) if failed_path.exists() else {}
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    todo = [f for f in files if not (out / f.relative_to(root).with_suffix(".png")).exists()
            and f.relative_to(root).as_posix() not in failed]
    if todo:
        mtcnn = _mtcnn(size, margin)
        for f in tqdm(todo, desc="aligning faces (MTCNN)"):
            rel = f.relative_to(root)
            img = Image.fromarray(read_image(f))
            face, prob = mtcnn(img, return_prob=True)
            if face is None or prob is None or prob < min_prob:
                reason = "no face found" if face is None else f"face probability {prob:.3f} < {min_prob}"
                if on_no_face == "error":
                    raise FaceDataError(f"MTCNN found no confident face in {f}: {reason}")
                log.warning("no aligned face for %s: %s", f, reason)
                failed[rel.as_posix()] = reason
                write_json(failed_path, failed)
                continue
            arr = face.permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
            dest = out / rel.with_suffix(".png")
            dest.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(dest) as tmp:
                Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
    if failed:
        log.warning("%d of %d images had no confident face (see %s)", len(failed), len(files), failed_path)
    return out
