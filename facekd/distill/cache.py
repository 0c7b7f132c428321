"""Teacher-feature cache: teacher features (and the exact view pixels) computed once, memory-mapped.

A cache folder holds ``images.npy`` (N x S x S x 3 uint8 views, as the student will see them),
``features.npy`` (N x D float16 teacher features of the same views) and ``manifest.json`` recording
everything the features depend on: the source images, the views, the teacher, its weights and its
preprocessing.  A later epoch never runs the teacher.  Building is resumable chunk by chunk, and a cache
whose manifest disagrees with what the caller expects is refused with the fields that differ.  A cache of
the same views and teacher at another stored size (another student input size) takes its features from
the finished one instead of running the teacher again.

The key holds the sources' fingerprints, which hold the sha256 of every file read, so a photo or shard
replaced under the same name makes a new cache.  A finished cache records the sha256 of its files
(``artifacts``) and is checked against them when opened: :func:`build_feature_cache` rebuilds a damaged
one, and :class:`FeatureCache` refuses it (:class:`facekd.errors.ArtifactError` naming the file).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from facekd.data.augment import frame_square
from facekd.distill.views import ViewSource, make_views
from facekd.engine import autocast
from facekd.errors import ArtifactError
from facekd.hashing import artifact_checksums, verify_artifacts
from facekd.runs import RunError, config_hash, read_json, versions, write_json

__all__ = ["FeatureCache", "ImageMeanTargets", "build_feature_cache", "cache_key", "cache_folder"]

log = logging.getLogger(__name__)

FILES = ("images.npy", "features.npy", "stats.npz")


def cache_key(source: ViewSource, teacher_key: dict, store_size: int, precision: str = "fp32") -> dict:
    """Everything a cache's content depends on: the views, the teacher (signature), the stored size and
    the teacher's precision (fp32, or bf16 under CUDA autocast)."""
    key = {"views": source.key(), "teacher": teacher_key, "store_size": store_size, "precision": precision}
    return json.loads(json.dumps(key, sort_keys=True, default=str))  # as it reads back from the manifest


def cache_folder(root: str | os.PathLike, key: dict) -> Path:
    """Where the cache of ``key`` lives under ``root``."""
    return Path(root) / f"{key['views']['source']}-{config_hash(key)}"


