"""Deterministic per-identity train/val/test splits, written to a split manifest that every method reads.

The protocol is counted per identity: ``per_class`` training images (the paper's Pins protocol is
``per_class=32``; the embedded ORL default is the few-shot ``per_class=2``), ``val`` validation images,
and ``test`` test images (``None`` = all the rest).  The draw depends only on ``seed`` and the file list.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facekd.data.faces import FaceDataError, FaceSet
from facekd.errors import ArtifactError
from facekd.runs import config_hash, read_json, write_json
from facekd.validate import check_choice, check_int

__all__ = ["SplitProtocol", "Split", "make_split", "load_or_make_split"]

log = logging.getLogger(__name__)
TOO_FEW = ("error", "drop")


@dataclass(frozen=True)
class SplitProtocol:
    """Images per identity in each part; ``test=None`` takes all remaining images."""

    per_class: int = 2
    val: int = 1
    test: int | None = None
    seed: int = 0
    too_few: str = "error"  # error | drop

    def __post_init__(self) -> None:
        checked = {
            "per_class": check_int(self.per_class, "data.per_class", minimum=1, what="training images per identity"),
            "val": check_int(self.val, "data.val", minimum=0, what="validation images per identity"),
            "test": check_int(self.test, "data.test", minimum=1, allow_none=True,
                              what="test images per identity; null = all the rest"),
            "seed": check_int(self.seed, "data.split_seed", minimum=0, what="seed of the split draw"),
            "too_few": check_choice(self.too_few, "data.too_few", TOO_FEW,
                                    what="what to do with identities that have too few images"),
        }
        for k, v in checked.items():  # plain Python values (not numpy's), so the manifest and its hash are stable
            object.__setattr__(self, k, v)

    @property
    def needed(self) -> int:
        """Fewest images an identity needs for this protocol."""
        return self.per_class + self.val + (self.test or 1)


@dataclass
class Split:
    """A split manifest: relative paths and labels of each part, plus what they were drawn from."""

    dataset: str
    root: str
    protocol: dict
    classes: list[str]
    train: list[tuple[str, int]]
    val: list[tuple[str, int]]
    test: list[tuple[str, int]]
    dropped: list[str] = field(default_factory=list)
    data_fingerprint: str = ""

    def part(self, name: str) -> list[tuple[str, int]]:
        if name not in {"train", "val", "test"}:
            raise KeyError(f"unknown split part '{name}'; use train, val or test")
        return getattr(self, name)

    @property
    def id(self) -> str:
        """Short hash identifying the split (data, protocol and file lists)."""
        return config_hash({"fp": self.data_fingerprint, "p": self.protocol, "t": self.train, "v": self.val,
                            "s": self.test})

    def write(self, path: str | os.PathLike) -> Path:
        write_json(path, asdict(self))
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Split":
        d = read_json(path)
        for k in ("train", "val", "test"):
            d[k] = [(p, int(y)) for p, y in d[k]]
        return cls(**d)

    def check_matches(self, faces: FaceSet) -> None:
        """Refuse a split manifest that does not describe ``faces`` (other files or other labels)."""
        known = {p: faces.classes[y] for p, y in zip(faces.paths, faces.labels)}
        for part in ("train", "val", "test"):
            for p, y in self.part(part):
                if p not in known:
                    raise FaceDataError(f"split manifest lists {p} ({part}), which is not in the data folder {faces.root}")
                if known[p] != self.classes[y]:
                    raise FaceDataError(f"split manifest labels {p} as '{self.classes[y]}' but the folder says '{known[p]}'")
        test_classes = {y for _, y in self.test}
        missing = sorted(test_classes - {y for _, y in self.train})
        if missing:
            raise FaceDataError(f"classes in test but absent from train: {[self.classes[y] for y in missing][:10]}")


def _fingerprint(faces: FaceSet) -> str:
    return config_hash(sorted(zip(faces.paths, (faces.classes[y] for y in faces.labels))))


def make_split(faces: FaceSet, protocol: SplitProtocol) -> Split:
    """Draw a per-identity split of ``faces``; deterministic in ``protocol.seed``."""
    rng = np.random.default_rng(protocol.seed)
    by_class: dict[int, list[str]] = {}
    for p, y in zip(faces.paths, faces.labels):
        by_class.setdefault(y, []).append(p)
    short = {faces.classes[y]: len(ps) for y, ps in by_class.items() if len(ps) < protocol.needed}
    if short and protocol.too_few == "error":
        names = ", ".join(f"{k} ({n})" for k, n in list(short.items())[:10])
        raise FaceDataError(
            f"{len(short)} identities have fewer than the {protocol.needed} images the split needs "
            f"(per_class={protocol.per_class}, val={protocol.val}, test>={protocol.test or 1}): {names}. "
            f"Lower the counts, add images, or set data.too_few=drop to leave them out.")
    if short:
        log.warning("dropping %d identities with too few images: %s", len(short), sorted(short))
    kept = [y for y in sorted(by_class) if faces.classes[y] not in short]
    if not kept:
        raise FaceDataError(f"no identity has the {protocol.needed} images the split needs (per_class="
                            f"{protocol.per_class}, val={protocol.val}, test>={protocol.test or 1}); the largest "
                            f"has {max(map(len, by_class.values()), default=0)}. Lower data.per_class, data.val or "
                            f"data.test, or add images")
    classes = [faces.classes[y] for y in kept]
    train, val, test = [], [], []
    for new_y, y in enumerate(kept):
        ps = sorted(by_class[y])
        order = [ps[i] for i in rng.permutation(len(ps))]
        a, b = protocol.per_class, protocol.per_class + protocol.val
        c = len(ps) if protocol.test is None else b + protocol.test
        train += [(p, new_y) for p in order[:a]]
        val += [(p, new_y) for p in order[a:b]]
        test += [(p, new_y) for p in order[b:c]]
    return Split(dataset=faces.name, root=str(faces.root), protocol=asdict(protocol), classes=classes,
                 train=train, val=val, test=test, dropped=sorted(short), data_fingerprint=_fingerprint(faces))


def load_or_make_split(faces: FaceSet, protocol: SplitProtocol, splits_dir: str | os.PathLike) -> tuple[Split, Path]:
    """Return the split for (data, protocol), reading its manifest under ``splits_dir`` or writing it once.

    Every stage and baseline calls this, so all of them use exactly the same files.  An existing manifest
    that no longer matches the data folder is refused.
    """
    name = f"{faces.name}-{config_hash({'p': asdict(protocol), 'fp': _fingerprint(faces)})}.json"
    path = Path(splits_dir) / name
    if path.exists():
        try:
            split = Split.read(path)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ArtifactError(f"split manifest {path} is damaged ({type(e).__name__}: {e}); delete it and run "
                                f"again to draw the split anew") from e
        try:
            split.check_matches(faces)
        except FaceDataError as e:
            raise FaceDataError(f"split manifest {path} does not match the data: {e}. Delete the manifest and run "
                                f"again to draw the split anew") from e
        return split, path
    split = make_split(faces, protocol)
    split.check_matches(faces)
    return split, split.write(path)
