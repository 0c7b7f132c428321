"""The :class:`Trainer`: the epoch loop, metrics files, best-epoch selection, checkpoint/resume and DDP."""
from __future__ import annotations

import csv
import logging
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset
from tqdm.auto import tqdm

from facekd.config import plain as _plain
from facekd.engine.checkpoint import BEST, CHECKPOINT, _rng_state, _set_rng_state, save_safetensors
from facekd.engine.device import (_batch_size, autocast, autocast_precision, barrier, init_distributed, move_to_device,
                                  seed_everything)
from facekd.engine.optim import build_optimizer, build_scheduler
from facekd.engine.task import Task
from facekd.engine.train_config import TrainConfig
from facekd.errors import ArtifactError, ConfigError, FacekdError, UnknownNameError
from facekd.runs import atomic_path, config_hash, write_json

__all__ = ["NonFiniteLossError", "ResumeError", "FitResult", "Trainer", "fit", "METRICS_CSV", "METRICS_JSON"]

log = logging.getLogger("facekd.engine")  # the package's name: the logger every engine line has always used

METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and its last good checkpoint was kept."""


class ResumeError(FacekdError, RuntimeError):
    """A checkpoint cannot be resumed by this run (it belongs to another configuration)."""


@dataclass
class FitResult:
    """Where a finished :meth:`Trainer.fit` left its files, and its best epoch."""

    run_dir: Path
    best_epoch: int | None
    best_value: float | None
    history: list[dict]
    checkpoint: Path
    best_path: Path


# -------------------------------------------------------------------------------------------- trainer


class _StepModule(nn.Module):
    """Routes ``forward`` to ``task.training_step`` so DDP sees the step as the forward pass."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Any) -> Any:
        return self.task.training_step(batch)


@dataclass
class _Loop:
    """What one :meth:`Trainer.fit` trains with: built once, used by every epoch."""

    task: Task
    step_module: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    params: list[torch.Tensor]
    loader: Iterable
    set_epoch: Callable[[int], None]
    n_batches: int | None
    per_step_sched: bool
    channels_last: bool