class FeatureCache:
    """A finished cache, opened read-only with memory maps (never loaded whole)."""

    def __init__(self, folder: str | os.PathLike, expected_key: dict | None = None, *, verified: bool = False) -> None:
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.exists():
            raise RunError(f"{self.folder} is not a feature cache (no manifest.json)")
        self.manifest = read_json(path)
        if not self.manifest.get("complete"):
            raise RunError(f"feature cache {self.folder} is incomplete; rerun distillation to finish it")
        if expected_key is not None and self.manifest.get("key") != expected_key:
            diff = _diff(self.manifest.get("key", {}), expected_key)
            raise RunError(f"feature cache {self.folder} is stale or from another setup; differing fields: {diff}")
        if not verified:
            verify_artifacts(self.folder, self.manifest, FILES, writer=f"the distill stage (teacher-feature cache "
                             f"{self.folder})", fix="rerun the distill stage, which rebuilds a damaged cache")
        self.images = np.load(self.folder / "images.npy", mmap_mode="r")
        self.features = np.load(self.folder / "features.npy", mmap_mode="r")
        if len(self.images) != len(self.features):
            raise RunError(f"feature cache {self.folder} is corrupt: {len(self.images)} images vs {len(self.features)} features")

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std of the cached features (computed while building)."""
        s = np.load(self.folder / "stats.npz")
        return s["mean"], s["std"]


class ImageMeanTargets:
    """A cache whose every view is paired with the mean teacher feature of its image's views.

    View-invariant targets: the student learns to map each augmented view to what the teacher sees in
    the image as a whole, rather than the teacher's reaction to that one augmentation.  Views are stored
    image-major (``image * views + view``), so ``features[k]`` is ``means[k // views]``.  Reads like a
    :class:`FeatureCache` (``images``, ``features[idx]``, ``len``, ``dim``, ``stats``, ``folder``).
    """

    def __init__(self, cache: FeatureCache, views: int) -> None:
        if views < 1 or len(cache) % views:
            raise ValueError(f"{cache.folder}: {len(cache)} cached views are not a whole number of images of "
                             f"{views} views each")
        self.cache, self.views, self.folder, self.images = cache, int(views), cache.folder, cache.images
        feats = np.asarray(cache.features, dtype=np.float32).reshape(len(cache) // views, views, cache.dim)
        self.means = feats.mean(axis=1).astype(np.float16)
        self.features = _Repeated(self.means, self.views)

    def __len__(self) -> int:
        return len(self.cache)

    @property
    def dim(self) -> int:
        return self.cache.dim

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-dimension mean and std of the targets (every image weighs the same, as every view does)."""
        m = self.means.astype(np.float64)
        return m.mean(0), m.std(0)


class _Repeated:
    """``rows[k // repeat]`` for integer index arrays: each row stands for ``repeat`` consecutive items."""

    def __init__(self, rows: np.ndarray, repeat: int) -> None:
        self.rows, self.repeat = rows, repeat
        self.shape = (len(rows) * repeat, *rows.shape[1:])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx: Any) -> np.ndarray:
        return self.rows[np.asarray(idx, dtype=np.int64) // self.repeat]


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: cached {a!r} != expected {b!r}"]


def _same_features(root: Path, key: dict) -> FeatureCache | None:
    """A finished cache under ``root`` whose key differs from ``key`` only in the stored image size.

    Teacher features do not depend on the size the student's views are stored at, so they are copied
    from it instead of running the teacher again.
    """
    want = {k: v for k, v in key.items() if k != "store_size"}
    for path in sorted(root.glob(f"{key['views']['source']}-*/manifest.json")):
        try:
            manifest = read_json(path)
        except (OSError, ValueError):
            continue
        other = manifest.get("key", {})
        if manifest.get("complete") and {k: v for k, v in other.items() if k != "store_size"} == want:
            try:
                return FeatureCache(path.parent, other)
            except (ArtifactError, RunError) as e:
                log.warning("not copying features from %s: %s", path.parent, e)
    return None


@torch.no_grad()
def build_feature_cache(source: ViewSource, teacher: torch.nn.Module, teacher_key: dict, root: str | os.PathLike,
                        store_size: int, device: torch.device, batch_size: int = 64,
                        chunk: int = 512, amp: bool = True, progress: bool = True) -> FeatureCache:
    """Compute (or finish, or reuse) the cache of ``source`` under ``root``; returns it opened.

    ``teacher`` must provide ``features(uint8 B x 3 x H x W) -> B x D`` and ``feature_dim``; it runs on
    ``device`` (bf16 autocast on CUDA when ``amp``).  A finished cache is reused without running it;
    an interrupted one is finished from its last chunk.
    """
    device = torch.device(device)
    use_amp = amp and device.type == "cuda"
    key = cache_key(source, teacher_key, store_size, "bf16" if use_amp else "fp32")
    folder = cache_folder(root, key)
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        manifest = read_json(manifest_path)
        if manifest.get("key") != key:
            raise RunError(f"feature cache {folder} does not match its key: {_diff(manifest.get('key', {}), key)}")
        if manifest.get("complete"):
            try:
                return FeatureCache(folder, key)
            except ArtifactError as e:
                log.warning("%s Rebuilding the cache.", e)
                shutil.rmtree(folder)
    n, dim = len(source), int(teacher.feature_dim)
    folder.mkdir(parents=True, exist_ok=True)
    mode = "r+" if manifest_path.exists() else "w+"
    images = np.lib.format.open_memmap(folder / "images.npy", mode=mode, dtype=np.uint8,
                                       shape=(n, store_size, store_size, 3))
    feats = np.lib.format.open_memmap(folder / "features.npy", mode=mode, dtype=np.float16, shape=(n, dim))
    manifest = read_json(manifest_path) if manifest_path.exists() else {
        "key": key, "count": n, "dim": dim, "done": 0, "complete": False, "versions": versions()}
    start, t0 = int(manifest["done"]), time.time()
    donor = _same_features(Path(root), key)  # the same views and teacher stored at another size
    if donor is not None:
        manifest["features_from"] = str(donor.folder)
    what = "views (features reused)" if donor is not None else "teacher features"
    bar = tqdm(total=n, initial=start, desc=f"{what}: {source.name}", unit="img", disable=not progress)
    for lo in range(start, n, chunk):
        hi = min(n, lo + chunk)
        for b in range(lo, hi, batch_size):
            idx = np.arange(b, min(hi, b + batch_size))
            teacher_views = make_views(source, idx)
            if donor is not None:
                feats[b : b + len(idx)] = donor.features[b : b + len(idx)]
                images[b : b + len(idx)] = np.stack([frame_square(v, store_size, "squash") for v in teacher_views])
                bar.update(len(idx))
                continue
            x = torch.from_numpy(teacher_views).permute(0, 3, 1, 2).to(device)
            with autocast(device, use_amp):
                f = teacher.features(x)
            f16 = f.float().cpu().numpy().astype(np.float16)
            if not np.isfinite(f16).all():
                raise RunError(f"teacher features of {source.name} views {b}..{b + len(idx)} are not finite in float16 "
                               "(NaN/inf, or beyond +-65504): check the teacher and its input")
            feats[b : b + len(idx)] = f16
            if teacher_views.shape[1] != store_size:
                teacher_views = np.stack([frame_square(v, store_size, "squash") for v in teacher_views])
            images[b : b + len(idx)] = teacher_views
            bar.update(len(idx))
            bar.set_postfix(img_s=f"{(bar.n - start) / max(time.time() - t0, 1e-9):.1f}")
        images.flush()
        feats.flush()
        manifest["done"] = hi
        write_json(manifest_path, manifest)  # progress survives an interruption
    bar.close()
    mean, sq = np.zeros(dim), np.zeros(dim)
    for lo in range(0, n, 8192):
        f = np.asarray(feats[lo : lo + 8192], dtype=np.float64)
        mean += f.sum(0)
        sq += (f ** 2).sum(0)
    mean /= n
    std = np.sqrt(np.maximum(sq / n - mean ** 2, 0)) + 1e-6
    np.savez(folder / "stats.npz", mean=mean.astype(np.float32), std=std.astype(np.float32))
    del images, feats
    manifest.update(complete=True, seconds=round(time.time() - t0, 2), artifacts=artifact_checksums(folder, FILES))
    write_json(manifest_path, manifest)
    return FeatureCache(folder, key, verified=True)
