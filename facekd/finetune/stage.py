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
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from facekd.config import plain as _plain
from facekd.data.augment import seed_augmentation
from facekd.data.faces import FaceDataError
from facekd.data.labeled import LabeledData, data_identity, prepare_labeled, split_datasets
from facekd.distill import load_student
from facekd.distill.student_run import STUDENT_FILE, read_student_manifest, signature_diff
from facekd.embedder import EMBEDDER_FILE, Features, export_embedder
from facekd.gallery_eval import is_grey
from facekd.engine import METRICS_JSON, TrainConfig, Trainer, load_best, resolve_device, save_safetensors, \
    seed_everything
from facekd.finetune.model import FEATURES, NORMS, Preprocessed, SpecializedModel
from facekd.finetune.task import LOSSES, HeadTask, head_for, predict_scores
from facekd.hashing import artifact_checksums, read_safetensors, verify_artifacts
from facekd.metrics import classification_metrics
from facekd.openset import OPEN_SET_FILE
from facekd.models import build_student, load_state_strict
from facekd.runs import RunError, read_json, read_manifest, write_json, write_manifest

__all__ = ["STAGE", "MODEL_FILE", "ONNX_FILE", "ONNX_INPUT_SPEC", "FinetuneSettings", "finetune", "run_dir_for",
           "load_finetuned"]

log = logging.getLogger(__name__)

STAGE = "finetune"
MODEL_FILE = "model.safetensors"
ONNX_FILE = "model.onnx"
CURVE_FILE = "f1_curve.png"
CONFUSION_FILE = "confusion.png"
FEATURES_FILE = "test_features.npz"
ROC_FILE = "open_set_roc.png"
DEFAULT_FAR = 0.01
ONNX_INPUT_SPEC = ("input 'images': uint8 RGB, N x 3 x S x S (N dynamic, S = data.image_size), pixels 0-255, "
                   "faces framed square as the data config frames them (data.framing); output 'scores': "
                   "float32 N x K class scores (logits), argmax = index into the 'classes' metadata")

# how epochs that tie on the monitored val metric are told apart (val sets hold one image per identity)
TIES = ("lower_val_loss", "earliest")

# keys of the finetune section that do not change the result (left out of the resume hash)
# (open_set: the threshold is calibrated after training, so it never changes the trained head)
_OPERATIONAL = ("name", "export_onnx", "parity_images", "parity_atol", "card_repeats", "eval_batch_size", "plots",
                "open_set", "int8")
_TRAIN_DEFAULTS = {"epochs": 200, "batch_size": 16, "drop_last": False, "optim": {"name": "adam", "lr": 1e-2},
                   "schedule": {"name": "inv_sqrt", "interval": "epoch"}, "resume": True}


