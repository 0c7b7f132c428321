"""The finetune stage: a linear head on the distilled student, trained on the labeled train split.

``finetune(cfg)`` (``python scripts/finetune.py``):

1. reads the distill run ``finetune.student_run`` (refusing a missing, unfinished or other-teacher run, or
   one distilled on the training images of another split) and the shared split manifest of ``data``
   (refusing one that does not match the data folder, or a val/test class absent from train);
2. trains the head with the shared engine on the train split: one-hot sigmoid BCE (the paper's) or
   cross-entropy, the paper's ``lr / sqrt(1 + t)`` per epoch by default, batch 16.  Without
   augmentation and with the backbone frozen, the student's features are computed once (fast path);
   with ``finetune.augment`` the frozen student runs every step; ``finetune.unfreeze`` trains the
   student too at ``backbone_lr_scale`` times the lr;
3. picks the best epoch on val (``finetune.monitor``, default macro F1; ``finetune.ties``: among tied epochs
   the one with the lower val loss, as every baseline does, or the earliest),
   then scores the test split **once**, with the weights of that epoch;
4. writes into ``${paths.root}/finetune/<name>``: ``metrics.json`` (the engine's per-epoch history plus
   ``val`` and ``test`` figures, the model card and the ONNX parity), ``metrics.csv``, ``f1_curve.png``,
   ``confusion.png`` (test), ``model.safetensors`` (student + norm + head), ``model.onnx`` (see
   :data:`ONNX_INPUT_SPEC`), ``test_features.npz`` (the test images' student features, labels and
   predictions, for t-SNE) and ``manifest.json`` (stage ``finetune``, ``complete: true`` when done; its
   ``artifacts`` records the sha256 and size of the model, ONNX and feature files, and ``student_sha256``
   the distilled weights it started from).

Open set (the split withholds unknown identities, ``data.unknown_identities`` >= 1, e.g. ``data=orl_openset``):
after test, the model's class scores on the calibration unknowns (split part ``unknown_val``, never test) set
the rejection threshold at the false-accept rate ``finetune.open_set.far`` (:mod:`facekd.openset`), written
to ``open_set.json`` with the FAR it reached there; test is then scored open-set (known test faces plus the
test unknowns ``unknown_test``): ``metrics.json`` gains ``open_set`` (``dir``: known faces accepted and named
right, ``far``: test unknowns accepted) and ``open_set_roc.png`` draws DIR against FAR over every threshold.
A closed-set run writes neither.  The default run name ends in ``-open<N>``.

The distilled student is checked against the checksum its distill run recorded before it is used
(:func:`facekd.distill.load_student`), and :func:`load_finetuned` checks ``model.safetensors`` the same way.

The ``finetune`` section is checked by :class:`facekd.finetune.settings.FinetuneSettings` (the manifest records
all of it; the resume check hashes every key that changes the trained head, whatever its value), and the ONNX
export lives in :mod:`facekd.finetune.exports`.  ``finetune()`` runs four steps: prepare (check and read),
train, score (best val epoch, test once) and write.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from facekd.config import plain as _plain
from facekd.data.augment import seed_augmentation
from facekd.data.faces import FaceDataError
from facekd.data.labeled import LabeledData, data_identity, prepare_labeled, split_datasets
from facekd.data.synthetic import is_grey
from facekd.deploy import deploy_section
from facekd.distill import load_student
from facekd.distill.student_run import STUDENT_FILE, read_student_manifest, signature_diff
from facekd.embedder import EMBEDDER_FILE, Features, export_embedder
from facekd.engine import (METRICS_JSON, TrainConfig, Trainer, load_best, resolve_device, save_safetensors,
                           seed_everything)
from facekd.engine.steps import RepeatedDataset, StepBudget
from facekd.evaluation import Predictor, evaluate_fitted
from facekd.finetune.exports import ONNX_FILE, ONNX_INPUT_SPEC, deployed_cards, export_classifier
from facekd.finetune.hold import build_hold
from facekd.finetune.model import Preprocessed, SpecializedModel
from facekd.finetune.settings import FinetuneSettings
from facekd.finetune.task import HeadTask, head_for, predict_scores
from facekd.hashing import artifact_checksums, read_safetensors, verify_artifacts
from facekd.modelcard import model_card
from facekd.models import build_student, load_state_strict
from facekd.openset import OPEN_SET_FILE, open_set_roc, write_open_set
from facekd.plots import plot_confusion, plot_curves
from facekd.runs import RunError, read_json, read_manifest, write_json, write_manifest

__all__ = ["STAGE", "MODEL_FILE", "ONNX_FILE", "ONNX_INPUT_SPEC", "FinetuneSettings", "finetune", "run_dir_for",
           "load_finetuned"]

log = logging.getLogger(__name__)

STAGE = "finetune"
MODEL_FILE = "model.safetensors"
CURVE_FILE = "f1_curve.png"
CONFUSION_FILE = "confusion.png"
FEATURES_FILE = "test_features.npz"
ROC_FILE = "open_set_roc.png"

def run_dir_for(cfg: Mapping[str, Any]) -> Path:
    """The run folder of a finetune config: ``${paths.root}/finetune/<name>``."""
    s = FinetuneSettings.from_config(cfg["finetune"])
    return Path(cfg["paths"]["root"]) / STAGE / (s.name or s.default_name(str(cfg["data"]["name"]),
                                                                          _unknown(cfg["data"])))


def _unknown(data_cfg: Mapping[str, Any]) -> int:
    n = data_cfg.get("unknown_identities", 0)
    return n if isinstance(n, int) and not isinstance(n, bool) else 0


# ------------------------------------------------------------------------------------------------ checks


def _check_teacher(run_dir: Path, manifest: Mapping[str, Any], expected: Mapping[str, Any] | None) -> None:
    """Refuse a student distilled from another teacher: every field given in ``expected`` must match."""
    if not expected:
        return
    teacher = manifest.get("teacher") or {}
    diff = signature_diff({k: teacher.get(k) for k in expected}, dict(expected))
    if diff:
        raise RunError(f"{run_dir} was distilled from another teacher (run != finetune.expected_teacher): "
                       f"{'; '.join(diff)}")


def _check_split(data: LabeledData, student_manifest: Mapping[str, Any], student_run: Path) -> None:
    """Every val/test class must have training images; a student distilled on the training images of
    another split may have seen this split's test images, so it is refused."""
    split = data.split
    train = {y for _, y in split.train}
    for part in ("val", "test"):
        missing = sorted({y for _, y in split.part(part)} - train)
        if missing:
            raise FaceDataError(f"split {data.split_path}: {len(missing)} class(es) in {part} but absent from train: "
                                f"{[split.classes[y] for y in missing][:10]}; the head cannot learn them")
    if len(split.val) == 0:
        raise FaceDataError(f"split {data.split_path} has no val images: the best epoch is chosen on val "
                            "(set data.val >= 1)")
    used = student_manifest.get("split_id")
    if student_manifest.get("uses_train_images") and used != split.id:
        raise RunError(f"{student_run} was distilled on the training images of split {used} "
                       f"({student_manifest.get('split_path')}), but finetune uses split {split.id} "
                       f"({data.split_path}): its test images may have been seen. Finetune with the same data "
                       "config, or redistill.")


