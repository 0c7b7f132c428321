"""The one training engine every stage and baseline uses.

A stage describes *what* to train as a :class:`Task` (an ``nn.Module`` holding the trainable parts)::

    training_step(batch) -> loss | (loss, {"name": scalar, ...})   # one step on one batch
    evaluate() -> {"val_loss": ..., "val_f1_macro": ...}            # validation, once per epoch
    param_groups() -> parameters or [{"params": ..., "lr_scale": 0.1}, ...]   # optional

and the :class:`Trainer` does the rest: device (CUDA when present), bf16 autocast for training steps (on
CUDA, and on a CPU with native bf16; evaluation on a CPU stays fp32), channels_last on CUDA only, seeding,
optimizer and learning-rate schedule from config (including the paper's ``lr / sqrt(1 + t)``), a tqdm bar
with loss and img/s, ``metrics.csv`` / ``metrics.json`` per epoch, best-epoch selection on a validation
metric (saved as ``best.safetensors``; the engine never looks at test data), an atomic checkpoint after each epoch, exact resume, a stop on a NaN/inf loss
(:class:`NonFiniteLossError`, the last good checkpoint is kept) and DistributedDataParallel under
``torchrun``.

Data: pass a map-style ``Dataset`` whose items are tensors (or tuples / dicts of them); the engine builds
the ``DataLoader`` (``batch_size`` per process, ``num_workers``, ``drop_last``) with a
``DistributedSampler`` that shuffles with ``seed + epoch`` and shards by rank, and a loader generator
seeded the same way, so the data order of epoch *e* is a pure function of (seed, epoch): that is what
makes resume exact.  Or pass any iterable of batches (e.g. your own ``DataLoader``); the engine calls its
``set_epoch(epoch)`` (or its sampler's) when present, and exact resume is then up to that iterable.
Batches are moved to the device by the engine (4-D tensors in channels_last on CUDA).

Usage::

    class Regress(Task):
        def __init__(self, val):
            super().__init__()
            self.net, self.val = torch.nn.Linear(4, 1), val        # val: (x, y) tensors
        def training_step(self, batch):
            x, y = batch
            return F.mse_loss(self.net(x), y)                      # or (loss, {"mae": ...})
        def evaluate(self):
            x, y = (t.to(self.device) for t in self.val)
            return {"val_loss": F.mse_loss(self.net(x), y).item()}

    seed_everything(0)
    task = Regress((xv, yv))
    cfg = TrainConfig(epochs=10, batch_size=32, optim={"name": "adam", "lr": 1e-3},
                      schedule={"name": "inv_sqrt", "interval": "epoch"}, monitor="val_loss", mode="min")
    result = Trainer(cfg, "runs/demo", config=stage_cfg).fit(task, TensorDataset(x, y))
    load_best(task, "runs/demo")                                   # the weights of result.best_epoch

Multi-GPU: run the same script under ``torchrun --nproc_per_node=N``; the trainer initialises the
process group (nccl on CUDA, gloo on CPU), wraps the task in DDP and shards the data; only rank 0 runs
``evaluate``, writes files and shows the bar.  See :func:`init_distributed`, :func:`dist_info`,
:func:`is_main_process`, :func:`barrier`.

Modules: ``device`` (device, seeding, autocast, batch moving, the process group), ``optim`` (optimizer
and schedules), ``task`` (:class:`Task`), ``train_config`` (:class:`TrainConfig`), ``checkpoint``
(``best.safetensors`` and the random states a checkpoint keeps) and ``trainer`` (:class:`Trainer`,
:func:`fit`).  Every name is importable from ``facekd.engine`` itself.
"""
from facekd.engine.checkpoint import BEST, CHECKPOINT, _rng_state, _set_rng_state, load_best, save_safetensors
from facekd.engine.device import (DistInfo, _batch_size, autocast, autocast_precision, barrier, cpu_bf16_native,
                                  dist_info, init_distributed, is_main_process, move_to_device, resolve_device,
                                  seed_everything)
from facekd.engine.optim import SCHEDULES, build_optimizer, build_scheduler, lr_factor
from facekd.engine.task import Task
from facekd.engine.train_config import TrainConfig, check_train_types
from facekd.engine.trainer import (METRICS_CSV, METRICS_JSON, FitResult, NonFiniteLossError, ResumeError, Trainer,
                                   _StepModule, fit)

__all__ = [
    "NonFiniteLossError",
    "ResumeError",
    "Task",
    "TrainConfig",
    "FitResult",
    "Trainer",
    "fit",
    "DistInfo",
    "dist_info",
    "init_distributed",
    "is_main_process",
    "barrier",
    "resolve_device",
    "seed_everything",
    "autocast",
    "autocast_precision",
    "cpu_bf16_native",
    "move_to_device",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "save_safetensors",
    "load_best",
    "CHECKPOINT",
    "BEST",
]
