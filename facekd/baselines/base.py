"""One interface for every baseline method, and cached runs scored by the one evaluation (:mod:`facekd.evaluation`).

A method is a plug-in class registered in :data:`METHODS`::

    @METHODS.register("scratch")
    class Scratch(Method):
        def fit(self, data, cfg, run_dir, seed) -> Fitted: ...

``fit`` trains on the train split of the shared split manifest (``data``), chooses its state on the
val split only, and returns a :class:`Fitted`: a :class:`Predictor` that maps uint8 RGB images to class
scores (``output="scores"``) or to embeddings (``output="embedding"``).

:func:`run_method` runs one method under the shared split and scores the test split **once**, at the
state the method chose on val.  Scores are classified by argmax; embeddings by the nearest class mean
of the (unaugmented) train images' embeddings, and embeddings also get the paper's triplet accuracy on
the test split.  The result is cached under ``<paths.root>/baselines/<name>-<hash>/result.json``, the
hash covering the method config, the data config, the split and the seed: a second call returns the
cached :class:`MethodResult` without training.

Open set (a split with ``data.unknown_identities`` >= 1): every row also scores the calibration unknowns
(``unknown_val``) and the test unknowns (``unknown_test``), calibrates its own rejection threshold at the
comparison's ``open_set_far`` on the calibration unknowns only, and reports in ``extra["open_set"]`` the
detection-and-identification rate on the known test faces (``dir``) and the false-accept rate observed on the
test unknowns (``far``) at that threshold (:mod:`facekd.openset`).  Rows that output scores use their class
scores; embedding rows use their nearest-class-mean class scores (:func:`facekd.openset.ncm_class_scores`:
16 x the cosine similarity to each class mean), and the same largest-softmax score.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from facekd.baselines.deploy import export_predictor
from facekd.config import plain
from facekd.data.labeled import LabeledData, data_identity, prepare_labeled, split_datasets
from facekd.embedder import Features
from facekd.engine import resolve_device, seed_everything
from facekd.evaluation import Predictor, embed_images, evaluate_fitted
from facekd.gallery_eval import gallery_figures, load_embeddings, protocol_embeddings, save_embeddings
from facekd.hashing import content_hashes
from facekd.modelcard import model_card
from facekd.openset import check_far
from facekd.registry import Registry
from facekd.runs import atomic_path, config_hash, read_json, versions, write_json

__all__ = [
    "METHODS",
    "Method",
    "Predictor",
    "Fitted",
    "Features",
    "MethodResult",
    "OPERATIONAL_KEYS",
    "plain",
    "run_method",
    "method_hash",
    "evaluate_fitted",
    "embed_images",
    "result_path",
]

log = logging.getLogger(__name__)

METHODS: Registry = Registry("method", "facekd.baselines")

RESULT = "result.json"
TEST_FEATURES = "test_features.npz"
# keys of a method config that do not change its result (left out of the cache hash)
OPERATIONAL_KEYS = ("device", "progress", "num_workers", "eval_batch_size", "card_repeats")
# bump when the evaluation protocol changes, so cached results are recomputed
PROTOCOL_VERSION = 2  # 2: rows renamed, every config key hashed whatever its value
# the false-accept rate an open-set row's threshold is calibrated to, unless the comparison sets open_set_far
DEFAULT_OPEN_SET_FAR = 0.01


@dataclass
class Fitted:
    """A fitted method: its predictor, the student network's name and anything worth reporting.

    ``card`` overrides the model card of ``predictor`` (e.g. when the deployed model is not one module).
    ``side_predictors`` are other models worth scoring beside it (e.g. the teacher_probe row's teacher by
    nearest class mean); :func:`run_method` scores them on test once and reports
    ``extra["<name>_accuracy"]``.  They are never used for selection.  ``scores``: the method's own scores of the
    predictor by :func:`~facekd.evaluation.evaluate_fitted` (``val``, ``test`` and, open set, ``open_set``), when the
    stage it ran already computed them (the finetune stage): :func:`run_method` does not score test again.
    """

    predictor: Predictor
    student: str
    extra: dict[str, Any] = field(default_factory=dict)
    card: dict[str, float] | None = None
    side_predictors: dict[str, Predictor] = field(default_factory=dict)
    embedder: Predictor | None = None  # the row's face embedding (default: the features its head reads)
    scores: dict[str, Any] | None = None

    def embedding_model(self) -> Predictor:
        """The row's embedding on uint8 images: ``embedder``, else the predictor itself when it outputs
        embeddings, else the features its head reads (its body)."""
        if self.embedder is not None:
            return self.embedder.eval()
        p = self.predictor
        return p if p.output == "embedding" else Predictor(p.body, p.preprocess, output="embedding").eval()


class Method:
    """A baseline method.  Subclasses implement :meth:`fit`; ``name`` is set by the registry lookup.

    ``uses_teacher``: the comparison gives the row its ``teacher`` section (:func:`facekd.baselines.compare.row_config`).
    """

    name: str = "method"
    uses_teacher: bool = False

    def student_name(self, cfg: Mapping[str, Any]) -> str:
        """The network the method trains (the table's *student* column)."""
        student = cfg.get("student")
        if isinstance(student, Mapping):
            return str(student.get("name", "?"))
        return str(student) if student else "-"

    def resolve(self, cfg: dict[str, Any]) -> dict[str, Any]:
        """The row's config as it will run, written out in full (it is what the row's cache key hashes); e.g. a
        recipe the row names, expanded into the stages' settings. As given by default."""
        return cfg

    def check(self, data: LabeledData, cfg: Mapping[str, Any]) -> None:
        """Refuse a config that cannot run on ``data`` before any training (raise ``ValueError``)."""

    def prepare(self, data: LabeledData, cfg: Mapping[str, Any], paths_root: str | os.PathLike,
                seed: int = 0) -> dict[str, Any]:
        """Make or find the method's inputs from other stages (e.g. a distill run for ``seed``) before the
        cache lookup.

        Returns what identifies those inputs (e.g. their config hashes): it is part of the cache key.
        """
        return {}

    def fit(self, data: LabeledData, cfg: Mapping[str, Any], run_dir: Path, seed: int) -> Fitted:
        raise NotImplementedError


@dataclass
class MethodResult:
    """One method, one seed, under the shared split: test metrics (scored once) and the model card.

    ``train_seconds`` is the wall time of :meth:`Method.prepare` plus :meth:`Method.fit` (inputs another
    stage made earlier, e.g. a reused distill run, are not counted; ``extra["prepare_seconds"]`` shows it).
    """

    method: str
    student: str
    seed: int
    test: dict[str, float]
    val: dict[str, float]
    params: int
    mflops: float
    cpu_ms_per_img: float
    train_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    run_dir: str = ""

    @property
    def accuracy(self) -> float:
        return self.test["accuracy"]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MethodResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# ----------------------------------------------------------------------------------------------- runs


def method_hash(name: str, method_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any], split_id: str,
                seed: int, inputs: Mapping[str, Any] | None = None, content: str | None = None,
                open_set_far: float | None = None) -> str:
    """The cache key of one run: method, its result-defining config, the data config, the split, the seed,
    the identity of its inputs from other stages (:meth:`Method.prepare`) and ``content``, the hash of the
    split's image bytes (:func:`split_content_hash`), so a photo replaced under its name reruns the row.
    ``open_set_far`` (open-set splits only, else None) is the false-accept rate the row's threshold is calibrated to."""
    cfg = {k: v for k, v in plain(method_cfg).items() if k not in OPERATIONAL_KEYS}
    return config_hash({"method": name, "cfg": cfg, "data": data_identity(data_cfg), "split": split_id,
                        "seed": int(seed), "protocol": PROTOCOL_VERSION,
                        "open_set_far": None if open_set_far is None else float(open_set_far),
                        "content": content, "inputs": plain(inputs or {})})


