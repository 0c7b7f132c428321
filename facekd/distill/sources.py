"""The images distillation learns from and is measured on, built from the ``distill.sources`` config.

Training sources (each with a sampling ``weight``, ``views`` per image and an ``augment`` preset or list):

* ``synthetic``: the faces of a generate run, minus its last ``holdout`` faces, which are held out for
  the per-epoch metrics and for choosing the best epoch;
* ``labeled_train``: the labeled set's **training** images with their labels withheld;
* ``labeled_mixup``: blends of two of those training images (face morphs, labels withheld), each trained
  towards the teacher's feature of the blend itself (function matching on mixup views);
* ``synthetic_mixup``: blends of one training image and one synthetic face shown like the photos;
* ``folder``: any folder of unlabeled face photos (searched recursively).

Evaluation sources: the synthetic holdout, and the labeled set's ``val`` and ``test`` images (one clean
view each).  Val and test images never train: :func:`check_no_leak` asserts it on file paths and is
called on every source set the stage builds.

A source's ``fingerprint`` (part of every teacher-feature cache key) holds the sha256 of every file it
reads (the photos, or the generate run's shards), so a file replaced under the same name makes a new
cache.  :func:`open_generate_run` checks the shards against the checksums the generate stage recorded.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from facekd.data.augment import build_augmentation, frame_square
from facekd.data.datasets import load_images
from facekd.data.faces import IMAGE_SUFFIXES, FaceDataError, read_image
from facekd.data.labeled import LabeledData
from facekd.data.synthetic import SyntheticFaces, is_grey, render_synthetic, shard_paths
from facekd.distill.views import ViewSource
from facekd.hashing import content_hashes, verify_artifacts
from facekd.runs import config_hash
from facekd.errors import ConfigError

__all__ = ["LeakageError", "resolve_augment", "open_generate_run", "generate_command", "synthetic_sources",
           "labeled_train_items", "labeled_train_source", "labeled_mixup_source", "mixup_pairs",
           "synthetic_mixup_source", "folder_source",
           "real_eval_sources", "check_no_leak", "evenly_spaced", "SOURCE_ORDER", "active_source_weights",
           "check_monitor_trains"]

# the distill sources in the order the stage builds them (synthetic first)
SOURCE_ORDER = ("synthetic", "labeled_train", "labeled_mixup", "synthetic_mixup", "folder")


class LeakageError(AssertionError):
    """A validation or test image was about to be used for training."""


def resolve_augment(spec: Any, presets: Mapping[str, Any]) -> tuple[Any, list]:
    """``spec`` is a preset name (``none``, ``target_like``, ...) or a list of albumentations steps.

    Returns ``(A.Compose or None, the plain list of steps)``; the list goes into cache keys.
    """
    if spec is None:
        return None, []
    if isinstance(spec, str):
        if spec not in presets:
            raise ConfigError(f"unknown augmentation preset '{spec}'; presets: {', '.join(sorted(presets))} "
                              "(or give a list of albumentations steps)")
        spec = presets[spec]
    steps = list(spec or [])
    return build_augmentation(steps), steps


def _source_args(cfg: Mapping[str, Any], presets: Mapping[str, Any]) -> dict:
    augment, steps = resolve_augment(cfg.get("augment"), presets)
    return {"views": int(cfg.get("views", 1)), "augment": augment, "augment_spec": steps,
            "weight": float(cfg.get("weight", 1.0)), "targets": str(cfg.get("targets", "view"))}


def generate_command(run_dir: str | os.PathLike) -> str:
    """The command that (re)makes the generate run ``run_dir`` (``<paths.root>/generate/<name>``)."""
    run = Path(run_dir).resolve()
    return (f"`python scripts/generate.py paths.root={run.parent.parent} generate.name={run.name}` with the "
            "overrides it was made with (it remakes damaged shards in place)")


def _shard_files(faces: SyntheticFaces) -> list[str]:
    return [shard_paths(faces.run_dir, i)[0].relative_to(faces.run_dir).as_posix() for i in range(len(faces.lengths))]


def open_generate_run(run_dir: str | os.PathLike) -> SyntheticFaces:
    """A complete generate run whose shards match the sha256 its manifest recorded.

    Refuses a missing or unfinished run (:class:`facekd.runs.RunError`) and a damaged, truncated or
    replaced shard, or a run that records no checksums (:class:`facekd.errors.ArtifactError` naming it).
    """
    faces = SyntheticFaces(run_dir)
    verify_artifacts(faces.run_dir, faces.manifest, _shard_files(faces), writer="the generate stage",
                     fix=f"rerun it: {generate_command(faces.run_dir)}")
    return faces


def synthetic_sources(faces: SyntheticFaces, cfg: Mapping[str, Any], presets: Mapping[str, Any],
                      seed: int) -> tuple[ViewSource, ViewSource]:
    """``(train, holdout)`` sources over a generate run: the first ``num_images`` faces (null = all but the
    holdout) train, the last ``holdout`` faces are held out (one view each, same augmentation)."""
    n, holdout = len(faces), int(cfg.get("holdout", 0))
    if holdout < 1:
        raise ConfigError("distill.sources.synthetic.holdout must be >= 1: the best epoch is chosen on held-out faces")
    avail = n - holdout
    num = avail if cfg.get("num_images") is None else int(cfg["num_images"])
    if avail < 1 or not 1 <= num <= avail:
        raise ConfigError(f"the generate run {faces.run_dir} has {n} faces: {holdout} held out leave {avail} for "
                          f"training, but distill.sources.synthetic.num_images={cfg.get('num_images')}; generate "
                          "more faces or lower num_images / holdout")
    args = _source_args(cfg, presets)

    def reader(offset: int):
        return lambda idx: faces.batch(np.asarray(idx, dtype=np.int64) + offset)

    shards = content_hashes([faces.run_dir / f for f in _shard_files(faces)])  # the bytes, not the run's name
    base = {"shards_sha256": shards, "size": faces.image_size}
    train = ViewSource(name="synthetic", size=num, read=reader(0), seed=seed,
                       fingerprint=config_hash({**base, "range": [0, num]}), **args)
    hold = ViewSource(name="synthetic-holdout", size=holdout, read=reader(avail), seed=seed + 1,
                      fingerprint=config_hash({**base, "range": [avail, n]}),
                      **{**args, "views": 1, "weight": 0.0, "targets": "view"})
    return train, hold


def _files_fingerprint(root: str | os.PathLike, files: Sequence[str], size: int, framing: str) -> str:
    """The photos' names and bytes (sha256 of each file), and how they are framed."""
    digests = content_hashes([Path(root) / f for f in files])
    return config_hash({"root": str(Path(root).resolve()), "files": list(files), "sha256": digests, "size": size,
                        "framing": framing})


