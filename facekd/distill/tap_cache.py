"""Teacher targets on named taps for a fixed set of images: one memory-mapped fp16 array per tap.

The cache is keyed on the **bytes of the images** (sha256), the teacher's signature, the tap paths and the
grid each tap is pooled to, so a changed image set, teacher or tap set never reuses stale targets.  Its
size is printed before it is built, and a cache larger than ``max_gb`` is refused before any work.

Layout of ``<cache_dir>/<key>/``: ``<i>.npy`` per tap (``N x *shape`` float16, written through
``np.lib.format.open_memmap``) and ``index.json`` (key material, shapes, written last: a folder without it
is an unfinished build and is rebuilt).
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from facekd.distill.tap_loss import pool_to
from facekd.models.base import Teacher
from facekd.models.taps import FeatureTaps, tap_shapes
from facekd.errors import ArtifactError, FacekdError
from facekd.hashing import artifact_checksums, tensor_sha256, verify_artifacts
from facekd.runs import read_json, write_json

__all__ = ["TapCacheError", "aligned_shapes", "cache_bytes", "tensor_sha256", "teacher_tap_targets"]

log = logging.getLogger(__name__)

INDEX = "index.json"


class TapCacheError(FacekdError, ValueError):
    """A teacher-tap cache that would exceed its disk budget."""


def aligned_shapes(shapes: Mapping[str, Sequence[int]], paths: Sequence[str],
                   grids: Sequence[tuple[int, ...] | None]) -> list[tuple[int, ...]]:
    """The per-sample shape of each tap once pooled onto its grid."""
    return [tuple(shapes[p]) if g is None else (int(shapes[p][0]), *g) for p, g in zip(paths, grids)]


def cache_bytes(n: int, shapes: Sequence[Sequence[int]]) -> int:
    """fp16 bytes of ``n`` images' targets of taps of the given shapes."""
    return int(n) * sum(2 * int(np.prod(s)) for s in shapes)


def teacher_tap_targets(teacher: Teacher, images: torch.Tensor, paths: Sequence[str],
                        grids: Sequence[tuple[int, ...] | None], cache_dir: str | Path, max_gb: float = 4.0,
                        batch_size: int = 64, progress: bool = True, key_name: str = "kd.cache_max_gb"
                        ) -> list[np.ndarray]:
    """Teacher targets of ``images`` (uint8 ``N x 3 x H x W``) at ``paths``, pooled to ``grids``; cached.

    Returns one read-only memory-mapped ``N x *shape`` float16 array per tap.
    """
    shapes = aligned_shapes(tap_shapes(teacher, paths, teacher.preprocess.size, key="kd.teacher_taps"), paths, grids)
    material = {"images": tensor_sha256(images), "teacher": teacher.signature, "taps": list(paths),
                "shapes": [list(s) for s in shapes], "dtype": "float16", "version": 1}
    key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]
    folder = Path(cache_dir) / key
    files = [f"{i}.npy" for i in range(len(paths))]
    if (folder / INDEX).is_file():
        try:  # a damaged array is rebuilt, never read
            verify_artifacts(folder, read_json(folder / INDEX), files, writer=f"the teacher-tap cache {folder}",
                             fix="it is rebuilt now", manifest_file=INDEX)
            return [np.load(folder / f, mmap_mode="r") for f in files]
        except (ArtifactError, OSError, ValueError) as e:
            log.warning("rebuilding the teacher-tap cache: %s", e)
    size = cache_bytes(len(images), shapes)
    log.info("teacher-tap cache %s: %d images x %d taps = %.1f MB", folder, len(images), len(paths), size / 1e6)
    if size > max_gb * 1e9:
        raise TapCacheError(
            f"the teacher-tap cache would take {size / 1e9:.2f} GB ({len(images)} images, taps "
            f"{', '.join(paths)}), above {key_name}={max_gb}. Raise {key_name}, use fewer views or images, "
            "or choose taps on smaller grids.")
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished build
    folder.mkdir(parents=True)
    arrays = [np.lib.format.open_memmap(folder / f"{i}.npy", mode="w+", dtype=np.float16, shape=(len(images), *s))
              for i, s in enumerate(shapes)]
    with FeatureTaps(teacher, paths, detach=True, key="kd.teacher_taps") as taps:
        for start in tqdm(range(0, len(images), batch_size), desc="teacher taps", leave=False, disable=not progress):
            teacher.features(images[start:start + batch_size])
            for a, out, g in zip(arrays, taps.collect().values(), grids):
                a[start:start + len(out)] = pool_to(out.float(), g).cpu().numpy().astype(np.float16)
    for a in arrays:
        a.flush()
    del arrays
    write_json(folder / INDEX, {"key": key, **material, "count": len(images),
                                "artifacts": artifact_checksums(folder, files)})
    return [np.load(folder / f, mmap_mode="r") for f in files]

