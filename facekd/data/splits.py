"""Deterministic per-identity train/val/test splits, written to a split manifest that every method reads.

The protocol is counted per identity: ``per_class`` training images (the paper's Pins protocol is
``per_class=32``; the embedded ORL default is the few-shot ``per_class=2``), ``val`` validation images,
and ``test`` test images (``None`` = all the rest).  The draw depends only on ``seed`` and the file list.

Open set (``unknown_identities=N``, N >= 1): 2N identities are withheld from training, drawn from ``seed``.
All the images of N of them form the part ``unknown_val`` (the rejection threshold is calibrated there) and
all the images of N others the part ``unknown_test`` (the unknown faces test is scored on).  They are never
train/val/test identities; the remaining *known* identities are split as above.  Unknown parts label each
image by its index into ``Split.unknown_classes``, never into ``classes``.  With ``N = 0`` (closed set) the
protocol, the manifest, its file name and the split id are exactly those drawn without the key.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from facekd.data.faces import FaceDataError, FaceSet
from facekd.errors import ArtifactError, ConfigError
from facekd.runs import config_hash, read_json, write_json
from facekd.validate import check_choice, check_int

__all__ = ["SplitProtocol", "Split", "make_split", "load_or_make_split", "PARTS", "UNKNOWN_PARTS"]

log = logging.getLogger(__name__)
TOO_FEW = ("error", "drop")
PARTS = ("train", "val", "test")
UNKNOWN_PARTS = ("unknown_val", "unknown_test")  # open set only: identities withheld from training
# enroll protocol only: people no training step sees (enrolled from a few photos), and strangers
ENROLL_PARTS = ("enroll", "enroll_query", "strangers")


@dataclass(frozen=True)
class SplitProtocol:
    """Images per identity in each part; ``test=None`` takes all remaining images."""

    per_class: int = 2
    val: int = 1
    test: int | None = None
    seed: int = 0
    too_few: str = "error"  # error | drop
    unknown_identities: int = 0  # open set: N calibration + N test unknown identities withheld from training
    enroll_identities: int = 0  # enroll protocol: people withheld from every training step, enrolled from photos
    enroll_shots: int = 2  # photos of each of them that may be enrolled (the rest are their queries)
    stranger_identities: int = 0  # enroll protocol: people never enrolled nor trained on (real strangers)

    def __post_init__(self) -> None:
        checked = {
            "per_class": check_int(self.per_class, "data.per_class", minimum=1, what="training images per identity"),
            "val": check_int(self.val, "data.val", minimum=0, what="validation images per identity"),
            "test": check_int(self.test, "data.test", minimum=1, allow_none=True,
                              what="test images per identity; null = all the rest"),
            "seed": check_int(self.seed, "data.split_seed", minimum=0, what="seed of the split draw"),
            "too_few": check_choice(self.too_few, "data.too_few", TOO_FEW,
                                    what="what to do with identities that have too few images"),
            "unknown_identities": check_int(self.unknown_identities, "data.unknown_identities", minimum=0,
                                            what="identities withheld from training for each of the open-set "
                                                 "parts unknown_val and unknown_test; 0 = closed set"),
            "enroll_identities": check_int(self.enroll_identities, "data.enroll_identities", minimum=0,
                                           what="people withheld from training and only enrolled; 0 = none"),
            "enroll_shots": check_int(self.enroll_shots, "data.enroll_shots", minimum=1,
                                      what="photos of each enrolled-only person that go into the gallery"),
            "stranger_identities": check_int(self.stranger_identities, "data.stranger_identities", minimum=0,
                                             what="people never trained on nor enrolled, the real strangers"),
        }
        for k, v in checked.items():  # plain Python values (not numpy's), so the manifest and its hash are stable
            object.__setattr__(self, k, v)

    def as_dict(self) -> dict:
        """The protocol as recorded (manifest, file name, split id)."""
        return asdict(self)

    @property
    def enroll_protocol(self) -> bool:
        """True when people are withheld as enrolled-only people or strangers."""
        return bool(self.enroll_identities or self.stranger_identities)

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
    # open set only (empty when closed): withheld identities and their images, labelled by index into unknown_classes
    unknown_classes: list[str] = field(default_factory=list)
    unknown_val: list[tuple[str, int]] = field(default_factory=list)
    unknown_test: list[tuple[str, int]] = field(default_factory=list)
    # enroll protocol only: enroll / enroll_query label by index into enroll_classes, strangers into stranger_classes
    enroll_classes: list[str] = field(default_factory=list)
    stranger_classes: list[str] = field(default_factory=list)
    enroll: list[tuple[str, int]] = field(default_factory=list)
    enroll_query: list[tuple[str, int]] = field(default_factory=list)
    strangers: list[tuple[str, int]] = field(default_factory=list)

    @property
    def enroll_protocol(self) -> bool:
        """True when the split withholds enrolled-only people or strangers (``data=orl_enroll``)."""
        return bool(self.enroll_classes or self.stranger_classes)

    @property
    def open_set(self) -> bool:
        """True when identities were withheld as unknowns (``data.unknown_identities`` >= 1)."""
        return bool(self.unknown_classes)

    @property
    def parts(self) -> tuple[str, ...]:
        return PARTS + (UNKNOWN_PARTS if self.open_set else ()) + (ENROLL_PARTS if self.enroll_protocol else ())

    def part(self, name: str) -> list[tuple[str, int]]:
        if name not in PARTS + UNKNOWN_PARTS + ENROLL_PARTS:
            raise KeyError(f"unknown split part '{name}'; use {', '.join(PARTS + UNKNOWN_PARTS + ENROLL_PARTS)}")
        return getattr(self, name)

    @property
    def id(self) -> str:
        """Short hash identifying the split (data, protocol and file lists)."""
        return config_hash({"fp": self.data_fingerprint, "p": self.protocol, "t": self.train, "v": self.val,
                            "s": self.test, "uc": self.unknown_classes, "uv": self.unknown_val, "us": self.unknown_test,
                            "ec": self.enroll_classes, "sc": self.stranger_classes, "e": self.enroll,
                            "eq": self.enroll_query, "st": self.strangers})

    def as_dict(self) -> dict:
        return asdict(self)

    def write(self, path: str | os.PathLike) -> Path:
        write_json(path, self.as_dict())
        return Path(path)

    @classmethod
    def read(cls, path: str | os.PathLike) -> "Split":
        d = read_json(path)
        for k in PARTS + UNKNOWN_PARTS + ENROLL_PARTS:
            d[k] = [(p, int(y)) for p, y in d[k]]
        return cls(**d)

    def check_matches(self, faces: FaceSet) -> None:
        """Refuse a split manifest that does not describe ``faces`` (other files or other labels)."""
        known = {p: faces.classes[y] for p, y in zip(faces.paths, faces.labels)}
        for part in self.parts:
            names = (self.unknown_classes if part in UNKNOWN_PARTS else self.stranger_classes if part == "strangers"
                     else self.enroll_classes if part in ENROLL_PARTS else self.classes)
            for p, y in self.part(part):
                if p not in known:
                    raise FaceDataError(f"split manifest lists {p} ({part}), which is not in the data folder {faces.root}")
                if not 0 <= y < len(names) or known[p] != names[y]:
                    raise FaceDataError(f"split manifest labels {p} ({part}) as "
                                        f"'{names[y] if 0 <= y < len(names) else y}' but the folder says '{known[p]}'")
        groups = [set(self.classes), set(self.unknown_classes), set(self.enroll_classes), set(self.stranger_classes)]
        both = sorted({n for i, a in enumerate(groups) for b in groups[i + 1:] for n in a & b})
        if both:
            raise FaceDataError(f"identities listed in two roles (trained, unknown, enrolled-only, stranger): {both[:10]}")
        calibration = {n for _, y in self.unknown_val for n in [self.unknown_classes[y]]}
        tested = {n for _, y in self.unknown_test for n in [self.unknown_classes[y]]}
        if calibration & tested:
            raise FaceDataError(f"identities in both unknown_val and unknown_test: {sorted(calibration & tested)[:10]}")
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
    n_unknown = protocol.unknown_identities
    unknown_val: list[tuple[str, int]] = []
    unknown_test: list[tuple[str, int]] = []
    unknown_classes: list[str] = []
    if n_unknown:
        if len(kept) - 2 * n_unknown < 2:
            most = max((len(kept) - 2) // 2, 0)
            raise ConfigError(
                f"data.unknown_identities={n_unknown} withholds {2 * n_unknown} identities (N for calibration, N as "
                f"test unknowns), but {faces.name} has {len(kept)} usable identities, so fewer than 2 known "
                f"identities would remain to train on. Set data.unknown_identities to at most {most}"
                + (" or add identities" if most else ", add identities") + ", or 0 for a closed-set split.")
        # drawn from the split seed by a generator of its own, apart from the per-identity image draws
        order = np.random.default_rng([protocol.seed, 0x0F5E7]).permutation(len(kept))
        withheld = [kept[i] for i in order[:2 * n_unknown]]
        calibration, tested = sorted(withheld[:n_unknown]), sorted(withheld[n_unknown:])
        unknown_classes = [faces.classes[y] for y in calibration + tested]
        for i, y in enumerate(calibration + tested):
            (unknown_val if i < n_unknown else unknown_test).extend((p, i) for p in sorted(by_class[y]))
        kept = [y for y in kept if y not in set(withheld)]
    enrolled, strangers, kept = _draw_enroll_people(faces, by_class, kept, protocol)
    enroll, enroll_query = [], []
    for i, y in enumerate(enrolled):  # the first enroll_shots photos (in a seeded order) may be enrolled
        ps = sorted(by_class[y])
        order = [ps[j] for j in np.random.default_rng([protocol.seed, 0xE7, i]).permutation(len(ps))]
        enroll += [(p, i) for p in order[:protocol.enroll_shots]]
        enroll_query += [(p, i) for p in order[protocol.enroll_shots:]]
    stranger_part = [(p, i) for i, y in enumerate(strangers) for p in sorted(by_class[y])]
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
    return Split(dataset=faces.name, root=str(faces.root), protocol=protocol.as_dict(), classes=classes,
                 train=train, val=val, test=test, dropped=sorted(short), data_fingerprint=_fingerprint(faces),
                 unknown_classes=unknown_classes, unknown_val=unknown_val, unknown_test=unknown_test,
                 enroll_classes=[faces.classes[y] for y in enrolled],
                 stranger_classes=[faces.classes[y] for y in strangers], enroll=enroll, enroll_query=enroll_query,
                 strangers=stranger_part)


def _draw_enroll_people(faces: FaceSet, by_class: dict[int, list[str]], kept: list[int], protocol: SplitProtocol
                        ) -> tuple[list[int], list[int], list[int]]:
    """``(enrolled-only people, strangers, the rest)``: drawn from the split seed by a generator of their own.

    Enrolled-only people need ``enroll_shots`` photos plus at least one query photo."""
    n_e, n_s = protocol.enroll_identities, protocol.stranger_identities
    if not (n_e or n_s):
        return [], [], kept
    if protocol.unknown_identities:
        raise ConfigError("data.unknown_identities and the enroll protocol (data.enroll_identities, "
                          "data.stranger_identities) both withhold people; use one of them (data=orl_openset or "
                          "data=orl_enroll)")
    if len(kept) - n_e - n_s < 2:
        raise ConfigError(f"data.enroll_identities={n_e} and data.stranger_identities={n_s} withhold {n_e + n_s} "
                          f"people, but {faces.name} has {len(kept)} usable ones, so fewer than 2 would remain to "
                          "train on; lower them")
    order = np.random.default_rng([protocol.seed, 0xE2011]).permutation(len(kept))
    withheld = [kept[i] for i in order[:n_e + n_s]]
    enrolled, strangers = sorted(withheld[:n_e]), sorted(withheld[n_e:])
    short = [faces.classes[y] for y in enrolled if len(by_class[y]) <= protocol.enroll_shots]
    if short:
        raise FaceDataError(f"enrolled-only people need data.enroll_shots={protocol.enroll_shots} photos plus one to "
                            f"query, but {', '.join(short[:10])} have fewer; lower data.enroll_shots")
    return enrolled, strangers, [y for y in kept if y not in set(withheld)]


def load_or_make_split(faces: FaceSet, protocol: SplitProtocol, splits_dir: str | os.PathLike) -> tuple[Split, Path]:
    """Return the split for (data, protocol), reading its manifest under ``splits_dir`` or writing it once.

    Every stage and baseline calls this, so all of them use exactly the same files.  An existing manifest
    that no longer matches the data folder is refused.
    """
    name = f"{faces.name}-{config_hash({'p': protocol.as_dict(), 'fp': _fingerprint(faces)})}.json"
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
