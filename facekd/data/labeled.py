"""The labeled set as a stage sees it: load the faces a ``data`` config names and its shared split.

``prepare_labeled(data_cfg, root)`` loads (and optionally aligns) the face folder, then reads or writes
the split manifest under ``<root>/splits/`` so that every method uses exactly the same files.
``split_datasets`` turns the split into in-memory uint8 datasets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from facekd.config import plain
from facekd.data.augment import build_augmentation
from facekd.data.datasets import LabeledFaces
from facekd.data.faces import FaceSet, ON_CORRUPT, load_faces
from facekd.data.splits import Split, SplitProtocol, load_or_make_split
from facekd.errors import ConfigError
from facekd.validate import check_bool, check_choice, check_int, show_value

__all__ = ["LabeledData", "check_data_config", "prepare_labeled", "split_datasets", "data_identity"]


@dataclass
class LabeledData:
    faces: FaceSet
    split: Split
    split_path: Path
    cfg: Mapping[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.split.classes)

    @property
    def open_set(self) -> bool:
        """True when the split withholds unknown identities (parts ``unknown_val`` and ``unknown_test``)."""
        return self.split.open_set

    @property
    def enroll_protocol(self) -> bool:
        """True when the split withholds enrolled-only people and strangers (parts ``enroll``, ``enroll_query``,
        ``strangers``)."""
        return self.split.enroll_protocol


_MISSING = object()
FRAMINGS = ("pad", "squash", "crop")


def _get(cfg: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """``cfg[key]`` (or ``default``); a missing required key or an unset ``???`` is a ConfigError naming it."""
    from omegaconf.errors import MissingMandatoryValue

    try:
        value = cfg[key]
    except MissingMandatoryValue:  # ``???`` in the YAML: must be set, default or not
        value = _MISSING
    except KeyError:
        value = default
    if value is _MISSING:
        hint = "a folder holding one sub-folder of images per identity" if key == "root" else "a value"
        raise ConfigError(f"data.{key} is not set: give it {hint}, e.g. data.{key}=" +
                          ("/path/to/faces" if key == "root" else "..."))
    return value


def protocol_from_cfg(cfg: Mapping[str, Any]) -> SplitProtocol:
    """The split protocol of a ``data`` config section (its numbers checked, each refusal naming its key)."""
    return SplitProtocol(per_class=_get(cfg, "per_class"), val=_get(cfg, "val"), test=_get(cfg, "test", None),
                         seed=_get(cfg, "split_seed", 0), too_few=_get(cfg, "too_few", "error"),
                         unknown_identities=_get(cfg, "unknown_identities", 0),
                         enroll_identities=_get(cfg, "enroll_identities", 0),
                         enroll_shots=_get(cfg, "enroll_shots", 2),
                         stranger_identities=_get(cfg, "stranger_identities", 0))


def data_identity(cfg: Mapping[str, Any]) -> dict:
    """The ``data`` section as hashed into cache keys and resume checks: every key, as plain values."""
    return dict(plain(cfg) or {})


def check_data_config(cfg: Mapping[str, Any]) -> SplitProtocol:
    """Check every key of a ``data`` config section before any file is touched; return its split protocol.

    Numbers must be integers (``per_class=true`` or ``'5'`` is refused, never read as 1 or 5), choices must
    be among their options, ``align`` must be true or false and ``root`` a path or null.
    """
    protocol = protocol_from_cfg(cfg)
    name = _get(cfg, "name", "orl")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"data.name must be a non-empty name, got {show_value(name)}; set it like data.name=faces")
    root = _get(cfg, "root", None)
    if root is not None and not isinstance(root, (str, os.PathLike)):
        raise ConfigError(f"data.root must be a folder path or null (the embedded ORL faces), got "
                          f"{show_value(root)}; set it like data.root=/path/to/faces")
    check_int(_get(cfg, "image_size", 112), "data.image_size", minimum=1,
              what="side of the square images, in pixels")
    check_choice(_get(cfg, "framing", "pad"), "data.framing", FRAMINGS,
                 what="how non-square photos become square")
    check_choice(_get(cfg, "on_corrupt", "error"), "data.on_corrupt", ON_CORRUPT,
                 what="what to do with unreadable image files")
    check_bool(_get(cfg, "align", False), "data.align", what="MTCNN alignment of raw photos")
    augment = _get(cfg, "augment", None)
    if augment is not None and (not isinstance(augment, Sequence) or isinstance(augment, str)):
        raise ConfigError(f"data.augment must be a list of transforms ({{_target_: albumentations.X, ...}}) or "
                          f"null, got {show_value(augment)}")
    return protocol


def prepare_labeled(cfg: Mapping[str, Any], root: str | os.PathLike) -> LabeledData:
    """Load the labeled faces of ``cfg`` (the ``data`` config section) and their split under ``root``.

    Unreadable images are dropped (``data.on_corrupt=skip``) or refused before the split manifest is drawn,
    so a manifest never lists a file that cannot be decoded.
    """
    protocol = check_data_config(cfg)  # validate the config before touching any file
    folder = _get(cfg, "root", None)
    on_corrupt = _get(cfg, "on_corrupt", "error")
    if folder is not None and _get(cfg, "align", False):
        from facekd.data.align import align_folder

        folder = align_folder(folder, on_corrupt=on_corrupt)
    faces = load_faces(_get(cfg, "name", "orl"), folder, on_corrupt=on_corrupt)
    split, path = load_or_make_split(faces, protocol, Path(root) / "splits")
    return LabeledData(faces=faces, split=split, split_path=path, cfg=cfg)


def split_datasets(data: LabeledData, parts: tuple[str, ...] = ("train", "val", "test"),
                   augment_train: bool = True) -> dict[str, LabeledFaces]:
    """In-memory datasets of the requested split parts; only ``train`` is augmented."""
    cfg = data.cfg
    aug = build_augmentation(cfg.get("augment"), "data.augment") if augment_train else None
    return {part: LabeledFaces(data.faces.root, data.split.part(part), cfg.get("image_size", 112),
                               cfg.get("framing", "pad"), aug if part == "train" else None)
            for part in parts}