def _photo_source(name: str, root: str | os.PathLike, files: Sequence[str], size: int, framing: str,
                  cfg: Mapping[str, Any], presets: Mapping[str, Any], seed: int, in_memory: bool) -> ViewSource:
    if in_memory:
        images = load_images(root, files, size, framing)

        def read(idx: np.ndarray) -> np.ndarray:
            return images[np.asarray(idx, dtype=np.int64)]
    else:
        def read(idx: np.ndarray) -> np.ndarray:
            return np.stack([frame_square(read_image(Path(root) / files[int(i)]), size, framing) for i in idx])
    absolute = [str((Path(root) / f).resolve()) for f in files]
    return ViewSource(name=name, size=len(files), read=read, seed=seed, files=absolute,
                      fingerprint=_files_fingerprint(root, files, size, framing), **_source_args(cfg, presets))


def labeled_train_items(data: LabeledData, max_images: int | None = None) -> list[tuple[str, int]]:
    """The split's training items used for distillation (all, or ``max_images`` spread evenly)."""
    return evenly_spaced(data.split.train, max_images)


def labeled_train_source(data: LabeledData, cfg: Mapping[str, Any], presets: Mapping[str, Any],
                         seed: int) -> ViewSource:
    """The labeled set's training images, labels withheld (the split's ``train`` part, nothing else).

    ``cfg.max_images`` (optional) keeps that many, spread evenly (for quick runs).
    """
    files = [p for p, _ in labeled_train_items(data, cfg.get("max_images"))]
    source = _photo_source("labeled-train", data.faces.root, files, int(data.cfg.get("image_size", 112)),
                           data.cfg.get("framing", "pad"), cfg, presets, seed + 2, in_memory=True)
    check_no_leak([source], data)
    return source


