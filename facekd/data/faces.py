"""Labeled face sets: the embedded ORL faces, or any folder with one sub-folder per identity (Pins layout).

A :class:`FaceSet` is only a list of image files with integer labels; pixels are read lazily with
:func:`read_image`, the one place image files are decoded.  It always returns the H x W x 3 uint8 RGB
image a person would see (see :func:`decode_image`): the EXIF orientation applied, 16-bit values scaled
to 8 bits, transparency composited onto white, palettes expanded, grey and CMYK converted to RGB.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from facekd.assets import resolve
from facekd.errors import ConfigError, FacekdError, InputFileError
from facekd.validate import check_choice

__all__ = ["FaceSet", "FaceDataError", "IMAGE_SUFFIXES", "BACKGROUND", "decode_image", "read_image",
           "check_folder", "load_folder", "load_orl", "load_faces"]

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".pgm", ".bmp", ".webp"}
BACKGROUND = 255  # transparent pixels are composited onto white, as on a white page
ON_CORRUPT = ("error", "skip")
_LAYOUT = "one sub-folder of images per identity (DIR/<person>/<image>.jpg)"
_EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {  # EXIF orientation -> the transpose that shows the image upright (as PIL.ImageOps.exif_transpose)
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class FaceDataError(FacekdError, ValueError):
    """A face folder, image or split request that cannot be used, with the reason."""


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat(grey[..., None], 3, axis=2)


def _composite(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``rgb`` over a white background with ``alpha`` (uint8, 255 = opaque), rounded to the nearest value."""
    if alpha is None or bool((alpha == 255).all()):
        return rgb
    a = alpha.astype(np.uint32)[..., None]
    return ((rgb.astype(np.uint32) * a + BACKGROUND * (255 - a) + 127) // 255).astype(np.uint8)


def _key_alpha(values: np.ndarray, key: object) -> np.ndarray | None:
    """Alpha of a colour-key transparency (PNG tRNS): 0 where a pixel equals ``key``, 255 elsewhere."""
    if isinstance(key, (int, np.integer)) and values.ndim == 2:
        return np.where(values == int(key), 0, 255).astype(np.uint8)
    if isinstance(key, tuple) and values.ndim == 3 and len(key) == values.shape[2] and max(key) <= 255:
        return np.where((values == np.asarray(key)).all(axis=2), 0, 255).astype(np.uint8)
    return None


def _to_rgb(im: Image.Image) -> np.ndarray:
    """Pixels of a loaded PIL image, any mode, as H x W x 3 uint8 RGB."""
    mode, key = im.mode, im.info.get("transparency")
    if mode in {"P", "PA"}:  # expand the palette, keeping its transparency
        im = im.convert("RGBA" if mode == "PA" or key is not None else "RGB")
        mode, key = im.mode, None
    elif mode == "1":
        im, mode = im.convert("L"), "L"
    if mode == "I" or mode.startswith("I;16"):
        # 16-bit data (I;16*, or I from 16-bit PNG/PGM): scale 0..65535 to 0..255 by the high byte, never clip
        raw = np.asarray(im).astype(np.int64)
        grey = (np.clip(raw, 0, 65535) >> 8).astype(np.uint8)
        return _composite(_grey_to_rgb(grey), _key_alpha(raw, key))
    if mode == "F":  # floats on PIL's 0..255 scale (as Image.convert("L")), but rounded, not truncated
        raw = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        return _grey_to_rgb(np.clip(np.rint(raw), 0, 255).astype(np.uint8))
    if mode == "L":
        grey = np.asarray(im, dtype=np.uint8)
        return _composite(_grey_to_rgb(grey), _key_alpha(grey, key))
    if mode == "LA":
        la = np.asarray(im, dtype=np.uint8)
        return _composite(_grey_to_rgb(la[..., 0]), la[..., 1])
    if mode == "RGB":
        rgb = np.asarray(im, dtype=np.uint8)
        return _composite(rgb, _key_alpha(rgb, key))
    if mode == "RGBA":
        rgba = np.asarray(im, dtype=np.uint8)
        return _composite(rgba[..., :3], rgba[..., 3])
    # CMYK, YCbCr, LAB, HSV, RGBX, and the premultiplied RGBa / La: PIL's own conversion
    return _to_rgb(im.convert("RGBA" if mode in {"RGBa", "La"} else "RGB"))


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception as e:  # a damaged EXIF block: the pixels are still good, shown as stored
        log.warning("ignoring unreadable EXIF data of %s (%s)", getattr(im, "filename", "an image"), e)
        return 1


def decode_image(im: Image.Image) -> np.ndarray:
    """Fully decode an opened PIL image into the H x W x 3 uint8 RGB image a person would see.

    - the EXIF orientation is applied, so a portrait phone photo stands upright;
    - 16-bit data (modes ``I;16``, ``I;16B``, ``I;16L``, ``I``) is scaled to 8 bits, ``v >> 8`` (65535 -> 255),
      never clipped; 16-bit RGB(A) PNGs are already read by PIL as their high bytes;
    - transparency (alpha channels, palette or colour-key transparency) is composited onto white;
    - palettes are expanded, grey (``1``, ``L``) is repeated into 3 channels, CMYK and YCbCr are converted
      by PIL; float images (``F``) are read on PIL's 0-255 scale, rounded to the nearest and clipped.
    Embedded ICC colour profiles are not applied.  Multi-frame files give their first frame.
    """
    im.load()  # decode every byte: a truncated file fails here, not later
    rgb = _to_rgb(im)
    method = _TRANSPOSE.get(_orientation(im))
    if method is not None:
        rgb = np.asarray(Image.fromarray(rgb).transpose(method))
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as the H x W x 3 uint8 RGB image a person would see (:func:`decode_image`).

    A missing file raises :class:`~facekd.errors.InputFileError`; a damaged or unreadable one raises
    :class:`FaceDataError`, both naming the file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not an image file" if path.is_dir() else "does not exist"
        raise InputFileError(f"image {path} {what}; it may have been moved or deleted since the face folder "
                             f"was listed: restore it, or run again so that the folder is listed afresh")
    try:
        with Image.open(path) as im:
            return decode_image(im)
    except FacekdError:
        raise
    except Exception as e:  # PIL raises many types (OSError, SyntaxError, struct.error...) for damaged files
        raise FaceDataError(f"cannot read image {path}: {type(e).__name__}: {e}. The file is damaged or not an "
                            f"image: replace or delete it, or set data.on_corrupt=skip to leave unreadable "
                            f"images out") from e


_CHECKED: dict[tuple[str, int, int], str | None] = {}


def _unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be decoded in full, or None when it decodes; remembered per (file, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _CHECKED:
        try:
            read_image(path)
            _CHECKED[key] = None
        except FacekdError as e:
            cause = e.__cause__
            _CHECKED[key] = f"{type(cause).__name__}: {cause}" if cause is not None else str(e)
    return _CHECKED[key]


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


def check_folder(root: str | os.PathLike, key: str = "data.root") -> Path:
    """``root`` as a Path when it is a folder; a missing path or a file is refused, naming ``key``."""
    path = Path(root).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputFileError(f"{key}={root} is a file, not a folder. Set {key} to the folder that holds {_LAYOUT}, "
                             f"not to a single image or an archive (unpack an archive first)")
    raise InputFileError(f"{key}={root} does not exist. Set {key} to an existing folder that holds {_LAYOUT}")


def load_folder(root: str | os.PathLike, *, name: str | None = None, on_corrupt: str = "error",
                min_images: int = 1, key: str = "data.root") -> FaceSet:
    """Load a folder holding one sub-folder of images per identity.

    Every image is decoded in full (:func:`read_image`) before it is listed, so a truncated file never
    reaches a split.  ``on_corrupt``: ``error`` stops at the first unreadable image (naming it); ``skip``
    drops it with a warning naming it and records it in ``FaceSet.skipped``.  Identities with fewer than
    ``min_images`` readable images are an error here; split-time policies live in :mod:`facekd.data.splits`.
    ``key`` is the config key that gave ``root``, named in errors.
    """
    check_choice(on_corrupt, "data.on_corrupt", ON_CORRUPT, what="what to do with unreadable image files")
    root = check_folder(root, key)
    try:
        entries = list(root.iterdir())
    except OSError as e:
        raise InputFileError(f"{key}={root} cannot be listed ({e}); check its permissions") from e
    class_dirs = sorted((d for d in entries if d.is_dir() and not d.name.startswith(".")),
                        key=lambda d: _natural_key(d.name))
    if not class_dirs:
        loose = sum(1 for f in entries if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        hint = f"; its {loose} images lie directly in it: move each person's images into a sub-folder" if loose else ""
        raise FaceDataError(f"{key}={root} has no identity sub-folders{hint}. Expected {_LAYOUT}")
    paths, labels, classes, skipped = [], [], [], []
    for d in class_dirs:
        files = sorted((f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=lambda f: _natural_key(f.name))
        good = []
        for f in files:
            reason = _unreadable(f)
            if reason is None:
                good.append(f)
                continue
            if on_corrupt == "error":
                raise FaceDataError(f"corrupt or unreadable image {f}: {reason}. Replace or delete it, or set "
                                    f"data.on_corrupt=skip to leave unreadable images out")
            log.warning("skipping unreadable image %s (%s)", f, reason)
            skipped.append(f.relative_to(root).as_posix())
        if not good:
            log.warning("identity folder %s holds no readable images; ignored", d)
            continue
        if len(good) < min_images:
            raise FaceDataError(f"identity '{d.name}' ({d}) has {len(good)} readable images, fewer than the "
                                f"{min_images} required; add images to it or remove the folder")
        label = len(classes)
        classes.append(d.name)
        for f in good:
            paths.append(f.relative_to(root).as_posix())
            labels.append(label)
    if not classes:
        why = f" ({len(skipped)} unreadable images were skipped)" if skipped else ""
        raise FaceDataError(f"{key}={root} holds no readable images{why}. Expected {_LAYOUT}, with "
                            f"images of type {', '.join(sorted(IMAGE_SUFFIXES))}")
    if skipped:
        log.warning("left out %d unreadable images under %s (data.on_corrupt=skip)", len(skipped), root)
    return FaceSet(root=root, paths=paths, labels=labels, classes=classes, name=name or root.name, skipped=skipped)


def load_orl() -> FaceSet:
    """The embedded ORL / AT&T faces: 40 identities x 10 grey 92x112 images (credit AT&T Laboratories Cambridge)."""
    return load_folder(resolve("orl"), name="orl", key="the embedded ORL folder")


def load_faces(name: str = "orl", root: str | os.PathLike | None = None, **kwargs) -> FaceSet:
    """Load the embedded ORL set (``name='orl'``) or a user folder (any other name, with ``root``)."""
    if name == "orl" and root is None:
        return load_orl()
    if root is None:
        raise ConfigError(f"data.root is not set: data '{name}' needs data.root=DIR, a folder holding {_LAYOUT}")
    return load_folder(root, name=name, **kwargs)
