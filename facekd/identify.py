"""Use a specialized model: name the people in raw photos (``python scripts/identify.py``).

``identify(cfg)`` reads photos or folders of photos (any size, any number of faces per photo), finds the
faces with facenet-pytorch's MTCNN, frames each one as the finetune run's training images were framed,
and runs the run's model: ``model.onnx`` with onnxruntime (``identify.backend=onnx``, the default) or the
torch model (``identify.backend=torch``).  Each face gets the top class of the model, its score (the
largest softmax probability, :func:`facekd.openset.open_set_score`) and a status:

* ``known``: the score reaches the run's open-set threshold (``open_set.json``), or the run is closed-set
  (trained without unknown identities, so nothing is rejected);
* ``unknown``: the score is below the threshold: the face is taken for someone the model was not trained on.

A photo without a face gets one row with status ``no_face``; an unreadable file is refused
(``identify.on_corrupt=error``) or gets one row with status ``unreadable`` (``skip``).

Framing: the detected box is widened by ``identify.margin`` of its side on every side (clipped to the
photo), then made square at ``data.image_size`` with the run's ``data.framing`` by
:func:`facekd.data.augment.frame_square`, the function that framed the training images.  The embedded
ORL photos are whole-face grey crops with some hair and background, which the margin approximates.  A run
trained on MTCNN-aligned photos (``data.align=true``) gets its faces cut exactly as the alignment cut them
(160 px with a 20 px margin), then framed the same way.

Outputs in ``identify.out_dir`` (default ``<paths.root>/identify/<run name>-<time>``), each written
atomically: ``identities.csv`` (:data:`CSV_COLUMNS`) and ``contact_sheet.png``.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from facekd.data.augment import frame_square
from facekd.data.faces import FaceDataError, IMAGE_SUFFIXES, ON_CORRUPT, read_image
from facekd.deploy import Deployed, read_deployed
from facekd.embedder import load_embedder
from facekd.errors import ArtifactError, ConfigError, InputFileError
from facekd.finetune.stage import ONNX_FILE, load_finetuned
from facekd.gallery import Gallery
from facekd.openset import OPEN_SET_FILE, open_set_score
from facekd.runs import atomic_path
from facekd.validate import check_bool, check_choice, check_float, check_int, check_path, known_section, show_value

__all__ = ["CSV_FILE", "SHEET_FILE", "CSV_COLUMNS", "BACKENDS", "IdentifySettings", "Face",
           "load_run", "collect_inputs", "make_detector", "detect_faces", "frame_faces", "OnnxBackend",
           "TorchBackend", "make_backend", "ClassifierNamer", "GalleryNamer", "identify"]

log = logging.getLogger(__name__)

CSV_FILE = "identities.csv"
SHEET_FILE = "contact_sheet.png"
CSV_COLUMNS = ("file", "face", "x0", "y0", "x1", "y1", "detection_prob", "identity", "score", "status")
BACKENDS = ("onnx", "torch")
STATUSES = ("known", "unknown", "no_face", "unreadable")
ALIGN_SIZE, ALIGN_MARGIN = 160, 20  # what facekd.data.align.align_folder cuts (data.align=true)
SHEET_MAX_FACES = 400

# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class IdentifySettings:
    """The ``identify`` config section, checked (see ``configs/identify.yaml`` for each key)."""

    model: str | None
    input: tuple[str, ...]
    backend: str = "onnx"
    gallery: str | None = None
    threshold: float | None = None
    out_dir: str | None = None
    on_corrupt: str = "error"
    min_face_prob: float = 0.9
    min_face_size: int = 20
    margin: float = 0.15
    batch_size: int = 32
    contact_sheet: bool = True

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "IdentifySettings":
        """Check every key, naming it (``identify.<key>``) in a :class:`ConfigError`."""
        sec = known_section(section, cls.__dataclass_fields__, "identify")
        gallery = check_path(sec.get("gallery"), "identify.gallery", what="a gallery file (made by scripts/enroll.py)")
        if gallery is not None and sec.get("model") == "???":
            sec["model"] = None  # the gallery names its embedder's run
        for key, example in (("model", "identify.model=runs/finetune/orl-resnet18-bce-sface-bce"),
                             ("input", "identify.input=photo.jpg or 'identify.input=[a.jpg,photos/]'")):
            if (key != "model" or gallery is None) and sec.get(key) in (None, "???"):
                raise ConfigError(f"identify.{key} is not set; set it like {example}")
        model = sec.get("model")
        threshold = sec.get("threshold")
        if threshold is not None:
            from facekd.gallery import check_threshold

            threshold = check_threshold(threshold, "identify.threshold")
            if gallery is None:
                raise ConfigError("identify.threshold is a cosine threshold for a gallery: set identify.gallery=FILE "
                                  "too (a classifier run uses its own open_set.json)")
        if model is not None and (not isinstance(model, (str, os.PathLike)) or not str(model)):
            raise ConfigError(f"identify.model must be a finetune run folder, got {show_value(model)}; set it like "
                              "identify.model=runs/finetune/orl-resnet18-bce-sface-bce")
        raw = sec.get("input")
        items = list(raw) if isinstance(raw, (list, tuple)) else [raw]
        if not items or any(not isinstance(p, (str, os.PathLike)) or not str(p) for p in items):
            raise ConfigError(f"identify.input must be a photo, a folder or a list of them, got {show_value(raw)}; "
                              "set it like identify.input=photo.jpg or 'identify.input=[a.jpg,photos/]'")
        out_dir = sec.get("out_dir")
        if out_dir is not None and (not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir)):
            raise ConfigError(f"identify.out_dir must be a folder path or null, got {show_value(out_dir)}")
        return cls(
            model=check_path(model, "identify.model"), input=tuple(check_path(p, "identify.input") for p in items),
            gallery=gallery, threshold=threshold,
            backend=check_choice(sec.get("backend", "onnx"), "identify.backend", BACKENDS,
                                 what="which model runs: model.onnx or the torch weights"),
            out_dir=None if out_dir is None else str(out_dir),
            on_corrupt=check_choice(sec.get("on_corrupt", "error"), "identify.on_corrupt", ON_CORRUPT,
                                    what="what to do with unreadable image files"),
            min_face_prob=check_float(sec.get("min_face_prob", 0.9), "identify.min_face_prob", minimum=0.0,
                                      maximum=1.0, what="MTCNN's face probability a detection needs"),
            min_face_size=check_int(sec.get("min_face_size", 20), "identify.min_face_size", minimum=1,
                                    what="smallest face MTCNN looks for, in pixels"),
            margin=check_float(sec.get("margin", 0.15), "identify.margin", minimum=0.0, maximum=2.0,
                               what="share of the face box added on each side"),
            batch_size=check_int(sec.get("batch_size", 32), "identify.batch_size", minimum=1),
            contact_sheet=check_bool(sec.get("contact_sheet", True), "identify.contact_sheet"))


# --------------------------------------------------------------------------------------------- the run


def load_run(path: str | os.PathLike, backend: str = "onnx") -> Deployed:
    """The model folder ``path`` (:func:`facekd.deploy.read_deployed`), checked for ``backend``: a folder that does
    not ship it raises :class:`ConfigError`; a ``model.onnx`` that is missing or changed raises
    :class:`ArtifactError` (``model.safetensors`` is checked when the torch model is loaded)."""
    run = read_deployed(path, "identify.model")
    if backend not in run.backends:
        ships = " and ".join(run.backends) if run.backends else "only an embedder (use it with a gallery: scripts/enroll.py)"
        raise ConfigError(f"identify.backend={backend}, but {run.path} ships {ships}; "
                          + (f"set identify.backend={run.backends[0]}" if run.backends else "enroll people into a gallery "
                             "and pass identify.gallery=FILE"))
    if backend == "onnx":
        run.verify([ONNX_FILE])
    return run


# ------------------------------------------------------------------------------------------------ inputs


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The files to read: each given file as is, and every image file under each given folder (recursively,
    by suffix, :data:`IMAGE_SUFFIXES`), in sorted order, each once.  A missing path is refused, naming it."""
    files: list[Path] = []
    for given in inputs:
        p = Path(given).expanduser()
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                log.warning("identify.input: the folder %s holds no image files (%s)", p,
                            ", ".join(sorted(IMAGE_SUFFIXES)))
            files.extend(found)
        else:
            raise InputFileError(f"identify.input: {p} does not exist. Give photos or folders of photos, e.g. "
                                 "identify.input=photo.jpg or 'identify.input=[a.jpg,photos/]'")
    seen: set[Path] = set()
    unique = [f for f in files if not (f.resolve() in seen or seen.add(f.resolve()))]
    if not unique:
        raise InputFileError(f"identify.input={list(map(str, inputs))} holds no image files (searched for "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))}); give photos or folders that hold some")
    return unique


