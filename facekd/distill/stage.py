"""The distill stage: ``distill(cfg)`` trains a student to reproduce the teacher's features.

Reads a generate run (and the labeled set's split), builds or reuses the teacher-feature caches, trains
with :class:`facekd.engine.Trainer` and writes the run folder described in
:mod:`facekd.distill.student_run`.  Per epoch it measures MSE, MAE and R² between the student's output
(mapped back to the teacher's feature space by ``loss.to_teacher``) and the teacher's features on the
synthetic holdout and on the real val / test images; the best epoch is the one of lowest holdout loss.

With ``distill.sources.synthetic.mode=stream`` (the teacher then runs online) the synthetic training faces
are made on the device at every step instead of read from shards (:mod:`facekd.distill.stream`); the
generate run then provides only the holdout.

Under ``torchrun`` rank 0 prepares every input (caches, split, connector) while the others wait at a
barrier, then all ranks open the finished caches.

The generate run's shards are checked against the checksums its manifest recorded before anything
else, and every cache is keyed on the bytes of the files it reads.  The run's manifest records the
sha256 of every file the stage writes (``artifacts``) and the fingerprint of every source it read
(``source_fingerprints``).  It records the whole composed config (``config``, less Hydra's own section), and
the resume check hashes every key of it but ``resume``, ``paths`` and the operational ones (cache folder and
batch sizes), whatever their values: the ``data`` section as given, and ``distill.sources.synthetic.mode`` and
``.stream`` in shards mode too.

The stage runs in steps: set up (check the config, build the models, refuse a run that cannot resume),
prepare the inputs (:mod:`facekd.distill.inputs`), the multi-layer term, the batches, train, and write.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from facekd.config import plain as _plain
from facekd.data.synthetic import SyntheticFaces
from facekd.distill.batches import CachedBatches, OnlineBatches
from facekd.distill.cache import FeatureCache
from facekd.distill.connector import Connector
from facekd.distill.inputs import CONNECTOR_FILE, DistillInputs, mixture_stats, prepare_inputs
from facekd.distill.losses import LOSSES, FeatureLoss, build_loss
from facekd.distill.sources import check_monitor_trains, open_generate_run
from facekd.distill.stage_taps import TapTerm, build_tap_loss, fit_target_stats, tap_settings, tap_targets_for
from facekd.distill.stream import (STREAM_SOURCE, StreamBatches, StreamFaces, StreamSettings, build_stream_generator,
                                   check_same_generator, stats_faces)
from facekd.distill.student_run import STAGE, STUDENT_FILE
from facekd.engine import (Task, TrainConfig, Trainer, barrier, init_distributed, load_best,
                           save_safetensors, seed_everything)
from facekd.hashing import artifact_checksums
from facekd.metrics import RegressionMeter
from facekd.models import Student, Teacher, build_student, build_teacher
from facekd.runs import MANIFEST, read_json, write_manifest

__all__ = ["DistillTask", "distill", "DistillInputs", "mixture_stats", "check_dims"]

log = logging.getLogger(__name__)

# keys that do not change a run's result, so a resume may change them
_OPERATIONAL = ("cache_dir", "cache_batch_size", "eval_batch_size")
ADAPTERS_FILE = "adapters.safetensors"  # the multi-layer term's adapters (never part of the student)


# ------------------------------------------------------------------------------------------------ checks


def check_dims(teacher: Teacher, student_cfg: Mapping[str, Any]) -> dict:
    """The student section to build (without ``out_dim``), refusing dimensions no projection resolves.

    The student always ends in a projection to the teacher's dimension D, so a mismatch arises only when
    the teacher's feature is not a vector, or when the student config forces another ``out_dim``.
    """
    section = dict(student_cfg)
    if len(teacher.feature_shape) != 1:
        raise ValueError(f"teacher '{teacher.name}' feature '{teacher.feature}' has shape {list(teacher.feature_shape)}: "
                         "distillation matches a vector per image; choose a vector feature "
                         f"(teacher.feature=..., e.g. a pooled or embedding layer)")
    forced = section.pop("out_dim", None)
    if forced is not None and int(forced) != teacher.feature_dim:
        raise ValueError(f"student.out_dim={forced} but teacher '{teacher.name}' feature '{teacher.feature}' is "
                         f"{teacher.feature_dim}-d, and no projection maps one onto the other for a feature loss: "
                         f"drop student.out_dim (the student then projects to {teacher.feature_dim}) or choose a "
                         f"teacher feature of dimension {forced}")
    return section


def _loss_options(loss_cfg: Mapping[str, Any]) -> tuple[dict, bool, dict]:
    """``(options for build_loss, paper_connector flag, connector options)``; an unknown name fails here."""
    opts = dict(loss_cfg)
    paper = bool(opts.pop("paper_connector", False))
    connector = dict(opts.pop("connector", None) or {})
    if "name" not in opts:
        raise ValueError(f"the loss config needs a name (loss=NAME, one of {', '.join(LOSSES.names())})")
    LOSSES.get(opts["name"])  # KeyError listing the known losses
    if paper and opts["name"] != "bce":
        raise ValueError(f"loss.paper_connector=true is the paper's sigmoid-BCE variant; use loss=bce, not loss={opts['name']}")
    return opts, paper, connector


# ------------------------------------------------------------------------------------------------ task


class DistillTask(Task):
    """Student + loss (+ the frozen paper connector); the teacher is held outside the module in online mode."""

    def __init__(self, student: Student, loss: FeatureLoss, evals: Mapping[str, FeatureCache],
                 connector: Connector | None = None, teacher: Teacher | None = None,
                 eval_batch_size: int = 128, taps: TapTerm | None = None,
                 eval_taps: Mapping[str, list[np.ndarray]] | None = None, stream: StreamFaces | None = None) -> None:
        super().__init__()
        self.student, self.loss, self.connector, self.taps = student, loss, connector, taps
        self.__dict__["stream"] = stream  # stream mode: makes the stream rows' faces (its generator is no submodule)
        if stream is not None and stream.pool is not None:
            self.hard_pool = stream.pool  # a submodule: the pool is checkpointed with the run
        self.eval_taps = dict(eval_taps or {})
        self.__dict__["teacher"] = teacher  # not a submodule: never trained, saved or wrapped by DDP
        self.evals, self.eval_batch_size = dict(evals), int(eval_batch_size)

    def param_groups(self):
        params = [p for p in self.student.parameters() if p.requires_grad]
        return params + (list(self.taps.parameters()) if self.taps is not None else [])

    def _input(self, images: torch.Tensor) -> torch.Tensor:
        x = self.student.preprocess(images)
        return x.contiguous(memory_format=torch.channels_last) if images.is_cuda else x

    def target_space(self, teacher_feat: torch.Tensor) -> torch.Tensor:
        """What the metrics compare with: teacher features, or the connector's outputs in paper mode."""
        return self.connector(teacher_feat) if self.connector is not None else teacher_feat.float()

    def training_step(self, batch: Any) -> torch.Tensor:
        latents = stream_rows = None
        if isinstance(batch, Mapping):  # stream: the stream rows' faces are made now
            batch, latents, stream_rows = self.stream.fill(batch)
        if isinstance(batch, torch.Tensor):  # online: views only, the teacher runs now
            images = batch
            teacher = self.teacher
            if teacher.device != images.device:
                teacher.to(images.device)
            with torch.no_grad():
                feats = teacher.features(images)
                tap_targets = self.taps.teacher_targets() if self.taps is not None else []
        else:
            images, feats, *tap_targets = batch
        with torch.no_grad():
            feats = self.target_space(feats)
        pred = self.student(self._input(images))
        loss = self.loss(pred, feats)
        if latents is not None and self.stream.pool is not None:  # offer the stream faces to the hard pool
            with torch.no_grad():
                cos = F.cosine_similarity(self.loss.to_teacher(pred.detach()[stream_rows]).float(),
                                          feats[stream_rows].float(), dim=1)
            self.stream.pool.update(latents, cos)
        if self.taps is None:
            return loss
        tap_loss, terms = self.taps(tap_targets)
        return loss + tap_loss, {"feature_loss": loss.detach(), **terms}

    def evaluate(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, cache in self.evals.items():
            meter, loss_sum, n = RegressionMeter(), 0.0, 0
            tap_arrays = self.eval_taps.get(name) if self.taps is not None else None
            tap_meters = [RegressionMeter() for _ in tap_arrays] if tap_arrays else []
            for lo in range(0, len(cache), self.eval_batch_size):
                images = torch.from_numpy(np.array(cache.images[lo : lo + self.eval_batch_size]))
                images = images.permute(0, 3, 1, 2).to(self.device)
                target = self.target_space(torch.from_numpy(
                    np.asarray(cache.features[lo : lo + self.eval_batch_size], dtype=np.float32)).to(self.device))
                pred = self.student(self._input(images)).float()
                loss_sum += float(self.loss(pred, target)) * len(images)
                n += len(images)
                meter.update(self.loss.to_teacher(pred), target)
                if tap_meters:
                    self.taps.r2(tap_meters, [torch.from_numpy(np.asarray(a[lo : lo + self.eval_batch_size],
                                                                          dtype=np.float32)).to(self.device)
                                              for a in tap_arrays])
                elif self.taps is not None:
                    self.taps.hooks.clear()
            out.update({f"{name}_tap{i}_r2": tm.compute()["r2"] for i, tm in enumerate(tap_meters)})
            m = meter.compute()
            out.update({f"{name}_loss": loss_sum / n, f"{name}_mse": m["mse"], f"{name}_mae": m["mae"],
                        f"{name}_r2": m["r2"]})
        if self.stream is not None and self.stream.pool is not None:
            out["hard_pool_cosine"] = self.stream.pool.mean_cosine()
        return out


# ------------------------------------------------------------------------------------------------ outputs


def _plot_curves(history: list[dict], run_dir: Path, best_epoch: int | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    for fname, keys, ylabel in (("loss.png", ("train_loss", "holdout_loss", "real_val_loss", "real_test_loss"), "loss"),
                                ("r2.png", ("holdout_r2", "real_val_r2", "real_test_r2"), "R² vs teacher features")):
        fig, ax = plt.subplots(figsize=(5, 3.4), dpi=110)
        for k in keys:
            if any(k in r for r in history):
                ax.plot(epochs, [r.get(k, np.nan) for r in history], marker="o", label=k)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="best (holdout)")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(run_dir / fname)
        plt.close(fig)


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _summary(name: str, best: dict, best_epoch: int, epochs: int, uses_labels: bool, run_dir: Path) -> str:
    r2 = ", ".join(f"{k.removesuffix('_r2').replace('_', ' ')} {_fmt(best[k])}" for k in
                   ("holdout_r2", "real_val_r2", "real_test_r2") if k in best)
    labels = ("USED: the paper connector was fine-tuned on the labeled train split" if uses_labels
              else "not used")
    return (f"distill {name}: best epoch {best_epoch}/{epochs} (holdout loss {_fmt(best['holdout_loss'])}) | "
            f"R² {r2} | labels {labels} | {run_dir}")


# ------------------------------------------------------------------------------------------------ stage


@dataclass
class _Run:
    """A distill run as set up before its inputs are prepared: the checked config, the models and the trainer."""

    cfg: dict
    loss_opts: dict
    paper: bool
    connector_cfg: dict
    taps_cfg: dict
    train_cfg: TrainConfig
    info: Any
    device: torch.device
    teacher: Teacher | None
    stream_cfg: StreamSettings | None
    stream: StreamFaces | None
    stream_info: dict | None
    student_section: dict
    student: Student
    teacher_sig: Any
    run_dir: Path
    trainer: Trainer

    @property
    def d(self) -> dict:
        return self.cfg["distill"]

    @property
    def online(self) -> bool:
        return self.d["teacher_mode"] == "online"

    @property
    def stream_fields(self) -> dict:
        """The manifest's ``stream`` field (stream mode only)."""
        return {"stream": self.stream_info} if self.stream else {}


@dataclass
class _Taps:
    """The multi-layer term (``distill.taps``) and its targets; all empty when the term is off."""

    term: TapTerm | None = None
    info: dict | None = None
    train: list | None = None
    evals: dict = field(default_factory=dict)


def distill(cfg: Mapping[str, Any] | DictConfig) -> Path:
    """Run the distill stage described by ``cfg`` (configs/distill.yaml); returns the run folder."""
    run = _setup(_run_config(cfg))
    if run.info.is_main:
        _start(run)
    inputs = _prepare_on_ranks(run)
    loss_opts = {**run.loss_opts, "targets": "probabilities"} if run.paper else run.loss_opts
    loss = build_loss(loss_opts, inputs.stats)
    taps = _tap_term(run, inputs)
    task = DistillTask(run.student, loss, inputs.evals if run.info.is_main else {}, inputs.connector,
                       run.teacher if run.online else None, run.d.get("eval_batch_size", 128), taps.term, taps.evals,
                       run.stream)
    if not run.online:
        run.teacher = None  # cached mode: the teacher never runs again
    data = _batches(run, inputs, taps.train)
    result = run.trainer.fit(task, data)
    if run.info.is_main:
        _write(run, inputs, taps, task, data, result)
    barrier()
    return run.run_dir


def _run_config(cfg: Mapping[str, Any] | DictConfig) -> dict:
    """The config a distill run records (and hashes): the whole composed config but Hydra's own section, every
    key whatever its value (the ``data`` section as given, ``distill.sources.synthetic.mode`` and ``.stream``
    in shards mode too), with ``distill.teacher_mode=auto`` resolved."""
    cfg = dict(_plain(cfg))
    cfg.pop("hydra", None)
    d = cfg["distill"]
    if d.get("teacher_mode") == "auto":  # recorded as what it chose: stream mode's new faces need the online teacher
        stream = (d.get("sources") or {}).get("synthetic", {}).get("mode") == "stream"
        d["teacher_mode"] = "online" if stream else "cached"
    return cfg


def _hashed(cfg: Mapping[str, Any]) -> dict:
    """What the resume check hashes: the recorded config less ``resume``, ``paths`` and the operational keys."""
    hashed = {k: v for k, v in cfg.items() if k not in ("resume", "paths")}
    hashed["distill"] = {k: v for k, v in cfg["distill"].items() if k not in (*_OPERATIONAL, "train")}
    return hashed


def _setup(cfg: dict) -> _Run:
    """Check the config, build the teacher, the stream and the student, and refuse a run that cannot resume."""
    d = cfg["distill"]
    stream_cfg = StreamSettings.from_config(d)
    loss_opts, paper, connector_cfg = _loss_options(cfg["loss"])
    taps_cfg = tap_settings(d)
    if d.get("teacher_mode") not in ("cached", "online"):
        raise ValueError(f"distill.teacher_mode must be 'cached' or 'online', got {d.get('teacher_mode')!r}")
    train_cfg = TrainConfig.from_config(d["train"], "distill.train", seed=int(cfg.get("seed", 0)),
                                        device=cfg.get("device", "auto"), resume=bool(cfg.get("resume", False)))
    check_monitor_trains(train_cfg.monitor, d["sources"])
    info, device = init_distributed(train_cfg.device)
    open_generate_run(d["generate_run"])  # refuse a missing, incomplete or damaged generate run before anything else

    teacher = build_teacher(cfg["teacher"]).to(device)
    stream = None
    if stream_cfg is not None:
        stream = StreamFaces(build_stream_generator(stream_cfg, device), stream_cfg, int(cfg.get("seed", 0)),
                             d["online_view_size"])
    stream_info = ({"generator": stream.sampler.describe(), **stream_cfg.describe()} if stream is not None else None)
    student_section = check_dims(teacher, cfg["student"])
    seed_everything(train_cfg.seed + info.rank)  # the student's initial weights depend on the seed only
    student = build_student(student_section, teacher.feature_dim)
    teacher_sig = teacher.signature
    run_dir = Path(cfg["paths"]["root"]) / "distill" / str(d["name"])
    trainer = Trainer(train_cfg, run_dir, config=_hashed(cfg))
    if stream is not None and train_cfg.resume and trainer.checkpoint_path.exists() and (run_dir / MANIFEST).exists():
        check_same_generator(read_json(run_dir / MANIFEST), stream_cfg, stream.sampler)
    trainer.check_resumable("resume with the same settings, or start a fresh run (resume=false, or another distill.name)")
    return _Run(cfg, loss_opts, paper, connector_cfg, taps_cfg, train_cfg, info, device, teacher, stream_cfg, stream,
                stream_info, student_section, student, teacher_sig, run_dir, trainer)


def _start(run: _Run) -> None:
    """Rank 0: the run folder, cleared of a former run's outputs unless resuming, and an incomplete manifest."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    if not run.train_cfg.resume:
        for f in (STUDENT_FILE, CONNECTOR_FILE, ADAPTERS_FILE, "connector.json", "summary.txt"):
            (run.run_dir / f).unlink(missing_ok=True)
    write_manifest(run.run_dir, STAGE, run.cfg, complete=False, **run.stream_fields)


def _prepare_on_ranks(run: _Run) -> DistillInputs:
    """Rank 0 builds every cache (and the split, and the connector); the others then open them."""
    prep = (run.cfg, run.teacher, run.student.input_size, run.device, run.paper, run.connector_cfg, run.run_dir)
    resuming = run.train_cfg.resume and run.trainer.checkpoint_path.exists()
    inputs = prepare_inputs(*prep, reuse_connector=resuming, stream=run.stream) if run.info.is_main else None
    barrier()
    if not run.info.is_main:
        inputs = prepare_inputs(*prep, reuse_connector=True, stream=run.stream)
    return inputs


def _tap_term(run: _Run, inputs: DistillInputs) -> _Taps:
    """The multi-layer term with its teacher targets (rank 0 builds the tap caches first), or none when off."""
    taps_cfg, d, online, is_main = run.taps_cfg, run.d, run.online, run.info.is_main
    if not float(taps_cfg["weight"]) > 0:
        return _Taps()
    tap_loss = build_tap_loss(taps_cfg, run.student, run.teacher)
    tap_args = (run.teacher, tap_loss, Path(d["cache_dir"]) / "taps", float(taps_cfg["cache_max_gb"]),
                int(d.get("cache_batch_size", 64)), bool(d["train"].get("progress", True)))
    # the standardisation of the targets is fitted on the first source: its cached views, or (online) the
    # images that set the feature statistics (the stream's seeded stats faces)
    fit_on = (inputs.train_caches[0] if not online else
              stats_faces(run.stream, int(d.get("cache_batch_size", 64)))
              if inputs.train_sources[0].name == STREAM_SOURCE else inputs.stats_caches[0])
    eval_taps: dict = {}
    if is_main:  # rank 0 builds the tap caches; the others then open them
        eval_taps = {k: tap_targets_for(c, *tap_args) for k, c in inputs.evals.items()}
        fit_targets = tap_targets_for(fit_on, *tap_args)
        train_taps = None if online else [tap_targets_for(c, *tap_args) for c in inputs.train_caches]
    barrier()
    if not is_main:
        fit_targets = tap_targets_for(fit_on, *tap_args)
        train_taps = None if online else [tap_targets_for(c, *tap_args) for c in inputs.train_caches]
    fit_target_stats(tap_loss, fit_targets)
    term = TapTerm(tap_loss, run.student, float(taps_cfg["weight"]), run.teacher if online else None)
    info = {**taps_cfg, "pairs": [f"{p.student}->{p.teacher}" for p in tap_loss.pairs],
            "adapters_file": ADAPTERS_FILE}
    return _Taps(term, info, train_taps, eval_taps)


def _batches(run: _Run, inputs: DistillInputs, train_taps: list | None) -> Any:
    """The training batches: stream, online (fresh views, the teacher runs in the step) or cached."""
    d, train_cfg = run.d, run.train_cfg
    common = dict(seed=train_cfg.seed, rank=run.info.rank, world_size=run.info.world_size,
                  num_workers=train_cfg.num_workers, pin_memory=run.device.type == "cuda")
    if run.stream is not None:
        return StreamBatches(inputs.train_sources, inputs.weights, train_cfg.batch_size, d["online_view_size"],
                             d.get("samples_per_epoch"), **common)
    if run.online:
        return OnlineBatches(inputs.train_sources, inputs.weights, train_cfg.batch_size, d["online_view_size"],
                             d.get("samples_per_epoch"), **common)
    return CachedBatches(inputs.train_caches, inputs.weights, train_cfg.batch_size, d.get("samples_per_epoch"),
                         taps=train_taps, **common)


def _write(run: _Run, inputs: DistillInputs, taps: _Taps, task: DistillTask, data: Any, result: Any) -> None:
    """Rank 0: the best epoch's student (and adapters), the curves, the complete manifest and the summary."""
    run_dir, d, student = run.run_dir, run.d, run.student
    load_best(task, run_dir)
    save_safetensors(student.state_dict(), run_dir / STUDENT_FILE,
                     {"best_epoch": result.best_epoch, "monitor": run.train_cfg.monitor})
    if taps.term is not None:
        taps.term.remove()
        save_safetensors(taps.term.loss.state_dict(), run_dir / ADAPTERS_FILE, {"best_epoch": result.best_epoch})
    _plot_curves(result.history, run_dir, result.best_epoch)
    best = next(r for r in result.history if r["epoch"] == result.best_epoch)
    labeled = inputs.labeled
    uses_train = any(s.name == "labeled-train" for s in inputs.train_sources)
    faces = SyntheticFaces(d["generate_run"])
    line = _summary(d["name"], best, result.best_epoch, run.train_cfg.epochs, run.paper, run_dir)
    caches = inputs.train_caches or [None] * len(inputs.train_sources)
    write_manifest(
        run_dir, STAGE, run.cfg, student=run.student_section, teacher=run.teacher_sig, out_dim=student.out_dim,
        input_size=student.input_size, generate_run=str(Path(d["generate_run"]).resolve()),
        generate_config_hash=faces.config_hash,
        split_path=str(labeled.split_path.resolve()) if labeled is not None else None,
        split_id=labeled.split.id if labeled is not None else None,
        uses_train_images=uses_train, uses_labels=run.paper,
        metric_space="connector" if run.paper else "teacher", teacher_mode=d["teacher_mode"],
        sources=[{"name": s.name, "images": s.size, "views": s.views, "weight": s.weight,
                  "cache": str(c.folder) if c is not None else None}
                 for s, c in zip(inputs.train_sources, caches)],
        eval_caches={k: str(c.folder) for k, c in inputs.evals.items()},
        samples_per_epoch=data.total, best_epoch=result.best_epoch, best=best, connector=inputs.connector_info,
        taps=taps.info, source_fingerprints={s.name: s.fingerprint for s in inputs.train_sources},
        artifacts=artifact_checksums(run_dir, [f for f in (STUDENT_FILE, ADAPTERS_FILE, CONNECTOR_FILE,
                                                           "connector.json") if (run_dir / f).is_file()]),
        summary=line, complete=True, **run.stream_fields)
    (run_dir / "summary.txt").write_text(line + "\n")
    log.info(line)  # once: the console handler shows it, the job's log file keeps it
