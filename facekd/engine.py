"""The one training engine every stage and baseline uses.

A stage describes *what* to train as a :class:`Task` (an ``nn.Module`` holding the trainable parts)::

    training_step(batch) -> loss | (loss, {"name": scalar, ...})   # one step on one batch
    evaluate() -> {"val_loss": ..., "val_f1_macro": ...}            # validation, once per epoch
    param_groups() -> parameters or [{"params": ..., "lr_scale": 0.1}, ...]   # optional

and the :class:`Trainer` does the rest: device (CUDA when present), bf16 autocast and channels_last on
CUDA only, seeding, optimizer and learning-rate schedule from config (including the paper's
``lr / sqrt(1 + t)``), a tqdm bar with loss and img/s, ``metrics.csv`` / ``metrics.json`` per epoch,
best-epoch selection on a validation metric (saved as ``best.safetensors``; the engine never looks at
test data), an atomic checkpoint after each epoch, exact resume, a stop on a NaN/inf loss
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
"""
from __future__ import annotations

import csv
import dataclasses
import logging
import math
import os
import pickle
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, IterableDataset
from tqdm.auto import tqdm

from facekd.config import plain as _plain
from facekd.runs import atomic_path, config_hash, write_json
from facekd.errors import ArtifactError, ConfigError, FacekdError, UnknownNameError

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
    "move_to_device",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "save_safetensors",
    "load_best",
    "CHECKPOINT",
    "BEST",
]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
BEST = "best.safetensors"
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and its last good checkpoint was kept."""


class ResumeError(FacekdError, RuntimeError):
    """A checkpoint cannot be resumed by this run (it belongs to another configuration)."""


# ----------------------------------------------------------------------------------------------- setup


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; other names (``cpu``, ``cuda:1``) as given."""
    if isinstance(name, torch.device):
        return name
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' was asked for but CUDA is not available; use device=auto or cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, enabled: bool = True) -> ContextManager:
    """bf16 autocast on CUDA when ``enabled``; a no-op elsewhere (CPU runs in fp32)."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def move_to_device(batch: Any, device: torch.device, channels_last: bool = False) -> Any:
    """Move every tensor in a (nested) tuple / list / dict to ``device``; 4-D ones optionally channels_last."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device, channels_last) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        moved = [move_to_device(v, device, channels_last) for v in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    return batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, torch.Tensor):
        return len(batch) if batch.ndim else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for v in batch:
            n = _batch_size(v)
            if n:
                return n
    return 0


# ----------------------------------------------------------------------------------------- distributed


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank, local rank and world size: from the process group if initialised, else from torchrun's env."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size())
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def init_distributed(device: str | torch.device = "auto") -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1) and pick this rank's device.

    Uses nccl on CUDA (device ``cuda:LOCAL_RANK``) and gloo on CPU.  Without torchrun it only resolves
    the device.  Safe to call twice.
    """
    info = dist_info()
    dev = resolve_device(device)
    if info.world_size > 1:
        if dev.type == "cuda":
            dev = torch.device("cuda", info.local_rank)
            torch.cuda.set_device(dev)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        info = dist_info()
    return info, dev


def is_main_process() -> bool:
    return dist_info().is_main


def barrier() -> None:
    """Wait for every rank (a no-op outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------ optimizer and schedule

_OPTIM_KEYS = {"sgd": {"lr", "weight_decay", "momentum", "nesterov"},
               "adam": {"lr", "weight_decay", "betas", "eps"},
               "adamw": {"lr", "weight_decay", "betas", "eps"}}


def build_optimizer(params: Iterable[Any], cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    """An optimizer from ``{"name": sgd|adam|adamw, "lr", "weight_decay", "momentum" (sgd), ...}``.

    ``params`` are parameters, or param groups (dicts); a group's ``lr_scale`` multiplies ``lr`` (e.g. a
    smaller rate for an unfrozen backbone).  Defaults: weight_decay 0, SGD momentum 0.9.
    """
    cfg = dict(_plain(cfg))
    name = str(cfg.pop("name", "adam")).lower()
    if name not in _OPTIM_KEYS:
        raise ConfigError(f"unknown optimizer '{name}'; known optimizers: {', '.join(sorted(_OPTIM_KEYS))}")
    unknown = set(cfg) - _OPTIM_KEYS[name]
    if unknown:
        raise ConfigError(f"optimizer '{name}' has no option(s) {', '.join(sorted(unknown))}; "
                          f"its options: {', '.join(sorted(_OPTIM_KEYS[name]))}")
    if "lr" not in cfg:
        raise ConfigError(f"optimizer '{name}' needs an lr")
    lr = float(cfg.pop("lr"))
    cfg["weight_decay"] = float(cfg.get("weight_decay", 0.0))
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    plain, groups = [], []
    for g in params:
        if isinstance(g, Mapping):
            g = dict(g)
            g["lr"] = float(g.get("lr", lr * float(g.pop("lr_scale", 1.0))))
            g["params"] = [p for p in g["params"] if p.requires_grad]
            if g["params"]:
                groups.append(g)
        elif g.requires_grad:
            plain.append(g)
    if plain:
        groups.insert(0, {"params": plain, "lr": lr})
    if not groups:
        raise ValueError("no trainable parameters: every parameter has requires_grad=False")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.9)),
                               nesterov=bool(cfg.get("nesterov", False)), weight_decay=cfg["weight_decay"])
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(groups, lr=lr, **cfg)