# --------------------------------------------------------------------------------------- faces and crops


@dataclass
class Face:
    """One detected face: its box in the photo (x0, y0, x1, y1, pixels), MTCNN's probability, its framed crop."""

    box: tuple[float, float, float, float]
    prob: float
    crop: np.ndarray = field(repr=False)  # S x S x 3 uint8, what the model sees


def make_detector(min_face_size: int = 20, device: str = "cpu") -> Any:
    """facenet-pytorch's MTCNN, keeping every face it finds (its weights ship in its wheel)."""
    from facenet_pytorch import MTCNN

    return MTCNN(min_face_size=min_face_size, keep_all=True, post_process=False, select_largest=False,
                 device=device)


def detect_faces(image: np.ndarray, detector: Any, min_prob: float = 0.9
                 ) -> list[tuple[tuple[float, float, float, float], float]]:
    """``[(box, probability)]`` of the faces MTCNN finds in an H x W x 3 uint8 RGB photo with at least
    ``min_prob``, left to right then top to bottom."""
    from PIL import Image

    with torch.no_grad():
        boxes, probs = detector.detect(Image.fromarray(image))
    if boxes is None:
        return []
    found = [(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs)
             if p is not None and float(p) >= min_prob]
    return sorted(found, key=lambda f: (round(f[0][0]), round(f[0][1])))


