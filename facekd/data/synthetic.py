"""The synthetic face store: uint8 image shards on disk, written atomically and read memory-mapped.

A generate run folder holds::

    manifest.json                 stage "generate"; "complete": true once every shard is written
    shards/faces_00000.npy        uint8 array  n x H x W x 3 (RGB), n = shard_size except maybe the last
    shards/faces_00000.json       the shard's record: count, the seeds of its faces, sha256 of the array
    seeds.npy                     int64, the seed of every face in order (written at the end)
    preview.png                   a grid of the first faces

A shard counts as finished only when its ``.json`` record exists and its ``.npy`` has the recorded shape:
both are renamed into place atomically, array first, so a crash never leaves a half-written shard that
looks finished.  :class:`SyntheticFaces` opens a complete run and reads faces through ``np.load(...,
mmap_mode="r")``, so only the pages touched are ever read.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch

from facekd.runs import RunError, atomic_path, read_json, read_manifest, write_json

__all__ = [
    "STAGE",
    "SHARD_DIR",
    "SEEDS_FILE",
    "PREVIEW_FILE",
    "shard_count",
    "shard_lengths",
    "shard_paths",
    "array_sha256",
    "write_shard",
    "read_shard_record",
    "finished_shard",
    "SyntheticFaces",
    "is_grey",
    "render_synthetic",
]

STAGE = "generate"
SHARD_DIR = "shards"
SEEDS_FILE = "seeds.npy"
PREVIEW_FILE = "preview.png"


def shard_count(num_images: int, shard_size: int) -> int:
    """How many shards hold ``num_images`` faces, ``shard_size`` per shard."""
    return -(-num_images // shard_size)


def shard_lengths(num_images: int, shard_size: int) -> list[int]:
    """The number of faces in each shard: ``shard_size`` each, the remainder in the last."""
    return [min(shard_size, num_images - i * shard_size) for i in range(shard_count(num_images, shard_size))]


def shard_paths(run_dir: str | os.PathLike, index: int) -> tuple[Path, Path]:
    """``(array .npy, record .json)`` of shard ``index`` in ``run_dir``."""
    stem = Path(run_dir) / SHARD_DIR / f"faces_{index:05d}"
    return stem.with_suffix(".npy"), stem.with_suffix(".json")


def array_sha256(array: np.ndarray) -> str:
    """sha256 of an array's bytes (C order)."""
    return hashlib.sha256(np.ascontiguousarray(array).data).hexdigest()


def write_shard(run_dir: str | os.PathLike, index: int, images: np.ndarray, record: dict[str, Any]) -> dict:
    """Write shard ``index``: the uint8 array ``images`` (n x H x W x 3), then its record, both atomically.

    ``record`` is extended with the count, shape and sha256 of the array; the finished record is returned.
    """
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"a shard is uint8 n x H x W x 3, got {images.dtype} {images.shape}")
    npy, rec_path = shard_paths(run_dir, index)
    rec = {**record, "index": index, "file": npy.relative_to(run_dir).as_posix(), "count": int(images.shape[0]),
           "shape": list(images.shape), "sha256": array_sha256(images)}
    with atomic_path(npy) as tmp, open(tmp, "wb") as f:
        np.save(f, images, allow_pickle=False)
    write_json(rec_path, rec)
    return rec


def read_shard_record(run_dir: str | os.PathLike, index: int) -> dict | None:
    """The record of shard ``index``, or None when it is missing or unreadable."""
    rec_path = shard_paths(run_dir, index)[1]
    try:
        return read_json(rec_path)
    except (OSError, ValueError):
        return None


def _npy_shape(path: Path) -> tuple[tuple[int, ...], np.dtype] | None:
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr.shape, arr.dtype


def finished_shard(run_dir: str | os.PathLike, index: int, count: int, image_size: int) -> dict | None:
    """The record of shard ``index`` when it is finished with ``count`` faces of ``image_size``, else None."""
    rec = read_shard_record(run_dir, index)
    shape = (count, image_size, image_size, 3)
    if rec is None or rec.get("count") != count or tuple(rec.get("shape", ())) != shape:
        return None
    got = _npy_shape(shard_paths(run_dir, index)[0])
    if got is None or got[0] != shape or got[1] != np.uint8:
        return None
    return rec