def mixup_pairs(n: int, pairs: int, alpha: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``pairs`` seeded blends of ``n`` images: ``(first, second, lam)``, two different images each and the
    first one's share ``lam ~ Beta(alpha, alpha)``."""
    if n < 2:
        raise ConfigError(f"distill.sources.labeled_mixup blends two training images, but the split has {n}")
    if pairs < 1:
        raise ConfigError(f"distill.sources.labeled_mixup.pairs must be >= 1, got {pairs}")
    if not alpha > 0:
        raise ConfigError(f"distill.sources.labeled_mixup.alpha must be > 0 (Beta(alpha, alpha)), got {alpha}")
    rng = np.random.default_rng([int(seed), 4])
    first = rng.integers(0, n, size=pairs)
    second = (first + rng.integers(1, n, size=pairs)) % n
    return first, second, rng.beta(alpha, alpha, size=pairs).astype(np.float32)


def _train_photos(data: LabeledData, cfg: Mapping[str, Any], seed: int) -> ViewSource:
    """The split's training photos (``cfg.max_images`` of them, spread evenly), one clean view each, in memory:
    what the blend sources mix."""
    files = [p for p, _ in labeled_train_items(data, cfg.get("max_images"))]
    return _photo_source("labeled-train", data.faces.root, files, int(data.cfg.get("image_size", 112)),
                         data.cfg.get("framing", "pad"), {"views": 1}, {}, seed, in_memory=True)


def labeled_mixup_source(data: LabeledData, cfg: Mapping[str, Any], presets: Mapping[str, Any],
                         seed: int) -> ViewSource:
    """``cfg.pairs`` blends ``lam * a + (1 - lam) * b`` of two of the split's training images (labels
    withheld; the same images as ``labeled_train``), then augmented like any source.

    Between two photos of one person a blend is a new view of that person; between two people it is a face
    neither is, whose teacher feature still says how much of each it holds: targets the photos alone lack.
    """
    photos = _train_photos(data, cfg, seed)
    images = photos.read(np.arange(photos.size)).astype(np.float32)
    alpha = float(cfg.get("alpha", 1.0))
    first, second, lam = mixup_pairs(photos.size, int(cfg.get("pairs", 2000)), alpha, seed + 4)

    def read(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        w = lam[idx][:, None, None, None]
        return np.clip(np.rint(w * images[first[idx]] + (1 - w) * images[second[idx]]), 0, 255).astype(np.uint8)

    fingerprint = config_hash({"photos": photos.fingerprint, "pairs": len(lam), "alpha": alpha, "seed": seed + 4})
    source = ViewSource(name="labeled-mixup", size=len(lam), read=read, seed=seed + 5, files=photos.files,
                        fingerprint=fingerprint, **_source_args(cfg, presets))
    check_no_leak([source], data)
    return source


def synthetic_mixup_source(data: LabeledData, train_faces: ViewSource, cfg: Mapping[str, Any],
                           presets: Mapping[str, Any], seed: int) -> ViewSource:
    """``cfg.pairs`` blends ``lam * photo + (1 - lam) * face`` of one of the split's training photos (labels
    withheld) and one synthetic face of ``train_faces`` (the generate run's training range, never its holdout),
    the face shown as the photos are (their size; grey when they are grey), then augmented like any source.

    Each blend is a face that is neither person nor render: a new identity near the photos' look, with a teacher
    feature of its own, where the synthetic faces alone stay far from the photos and the photos hold few people.
    """
    size = int(data.cfg.get("image_size", 112))
    photos = _train_photos(data, cfg, seed)
    images = photos.read(np.arange(photos.size))
    grey = is_grey(torch.from_numpy(images).permute(0, 3, 1, 2))
    pairs, alpha = int(cfg.get("pairs", 2000)), float(cfg.get("alpha", 1.0))
    if pairs < 1:
        raise ConfigError(f"distill.sources.synthetic_mixup.pairs must be >= 1, got {pairs}")
    if not alpha > 0:
        raise ConfigError(f"distill.sources.synthetic_mixup.alpha must be > 0 (Beta(alpha, alpha)), got {alpha}")
    rng = np.random.default_rng([int(seed), 6])
    photo_idx = rng.integers(0, photos.size, size=pairs)
    face_idx = rng.integers(0, train_faces.size, size=pairs)
    lam = rng.beta(alpha, alpha, size=pairs).astype(np.float32)

    def read(idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        faces = render_synthetic(train_faces.read(face_idx[idx]), size, grey).permute(0, 2, 3, 1).numpy()
        w = lam[idx][:, None, None, None]
        blend = w * images[photo_idx[idx]].astype(np.float32) + (1 - w) * faces.astype(np.float32)
        return np.clip(np.rint(blend), 0, 255).astype(np.uint8)

    fingerprint = config_hash({"photos": photos.fingerprint, "faces": train_faces.fingerprint, "pairs": pairs,
                               "alpha": alpha, "seed": [int(seed), 6], "grey": grey})
    source = ViewSource(name="synthetic-mixup", size=pairs, read=read, seed=seed + 7, files=photos.files,
                        fingerprint=fingerprint, **_source_args(cfg, presets))
    check_no_leak([source], data)
    return source


def active_source_weights(sources_cfg: Mapping[str, Any]) -> dict[str, float]:
    """The weight of every source in ``distill.sources`` that will train, in :data:`SOURCE_ORDER`: weight > 0,
    and for the folder source a ``root`` too."""
    weights = {}
    for name in SOURCE_ORDER:
        cfg = sources_cfg.get(name) or {}
        weight = float(cfg.get("weight", 0) or 0)
        if weight > 0 and (name != "folder" or cfg.get("root")):
            weights[name] = weight
    return weights


def check_monitor_trains(monitor: str, sources_cfg: Mapping[str, Any]) -> None:
    """Refuse choosing the best epoch on held-out synthetic faces (``holdout_*``) when no synthetic face trains:
    that loss then only drifts away from the start, so the run would keep its first epoch."""
    if str(monitor).startswith("holdout") and "synthetic" not in active_source_weights(sources_cfg):
        raise ConfigError(
            f"distill.train.monitor is '{monitor}', a metric of held-out synthetic faces, but "
            "distill.sources.synthetic.weight is 0, so no synthetic face trains and that metric cannot pick the "
            "best epoch. Choose it on the unlabeled real val photos instead (distill.train.monitor=real_val_loss), "
            "or give distill.sources.synthetic.weight > 0.")


def folder_source(cfg: Mapping[str, Any], presets: Mapping[str, Any], seed: int) -> ViewSource:
    """Every image under ``cfg.root`` (recursively), framed square at ``cfg.image_size``; read lazily."""
    root = Path(str(cfg["root"])).expanduser()
    if not root.is_dir():
        raise FaceDataError(f"distill.sources.folder.root={cfg['root']}: no such folder of unlabeled face photos")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FaceDataError(f"distill.sources.folder.root={root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return _photo_source("folder", root, files, int(cfg.get("image_size", 112)), cfg.get("framing", "pad"), cfg,
                         presets, seed + 3, in_memory=False)


def evenly_spaced(items: Sequence[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` items spread evenly over ``items`` (all of them when ``limit`` is None)."""
    items = list(items)
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise ConfigError(f"an image limit must be >= 1, got {limit}")
    return [items[i] for i in np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))]


def real_eval_sources(data: LabeledData, max_images: int | None = None) -> dict[str, ViewSource]:
    """The labeled ``val`` and ``test`` images, one clean view each, for metrics only (never trained on)."""
    out = {}
    for part in ("val", "test"):
        files = evenly_spaced([p for p, _ in data.split.part(part)], max_images)
        if not files:
            continue
        out[part] = _photo_source(f"real-{part}", data.faces.root, files, int(data.cfg.get("image_size", 112)),
                                  data.cfg.get("framing", "pad"), {"views": 1, "weight": 0.0}, {}, 0, in_memory=True)
    return out


def check_no_leak(train_sources: Sequence[ViewSource], data: LabeledData | None) -> None:
    """Raise :class:`LeakageError` when a training source holds an image of ``data``'s split that is not a training
    image: val, test, and (open set, enroll protocol) the withheld people's photos.

    Photo sources name their files (absolute paths); a file counts as the same when its resolved path is
    equal.
    """
    if data is None:
        return
    root = Path(data.faces.root)
    held = {str((root / p).resolve()) for part in data.split.parts if part != "train" for p, _ in data.split.part(part)}
    for src in train_sources:
        for f in src.files or ():
            if str(Path(f).resolve()) in held:
                raise LeakageError(f"training source '{src.name}' holds {f}, a val/test image of the split "
                                   f"{data.split.id}; val, test and withheld people's images must never be used for distillation")