def _margin_crop(image: np.ndarray, box: Sequence[float], margin: float) -> np.ndarray:
    """The box widened by ``margin`` of its width/height on each side, clipped to the photo."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    a, b = max(0, int(round(x0 - mx))), max(0, int(round(y0 - my)))
    c, d = min(w, int(round(x1 + mx))), min(h, int(round(y1 + my)))
    if c <= a or d <= b:  # a box outside the photo (MTCNN can return one at the border): keep one pixel
        a, b = min(max(0, int(x0)), w - 1), min(max(0, int(y0)), h - 1)
        c, d = a + 1, b + 1
    return image[b:d, a:c]


def _aligned_crop(image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """The face cut as :func:`facekd.data.align.align_folder` cuts it (MTCNN's extract_face, 160 px, margin 20)."""
    from facenet_pytorch.models.utils.detect_face import extract_face
    from PIL import Image

    face = extract_face(Image.fromarray(image), np.asarray(box), ALIGN_SIZE, ALIGN_MARGIN)
    return np.ascontiguousarray(face.permute(1, 2, 0).clamp(0, 255).round().byte().numpy())


def frame_faces(image: np.ndarray, boxes: Sequence[Sequence[float]], run: Deployed, margin: float
                ) -> np.ndarray:
    """The faces of ``boxes`` as the model takes them: N x S x S x 3 uint8, framed by the run's data config
    (:func:`frame_square` at ``data.image_size`` with ``data.framing``, the training images' framing)."""
    out = np.empty((len(boxes), run.image_size, run.image_size, 3), dtype=np.uint8)
    for i, box in enumerate(boxes):
        crop = _aligned_crop(image, box) if run.aligned else _margin_crop(image, box, margin)
        out[i] = frame_square(np.ascontiguousarray(crop), run.image_size, run.framing)
    return out


# ---------------------------------------------------------------------------------------------- backends


class OnnxBackend:
    """``model.onnx`` on onnxruntime's CPU provider: uint8 N x 3 x S x S ``images`` -> N x K ``scores``."""

    name = "onnx"

    def __init__(self, run: Deployed, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        path = run.path / ONNX_FILE
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for a file it cannot load
            raise ArtifactError(f"{path} cannot be loaded by onnxruntime ({type(e).__name__}: {e}); rerun the "
                                "finetune stage to export it again") from e
        self.input = self.session.get_inputs()[0].name

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Class scores of N x 3 x S x S uint8 images."""
        return np.asarray(self.session.run(None, {self.input: np.ascontiguousarray(images, dtype=np.uint8)})[0],
                          dtype=np.float32)


class TorchBackend:
    """The run's torch model (``load_finetuned``, checked against its checksum), on the CPU, same uint8 input."""

    name = "torch"

    def __init__(self, run: Deployed, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.model, _ = load_finetuned(run.path, device=self.device)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Class scores of N x 3 x S x S uint8 images."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).to(self.device)
            return self.model(x).float().cpu().numpy()


def make_backend(run: Deployed, backend: str) -> OnnxBackend | TorchBackend:
    """The model runner named by ``identify.backend``."""
    return OnnxBackend(run) if backend == "onnx" else TorchBackend(run)


def predict(backend: OnnxBackend | TorchBackend, crops: np.ndarray, batch_size: int = 32
            ) -> tuple[np.ndarray, np.ndarray]:
    """``(class index, score)`` of each N x S x S x 3 uint8 crop (score: the largest softmax probability)."""
    if not len(crops):
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    chw = crops.transpose(0, 3, 1, 2)
    scores = np.concatenate([backend.scores(chw[i:i + batch_size]) for i in range(0, len(chw), batch_size)])
    return open_set_score(scores)


# ------------------------------------------------------------------------------------------------ output


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """``rows`` as ``identities.csv`` (:data:`CSV_COLUMNS`), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows({k: r.get(k, "") for k in CSV_COLUMNS} for r in rows)


def write_contact_sheet(faces: list[tuple[np.ndarray, str, str]], path: Path, cell: int = 112, cols: int = 8) -> None:
    """A grid of face crops, each with its label below (known in green, unknown in red), written atomically.

    ``faces``: ``(crop, label, status)``; at most :data:`SHEET_MAX_FACES` are drawn.
    """
    from PIL import Image, ImageDraw

    faces = faces[:SHEET_MAX_FACES]
    label_h = 28
    cols = max(1, min(cols, len(faces)))
    rows = max(1, -(-len(faces) // cols))
    sheet = Image.new("RGB", (cols * cell, rows * (cell + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (crop, label, status) in enumerate(faces):
        x, y = (i % cols) * cell, (i // cols) * (cell + label_h)
        sheet.paste(Image.fromarray(crop).resize((cell, cell)), (x, y))
        colour = (0, 120, 0) if status == "known" else (200, 0, 0)
        for j, line in enumerate(label.split("\n")[:2]):
            draw.text((x + 3, y + cell + 2 + 12 * j), line[:20], fill=colour)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def _out_dir(cfg: Mapping[str, Any], settings: IdentifySettings, run_path: Path) -> Path:
    if settings.out_dir:
        return Path(settings.out_dir).expanduser()
    root = Path(str((cfg.get("paths") or {}).get("root", "runs")))
    return root / "identify" / f"{Path(run_path).name}-{time.strftime('%Y%m%d-%H%M%S')}"


# ------------------------------------------------------------------------------------------------- entry


class ClassifierNamer:
    """Names faces with a finetune run's classifier (``model.onnx`` or torch) and its open-set threshold."""

    def __init__(self, settings: IdentifySettings) -> None:
        self.run = load_run(settings.model, settings.backend)
        self.backend = make_backend(self.run, settings.backend)
        self.batch_size = settings.batch_size
        self.threshold = self.run.threshold
        self.path = self.run.path
        if self.threshold is None:
            log.info("%s is a closed-set run (no %s: it was trained without unknown identities), so no face is "
                     "rejected as unknown", self.run.path, OPEN_SET_FILE)
        self.rule = ("closed-set run: no rejection" if self.threshold is None else
                     f"threshold {self.threshold:.4f} at FAR {self.run.open_set.get('far')}")

    def name(self, crops: np.ndarray) -> list[tuple[str, float, bool]]:
        pred, score = predict(self.backend, crops, self.batch_size)
        return [(self.run.classes[int(k)], float(s), self.threshold is None or s >= self.threshold)
                for k, s in zip(pred, score)]


class GalleryNamer:
    """Names faces by cosine to a gallery's people (:mod:`facekd.gallery`) with the run's ``embedder.onnx``;
    below the threshold (``identify.threshold``, else the gallery's calibrated one) a face is unknown."""

    def __init__(self, settings: IdentifySettings) -> None:
        gallery = Gallery.load(settings.gallery)
        model = settings.model or gallery.embedder.get("path")
        if not model:
            raise ConfigError(f"identify.model is not set and {settings.gallery} does not name its embedder's run; "
                              "set identify.model=RUN")
        self.run = load_embedder(model, sha256=gallery.embedder_sha256)  # the file the gallery was built with
        self.gallery = Gallery.load(settings.gallery, self.run.sha256)  # refuses another embedder's gallery
        if not len(self.gallery):
            raise ConfigError(f"the gallery {settings.gallery} is empty: enroll people first with "
                              f"`python scripts/enroll.py enroll.gallery={settings.gallery} enroll.people=FOLDER`")
        self.path = self.run.path
        calibrated = self.gallery.threshold or {}
        self.threshold = settings.threshold if settings.threshold is not None else calibrated.get("value")
        self.batch_size = settings.batch_size
        if settings.threshold is not None:
            self.rule = f"gallery of {len(self.gallery)} people, threshold {self.threshold:.4f} (identify.threshold)"
        elif self.threshold is not None:
            self.rule = (f"gallery of {len(self.gallery)} people, threshold {self.threshold:.4f} calibrated at FAR "
                         f"{calibrated.get('far')}")
        else:
            self.rule = f"gallery of {len(self.gallery)} people, no threshold: no rejection"

    def name(self, crops: np.ndarray) -> list[tuple[str, float, bool]]:
        return self.gallery.identify(self.run.embed(crops, self.batch_size), self.threshold)


def identify(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Identify every face in ``identify.input`` with the finetune run ``identify.model``, or by cosine to the
    gallery ``identify.gallery`` (made by ``scripts/enroll.py``) with its embedder.

    Returns a summary: ``rows`` (the CSV's rows as dicts), ``counts`` (faces, photos, and each status),
    ``csv``, ``contact_sheet`` (path or None), ``out_dir``, ``threshold`` (None: no rejection), ``backend``.
    Nothing is written until every photo has been read, so a refused input leaves no partial CSV.
    """
    settings = IdentifySettings.from_config(cfg["identify"])
    files = collect_inputs(settings.input)
    namer: ClassifierNamer | GalleryNamer = GalleryNamer(settings) if settings.gallery else ClassifierNamer(settings)
    detector = make_detector(settings.min_face_size)
    rows: list[dict[str, Any]] = []
    sheet: list[tuple[np.ndarray, str, str]] = []
    from tqdm.auto import tqdm

    for f in tqdm(files, desc="identifying faces", disable=len(files) < 10):
        try:
            image = read_image(f)
        except FaceDataError as e:
            if settings.on_corrupt == "error":
                raise FaceDataError(f"identify.input: cannot read {f} ({type(e.__cause__).__name__}: "
                                    f"{e.__cause__}). Replace or remove it, or set identify.on_corrupt=skip to list "
                                    f"it as unreadable and go on; nothing was written") from e
            log.warning("unreadable image %s listed as unreadable (identify.on_corrupt=skip)", f)
            rows.append({"file": str(f), "status": "unreadable"})
            continue
        found = detect_faces(image, detector, settings.min_face_prob)
        if not found:
            rows.append({"file": str(f), "status": "no_face"})
            continue
        crops = frame_faces(image, [b for b, _ in found], namer.run, settings.margin)
        for i, ((box, prob), (name, s, known)) in enumerate(zip(found, namer.name(crops))):
            status = "known" if known else "unknown"
            rows.append({"file": str(f), "face": i, "x0": _fmt(box[0]), "y0": _fmt(box[1]), "x1": _fmt(box[2]),
                         "y1": _fmt(box[3]), "detection_prob": f"{prob:.4f}", "identity": name,
                         "score": f"{float(s):.6f}", "status": status})
            shown = name if status == "known" else f"unknown ({name}?)"
            sheet.append((crops[i], f"{shown}\n{float(s):.3f} {Path(f).name}", status))

    out = _out_dir(cfg, settings, namer.path)
    write_csv(rows, out / CSV_FILE)
    sheet_path = None
    if settings.contact_sheet and sheet:
        sheet_path = out / SHEET_FILE
        write_contact_sheet(sheet, sheet_path)
    counts = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    counts.update(photos=len(files), faces=counts["known"] + counts["unknown"])
    how = "gallery" if settings.gallery else settings.backend
    print(f"identify: {counts['faces']} faces in {len(files)} files ({how}; {namer.rule}): "
          f"{counts['known']} known, {counts['unknown']} unknown, {counts['no_face']} without a face, "
          f"{counts['unreadable']} unreadable")
    print(f"identify: {out / CSV_FILE}" + (f" and {sheet_path}" if sheet_path else ""))
    return {"rows": rows, "counts": counts, "csv": out / CSV_FILE, "contact_sheet": sheet_path, "out_dir": out,
            "threshold": namer.threshold, "backend": how, "run": str(namer.path)}