def split_content_hash(data: LabeledData) -> str:
    """One hash of the bytes of every image the split lists (train, val and test), by relative path.

    The per-file sha256 is remembered while a file's size and timestamps stay the same
    (:func:`facekd.hashing.content_hashes`), so this costs a few milliseconds after the first run.
    """
    rels = sorted({rel for part in data.split.parts for rel, _ in data.split.part(part)})
    root = Path(data.faces.root)
    return config_hash(list(zip(rels, content_hashes([root / r for r in rels]))))


def result_path(paths_root: str | os.PathLike, name: str, digest: str) -> Path:
    return Path(paths_root) / "baselines" / f"{name}-{digest}" / RESULT


def run_method(name: str, method_cfg: Mapping[str, Any], data_cfg: Mapping[str, Any],
               paths_root: str | os.PathLike, seed: int, force: bool = False,
               data: LabeledData | None = None, open_set_far: float | None = None,
               export: bool = False, gallery: Mapping[str, Any] | None = None) -> MethodResult:
    """Run method ``name`` once under the shared split and score the test split once.

    ``method_cfg`` is the method's config group (``configs/baseline/<name>.yaml``), ``data_cfg`` the
    ``data`` section.  Cached: when ``<paths_root>/baselines/<name>-<hash>/result.json`` exists (same
    config, data, split and seed) it is returned without training, unless ``force``.  ``data`` may pass
    an already prepared :class:`LabeledData` of ``data_cfg``.  On an open-set split the row's threshold is
    calibrated at ``open_set_far`` (default :data:`DEFAULT_OPEN_SET_FAR`) and ``extra["open_set"]`` reports
    its test figures; on a closed-set split ``open_set_far`` is ignored.  With ``export``, a row that outputs class
    scores also saves its model for ``identify`` in its run folder (:mod:`facekd.baselines.deploy`).

    On a split of the enroll protocol (``data=orl_enroll``), ``gallery`` (``shots``, ``far``, ``calibration``,
    ``impostors``: synthetic faces as uint8 N x 3 x S x S, ``impostors_id``: what identifies them) makes the row's
    embedding be judged with a gallery (:mod:`facekd.gallery_eval`), reported in ``extra["gallery"]``.
    """
    method: Method = METHODS.get(name)()
    method.name = name
    cfg = plain(method_cfg) or {}
    data = data if data is not None else prepare_labeled(data_cfg, paths_root)
    far = None
    if data.open_set:
        far = check_far(DEFAULT_OPEN_SET_FAR if open_set_far is None else open_set_far, "open_set_far")
    method.check(data, cfg)
    t_prepare = time.perf_counter()
    inputs = method.prepare(data, cfg, paths_root, seed)
    prepare_seconds = time.perf_counter() - t_prepare
    gallery_key = _gallery_key(gallery) if getattr(data, "enroll_protocol", False) else None
    if gallery_key is not None:
        inputs = {**inputs, "gallery": gallery_key}
    digest = method_hash(name, cfg, data_cfg, data.split.id, seed, inputs, split_content_hash(data), far)
    path = result_path(paths_root, name, digest)
    if path.exists() and not force:
        log.info("%s seed %d: cached result %s", name, seed, path)
        cached = MethodResult.from_dict(read_json(path))
        if gallery_key is not None and (path.parent / GALLERY_EMBEDDINGS).is_file():
            cached.extra["gallery"] = _rescore_gallery(path.parent, gallery_key, cached.extra.get("gallery") or {})
        return cached
    run_dir = path.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "config.json", {"method": name, "config": cfg, "data": plain(data_cfg), "seed": int(seed),
                                         "inputs": inputs,
                                         "split": str(data.split_path), "split_id": data.split.id,
                                         "versions": versions()})
    seed_everything(seed)
    t0 = time.perf_counter()
    fitted = method.fit(data, cfg, run_dir, seed)
    train_seconds = time.perf_counter() - t0 + prepare_seconds  # inputs made by prepare (e.g. a distill run) count
    predictor = fitted.predictor.eval()
    scores, card = _score(name, fitted, data, cfg, far, run_dir, export,
                          gallery_key and {**gallery_key, "impostors": (gallery or {}).get("impostors")})
    result = MethodResult(method=name, student=fitted.student, seed=int(seed), test=scores["test"],
                          val=scores.get("val", {}), params=int(card["params"]), mflops=float(card["mflops"]),
                          cpu_ms_per_img=float(card["cpu_ms_per_img"]), train_seconds=round(train_seconds, 2),
                          extra={**fitted.extra, **scores["extra"], **latency_extra(card),
                                 "prepare_seconds": round(prepare_seconds, 2)},
                          config_hash=digest, run_dir=str(run_dir))
    save_test_features(predictor, data, run_dir / TEST_FEATURES, int(cfg.get("eval_batch_size", 64)))
    write_json(path, result.as_dict())
    log.info("%s seed %d: test accuracy %.4f (%s)", name, seed, result.accuracy, path)
    return result


