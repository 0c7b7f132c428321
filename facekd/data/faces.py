"""Labeled face sets: the embedded ORL faces, or any folder with one sub-folder per identity (Pins layout).

A :class:`FaceSet` is only a list of image files with integer labels; pixels are read lazily with
:func:`read_image`, which always returns H x W x 3 uint8 RGB (grey images are expanded to 3 channels).
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from facekd.errors import FacekdError

__all__ = ["FaceSet", "FaceDataError", "IMAGE_SUFFIXES", "read_image", "load_folder", "load_orl", "load_faces"]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp"}


class FaceDataError(FacekdError, ValueError):
    """A face folder, image or split request that cannot be used, with the reason."""


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB; grey is expanded to 3 channels.

    Raises :class:`FaceDataError` naming the file when it is missing, corrupt or unreadable.
    """
    try:
        with Image.open(path) as im:
            im.load()
            rgb = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise FaceDataError(f"cannot read image {path}: {e}") from e
    return np.asarray(rgb, dtype=np.uint8)


@dataclass
class FaceSet:
    """Image files of labeled identities.  ``paths[i]`` is relative to ``root`` and shows ``classes[labels[i]]``."""

    root: Path
    paths: list[str]
    labels: list[int]
    classes: list[str]
    name: str = "faces"
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        """Images per identity."""
        c = np.bincount(np.asarray(self.labels, dtype=int), minlength=len(self.classes))
        return {k: int(n) for k, n in zip(self.classes, c)}

    def image(self, i: int) -> np.ndarray:
        return read_image(self.root / self.paths[i])


def load_folder(root: str | os.PathLike, *, name: str | None = None, on_corrupt: str = "error",
                min_images: int = 1) -> FaceSet:
    """Load a folder holding one sub-folder of images per identity.

    ``on_corrupt``: ``error`` stops at the first unreadable image (naming it); ``skip`` drops it with a
    warning and records it in ``FaceSet.skipped``.  Identities with fewer than ``min_images`` readable
    images are an error here; split-time policies live in :mod:`facekd.data.splits`.
    """
    if on_corrupt not in {"error", "skip"}:
        raise FaceDataError(f"on_corrupt must be 'error' or 'skip', got {on_corrupt!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FaceDataError(f"face folder {root} does not exist (expected one sub-folder of images per identity)")
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: _natural_key(d.name))
    if not class_dirs:
        raise FaceDataError(f"face folder {root} has no identity sub-folders (expected {root}/<person>/<image>.jpg)")
    paths, labels, classes, skipped = [], [], [], []
    for d in class_dirs:
        files = sorted((f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=lambda f: _natural_key(f.name))
        good = []
        for f in files:
            try:
                with Image.open(f) as im:
                    im.verify()
                good.append(f)
            except Exception as e:  # PIL raises many types for broken files
                if on_corrupt == "error":
                    raise FaceDataError(f"corrupt or unreadable image {f}: {e}. "
                                        f"Fix or remove it, or set data.on_corrupt=skip") from e
                log.warning("skipping unreadable image %s (%s)", f, e)
                skipped.append(str(f.relative_to(root)))
        if not good:
            log.warning("identity folder %s holds no readable images; ignored", d)
            continue
        if len(good) < min_images:
            raise FaceDataError(f"identity '{d.name}' has {len(good)} images, fewer than the {min_images} required")
        label = len(classes)
        classes.append(d.name)
        for f in good:
            paths.append(f.relative_to(root).as_posix())
            labels.append(label)
    if not classes:
        raise FaceDataError(f"face folder {root} holds no readable images")
    return FaceSet(root=root, paths=paths, labels=labels, classes=classes, name=name or root.name, skipped=skipped)


def load_orl() -> FaceSet:
    """The embedded ORL / AT&T faces: 40 identities x 10 grey 92x112 images (credit AT&T Laboratories Cambridge)."""
    from facekd.assets import resolve

    return load_folder(resolve("orl"), name="orl")


def load_faces(name: str = "orl", root: str | os.PathLike | None = None, **kwargs) -> FaceSet:
    """Load the embedded ORL set (``name='orl'``) or a user folder (any other name, with ``root``)."""
    if name == "orl" and root is None:
        return load_orl()
    if root is None:
        raise FaceDataError(f"data '{name}' needs data.root=DIR: a folder with one sub-folder of images per identity")
    return load_folder(root, name=name, **kwargs)
