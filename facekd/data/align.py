"""Optional MTCNN face alignment for folders of raw photos (facenet-pytorch; its weights ship in its wheel).

:func:`align_folder` detects the largest face in every image of a one-folder-per-identity tree,
saves the aligned crop as PNG into a cache folder keyed by (source folder, settings) and returns that
folder, which then loads like any other face folder.  ``sources.json`` there records the sha256 of the
photo each crop (or recorded failure) came from: a photo replaced under its name is aligned again, and
the crop of a deleted photo is removed; unchanged photos are skipped on rerun.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from facekd.assets import cache_dir
from facekd.data.faces import ON_CORRUPT, FaceDataError, IMAGE_SUFFIXES, check_folder, read_image
from facekd.hashing import content_hashes
from facekd.runs import atomic_path, config_hash, read_json, write_json
from facekd.validate import check_choice

__all__ = ["align_folder"]

log = logging.getLogger(__name__)


def _mtcnn(size: int, margin: int, device: str = "cpu"):
    from facenet_pytorch import MTCNN

    return MTCNN(image_size=size, margin=margin, post_process=False, select_largest=True, device=device)


SOURCES_FILE = "sources.json"


def _drop_stale(out: Path, index: dict[str, str], failed: dict[str, str], hashes: dict[str, str]) -> None:
    """Forget (and delete the crop of) every photo that changed or disappeared since it was aligned, and any
    crop no photo accounts for (e.g. left by an interrupted run); the index on disk says so at once, so a photo
    that comes back later is aligned again."""
    stale = [r for r, h in index.items() if hashes.get(r) != h]
    for rel in stale:
        index.pop(rel)
        failed.pop(rel, None)
        (out / Path(rel).with_suffix(".png")).unlink(missing_ok=True)
    for rel in [r for r in failed if r not in index]:
        failed.pop(rel)
    if stale and out.is_dir():
        write_json(out / SOURCES_FILE, index)
        write_json(out / "failed.json", failed)
    if out.is_dir():
        known = {Path(r).with_suffix(".png").as_posix() for r in index}
        for crop in out.rglob("*.png"):
            if crop.relative_to(out).as_posix() not in known:
                crop.unlink()


def align_folder(root: str | os.PathLike, size: int = 160, margin: int = 20, min_prob: float = 0.9,
                 on_no_face: str = "skip", out_dir: str | os.PathLike | None = None,
                 on_corrupt: str = "error") -> Path:
    """Align every image under ``root/<identity>/`` and return the folder of aligned crops.

    ``on_no_face``: ``skip`` leaves an image without a confident face out (listed in ``failed.json``),
    ``error`` stops naming it.  ``on_corrupt`` (``data.on_corrupt``): ``error`` stops at an unreadable image,
    naming it; ``skip`` leaves it out with a warning (it is tried again on the next run, in case it was fixed).
    """
    check_choice(on_no_face, "on_no_face", ("skip", "error"), what="what to do with an image without a face")
    check_choice(on_corrupt, "data.on_corrupt", ON_CORRUPT, what="what to do with unreadable image files")
    root = check_folder(root, "data.root").resolve()
    key = config_hash({"root": str(root), "size": size, "margin": margin, "min_prob": min_prob})
    out = Path(out_dir) if out_dir else cache_dir() / "aligned" / f"{root.name}-{key}"
    failed_path = out / "failed.json"
    failed: dict[str, str] = read_json(failed_path) if failed_path.exists() else {}
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    hashes = dict(zip((f.relative_to(root).as_posix() for f in files), content_hashes(files)))
    index_path = out / SOURCES_FILE
    index: dict[str, str] = read_json(index_path) if index_path.exists() else {}
    _drop_stale(out, index, failed, hashes)
    todo = [f for f in files if f.relative_to(root).as_posix() not in index]
    mtcnn = None
    for f in tqdm(todo, desc="aligning faces (MTCNN)", disable=not todo):
        rel = f.relative_to(root)
        try:
            img = Image.fromarray(read_image(f))
        except FaceDataError:
            if on_corrupt == "error":
                raise
            log.warning("skipping unreadable image %s (data.on_corrupt=skip)", f)
            continue
        if mtcnn is None:
            mtcnn = _mtcnn(size, margin)
        face, prob = mtcnn(img, return_prob=True)
        if face is None or prob is None or prob < min_prob:
            reason = "no face found" if face is None else f"face probability {prob:.3f} < {min_prob}"
            if on_no_face == "error":
                raise FaceDataError(f"MTCNN found no confident face in {f}: {reason}. Crop the photo around "
                                    f"the face, or remove it")
            log.warning("no aligned face for %s: %s", f, reason)
            failed[rel.as_posix()] = reason
            write_json(failed_path, failed)
            index[rel.as_posix()] = hashes[rel.as_posix()]
            write_json(index_path, index)
            continue
        arr = face.permute(1, 2, 0).clamp(0, 255).round().byte().numpy()
        dest = out / rel.with_suffix(".png")
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dest) as tmp:
            Image.fromarray(np.ascontiguousarray(arr)).save(tmp, format="PNG")
        index[rel.as_posix()] = hashes[rel.as_posix()]
        write_json(index_path, index)
    if failed_path.exists() or failed:
        write_json(failed_path, failed)
    if failed:
        log.warning("%d of %d images had no confident face (see %s)", len(failed), len(files), failed_path)
    _warn_empty_people(root, files, failed)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _warn_empty_people(root: Path, files: list[Path], failed: dict[str, str]) -> None:
    """Warn about every identity folder that ends up with no aligned face (no image files, or none with a face):
    it is left out of the aligned folder, so nothing downstream would see it."""
    faces: dict[str, int] = {}
    for f in files:
        rel = f.relative_to(root)
        if len(rel.parts) > 1:
            faces[rel.parts[0]] = faces.get(rel.parts[0], 0) + (rel.as_posix() not in failed)
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not faces.get(d.name):
            why = "holds no images" if d.name not in faces else "has no photo with a confident face"
            log.warning("identity folder %s %s; this person is left out", d, why)