# ---------------------------------------------------------------------------------------------- helpers


def _features(model: SpecializedModel, images: torch.Tensor, device: torch.device, batch_size: int,
              desc: str | None) -> torch.Tensor:
    """Student features (before normalization) of uint8 images; float32 on the CPU (``desc``: the bar's label,
    None for no bar)."""
    return predict_scores(lambda x: model.extract(model.preprocess(x)), images, device, batch_size, desc)


def _stage_config(cfg: Mapping[str, Any], settings: FinetuneSettings) -> dict:
    """The config the manifest records (and hashes): the whole checked ``finetune`` section, open set or not."""
    return {"finetune": asdict(settings), "data": data_identity(cfg["data"]), "seed": int(cfg.get("seed", 0)),
            "paths": {"root": str(cfg["paths"]["root"])}}


def finetune_command(run_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str:
    """The command that makes the finetune run ``run_dir`` again, from what its manifest recorded."""
    run_dir = Path(run_dir).resolve()
    args = [f"paths.root={run_dir.parent.parent}", f"finetune.name={run_dir.name}"]
    student = (manifest.get("student_run") or {}).get("path")
    if student:
        args.append(f"finetune.student_run={student}")
    return (f"`python scripts/finetune.py {' '.join(shlex.quote(a) for a in args)}` with any other overrides it was "
            "first run with")


def load_finetuned(run_dir: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[SpecializedModel, list[str]]:
    """The specialized model of a finished finetune run (weights of its best epoch, eval mode) and its class names.

    ``model.safetensors`` is checked against the checksum the manifest recorded: a damaged, truncated or
    replaced file raises :class:`facekd.errors.ArtifactError` naming it and the command that remakes it.
    """
    run_dir = Path(run_dir)
    m = read_manifest(run_dir, STAGE, complete=True)
    how = dict(writer="the finetune stage", fix=f"rerun it: {finetune_command(run_dir, m)}")
    verify_artifacts(run_dir, m, [MODEL_FILE], **how)
    student = build_student(m["student"]["config"], int(m["student"]["out_dim"]))
    loss = ((m.get("config") or {}).get("finetune") or {}).get("loss", "bce")
    model = SpecializedModel(student, len(m["classes"]), m["features"], m["feature_norm"], head_for(loss))
    weights = read_safetensors(run_dir / MODEL_FILE, **how)
    try:
        state = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
        load_state_strict(model, state, str(run_dir / MODEL_FILE))
    except (OSError, ValueError) as e:
        raise RunError(f"{run_dir}: cannot load {MODEL_FILE} ({e}); rerun the finetune stage") from e
    return model.to(device).eval(), list(m["classes"])


# ------------------------------------------------------------------------------------------------- stage


@dataclass
class _Inputs:
    """The prepare step's result: the checked settings, the student and the split's images, read once."""

    settings: FinetuneSettings
    data_cfg: dict
    seed: int
    device: torch.device
    student_run: Path
    smanifest: dict
    student: Any
    data: LabeledData
    run_dir: Path
    stage_cfg: dict
    identity: dict
    sets: dict
    xtr: torch.Tensor
    ytr: torch.Tensor
    xva: torch.Tensor
    yva: torch.Tensor
    xte: torch.Tensor
    yte: torch.Tensor
    classes: list[str]
    calibration: Any = None

    @property
    def image_size(self) -> int:
        return int(self.data_cfg.get("image_size", 112))

    @property
    def check_images(self) -> torch.Tensor:
        """The images the exports are checked on: val (test when val is empty)."""
        return self.xva if len(self.xva) else self.xte


@dataclass
class _Trained:
    """The train step's result: the model (the last epoch's weights) and the engine's fit result."""

    model: SpecializedModel
    task: HeadTask
    result: Any
    train_seconds: float


@dataclass
class _Scores:
    """The score step's result: the best val epoch's figures and test scored once with its weights."""

    best_row: dict
    val: dict
    test_features: torch.Tensor
    pred: np.ndarray
    test: dict
    open_set: tuple[dict[str, Any], tuple[list, list]] | None


@dataclass
class _Shipped:
    """The write step's exports: the model card and what the ONNX, embedder and int8 exports reported."""

    card: dict
    onnx: dict
    embedder: dict | None
    int8: dict | None
    deployed: dict | None


def finetune(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run the finetune stage of ``cfg`` (the ``finetune`` primary config); returns the final ``metrics.json``.

    The returned dict holds ``history`` (per epoch: train loss/accuracy, val loss and metrics, lr),
    ``best_epoch``, ``monitor``, ``val`` and ``test`` (accuracy, precision/recall/F1 macro and micro),
    ``params``, ``mflops``, ``cpu_ms_per_img``, ``onnx`` (path and parity), ``train_seconds`` and ``run_dir``.
    """
    inputs = _prepare(cfg)
    trained = _train(inputs)
    scores = _score(inputs, trained)
    shipped = _ship(inputs, trained, scores)
    metrics = _write_metrics(inputs, trained, scores, shipped)
    if inputs.settings.plots:
        _plot(inputs, trained, scores)
    _write_final_manifest(inputs, trained, scores, shipped)
    s, best_row = inputs.settings, scores.best_row
    log.info("finetune %s: best epoch %s on val (%s %.4f); test accuracy %.2f%%, macro F1 %.2f%%", inputs.run_dir,
             trained.result.best_epoch, s.monitor, best_row[s.monitor], 100 * scores.test["accuracy"],
             100 * scores.test["f1_macro"])
    return metrics


def _prepare(cfg: Mapping[str, Any]) -> _Inputs:
    """Check the config, the student run and the split; read the split's images (nothing is written yet)."""
    settings = FinetuneSettings.from_config(cfg["finetune"])
    data_cfg = _plain(cfg["data"])
    root = Path(cfg["paths"]["root"])
    seed = int(cfg.get("seed", 0))
    device = resolve_device(cfg.get("device", "auto"))

    student_run = Path(settings.student_run)
    smanifest = read_student_manifest(student_run)  # missing / unfinished / not a distill run -> RunError
    _check_teacher(student_run, smanifest, settings.expected_teacher)
    student = load_student(student_run, device=device)
    data = prepare_labeled(data_cfg, root)  # a split manifest that does not match the data folder -> FaceDataError
    _check_split(data, smanifest, student_run)

    run_dir = root / STAGE / (settings.name or settings.default_name(str(data_cfg.get("name", "faces")),
                                                                     _unknown(data_cfg)))
    identity = {"student_run": {"path": str(student_run), "config_hash": smanifest.get("config_hash"),
                                "teacher": smanifest.get("teacher"), "uses_labels": smanifest.get("uses_labels"),
                                "uses_train_images": smanifest.get("uses_train_images")},
                "split": {"path": str(data.split_path), "id": data.split.id}}

    sets = split_datasets(data, ("train", "val", "test"), augment_train=settings.augment)
    xtr, ytr = sets["train"].tensors()
    xva, yva = sets["val"].tensors()
    xte, yte = sets["test"].tensors()
    classes = list(data.split.classes)
    calibration = None
    if settings.int8["enabled"]:  # refuse a missing calibration source before training, not after
        from facekd.finetune.int8 import calibration_faces

        calibration = calibration_faces(smanifest, int(settings.int8["faces"]), int(data_cfg.get("image_size", 112)),
                                        is_grey(xtr))
    log.info("finetune %s on %s: %d classes, train/val/test %d/%d/%d images", student_run, data.split_path,
             len(classes), len(ytr), len(yva), len(yte))
    return _Inputs(settings, data_cfg, seed, device, student_run, smanifest, student, data, run_dir,
                   _stage_config(cfg, settings), identity, sets, xtr, ytr, xva, yva, xte, yte, classes, calibration)


def _train(inputs: _Inputs) -> _Trained:
    """Train the head (and the unfrozen student) with the shared engine; the manifest says incomplete meanwhile."""
    s, device, bs = inputs.settings, inputs.device, inputs.settings.eval_batch_size
    t0 = time.perf_counter()
    seed_everything(inputs.seed)
    seed_augmentation(inputs.sets["train"], inputs.seed)  # finetune.augment: views follow the seed, not the process
    model = SpecializedModel(inputs.student, len(inputs.classes), s.features, s.feature_norm,
                             head_for(s.loss)).to(device)
    bar = bool(s.train.get("progress", True))  # finetune.train.progress: every bar of the stage, or none
    ftr = _features(model, inputs.xtr, device, bs, "train features" if bar else None)
    model.norm.fit(ftr)
    if s.precomputed:
        from torch.utils.data import TensorDataset

        train_data: Any = TensorDataset(ftr, inputs.ytr)
        val = (_features(model, inputs.xva, device, bs, "val features" if bar else None), inputs.yva)
    else:
        train_data, val = inputs.sets["train"], (inputs.xva, inputs.yva)
    hold = build_hold(inputs.smanifest, s.hold, inputs.image_size, is_grey(inputs.xtr), inputs.seed)
    task = HeadTask(model, s.loss, val, inputs="features" if s.precomputed else "images",
                    unfreeze=s.unfreeze, backbone_lr_scale=s.backbone_lr_scale, eval_batch_size=bs,
                    select_on=s.monitor if s.select_key == "val_select" else None, hold=hold)
    train_cfg, train_data = _budget(s, train_data, seed=inputs.seed, device=str(device),
                                    **({"amp": False} if s.precomputed else {}))  # a head on features: fp32
    trainer_cfg = {**inputs.stage_cfg, "finetune": s.hashed(), **inputs.identity}
    trainer = Trainer(train_cfg, inputs.run_dir, config=trainer_cfg)
    trainer.check_resumable("finetune.train.resume=false starts it afresh, or finetune.name=NEW keeps it")
    write_manifest(inputs.run_dir, STAGE, inputs.stage_cfg, **inputs.identity, complete=False)
    result = trainer.fit(task, train_data)
    return _Trained(model, task, result, time.perf_counter() - t0)


def _budget(s: FinetuneSettings, train_data: Any, **options: Any) -> tuple[TrainConfig, Any]:
    """The engine's options and what it iterates: ``finetune.train.epochs`` passes over the train split, or with
    ``finetune.train.steps`` a budget in optimizer steps (:class:`~facekd.engine.steps.StepBudget`)."""
    section = dict(s.train)
    budget = StepBudget.pop(section, "finetune.train")
    train_cfg = TrainConfig.from_config(section, "finetune.train", monitor=s.select_key, mode=s.mode, **options)
    if budget is None:
        return train_cfg, train_data
    epochs, per_epoch = budget.plan(len(train_data), train_cfg.batch_size)
    log.info("finetune budget: %s", dict(budget.describe(len(train_data), train_cfg.batch_size)))
    return dataclasses.replace(train_cfg, epochs=epochs), RepeatedDataset(train_data, per_epoch)


def _score(inputs: _Inputs, trained: _Trained) -> _Scores:
    """Load the weights of the best val epoch and score test once with them (and open-set, when the split is), by
    the evaluation every comparison row goes through (:func:`facekd.evaluation.evaluate_fitted`)."""
    s, device, bs, model = inputs.settings, inputs.device, inputs.settings.eval_batch_size, trained.model
    load_best(trained.task, inputs.run_dir)
    model.eval()
    best_row = next(r for r in trained.result.history if r["epoch"] == trained.result.best_epoch)
    val_metrics = {k[4:]: float(v) for k, v in best_row.items()
                   if k.startswith("val_") and k not in ("val_loss", "val_select")}
    open_set = inputs.data.open_set
    scored = evaluate_fitted(Predictor(Preprocessed(model), model.preprocess, output="scores"), inputs.data, ("test",),
                             batch_size=bs, open_set_far=s.far if open_set else None, keep_scores=True)
    test_scores = scored["scores"]["test"]
    figures = None
    if open_set:
        figures = scored["open_set"]
        roc_far, roc_dir, _ = open_set_roc(test_scores, inputs.yte.numpy(), scored["scores"]["unknown_test"])
        log.info("open set: threshold %.4f calibrated at FAR %g on %d unknown faces (reached %.4f); test DIR %.4f, "
                 "FAR %.4f on %d unknown faces", figures["threshold"], s.far, figures["n_calibration"],
                 figures["far_calibration"], figures["dir"], figures["far"], figures["n_unknown"])
        _write_open_set(inputs, figures)
        figures = (figures, (roc_far.tolist(), roc_dir.tolist()))
    bar = bool(s.train.get("progress", True))
    fte = _features(model, inputs.xte, device, bs, "test features" if bar else None)  # the t-SNE's test_features.npz
    return _Scores(best_row, val_metrics, fte, test_scores.argmax(1), scored["test"], figures)


def _write_open_set(inputs: _Inputs, figures: Mapping[str, Any]) -> None:
    """``open_set.json``: the calibrated threshold and the FAR / DIR it reached."""
    data = inputs.data
    write_open_set(inputs.run_dir, figures["threshold"], inputs.settings.far, figures["n_calibration"],
                   far_calibration=figures["far_calibration"],
                   calibration_identities=len(data.split.unknown_classes) // 2, split_id=data.split.id,
                   test={"dir": figures["dir"], "far": figures["far"], "n_known": figures["n_known"],
                         "n_unknown": figures["n_unknown"]})


def _ship(inputs: _Inputs, trained: _Trained, scores: _Scores) -> _Shipped:
    """Write the model and the test features, time the model, and export (ONNX, embedder, int8 copies)."""
    s, run_dir = inputs.settings, inputs.run_dir
    cpu_model = trained.model.to("cpu").float().eval()
    save_safetensors(cpu_model.state_dict(), run_dir / MODEL_FILE,
                     {"classes": json.dumps(inputs.classes), "features": s.features, "norm": s.feature_norm,
                      "best_epoch": trained.result.best_epoch})
    np.savez_compressed(run_dir / FEATURES_FILE, features=scores.test_features.numpy(), labels=inputs.yte.numpy(),
                        pred=scores.pred)
    card = model_card(Preprocessed(cpu_model), repeats=s.card_repeats)
    onnx_info: dict[str, Any] = {"exported": False}
    embedder_info: dict[str, Any] | None = None
    if s.export_onnx:
        onnx_info = export_classifier(cpu_model, run_dir, inputs.check_images, s, inputs.classes, inputs.image_size,
                            inputs.student)
        embedder_info = export_embedder(Features(cpu_model, "extract"), cpu_model.preprocess, run_dir,
                                        inputs.image_size, inputs.check_images[: s.parity_images],
                                        metadata={"student": inputs.student.name, "features": s.features})
    int8_info = None
    if inputs.calibration is not None:
        from facekd.finetune.int8 import ship_int8

        int8_info = ship_int8(run_dir, [ONNX_FILE, EMBEDDER_FILE], inputs.calibration, inputs.check_images,
                              inputs.xte, inputs.yte, s.int8)
    deployed = deployed_cards(run_dir, s) if s.export_onnx else None
    return _Shipped(card, onnx_info, embedder_info, int8_info, deployed)


def _write_metrics(inputs: _Inputs, trained: _Trained, scores: _Scores, shipped: _Shipped) -> dict[str, Any]:
    """``metrics.json``: the engine's per-epoch history plus val, test, the model card and the exports."""
    s, card, student = inputs.settings, shipped.card, inputs.student
    metrics = read_json(inputs.run_dir / METRICS_JSON)
    metrics.update({
        "method": "distilled student + linear head" + (" (unfrozen)" if s.unfreeze else ""),
        "student": student.name, "seed": inputs.seed, "selection": f"best epoch by {s.monitor} ({s.mode}) "
        f"on val; ties: {s.ties.replace('_', ' ')}; test scored once at that epoch",
        "val": scores.val, "val_loss": float(scores.best_row["val_loss"]), "test": scores.test,
        "n_images": {"train": len(inputs.ytr), "val": len(inputs.yva), "test": len(inputs.yte)},
        "num_classes": len(inputs.classes),
        "params": int(card["params"]), "mflops": float(card["mflops"]), "cpu_ms_per_img": float(card["cpu_ms_per_img"]),
        "cpu_share": card["cpu_share"], "load1": float(card["load1"]), "busy": bool(card["busy"]),
        "model_card": {**card, "input_size": int(student.input_size),
                       "note": "student + norm + head on the preprocessed input, batch 1, one CPU thread, fastest of the repeats"},
        "onnx": shipped.onnx, "embedder": shipped.embedder, "int8": shipped.int8, "deployed": shipped.deployed,
        "train_seconds": round(trained.train_seconds, 2), "run_dir": str(inputs.run_dir), **inputs.identity})
    if scores.open_set is not None:
        metrics["open_set"] = {**scores.open_set[0], "note": "threshold calibrated on the unknown_val identities "
                               "(never test) at far_target; dir on the known test faces, far on the unknown_test faces"}
    write_json(inputs.run_dir / METRICS_JSON, metrics)
    return metrics


def _plot(inputs: _Inputs, trained: _Trained, scores: _Scores) -> None:
    """``f1_curve.png``, ``confusion.png`` (test) and, open set, ``open_set_roc.png``."""
    run_dir, result, accuracy = inputs.run_dir, trained.result, scores.test["accuracy"]
    plot_curves(result.history, ["val_f1_macro", "val_accuracy", "train_accuracy"], run_dir / CURVE_FILE,
                best=result.best_epoch, ylabel="score (val micro-F1 = val accuracy)",
                title=f"{run_dir.name}: per epoch (test {100 * accuracy:.1f}% at the best val epoch)")
    plot_confusion(inputs.yte.numpy(), scores.pred, inputs.classes, run_dir / CONFUSION_FILE,
                   title=f"{run_dir.name}: test, epoch {result.best_epoch}, accuracy {100 * accuracy:.1f}%")
    if scores.open_set is not None:
        from facekd.plots import plot_open_set_roc

        figures, (roc_far, roc_dir) = scores.open_set
        plot_open_set_roc(roc_far, roc_dir, run_dir / ROC_FILE, at=(figures["far"], figures["dir"]),
                          far_target=inputs.settings.far,
                          title=f"{run_dir.name}: open-set test ({figures['n_known']} known, "
                                f"{figures['n_unknown']} unknown faces)")


def _write_final_manifest(inputs: _Inputs, trained: _Trained, scores: _Scores, shipped: _Shipped) -> None:
    """``manifest.json`` with ``complete: true`` and the checksums of the files that ship."""
    s, run_dir, smanifest = inputs.settings, inputs.run_dir, inputs.smanifest
    student_sha256 = ((smanifest.get("artifacts") or {}).get(STUDENT_FILE) or {}).get("sha256")
    files = ((MODEL_FILE, ONNX_FILE, EMBEDDER_FILE, FEATURES_FILE)
             + tuple(i["file"] for i in (shipped.int8 or {}).values() if i["file"])
             + ((OPEN_SET_FILE,) if scores.open_set is not None else ()))
    write_manifest(run_dir, STAGE, inputs.stage_cfg, **inputs.identity, classes=inputs.classes, features=s.features,
                   feature_norm=s.feature_norm,
                   student={"config": smanifest["student"], "out_dim": int(smanifest["out_dim"])},
                   image_size=inputs.image_size, framing=inputs.data_cfg.get("framing", "pad"),
                   onnx_input=ONNX_INPUT_SPEC if s.export_onnx else None, best_epoch=trained.result.best_epoch,
                   seed=inputs.seed, student_sha256=student_sha256,
                   embedder=shipped.embedder, int8=shipped.int8,
                   deploy=deploy_section(backends=("onnx", "torch") if s.export_onnx else ("torch",),
                                         data_cfg=inputs.data_cfg, writer="the finetune stage",
                                         remake=f"rerun it: {finetune_command(run_dir, inputs.identity)}"),
                   artifacts=artifact_checksums(run_dir, [f for f in files if (run_dir / f).is_file()]),
                   complete=True)
