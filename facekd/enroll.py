"""Enroll people into a gallery with no training (``python scripts/enroll.py``).

``enroll(cfg)`` reads ``enroll.people``, a folder with one sub-folder of photos per person (the sub-folder's name
is the person's name), finds the face in each photo with MTCNN (the largest, when a photo shows several), frames
it exactly as identify does (:func:`facekd.identify.frame_faces`), embeds it with the run's ``embedder.onnx``
(:mod:`facekd.embedder`) and adds the person to the gallery file ``enroll.gallery`` (:mod:`facekd.gallery`),
which is created when missing.  ``enroll.remove`` removes people, ``enroll.list`` only lists them.

* A name already enrolled is refused (``enroll.on_exists=refuse``, the default), merged with the new photos
  (``merge``: photos already enrolled are not added twice) or enrolled again from the new photos only
  (``replace``).
* A photo in which no face is found is named and skipped (``enroll.on_no_face=skip``) or refused (``error``);
  an unreadable file likewise (``enroll.on_corrupt``).  Nothing is written until every photo has been read.
* After every change the rejection threshold is calibrated again at ``enroll.far``, on impostor scores that
  spend none of the user's people (:func:`facekd.gallery.calibrate`): leave-one-person-out among the enrolled
  photos, and synthetic faces when a generate run is available (``enroll.synthetic``).

The cost of enrolling is reported in seconds per photo, detector and embedder apart.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from facekd.data.faces import FaceDataError, IMAGE_SUFFIXES, ON_CORRUPT, read_image
from facekd.data.synthetic import SyntheticFaces, render_synthetic
from facekd.embedder import PRECISIONS, load_embedder
from facekd.errors import ConfigError, InputFileError
from facekd.gallery import CALIBRATIONS, Gallery, ON_EXISTS, TEMPLATES, calibrate
from facekd.identify import detect_faces, frame_faces
from facekd.openset import check_far
from facekd.validate import check_bool, check_choice, check_float, check_int, check_path, known_section

__all__ = ["EnrollSettings", "enroll", "person_folders", "embed_photos", "calibrate_gallery", "gallery_path"]

log = logging.getLogger(__name__)

ON_NO_FACE = ("skip", "error")


@dataclass(frozen=True)
class EnrollSettings:
    """The ``enroll`` config section, checked (see ``configs/enroll.yaml`` for each key)."""

    model: str | None = None
    people: str | None = None
    gallery: str | None = None
    precision: str = "fp32"
    on_exists: str = "refuse"
    remove: tuple[str, ...] = ()
    list: bool = False
    template: str | None = None
    far: float = 0.01
    calibration: str = "max"
    synthetic: str | None = None
    synthetic_faces: int = 1000
    on_corrupt: str = "error"
    on_no_face: str = "skip"
    min_face_prob: float = 0.9
    min_face_size: int = 20
    margin: float = 0.15

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "EnrollSettings":
        sec = known_section(section, cls.__dataclass_fields__, "enroll")
        paths = {k: check_path(sec.get(k), f"enroll.{k}") for k in ("model", "people", "gallery", "synthetic")}
        remove = sec.get("remove") or []
        remove = [remove] if isinstance(remove, str) else list(remove)
        template = sec.get("template")
        return cls(
            model=paths["model"], people=paths["people"], gallery=paths["gallery"],
            precision=check_choice(sec.get("precision", "fp32"), "enroll.precision", PRECISIONS,
                                   what="which of the run's embedders a new gallery uses"),
            on_exists=check_choice(sec.get("on_exists", "refuse"), "enroll.on_exists", ON_EXISTS,
                                   what="what to do when a name is already enrolled"),
            remove=tuple(str(n) for n in remove), list=check_bool(sec.get("list", False), "enroll.list"),
            template=None if template is None else check_choice(template, "enroll.template", TEMPLATES,
                                                                what="how a person's photos are matched"),
            far=check_far(sec.get("far", 0.01), "enroll.far"),
            calibration=check_choice(sec.get("calibration", "max"), "enroll.calibration", CALIBRATIONS,
                                     what="which impostor scores set the threshold"),
            synthetic=paths["synthetic"],
            synthetic_faces=check_int(sec.get("synthetic_faces", 1000), "enroll.synthetic_faces", minimum=1),
            on_corrupt=check_choice(sec.get("on_corrupt", "error"), "enroll.on_corrupt", ON_CORRUPT,
                                    what="what to do with unreadable image files"),
            on_no_face=check_choice(sec.get("on_no_face", "skip"), "enroll.on_no_face", ON_NO_FACE,
                                    what="what to do with a photo in which no face is found"),
            min_face_prob=check_float(sec.get("min_face_prob", 0.9), "enroll.min_face_prob", minimum=0.0, maximum=1.0),
            min_face_size=check_int(sec.get("min_face_size", 20), "enroll.min_face_size", minimum=1),
            margin=check_float(sec.get("margin", 0.15), "enroll.margin", minimum=0.0, maximum=2.0))


def gallery_path(cfg: Mapping[str, Any], settings: EnrollSettings) -> Path:
    """``enroll.gallery``, or ``<paths.root>/galleries/<model run name>[-int8].npz``."""
    if settings.gallery:
        return Path(settings.gallery)
    if not settings.model:
        raise ConfigError("set enroll.gallery=FILE (the gallery to list or change) or enroll.model=RUN")
    suffix = "-int8" if settings.precision == "int8" else ""
    return Path(str(cfg["paths"]["root"])) / "galleries" / f"{Path(settings.model).name}{suffix}.npz"


def person_folders(root: str | os.PathLike) -> dict[str, list[Path]]:
    """``{person: photos}`` of a folder holding one sub-folder of photos per person; empty sub-folders are warned
    about and left out."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"enroll.people={root} is not a folder; give a folder with one sub-folder of photos per "
                             "person, e.g. people/alice/1.jpg, people/bob/1.jpg")
    out: dict[str, list[Path]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        photos = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if photos:
            out[d.name] = photos
        else:
            log.warning("enroll.people: %s holds no photos (%s); nobody is enrolled from it", d,
                        ", ".join(sorted(IMAGE_SUFFIXES)))
    if not out:
        raise InputFileError(f"enroll.people={root} holds no sub-folder with photos; put each person's photos in a "
                             "sub-folder named after them, e.g. people/alice/1.jpg")
    return out


def embed_photos(photos: list[Path], embedder: Any, detector: Any, settings: EnrollSettings
                 ) -> tuple[np.ndarray, list[str], list[str], dict[str, float]]:
    """``(embeddings, used photos, photos without a face, seconds)``: the largest face of each photo, embedded."""
    crops, used, no_face = [], [], []
    t_detect = t_embed = 0.0
    for f in photos:
        try:
            image = read_image(f)
        except FaceDataError as e:
            if settings.on_corrupt == "error":
                raise FaceDataError(f"enroll.people: cannot read {f} ({type(e.__cause__).__name__}: {e.__cause__}). "
                                    "Replace or remove it, or set enroll.on_corrupt=skip; nothing was written") from e
            log.warning("unreadable photo %s skipped (enroll.on_corrupt=skip)", f)
            continue
        t0 = time.perf_counter()
        found = detect_faces(image, detector, settings.min_face_prob)
        t_detect += time.perf_counter() - t0
        if not found:
            no_face.append(str(f))
            continue
        box = max(found, key=lambda b: (b[0][2] - b[0][0]) * (b[0][3] - b[0][1]))[0]
        crops.append(frame_faces(image, [box], embedder, settings.margin)[0])
        used.append(str(f))
    t0 = time.perf_counter()
    emb = embedder.embed(np.stack(crops)) if crops else np.zeros((0, embedder.dim), np.float32)
    t_embed += time.perf_counter() - t0
    return emb, used, no_face, {"detect": t_detect, "embed": t_embed}


def calibrate_gallery(gallery: Gallery, embedder: Any, settings: EnrollSettings, root: Path) -> None:
    """Set ``gallery.threshold`` at ``enroll.far`` (see module doc); with too few impostor scores, remove it."""
    impostors = _synthetic_impostors(embedder, settings, root, gallery)
    scores = gallery.impostor_scores(impostors)
    try:
        gallery.threshold = calibrate(settings.far, synthetic=scores.get("synthetic"), enrolled=scores["enrolled"],
                                      method=settings.calibration)
    except ConfigError as e:
        gallery.threshold = None
        log.warning("no rejection threshold yet (%s); identify names every face until one can be calibrated, or "
                    "set identify.threshold", str(e).split(":")[0])


def _synthetic_impostors(embedder: Any, settings: EnrollSettings, root: Path, gallery: Gallery) -> np.ndarray | None:
    """Embeddings of synthetic faces from ``enroll.synthetic`` (or ``<paths.root>/generate/impostors`` when it
    exists), rendered grey when the enrolled photos are grey."""
    if settings.calibration == "enrolled":
        return None
    run = Path(settings.synthetic) if settings.synthetic else root / "generate" / "impostors"
    if not settings.synthetic and not (run / "manifest.json").is_file():
        return None
    faces = SyntheticFaces(run)
    n = min(settings.synthetic_faces, len(faces))
    grey = bool(gallery.embedder.get("grey", False))
    x = render_synthetic(faces.batch(np.arange(n)), embedder.image_size, grey)
    return embedder.embed(x.permute(0, 2, 3, 1).numpy())


def _open_gallery(path: Path, embedder: Any | None, settings: EnrollSettings) -> Gallery:
    if path.exists():
        return Gallery.load(path, embedder.sha256 if embedder is not None else None)
    if embedder is None:
        raise ConfigError(f"the gallery {path} does not exist yet; set enroll.model=RUN and enroll.people=FOLDER to "
                          "create it")
    return Gallery(embedder_sha256=embedder.sha256, dim=embedder.dim, template=settings.template or "mean",
                   embedder={"path": str(Path(embedder.path).resolve()), "image_size": embedder.image_size,
                             "framing": embedder.framing})


def _print_people(gallery: Gallery, path: Path) -> None:
    t = gallery.threshold
    rule = f"threshold {t['value']:.4f} at FAR {t['far']:g} ({t['method']})" if t else "no threshold"
    print(f"gallery {path}: {len(gallery)} people, {len(gallery.embeddings)} photos, template {gallery.template}, "
          f"{rule}")
    for name, n in gallery.people():
        print(f"  {name}: {n} photo{'s' if n != 1 else ''}")


def enroll(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Add, remove or list people in a gallery (see module doc); returns a summary."""
    settings = EnrollSettings.from_config(cfg["enroll"])
    path = gallery_path(cfg, settings)
    root = Path(str(cfg["paths"]["root"]))
    if settings.list and not (settings.people or settings.remove):
        gallery = Gallery.load(path)
        _print_people(gallery, path)
        return {"gallery": path, "people": gallery.people()}
    existing = Gallery.load(path) if path.exists() else None
    model = settings.model or (existing.embedder.get("path") if existing is not None else None)
    if not model:
        raise ConfigError("enroll.model is not set: give the run whose embedder the gallery uses, e.g. "
                          "enroll.model=runs/finetune/<name>")
    # an existing gallery keeps the embedder file it was built with (found by its sha256); a new one takes
    # enroll.precision's
    embedder = load_embedder(model, precision=settings.precision,
                             sha256=existing.embedder_sha256 if existing is not None else None)
    gallery = _open_gallery(path, embedder, settings)
    if settings.template:
        gallery.template = settings.template
    changes: dict[str, Any] = {"removed": {}, "enrolled": {}, "no_face": {}}
    for name in settings.remove:
        changes["removed"][name] = gallery.remove(name)
    cost = {"photos": 0, "detect": 0.0, "embed": 0.0}
    if settings.people:
        from facekd.identify import make_detector

        folders = person_folders(settings.people)
        taken = [n for n in folders if n in gallery.names]
        if taken and settings.on_exists == "refuse":
            raise ConfigError(f"already enrolled: {', '.join(taken[:10])}; set enroll.on_exists=merge to add these "
                              "photos to theirs, or enroll.on_exists=replace to enroll them from these photos only; "
                              "nothing was written")
        detector = make_detector(settings.min_face_size)
        embedded = {}
        from tqdm.auto import tqdm

        for name, photos in tqdm(folders.items(), desc="enrolling", disable=len(folders) < 5):
            emb, used, no_face, seconds = embed_photos(photos, embedder, detector, settings)
            cost["photos"] += len(photos)
            cost["detect"] += seconds["detect"]
            cost["embed"] += seconds["embed"]
            if no_face:
                changes["no_face"][name] = no_face
                if settings.on_no_face == "error":
                    raise FaceDataError(f"no face found in {len(no_face)} photo(s) of {name}: {', '.join(no_face[:5])}. "
                                        "Replace them, or set enroll.on_no_face=skip to enroll the others; nothing "
                                        "was written")
                log.warning("no face found in %d photo(s) of %s, skipped: %s", len(no_face), name,
                            ", ".join(no_face[:5]))
            if not len(emb):
                log.warning("%s: no photo with a face, so %s is not enrolled", name, name)
                continue
            embedded[name] = (emb, used)
        grey = _all_grey(folders) if not len(gallery.embeddings) else gallery.embedder.get("grey")
        gallery.embedder["grey"] = bool(grey)
        for name, (emb, used) in embedded.items():
            how = gallery.add(name, emb, used, settings.on_exists)
            changes["enrolled"][name] = {"photos": len(used), "how": how}
    calibrate_gallery(gallery, embedder, settings, root)
    gallery.save(path)
    per_photo = {k: cost[k] / cost["photos"] for k in ("detect", "embed")} if cost["photos"] else {}
    if per_photo:
        print(f"enroll: {len(changes['enrolled'])} people from {cost['photos']} photos in "
              f"{sum(per_photo.values()):.3f} s per photo (detector {per_photo['detect']:.3f} s, embedder "
              f"{per_photo['embed']:.3f} s)")
    if changes["removed"]:
        print(f"enroll: removed {', '.join(changes['removed'])}")
    _print_people(gallery, path)
    return {"gallery": path, "people": gallery.people(), "threshold": gallery.threshold, "seconds_per_photo": per_photo,
            **changes}


def _all_grey(folders: Mapping[str, list[Path]], sample: int = 20) -> bool:
    """Whether the photos are grey (R = G = B), judged on up to ``sample`` of them."""
    photos = [p for ps in folders.values() for p in ps][:sample]
    for p in photos:
        try:
            im = read_image(p)
        except FaceDataError:
            continue
        if not (np.array_equal(im[..., 0], im[..., 1]) and np.array_equal(im[..., 1], im[..., 2])):
            return False
    return True