def _gallery_key(gallery: Mapping[str, Any] | None) -> dict[str, Any]:
    """What identifies the gallery protocol a row is judged with (part of its cache key)."""
    gallery = dict(gallery or {})
    return {"shots": [int(k) for k in gallery.get("shots", (1, 2))], "far": float(gallery.get("far", 0.01)),
            "calibration": str(gallery.get("calibration", "max")), "impostors": gallery.get("impostors_id")}


def _score(name: str, fitted: Fitted, data: LabeledData, cfg: Mapping[str, Any], far: float | None, run_dir: Path,
           export: bool, gallery: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The fitted row's scores (val, test, open set, side predictors, gallery figures) and model card; with
    ``export``, its model files for identify and enroll."""
    predictor, batch_size = fitted.predictor, int(cfg.get("eval_batch_size", 64))
    scores = _scores(fitted, data, cfg, far)
    if "open_set" in scores:
        scores["extra"]["open_set"] = scores.pop("open_set")
    card = fitted.card or _card(predictor, int(cfg.get("card_repeats", 10)))
    for side, side_predictor in fitted.side_predictors.items():
        side_scores = evaluate_fitted(side_predictor.eval(), data, ("test",), ncm_metric=cfg.get("ncm_metric", "cosine"),
                                      batch_size=batch_size)
        scores["extra"][f"{side}_accuracy"] = side_scores["test"]["accuracy"]
        scores["extra"][f"{side}_f1_macro"] = side_scores["test"]["f1_macro"]
    if gallery is not None:
        scores["extra"]["gallery"] = _gallery(fitted, data, gallery, gallery["impostors"], batch_size, run_dir)
    if export and "finetune_run" not in fitted.extra:  # a distilled row's finetune run is its deployable model
        saved = export_predictor(predictor, data, run_dir, name, cfg, scores["extra"].get("open_set"),
                                 embedder=fitted.embedding_model())
        if saved:
            scores["extra"]["model"] = saved
    return scores, card


def _scores(fitted: Fitted, data: LabeledData, cfg: Mapping[str, Any], far: float | None) -> dict[str, Any]:
    """The predictor's val and test scores (and open-set figures at ``far``): the ones its stage computed with the
    same evaluation (``fitted.scores``) when they cover this protocol, else :func:`evaluate_fitted` now."""
    own = dict(fitted.scores or {})
    if own and (far is None or (own.get("open_set") or {}).get("far_target") == far):
        return {"val": own["val"], "test": own["test"], "extra": {},
                **({"open_set": own["open_set"]} if far is not None else {})}
    return evaluate_fitted(fitted.predictor, data, ("val", "test"), ncm_metric=cfg.get("ncm_metric", "cosine"),
                           triplet_metric=cfg.get("triplet_metric", "euclidean"),
                           batch_size=int(cfg.get("eval_batch_size", 64)), open_set_far=far)


GALLERY_EMBEDDINGS = "gallery_embeddings.npz"


def _gallery(fitted: Fitted, data: LabeledData, settings: Mapping[str, Any], impostors: torch.Tensor | None,
             batch_size: int, run_dir: Path) -> dict[str, Any]:
    """The row's embedding judged with a gallery on the enroll protocol (:func:`facekd.gallery_eval.gallery_figures`);
    the embeddings of every part are kept in the run folder (``gallery_embeddings.npz``) so that the figures can be
    recomputed without the model (:func:`facekd.gallery_eval.load_embeddings`)."""
    embedder = fitted.embedding_model()

    def embed(x: torch.Tensor) -> np.ndarray:
        return embed_images(embedder, x, batch_size).flatten(1).numpy()

    emb = protocol_embeddings(embed, data, impostors)
    save_embeddings(emb, run_dir / GALLERY_EMBEDDINGS)
    figures: dict[str, Any] = gallery_figures(emb, settings["shots"], settings["far"], settings["calibration"])
    figures["embedding"] = str(fitted.extra.get("embedding", fitted.student))
    return figures


def _rescore_gallery(run_dir: Path, settings: Mapping[str, Any], old: Mapping[str, Any]) -> dict[str, Any]:
    """A cached row's gallery figures, computed again from its saved embeddings (the figures are a function of
    them, so a cached row always reports what the current protocol computes)."""
    figures: dict[str, Any] = gallery_figures(load_embeddings(run_dir / GALLERY_EMBEDDINGS), settings["shots"],
                                              settings["far"], settings["calibration"])
    figures["embedding"] = old.get("embedding", "")
    return figures


def save_test_features(predictor: Predictor, data: LabeledData, path: Path, batch_size: int = 64) -> None:
    """The test images' features (the predictor's body output, before any head) with labels, for t-SNE plots."""
    x, y = split_datasets(data, ("test",), augment_train=False)["test"].tensors()
    body = Predictor(predictor.body, predictor.preprocess, output="embedding").eval()
    feats = embed_images(body, x, batch_size)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, features=feats.numpy(), labels=y.numpy())


def latency_extra(card: Mapping[str, Any]) -> dict[str, Any]:
    """The latency measurement's conditions (CPU share, load average, busy flag) from a model card."""
    return {f"latency_{k}": card[k] for k in ("cpu_share", "load1", "busy") if k in card}


def _card(predictor: Predictor, repeats: int) -> dict[str, float]:
    return model_card(predictor, repeats=repeats)


def default_device(cfg: Mapping[str, Any]) -> torch.device:
    """The device of a method config's ``device`` key (``auto``: CUDA when present)."""
    return resolve_device(cfg.get("device", "auto"))


def class_counts(data: LabeledData, part: str = "train") -> np.ndarray:
    """Images per class in one part of the split (length ``num_classes``)."""
    return np.bincount([y for _, y in data.split.part(part)], minlength=data.num_classes)