@dataclass(frozen=True)
class FinetuneSettings:
    """The ``finetune`` config section, checked (see ``configs/finetune.yaml`` for each key)."""

    student_run: str
    name: str | None = None
    expected_teacher: dict | None = None
    features: str = "embed"
    feature_norm: str = "standardize"
    loss: str = "bce"
    augment: bool = False
    unfreeze: bool = False
    backbone_lr_scale: float = 0.1
    monitor: str = "val_f1_macro"
    ties: str = "lower_val_loss"
    eval_batch_size: int = 64
    export_onnx: bool = True
    parity_images: int = 8
    parity_atol: float = 1e-3
    card_repeats: int = 20
    plots: bool = True
    open_set: dict = field(default_factory=lambda: {"far": DEFAULT_FAR})
    int8: dict = field(default_factory=dict)
    hold: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = [(self.features in FEATURES, f"finetune.features must be one of {FEATURES}, got {self.features!r}"),
                  (self.feature_norm in NORMS, f"finetune.feature_norm must be one of {NORMS}, got {self.feature_norm!r}"),
                  (self.loss in LOSSES, f"finetune.loss must be one of {LOSSES}, got {self.loss!r}"),
                  (self.backbone_lr_scale > 0, f"finetune.backbone_lr_scale must be > 0, got {self.backbone_lr_scale}"),
                  (self.monitor.startswith("val_"), f"finetune.monitor must be a val metric (val_f1_macro, "
                                                    f"val_accuracy, val_loss, ...), got {self.monitor!r}"),
                  (self.ties in TIES, f"finetune.ties must be one of {TIES}, got {self.ties!r}"),
                  (self.parity_images >= 1, "finetune.parity_images must be >= 1"),
                  (bool(self.student_run), "finetune.student_run must name a distill run folder")]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.name is not None and (not self.name or "/" in self.name or self.name in (".", "..")):
            raise ValueError(f"finetune.name must be a plain folder name, got {self.name!r}")
        from facekd.errors import ConfigError
        from facekd.openset import check_far

        if not isinstance(self.open_set, Mapping) or set(self.open_set) - {"far"}:
            raise ConfigError(f"finetune.open_set must be a mapping with the key far, got {self.open_set!r}; set it "
                              "like finetune.open_set.far=0.01")
        check_far(self.open_set.get("far", DEFAULT_FAR), "finetune.open_set.far")
        from facekd.finetune.int8 import check_int8

        object.__setattr__(self, "int8", check_int8(self.int8))
        from facekd.finetune.hold import check_hold

        object.__setattr__(self, "hold", check_hold(self.hold, self.unfreeze))
        if self.int8["enabled"] and not self.export_onnx:
            raise ConfigError("finetune.int8.enabled=true quantizes the exported ONNX models, but "
                              "finetune.export_onnx=false; set finetune.export_onnx=true or finetune.int8.enabled=false")
        if self.expected_teacher is not None and not isinstance(self.expected_teacher, Mapping):
            raise ValueError("finetune.expected_teacher must be null or a mapping of teacher signature fields, "
                             "e.g. {name: sface, feature: embedding}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> "FinetuneSettings":
        sec = dict(_plain(section))
        known = set(cls.__dataclass_fields__)
        unknown = set(sec) - known
        if unknown:
            raise ValueError(f"unknown finetune keys {sorted(unknown)}; known: {sorted(known)}")
        sec["train"] = {**_TRAIN_DEFAULTS, **dict(sec.get("train") or {})}
        return cls(**sec)

    @property
    def mode(self) -> str:
        return "min" if self.monitor.endswith("loss") else "max"

    @property
    def select_key(self) -> str:
        """The key the engine selects on: ``val_select`` (monitor, ties to the lower val loss) or the monitor."""
        return "val_select" if self.ties == "lower_val_loss" and self.mode == "max" else self.monitor

    @property
    def precomputed(self) -> bool:
        """The fast path: frozen backbone and no augmentation, so features are computed once."""
        return not (self.augment or self.unfreeze)

    @property
    def far(self) -> float:
        """The false-accept rate the open-set threshold is calibrated to."""
        return float(self.open_set.get("far", DEFAULT_FAR))

    def default_name(self, data_name: str, unknown_identities: int = 0) -> str:
        name = f"{data_name}-{Path(self.student_run).name}-{self.loss}"
        return (name + ("-aug" if self.augment else "") + ("-unfrozen" if self.unfreeze else "")
                + (f"-open{int(unknown_identities)}" if unknown_identities else ""))

    def hashed(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in _OPERATIONAL}
        if not out["hold"]["weight"]:  # off: hashed as before the hold term existed
            out.pop("hold")
        return out


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
              desc: str) -> torch.Tensor:
    """Student features (before normalization) of uint8 images; float32 on the CPU."""
    return predict_scores(lambda x: model.extract(model.preprocess(x)), images, device, batch_size, desc)