class SyntheticFaces:
    """A complete generate run, read memory-mapped: ``faces[i]`` is face ``i`` as H x W x 3 uint8 RGB.

    Opening refuses a missing, unfinished or damaged run (:class:`facekd.runs.RunError` with the reason).
    Shards are mapped lazily; nothing is loaded whole.  Safe to hand to DataLoader workers (the maps are
    reopened in each process).
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.manifest: dict[str, Any] = read_manifest(self.run_dir, STAGE, complete=True)
        try:
            self.image_size = int(self.manifest["image_size"])
            self.shard_size = int(self.manifest["shard_size"])
            self.num_images = int(self.manifest["num_images"])
        except (KeyError, TypeError, ValueError) as e:
            raise RunError(f"{self.run_dir}/manifest.json lacks the synthetic face layout ({e})") from e
        self.lengths = shard_lengths(self.num_images, self.shard_size)
        for i, n in enumerate(self.lengths):
            if finished_shard(self.run_dir, i, n, self.image_size) is None:
                raise RunError(f"{self.run_dir} is damaged: shard {i} ({shard_paths(self.run_dir, i)[0].name}) is "
                               f"missing or not {n} x {self.image_size} x {self.image_size} x 3 uint8; "
                               f"rerun the generate stage to repair it")
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.num_images

    def __repr__(self) -> str:
        return f"SyntheticFaces({str(self.run_dir)!r}, n={len(self)}, size={self.image_size})"

    @property
    def config_hash(self) -> str:
        """Hash of what determines the faces' bytes (generator, weights, seeds, size, filter)."""
        return self.manifest["config_hash"]

    @property
    def seeds(self) -> np.ndarray:
        """The seed of every face, in order."""
        return np.load(self.run_dir / SEEDS_FILE, mmap_mode="r", allow_pickle=False)

    def shard(self, index: int) -> np.ndarray:
        """The memory map of shard ``index`` (read-only)."""
        if index not in self._maps:
            self._maps[index] = np.load(shard_paths(self.run_dir, index)[0], mmap_mode="r", allow_pickle=False)
        return self._maps[index]

    def _locate(self, i: int) -> tuple[int, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"face {i} out of range for {n} faces")
        i %= n
        return divmod(i, self.shard_size)

    def __getitem__(self, i: int) -> np.ndarray:
        s, k = self._locate(int(i))
        return np.asarray(self.shard(s)[k])

    def __iter__(self) -> Iterable[np.ndarray]:
        for s in range(len(self.lengths)):
            yield from self.shard(s)

    def batch(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Faces at ``indices`` as one B x H x W x 3 uint8 array (reads only those rows)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(self)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"face indices out of range for {n} faces")
        idx %= max(n, 1)
        out = np.empty((idx.size, self.image_size, self.image_size, 3), dtype=np.uint8)
        shard_of, offset = np.divmod(idx, self.shard_size)
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[sel] = self.shard(int(s))[offset[sel]]
        return out

    def verify(self) -> None:
        """Re-hash every shard against its record; raise :class:`RunError` on the first mismatch."""
        for i in range(len(self.lengths)):
            rec = read_shard_record(self.run_dir, i)
            if rec is None or array_sha256(self.shard(i)) != rec.get("sha256"):
                raise RunError(f"{shard_paths(self.run_dir, i)[0]} does not match its recorded sha256")

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": {}}


def is_grey(images: torch.Tensor) -> bool:
    """Whether uint8 N x 3 x H x W photos are grey (three equal channels); False for none."""
    return bool(len(images)) and bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())


def render_synthetic(faces: np.ndarray, size: int, grey: bool) -> torch.Tensor:
    """Synthetic faces (N x H x W x 3 uint8) as the labeled photos are shown to a model: ``size`` square, grey when
    the photos are grey; N x 3 x size x size uint8."""
    x = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float()
    if x.shape[-1] != size:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    if grey:
        x = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).expand(-1, 3, -1, -1)
    return x.round().clamp(0, 255).to(torch.uint8)
