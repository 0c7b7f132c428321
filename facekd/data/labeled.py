"""The labeled set as a stage sees it: load the faces a ``data`` config names and its shared split.

``prepare_labeled(data_cfg, root)`` loads (and optionally aligns) the face folder, then reads or writes
the split manifest under ``<root>/splits/`` so that every method uses exactly the same files.
``split_datasets`` turns the split into in-memory uint8 datasets.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from facekd.data.augment import build_augmentation
from facekd.data.datasets import LabeledFaces
from facekd.data.faces import FaceSet, load_faces
from facekd.data.splits import Split, SplitProtocol, load_or_make_split

__all__ = ["LabeledData", "prepare_labeled", "split_datasets"]


@dataclass
class LabeledData:
    faces: FaceSet
    split: Split
    split_path: Path
    cfg: Mapping[str, Any]

    @property
    def num_classes(self) -> int:
        return len(self.split.classes)


def protocol_from_cfg(cfg: Mapping[str, Any]) -> SplitProtocol:
    return SplitProtocol(per_class=cfg["per_class"], val=cfg["val"], test=cfg.get("test"),
                         seed=cfg.get("split_seed", 0), too_few=cfg.get("too_few", "error"))


def prepare_labeled(cfg: Mapping[str, Any], root: str | os.PathLike) -> LabeledData:
    """Load the labeled faces of ``cfg`` (the ``data`` config section) and their split under ``root``."""
    protocol = protocol_from_cfg(cfg)  # validate the numbers before touching any file
    folder = cfg.get("root")
    if folder is not None and cfg.get("align", False):
        from facekd.data.align import align_folder

        folder = align_folder(folder)
    faces = load_faces(cfg.get("name", "orl"), folder, on_corrupt=cfg.get("on_corrupt", "error"))
    split, path = load_or_make_split(faces, protocol, Path(root) / "splits")
    return LabeledData(faces=faces, split=split, split_path=path, cfg=cfg)


def split_datasets(data: LabeledData, parts: tuple[str, ...] = ("train", "val", "test"),
                   augment_train: bool = True) -> dict[str, LabeledFaces]:
    """In-memory datasets of the requested split parts; only ``train`` is augmented."""
    cfg = data.cfg
    aug = build_augmentation(cfg.get("augment")) if augment_train else None
    return {part: LabeledFaces(data.faces.root, data.split.part(part), cfg.get("image_size", 112),
                               cfg.get("framing", "pad"), aug if part == "train" else None)
            for part in parts}