def _stage_config(cfg: Mapping[str, Any], settings: FinetuneSettings) -> dict:
    section = asdict(settings)
    if not _unknown(cfg["data"]):  # closed set: recorded (and hashed) as before the open-set protocol existed
        section.pop("open_set")
    return {"finetune": section, "data": data_identity(cfg["data"]), "seed": int(cfg.get("seed", 0)),
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


def finetune(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Run the finetune stage of ``cfg`` (the ``finetune`` primary config); returns the final ``metrics.json``.

    The returned dict holds ``history`` (per epoch: train loss/accuracy, val loss and metrics, lr),
    ``best_epoch``, ``monitor``, ``val`` and ``test`` (accuracy, precision/recall/F1 macro and micro),
    ``params``, ``mflops``, ``cpu_ms_per_img``, ``onnx`` (path and parity), ``train_seconds`` and ``run_dir``.
    """
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
    stage_cfg = _stage_config(cfg, settings)
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

    t0 = time.perf_counter()
    seed_everything(seed)
    seed_augmentation(sets["train"], seed)  # finetune.augment: the views drawn follow the seed, not the process
    model = SpecializedModel(student, len(classes), settings.features, settings.feature_norm,
                             head_for(settings.loss)).to(device)
    bs = settings.eval_batch_size
    ftr = _features(model, xtr, device, bs, "train features")
    model.norm.fit(ftr)
    if settings.precomputed:
        from torch.utils.data import TensorDataset

        train_data: Any = TensorDataset(ftr, ytr)
        val = (_features(model, xva, device, bs, "val features"), yva)
    else:
        train_data, val = sets["train"], (xva, yva)
    from facekd.finetune.hold import build_hold

    hold = build_hold(smanifest, settings.hold, int(data_cfg.get("image_size", 112)), is_grey(xtr), seed)
    task = HeadTask(model, settings.loss, val, inputs="features" if settings.precomputed else "images",
                    unfreeze=settings.unfreeze, backbone_lr_scale=settings.backbone_lr_scale, eval_batch_size=bs,
                    select_on=settings.monitor if settings.select_key == "val_select" else None, hold=hold)
    train_cfg = TrainConfig.from_config(settings.train, "finetune.train", seed=seed, device=str(device), monitor=settings.select_key,
                                        mode=settings.mode)
    trainer_cfg = {**stage_cfg, "finetune": settings.hashed(), **identity}
    trainer = Trainer(train_cfg, run_dir, config=trainer_cfg)
    trainer.check_resumable("finetune.train.resume=false starts it afresh, or finetune.name=NEW keeps it")
    write_manifest(run_dir, STAGE, stage_cfg, **identity, complete=False)
    result = trainer.fit(task, train_data)
    train_seconds = time.perf_counter() - t0

    # the weights of the best val epoch; test is scored once, here
    load_best(task, run_dir)
    model.eval()
    best_row = next(r for r in result.history if r["epoch"] == result.best_epoch)
    val_metrics = {k[4:]: float(v) for k, v in best_row.items() if k.startswith("val_") and k not in ("val_loss", "val_select")}
    fte = _features(model, xte, device, bs, "test features")
    with torch.no_grad():
        test_scores = predict_scores(model.classify, fte, device, bs)
    pred = test_scores.argmax(1).numpy()
    test_metrics = classification_metrics(yte.numpy(), pred, labels=list(range(len(classes))))
    open_set = _open_set(model, data, test_scores, yte, device, bs, settings.far) if data.open_set else None
    if open_set is not None:
        from facekd.openset import write_open_set

        figures, _ = open_set
        write_open_set(run_dir, figures["threshold"], settings.far, figures["n_calibration"],
                       far_calibration=figures["far_calibration"],
                       calibration_identities=len(data.split.unknown_classes) // 2, split_id=data.split.id,
                       test={"dir": figures["dir"], "far": figures["far"], "n_known": figures["n_known"],
                             "n_unknown": figures["n_unknown"]})

    cpu_model = model.to("cpu").float().eval()
    save_safetensors(cpu_model.state_dict(), run_dir / MODEL_FILE,
                     {"classes": json.dumps(classes), "features": settings.features, "norm": settings.feature_norm,
                      "best_epoch": result.best_epoch})
    np.savez_compressed(run_dir / FEATURES_FILE, features=fte.numpy(), labels=yte.numpy(), pred=pred)
    from facekd.modelcard import model_card

    card = model_card(Preprocessed(cpu_model), repeats=settings.card_repeats)
    onnx_info: dict[str, Any] = {"exported": False}
    embedder_info: dict[str, Any] | None = None
    if settings.export_onnx:
        onnx_info = _export(cpu_model, run_dir, xva if len(xva) else xte, settings, classes,
                            int(data_cfg.get("image_size", 112)), student)
        embedder_info = export_embedder(Features(cpu_model, "extract"), cpu_model.preprocess, run_dir,
                                        int(data_cfg.get("image_size", 112)),
                                        (xva if len(xva) else xte)[: settings.parity_images],
                                        metadata={"student": student.name, "features": settings.features})
    int8_info = None
    if calibration is not None:
        from facekd.finetune.int8 import ship_int8

        int8_info = ship_int8(run_dir, [ONNX_FILE, EMBEDDER_FILE], calibration, xva if len(xva) else xte, xte, yte,
                              settings.int8)
    deployed = _deployed_cards(run_dir, settings) if settings.export_onnx else None

    metrics = read_json(run_dir / METRICS_JSON)
    metrics.update({
        "method": "distilled student + linear head" + (" (unfrozen)" if settings.unfreeze else ""),
        "student": student.name, "seed": seed, "selection": f"best epoch by {settings.monitor} ({settings.mode}) "
        f"on val; ties: {settings.ties.replace('_', ' ')}; test scored once at that epoch",
        "val": val_metrics, "val_loss": float(best_row["val_loss"]), "test": test_metrics,
        "n_images": {"train": len(ytr), "val": len(yva), "test": len(yte)}, "num_classes": len(classes),
        "params": int(card["params"]), "mflops": float(card["mflops"]), "cpu_ms_per_img": float(card["cpu_ms_per_img"]),
        "cpu_share": card["cpu_share"], "load1": float(card["load1"]), "busy": bool(card["busy"]),
        "model_card": {**card, "input_size": int(student.input_size),
                       "note": "student + norm + head on the preprocessed input, batch 1, one CPU thread, fastest of the repeats"},
        "onnx": onnx_info, "embedder": embedder_info, "int8": int8_info, "deployed": deployed, "train_seconds": round(train_seconds, 2), "run_dir": str(run_dir), **identity})
    if open_set is not None:
        metrics["open_set"] = {**open_set[0], "note": "threshold calibrated on the unknown_val identities (never "
                               "test) at far_target; dir on the known test faces, far on the unknown_test faces"}
    write_json(run_dir / METRICS_JSON, metrics)

    if settings.plots:
        from facekd.plots import plot_confusion, plot_curves

        plot_curves(result.history, ["val_f1_macro", "val_accuracy", "train_accuracy"], run_dir / CURVE_FILE,
                    best=result.best_epoch, ylabel="score (val micro-F1 = val accuracy)",
                    title=f"{run_dir.name}: per epoch (test {100 * test_metrics['accuracy']:.1f}% at the best val epoch)")
        plot_confusion(yte.numpy(), pred, classes, run_dir / CONFUSION_FILE,
                       title=f"{run_dir.name}: test, epoch {result.best_epoch}, accuracy "
                             f"{100 * test_metrics['accuracy']:.1f}%")
        if open_set is not None:
            from facekd.plots import plot_open_set_roc

            figures, (roc_far, roc_dir) = open_set
            plot_open_set_roc(roc_far, roc_dir, run_dir / ROC_FILE, at=(figures["far"], figures["dir"]),
                              far_target=settings.far,
                              title=f"{run_dir.name}: open-set test ({figures['n_known']} known, "
                                    f"{figures['n_unknown']} unknown faces)")

    student_sha256 = ((smanifest.get("artifacts") or {}).get(STUDENT_FILE) or {}).get("sha256")
    write_manifest(run_dir, STAGE, stage_cfg, **identity, classes=classes, features=settings.features,
                   feature_norm=settings.feature_norm,
                   student={"config": smanifest["student"], "out_dim": int(smanifest["out_dim"])},
                   image_size=int(data_cfg.get("image_size", 112)), framing=data_cfg.get("framing", "pad"),
                   onnx_input=ONNX_INPUT_SPEC if settings.export_onnx else None, best_epoch=result.best_epoch,
                   seed=seed, student_sha256=student_sha256,
                   embedder=embedder_info, int8=int8_info,
                   artifacts=artifact_checksums(run_dir, [f for f in (MODEL_FILE, ONNX_FILE, EMBEDDER_FILE, FEATURES_FILE)
                                                          + tuple(i["file"] for i in (int8_info or {}).values() if i["file"])
                                                          + ((OPEN_SET_FILE,) if open_set is not None else ())
                                                          if (run_dir / f).is_file()]),
                   complete=True)
    log.info("finetune %s: best epoch %s on val (%s %.4f); test accuracy %.2f%%, macro F1 %.2f%%", run_dir,
             result.best_epoch, settings.monitor, best_row[settings.monitor], 100 * test_metrics["accuracy"],
             100 * test_metrics["f1_macro"])
    return metrics


def _open_set(model: SpecializedModel, data: LabeledData, test_scores: torch.Tensor, test_labels: torch.Tensor,
              device: torch.device, batch_size: int, far: float) -> tuple[dict[str, Any], tuple[list, list]]:
    """Calibrate the rejection threshold on ``unknown_val`` and score test open-set; also the ROC on test."""
    from facekd.openset import calibrate_and_score, open_set_roc

    sets = split_datasets(data, ("unknown_val", "unknown_test"), augment_train=False)
    scores = {}
    for part, ds in sets.items():
        x, _ = ds.tensors()
        with torch.no_grad():
            scores[part] = predict_scores(model.classify, _features(model, x, device, batch_size, f"{part} features"),
                                          device, batch_size).numpy()
    known, labels = test_scores.numpy(), test_labels.numpy()
    figures = calibrate_and_score(scores["unknown_val"], known, labels, scores["unknown_test"], far)
    roc_far, roc_dir, _ = open_set_roc(known, labels, scores["unknown_test"])
    log.info("open set: threshold %.4f calibrated at FAR %g on %d unknown faces (reached %.4f); test DIR %.4f, "
             "FAR %.4f on %d unknown faces", figures["threshold"], far, figures["n_calibration"],
             figures["far_calibration"], figures["dir"], figures["far"], figures["n_unknown"])
    return figures, (roc_far.tolist(), roc_dir.tolist())


def _deployed_cards(run_dir: Path, settings: FinetuneSettings) -> dict[str, Any]:
    """What ships, timed as it runs: each ONNX file of the run under onnxruntime, batch 1, one thread (fastest of
    ``card_repeats``), with its size in MB (:func:`facekd.modelcard.onnx_card`)."""
    from facekd.modelcard import onnx_card
    from facekd.quantize import int8_path

    files = [f for name in (ONNX_FILE, EMBEDDER_FILE) for f in (name, int8_path(name).name) if (run_dir / f).is_file()]
    return {f: onnx_card(run_dir / f, repeats=max(settings.card_repeats, 5), warmup=3) for f in files}


def _export(model: SpecializedModel, run_dir: Path, images: torch.Tensor, settings: FinetuneSettings,
            classes: list[str], image_size: int, student: Any) -> dict[str, Any]:
    """Export ``model`` to ONNX and check it against torch on up to ``parity_images`` real images."""
    from facekd.export import check_onnx, export_onnx

    path = export_onnx(model, run_dir / ONNX_FILE, image_size,
                       metadata={"classes": json.dumps(classes), "input": ONNX_INPUT_SPEC,
                                 "student": student.name, "student_input_size": str(student.input_size)})
    parity = check_onnx(path, model, images[: settings.parity_images], atol=settings.parity_atol)
    if not parity["ok"]:
        log.warning("ONNX export differs from torch by %.3g (> %.3g)", parity["max_abs_diff"], parity["atol"])
    return {"exported": True, "file": ONNX_FILE, "input": ONNX_INPUT_SPEC, "image_size": image_size,
            "parity_images": "val split", **parity}