SCHEDULES = ("constant", "inv_sqrt", "cosine", "step")


def lr_factor(cfg: Mapping[str, Any], total: int) -> Callable[[int], float]:
    """The multiplier of the base lr after ``t`` schedule units (epochs or steps), ``total`` units in all.

    - ``constant``: 1.
    - ``inv_sqrt``: ``1 / sqrt(1 + t)``, the paper's diminishing step size ``lr_t = lr / sqrt(1 + t)``; the
      paper counts ``t`` in **epochs** (``interval: epoch``), starting at 0.
    - ``cosine``: from 1 down to ``min_factor`` (default 0) over ``total`` units.
    - ``step``: ``gamma ** (t // step_size)``.
    ``warmup: W`` (units) ramps linearly up to the schedule over the first W units.
    """
    cfg = dict(_plain(cfg))
    name = cfg.get("name", "constant")
    warmup = int(cfg.get("warmup", 0))
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{name}'; known schedules: {', '.join(SCHEDULES)}")
    unknown = set(cfg) - {"name", "interval", "warmup", "min_factor", "gamma", "step_size"}
    if unknown:
        raise ConfigError(f"schedule '{name}' has no option(s) {', '.join(sorted(unknown))}")
    min_factor, gamma, step_size = float(cfg.get("min_factor", 0.0)), float(cfg.get("gamma", 0.1)), \
        int(cfg.get("step_size", 30))

    def base(t: int) -> float:
        if name == "inv_sqrt":
            return 1.0 / math.sqrt(1.0 + t)
        if name == "cosine":
            span = max(1, total - warmup)
            return min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(t, span) / span))
        if name == "step":
            return gamma ** (t // step_size)
        return 1.0

    def factor(t: int) -> float:
        if t < warmup:
            return (t + 1) / (warmup + 1) * base(0)
        return base(t - warmup)

    return factor


def build_scheduler(opt: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int,
                    epochs: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` from ``{"name": constant|inv_sqrt|cosine|step, "interval": epoch|step, ...}``.

    With ``interval: epoch`` (default, the paper's) call ``step()`` once per epoch, with ``interval: step``
    once per optimizer step; the :class:`Trainer` does so.  See :func:`lr_factor` for the shapes.
    """
    cfg = dict(_plain(cfg))
    interval = cfg.get("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"schedule interval must be 'epoch' or 'step', got '{interval}'")
    total = epochs if interval == "epoch" else epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, total))


# ---------------------------------------------------------------------------------------- task, config


class Task(nn.Module):
    """What to train.  Subclass it: hold the trainable modules, implement :meth:`training_step`.

    ``train()`` / ``eval()`` are called by the engine around each phase; override ``train(mode)`` to keep
    frozen parts (e.g. a frozen backbone's batch norm) in eval mode.  ``state_dict()`` is what the
    checkpoints and ``best.safetensors`` hold.
    """

    def training_step(self, batch: Any) -> torch.Tensor | tuple[torch.Tensor, Mapping[str, Any]]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Validation metrics for the epoch that just ended (run under no_grad, eval mode, rank 0)."""
        return {}

    def param_groups(self) -> Iterable[Any]:
        """What the optimizer trains: parameters, or dicts with ``params`` and an optional ``lr_scale``."""
        return [p for p in self.parameters() if p.requires_grad]

    def on_epoch_start(self, epoch: int) -> None:
        """Called before each training epoch (``epoch`` counts from 1)."""

    @property
    def device(self) -> torch.device:
        for t in (*self.parameters(), *self.buffers()):
            return t.device
        return torch.device("cpu")


_TRAIN_INTS = {"epochs": 1, "batch_size": 1, "num_workers": 0, "log_every": 1, "seed": None}
_TRAIN_BOOLS = ("drop_last", "shuffle", "persistent_workers", "amp", "channels_last", "resume", "progress",
                "ddp_find_unused")


def check_train_types(data: Mapping[str, Any], section: str = "train") -> None:
    """Refuse a training option of the wrong type (a boolean or string where a number belongs, ...), naming
    ``<section>.<key>``; values are only checked, never converted, so config hashes stay as they were."""
    from facekd.validate import check_bool, check_float, check_int

    for key, minimum in _TRAIN_INTS.items():
        if key in data:
            check_int(data[key], f"{section}.{key}", minimum=minimum)
    if "steps_per_epoch" in data:
        check_int(data["steps_per_epoch"], f"{section}.steps_per_epoch", minimum=1, allow_none=True)
    for key in _TRAIN_BOOLS:
        if key in data:
            check_bool(data[key], f"{section}.{key}")
    if "grad_clip" in data:
        check_float(data["grad_clip"], f"{section}.grad_clip", minimum=0, strict=True, allow_none=True)
    optim = data.get("optim") or {}
    if isinstance(optim, Mapping):
        if "lr" in optim:
            check_float(optim["lr"], f"{section}.optim.lr", minimum=0, strict=True, what="the learning rate")
        for key in ("weight_decay", "momentum"):
            if key in optim:
                check_float(optim[key], f"{section}.optim.{key}", minimum=0)


@dataclass
class TrainConfig:
    """Everything the engine needs; build it from a config section with :meth:`from_config`.

    ``batch_size`` is per process.  ``monitor`` names a key of the epoch row (``train_loss`` or one that
    ``evaluate()`` returns) and ``mode`` says whether smaller (``min``) or larger (``max``) is better.
    ``steps_per_epoch`` is needed only for an iterable without ``len`` and a per-step schedule.
    """

    epochs: int = 1
    batch_size: int = 32
    num_workers: int = 0
    drop_last: bool = True
    shuffle: bool = True
    persistent_workers: bool = False
    optim: dict = field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    schedule: dict = field(default_factory=lambda: {"name": "constant", "interval": "epoch"})
    grad_clip: float | None = None
    monitor: str = "val_loss"
    mode: str = "min"
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    resume: bool = False
    log_every: int = 20
    progress: bool = True
    steps_per_epoch: int | None = None
    ddp_find_unused: bool = False

    # fields that do not change the result, so a resume may change them
    OPERATIONAL = ("num_workers", "persistent_workers", "device", "resume", "log_every", "progress")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None = None, section: str = "train",
                    **overrides: Any) -> "TrainConfig":
        """The engine's options from a config section (named ``section`` in messages), type-checked."""
        data = {**(_plain(cfg) or {}), **overrides}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ConfigError(f"unknown training option(s) {', '.join(f'{section}.{k}' for k in sorted(unknown))}; "
                              f"known: {', '.join(sorted(names))}")
        check_train_types(data, section)
        return cls(**data)

    def __post_init__(self) -> None:
        self.optim, self.schedule = dict(_plain(self.optim)), dict(_plain(self.schedule))
        if self.mode not in ("min", "max"):
            raise ConfigError(f"mode must be 'min' or 'max', got '{self.mode}'")
        if self.monitor.startswith("test"):
            raise ConfigError(f"monitor '{self.monitor}' looks like a test metric; select epochs on validation")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be positive")

    def hashed(self) -> dict:
        """The fields that define the result (what a resumed run must share)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.OPERATIONAL}


@dataclass
class FitResult:
    run_dir: Path
    best_epoch: int | None
    best_value: float | None
    history: list[dict]
    checkpoint: Path
    best_path: Path


# ---------------------------------------------------------------------------------------------- state


def save_safetensors(state: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Save a state dict as safetensors atomically (copies to CPU, contiguous, unshared)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_best(task: nn.Module, run_dir: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Load a run's ``best.safetensors`` into ``task`` (in place) and return it."""
    from facekd.hashing import read_safetensors

    path = Path(run_dir) / BEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: the run has not finished an epoch")
    state = read_safetensors(path, writer="this run's training (its best epoch)",
                             fix=f"delete {Path(run_dir)} and run the same command again",
                             device=str(task.device) if isinstance(task, Task) else "cpu")
    task.load_state_dict(state, strict=strict)
    return task


def _rng_state() -> dict:
    np_state = np.random.get_state(legacy=False)
    state = {"python": list(random.getstate()[1]), "python_pos": random.getstate()[2],
             "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
             "numpy_pos": int(np_state["state"]["pos"]), "numpy_gauss": [np_state["has_gauss"], np_state["gauss"]],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": state["numpy_pos"]},
                         "has_gauss": state["numpy_gauss"][0], "gauss": state["numpy_gauss"][1]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class _StepModule(nn.Module):
    """Routes ``forward`` to ``task.training_step`` so DDP sees the step as the forward pass."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Any) -> Any:
        return self.task.training_step(batch)


# -------------------------------------------------------------------------------------------- trainer


class Trainer:
    """Trains a :class:`Task` for ``cfg.epochs`` epochs into ``run_dir`` (see the module docstring).

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
            "best_value": self.best_value, "epochs": self.cfg.epochs, "history": self.history})

    # ------------------------------------------------------------------------------------------- fit
    def fit(self, task: Task, train_data: Any) -> FitResult:
        cfg, device = self.cfg, self.device
        use_cl = cfg.channels_last and device.type == "cuda"
        task.to(device)
        if use_cl:
            task.to(memory_format=torch.channels_last)
        loader, set_epoch, n_batches = self._loader(train_data)
        if cfg.schedule.get("interval", "epoch") == "step" and not n_batches:
            raise ValueError("a per-step schedule over an iterable without len() needs train.steps_per_epoch")
        opt = build_optimizer(task.param_groups(), cfg.optim)
        sched = build_scheduler(opt, cfg.schedule, n_batches or 1, cfg.epochs)
        per_step_sched = cfg.schedule.get("interval", "epoch") == "step"

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

        step_module: nn.Module = _StepModule(task)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            step_module = DDP(step_module, device_ids=[device.index] if device.type == "cuda" else None,
                              find_unused_parameters=cfg.ddp_find_unused)
        params = [p for g in opt.param_groups for p in g["params"]]

        for epoch in range(start + 1, cfg.epochs + 1):
            set_epoch(epoch)
            task.train()
            task.on_epoch_start(epoch)
            lr = opt.param_groups[0]["lr"]
            loss_sum = torch.zeros((), device=device, dtype=torch.float64)
            logged: dict[str, torch.Tensor] = {}
            steps = seen = 0
            t0 = time.perf_counter()
            bar = tqdm(loader, total=n_batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                       disable=not (self.is_main and cfg.progress), dynamic_ncols=True)
            for batch in bar:
                batch = move_to_device(batch, device, use_cl)
                with autocast(device, cfg.amp):
                    out = step_module(batch)
                loss, extra = (out if isinstance(out, tuple) else (out, {}))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                if per_step_sched:
                    sched.step()
                self.global_step += 1
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
            if not per_step_sched:
                sched.step()

            if self.is_main:
                task.eval()
                with torch.no_grad(), autocast(device, cfg.amp):
                    row.update({k: float(v) for k, v in task.evaluate().items()})
                task.train()
                if cfg.monitor not in row:
                    raise UnknownNameError(f"monitor '{cfg.monitor}' is not among the epoch's metrics "
                                           f"({', '.join(row)}); set train.monitor to one of them")
            if self.dist.enabled:
                box = [row]
                dist.broadcast_object_list(box, src=0)
                row = box[0]
            self.history.append(row)
            if self._is_better(row[cfg.monitor]):
                self.best_value, self.best_epoch = float(row[cfg.monitor]), epoch
                if self.is_main:
                    save_safetensors(task.state_dict(), self.best_path,
                                     {"epoch": epoch, cfg.monitor: row[cfg.monitor], "config_hash": self.config_hash})
            if self.is_main:
                self._write_metrics()
            self._save_checkpoint(task, opt, sched, epoch)
            every = max(1, cfg.epochs // 20)  # at most ~20 epoch lines a run (the metrics files keep every epoch)
            if self.is_main and (epoch % every == 0 or epoch in (1, cfg.epochs) or epoch == self.best_epoch):
                log.info("epoch %d/%d  %s", epoch, cfg.epochs,
                         "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
                                   if k != "epoch"))
        barrier()
        return FitResult(self.run_dir, self.best_epoch, self.best_value, self.history, self.checkpoint_path,
                         self.best_path)

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