class Trainer:
    """Trains a :class:`Task` for ``cfg.epochs`` epochs into ``run_dir`` (see the package docstring).

    ``config`` is the calling stage's whole configuration: its hash (with the engine's own result-defining
    options, minus a top-level ``resume`` key) is stored in the checkpoint, and a resume from a
    checkpoint with another hash is refused with :class:`ResumeError`.
    """

    def __init__(self, cfg: TrainConfig | Mapping[str, Any], run_dir: str | os.PathLike,
                 config: Mapping[str, Any] | None = None) -> None:
        self.cfg = cfg if isinstance(cfg, TrainConfig) else TrainConfig.from_config(cfg)
        self.run_dir = Path(run_dir)
        stage_cfg = {k: v for k, v in (_plain(config) or {}).items() if k != "resume"}
        self.config_hash = config_hash({"train": self.cfg.hashed(), "config": stage_cfg})
        self.dist, self.device = init_distributed(self.cfg.device)
        self.is_main = self.dist.is_main
        self.history: list[dict] = []
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.global_step = 0

    # paths
    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / CHECKPOINT

    @property
    def best_path(self) -> Path:
        return self.run_dir / BEST

    def check_resumable(self, hint: str = "") -> None:
        """Refuse, before anything in the run folder changes, to resume a checkpoint of another configuration."""
        path = self.checkpoint_path
        if not (self.cfg.resume and path.exists()):
            return
        found = torch.load(path, map_location="cpu", weights_only=True).get("config_hash")
        if found != self.config_hash:
            raise ResumeError(f"{path} comes from another configuration (hash {found}, this run {self.config_hash})"
                              + (f": {hint}" if hint else ""))

    # ------------------------------------------------------------------------------------------ data
    def _loader(self, data: Any) -> tuple[Iterable, Callable[[int], None], int | None]:
        """The batch iterable, a ``set_epoch(epoch)`` hook and the number of batches (if known)."""
        cfg = self.cfg
        if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
            sampler = DistributedSampler(data, num_replicas=self.dist.world_size, rank=self.dist.rank,
                                         shuffle=cfg.shuffle, seed=cfg.seed, drop_last=False)
            gen = torch.Generator()
            loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
                                drop_last=cfg.drop_last, generator=gen, pin_memory=self.device.type == "cuda",
                                persistent_workers=cfg.persistent_workers and cfg.num_workers > 0)
            if len(loader) == 0:
                raise ConfigError(f"{len(data)} samples make no full batch of {cfg.batch_size} per process; "
                                  "lower batch_size or set drop_last=false")

            def set_epoch(epoch: int) -> None:
                sampler.set_epoch(epoch)
                gen.manual_seed(cfg.seed * 1_000_003 + epoch)

            return loader, set_epoch, len(loader)

        def set_epoch(epoch: int) -> None:
            for obj in (data, getattr(data, "sampler", None), getattr(data, "batch_sampler", None)):
                if hasattr(obj, "set_epoch"):
                    obj.set_epoch(epoch)
                    return

        n = cfg.steps_per_epoch
        if n is None:
            try:
                n = len(data)
            except TypeError:
                n = None
        return data, set_epoch, n

    # ------------------------------------------------------------------------------------ checkpoint
    def _save_checkpoint(self, task: Task, opt: torch.optim.Optimizer, sched: Any, epoch: int) -> None:
        rng = _rng_state()
        if self.dist.enabled:
            states: list[Any] = [None] * self.dist.world_size
            dist.all_gather_object(states, rng)
        else:
            states = [rng]
        if not self.is_main:
            return
        ckpt = {"epoch": epoch, "global_step": self.global_step, "model": task.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": states,
                "best_value": self.best_value, "best_epoch": self.best_epoch, "history": self.history,
                "config_hash": self.config_hash, "world_size": self.dist.world_size}
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(ckpt, tmp)

    def _load_checkpoint(self, task: Task, opt: torch.optim.Optimizer, sched: Any) -> int:
        try:
            ckpt = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
            raise ArtifactError(
                f"{self.checkpoint_path} is damaged and cannot be resumed ({type(e).__name__}: {e}). Delete it to "
                f"start the run afresh, or run with resume=false") from e
        if ckpt.get("config_hash") != self.config_hash:
            raise ResumeError(
                f"{self.checkpoint_path} comes from another configuration (hash {ckpt.get('config_hash')}, "
                f"this run {self.config_hash}); resume with the same settings, or start a fresh run "
                f"(resume=false, or another run folder)")
        task.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        self.global_step, self.history = ckpt["global_step"], ckpt["history"]
        self.best_value, self.best_epoch = ckpt["best_value"], ckpt["best_epoch"]
        rng = ckpt["rng"]
        if len(rng) == self.dist.world_size:
            _set_rng_state(rng[self.dist.rank])
        else:
            log.warning("checkpoint was written by %d processes, this run has %d: reseeding instead of "
                        "restoring random states", len(rng), self.dist.world_size)
            seed_everything(self.cfg.seed + 7919 * ckpt["epoch"] + self.dist.rank)
        return int(ckpt["epoch"])

    def _clean_start(self) -> None:
        if self.is_main:
            for p in (self.checkpoint_path, self.best_path, self.run_dir / METRICS_CSV, self.run_dir / METRICS_JSON):
                if p.exists():
                    log.warning("starting a fresh run: removing the old %s", p)
                    p.unlink()
        barrier()

    def _start(self, task: Task, opt: torch.optim.Optimizer, sched: Any) -> int:
        """Resume from the checkpoint (when asked and present) or start afresh; the last epoch already done."""
        cfg = self.cfg
        start = 0
        if cfg.resume and self.checkpoint_path.exists():
            start = self._load_checkpoint(task, opt, sched)
            log.info("resuming %s after epoch %d", self.run_dir, start)
        else:
            if cfg.resume and any((self.run_dir / f).exists() for f in (METRICS_CSV, METRICS_JSON, BEST)):
                # an earlier training left epochs behind but no checkpoint (a stage's own files don't count)
                log.info("%s holds no checkpoint to resume: starting it afresh", self.run_dir)
            self._clean_start()
            seed_everything(cfg.seed + self.dist.rank)
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        return start

    # --------------------------------------------------------------------------------------- metrics
    def _is_better(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best_value is None:
            return True
        return value < self.best_value if self.cfg.mode == "min" else value > self.best_value

    def _write_metrics(self) -> None:
        keys: list[str] = []
        for row in self.history:
            keys += [k for k in row if k not in keys]
        with atomic_path(self.run_dir / METRICS_CSV) as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(self.history)
        write_json(self.run_dir / METRICS_JSON, {
            "monitor": self.cfg.monitor, "mode": self.cfg.mode, "best_epoch": self.best_epoch,
            "best_value": self.best_value, "epochs": self.cfg.epochs,
            "precision": autocast_precision(self.device, self.cfg.amp), "history": self.history})

    def _log_epoch(self, epoch: int, row: Mapping[str, Any]) -> None:
        """Rank 0 logs the epoch's row: at most ~20 lines a run (the metrics files keep every epoch)."""
        cfg = self.cfg
        every = max(1, cfg.epochs // 20)
        if self.is_main and (epoch % every == 0 or epoch in (1, cfg.epochs) or epoch == self.best_epoch):
            log.info("epoch %d/%d  %s", epoch, cfg.epochs,
                     "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                               if k != "epoch"))

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, task: Task, train_data: Any) -> FitResult:
        """Train ``task`` on ``train_data`` (resuming when asked) and say where the run's files are."""
        cfg = self.cfg
        channels_last = self._place(task)
        loader, set_epoch, n_batches = self._loader(train_data)
        per_step_sched = cfg.schedule.get("interval", "epoch") == "step"
        if per_step_sched and not n_batches:
            raise ValueError("a per-step schedule over an iterable without len() needs train.steps_per_epoch")
        opt = build_optimizer(task.param_groups(), cfg.optim)
        sched = build_scheduler(opt, cfg.schedule, n_batches or 1, cfg.epochs)
        start = self._start(task, opt, sched)
        loop = _Loop(task, self._step_module(task), opt, sched, [p for g in opt.param_groups for p in g["params"]],
                     loader, set_epoch, n_batches, per_step_sched, channels_last)
        for epoch in range(start + 1, cfg.epochs + 1):
            row = self._train_epoch(loop, epoch)
            self._end_epoch(loop, epoch, row)
        barrier()
        return FitResult(self.run_dir, self.best_epoch, self.best_value, self.history, self.checkpoint_path,
                         self.best_path)

    def _place(self, task: Task) -> bool:
        """Move ``task`` to the device (channels_last on CUDA when asked); whether batches go channels_last."""
        use_cl = self.cfg.channels_last and self.device.type == "cuda"
        task.to(self.device)
        if use_cl:
            task.to(memory_format=torch.channels_last)
        return use_cl

    def _step_module(self, task: Task) -> nn.Module:
        """The module whose forward is one training step, DDP-wrapped under a process group."""
        step_module: nn.Module = _StepModule(task)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            step_module = DDP(step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                              find_unused_parameters=self.cfg.ddp_find_unused)
        return step_module

    def _train_epoch(self, loop: _Loop, epoch: int) -> dict[str, Any]:
        """One pass over the training data; the epoch's row of training metrics (before evaluation)."""
        cfg, device = self.cfg, self.device
        loop.set_epoch(epoch)
        loop.task.train()
        loop.task.on_epoch_start(epoch)
        lr = loop.opt.param_groups[0]["lr"]
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        logged: dict[str, torch.Tensor] = {}
        steps = seen = 0
        t0 = time.perf_counter()
        bar = tqdm(loop.loader, total=loop.n_batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not (self.is_main and cfg.progress), dynamic_ncols=True)
        for batch in bar:
            batch = move_to_device(batch, device, loop.channels_last)
            loss, extra = self._train_step(loop, batch)
            steps += 1
            seen += _batch_size(batch)
            loss_sum += loss.detach().double()
            for k, v in extra.items():
                v = torch.as_tensor(v, dtype=torch.float64).detach()
                logged[k] = logged[k] + v.to(device) if k in logged else v.to(device)
            if steps % cfg.log_every == 0:
                mean = self._check_finite(loss_sum, steps, epoch)
                bar.set_postfix(loss=f"{mean:.4g}",
                                img_s=f"{seen * self.dist.world_size / (time.perf_counter() - t0):.0f}")
        bar.close()
        if steps == 0:
            raise ValueError(f"epoch {epoch} had no batches: the training data is empty")
        train_loss = self._check_finite(loss_sum, steps, epoch)
        elapsed = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "lr": lr, "time_s": round(elapsed, 3),
                               "img_per_s": round(seen * self.dist.world_size / elapsed, 1)}
        for k, v in logged.items():
            row[k] = self._all_mean(v) / steps
        if not loop.per_step_sched:
            loop.sched.step()
        return row

    def _train_step(self, loop: _Loop, batch: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
        """Forward, backward and an optimizer step on one batch (already on the device); its loss and extras."""
        with autocast(self.device, self.cfg.amp):
            out = loop.step_module(batch)
        loss, extra = (out if isinstance(out, tuple) else (out, {}))
        loop.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip:
            nn.utils.clip_grad_norm_(loop.params, self.cfg.grad_clip)
        loop.opt.step()
        if loop.per_step_sched:
            loop.sched.step()
        self.global_step += 1
        return loss, extra

    def _end_epoch(self, loop: _Loop, epoch: int, row: dict[str, Any]) -> None:
        """Evaluate (rank 0), share the row, keep the best weights, write metrics and checkpoint, log."""
        cfg = self.cfg
        if self.is_main:
            self._evaluate(loop.task, row)
        if self.dist.enabled:
            box = [row]
            dist.broadcast_object_list(box, src=0)
            row = box[0]
        self.history.append(row)
        if self._is_better(row[cfg.monitor]):
            self.best_value, self.best_epoch = float(row[cfg.monitor]), epoch
            if self.is_main:
                save_safetensors(loop.task.state_dict(), self.best_path,
                                 {"epoch": epoch, cfg.monitor: row[cfg.monitor], "config_hash": self.config_hash})
        if self.is_main:
            self._write_metrics()
        self._save_checkpoint(loop.task, loop.opt, loop.sched, epoch)
        self._log_epoch(epoch, row)

    def _evaluate(self, task: Task, row: dict[str, Any]) -> None:
        """Add ``task.evaluate()``'s metrics to ``row`` (no_grad, eval mode); refuse a monitor the row lacks."""
        task.eval()
        with torch.no_grad(), autocast(self.device, self.cfg.amp and self.device.type == "cuda"):  # fp32 on a CPU
            row.update({k: float(v) for k, v in task.evaluate().items()})
        task.train()
        if self.cfg.monitor not in row:
            raise UnknownNameError(f"monitor '{self.cfg.monitor}' is not among the epoch's metrics "
                                   f"({', '.join(row)}); set train.monitor to one of them")

    def _all_mean(self, value: torch.Tensor) -> float:
        """``value`` averaged over ranks (itself outside DDP)."""
        if self.dist.enabled:
            value = value.clone()
            dist.all_reduce(value)
            value = value / self.dist.world_size
        return float(value)

    def _check_finite(self, loss_sum: torch.Tensor, steps: int, epoch: int) -> float:
        mean = self._all_mean(loss_sum) / steps
        if not math.isfinite(mean):
            kept = (f"the checkpoint of epoch {epoch - 1} is kept at {self.checkpoint_path}" if epoch > 1
                    else "no epoch finished, so there is no checkpoint")
            raise NonFiniteLossError(
                f"training loss became {mean} in epoch {epoch} (by step {steps}); the run stopped and {kept}. "
                "Lower the learning rate, clip gradients (train.grad_clip) or check the inputs for NaN/inf.")
        return mean


def fit(task: Task, train_data: Any, cfg: TrainConfig | Mapping[str, Any], run_dir: str | os.PathLike,
        config: Mapping[str, Any] | None = None) -> FitResult:
    """Shorthand for ``Trainer(cfg, run_dir, config).fit(task, train_data)``."""
    return Trainer(cfg, run_dir, config).fit(task, train_data)
