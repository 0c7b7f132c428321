import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from facekd.engine import (BEST, CHECKPOINT, NonFiniteLossError, ResumeError, Task, TrainConfig, Trainer,
                           build_optimizer, build_scheduler, fit, load_best, lr_factor, resolve_device,
                           seed_everything)

from facekd.errors import ConfigError

class Points(Dataset):
    """y = x . w + noise, with the sample index returned too (to check sharding)."""

    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], torch.tensor(i)


class Toy(Task):
    """A dropout MLP: its training consumes the global RNG, so exact resume must restore it."""

    def __init__(self, crash_at=None, nan_epoch=None, scores=None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        self.val = Points(16)
        self.crash_at, self.nan_epoch, self.scores = crash_at, nan_epoch, scores
        self.epoch = self.step = 0
        self.seen: dict[int, list[int]] = {}
        self.snapshots: dict[int, dict] = {}

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0
        self.seen[epoch] = []

    def training_step(self, batch):
        x, y, idx = batch
        self.step += 1
        self.seen[self.epoch] += idx.tolist()
        if self.crash_at == (self.epoch, self.step):
            raise RuntimeError("simulated crash")
        pred = self.net(x)
        loss = F.mse_loss(pred, y)
        if self.nan_epoch == self.epoch:
            loss = loss * float("nan")
        return loss, {"mae": (pred - y).abs().mean().detach()}

    def evaluate(self):
        self.snapshots[self.epoch] = {k: v.clone() for k, v in self.state_dict().items()}
        out = {"val_loss": float(F.mse_loss(self.net(self.val.x), self.val.y))}
        if self.scores:
            out["val_score"] = self.scores[self.epoch - 1]
        return out


def cfg(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=8, progress=False, device="cpu", optim={"name": "adam", "lr": 1e-2},
                schedule={"name": "cosine", "interval": "step"})
    return TrainConfig(**{**base, **kw})


def fresh(**kw) -> Toy:
    seed_everything(0)
    return Toy(**kw)


# ---------------------------------------------------------------------------------------------- basics


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")


def test_seed_everything_repeats_all_generators():
    def draw():
        return random.random(), np.random.rand(), torch.rand(1).item()

    seed_everything(5)
    a = draw()
    seed_everything(5)
    assert draw() == a


def test_build_optimizer():
    lin, head = nn.Linear(2, 2), nn.Linear(2, 1)
    lin.bias.requires_grad_(False)
    sgd = build_optimizer(lin.parameters(), {"name": "sgd", "lr": 0.1, "weight_decay": 1e-4})
    assert len(sgd.param_groups[0]["params"]) == 1  # the frozen bias is left out
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["weight_decay"] == 1e-4
    adamw = build_optimizer([{"params": lin.parameters(), "lr_scale": 0.1}, *head.parameters()],
                            {"name": "adamw", "lr": 1e-3, "weight_decay": 0.05})
    assert isinstance(adamw, torch.optim.AdamW)
    lrs = sorted(g["lr"] for g in adamw.param_groups)
    assert lrs == pytest.approx([1e-4, 1e-3])
    with pytest.raises(ValueError, match="known optimizers: adam, adamw, sgd"):
        build_optimizer(lin.parameters(), {"name": "lion", "lr": 1})
    with pytest.raises(ValueError, match="momentum"):
        build_optimizer(lin.parameters(), {"name": "adam", "lr": 1, "momentum": 0.9})
    with pytest.raises(ValueError, match="no trainable"):
        build_optimizer([lin.bias], {"name": "adam", "lr": 1})


def test_schedules():
    f = lr_factor({"name": "inv_sqrt"}, 10)
    assert [f(t) for t in range(4)] == pytest.approx([1, 1 / math.sqrt(2), 1 / math.sqrt(3), 0.5])
    c = lr_factor({"name": "cosine", "min_factor": 0.1}, 10)
    assert c(0) == pytest.approx(1) and c(5) == pytest.approx(0.55) and c(10) == pytest.approx(0.1)
    s = lr_factor({"name": "step", "step_size": 2, "gamma": 0.5}, 10)
    assert [s(t) for t in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    w = lr_factor({"name": "constant", "warmup": 3}, 10)
    assert [w(t) for t in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])
    with pytest.raises(ValueError, match="known schedules"):
        lr_factor({"name": "poly"}, 10)
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=0.5)
    sched = build_scheduler(opt, {"name": "cosine", "interval": "step"}, steps_per_epoch=5, epochs=2)
    for _ in range(10):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # 10 steps = the whole cosine


def test_config_validation():
    with pytest.raises(ValueError, match="test metric"):
        TrainConfig(monitor="test_accuracy")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_config({"epochs": 2, "batchsize": 3})
    with pytest.raises(ValueError, match="mode"):
        TrainConfig(mode="best")
    from omegaconf import OmegaConf

    c = TrainConfig.from_config(OmegaConf.create({"epochs": 2, "optim": {"name": "sgd", "lr": 0.1}}), seed=4)
    assert c.epochs == 2 and c.seed == 4 and c.optim == {"name": "sgd", "lr": 0.1} and type(c.optim) is dict


# -------------------------------------------------------------------------------------------- training


def test_fit_writes_metrics_best_and_checkpoint(tmp_path):
    task = fresh(scores=[0.5, 0.9, 0.7])
    c = cfg(monitor="val_score", mode="max", schedule={"name": "inv_sqrt", "interval": "epoch"})
    res = Trainer(c, tmp_path).fit(task, Points())
    assert res.best_epoch == 2 and res.best_value == pytest.approx(0.9)
    # the paper's lr / sqrt(1 + t), t = epoch index from 0
    assert [r["lr"] for r in res.history] == pytest.approx([1e-2, 1e-2 / math.sqrt(2), 1e-2 / math.sqrt(3)])
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].split(",")[:5] == ["epoch", "train_loss", "lr", "time_s", "img_per_s"]
    assert {"mae", "val_loss", "val_score"} <= set(lines[0].split(",")) and len(lines) == 4
    meta = json.loads((tmp_path / "metrics.json").read_text())
    assert meta["best_epoch"] == 2 and len(meta["history"]) == 3 and meta["monitor"] == "val_score"
    best = load_file(str(tmp_path / BEST))
    for k, v in task.snapshots[2].items():
        assert torch.equal(best[k], v), k
    assert not torch.equal(best["net.0.weight"], task.snapshots[3]["net.0.weight"])
    other = load_best(fresh(), tmp_path)
    assert torch.equal(other.net[0].weight, task.snapshots[2]["net.0.weight"])
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["best_epoch"] == 2
    # each epoch sees every full batch once, in a new order
    assert sorted(task.seen[1]) == sorted(task.seen[2]) and task.seen[1] != task.seen[2]
    assert res.history[0]["train_loss"] > res.history[-1]["train_loss"]


def test_resume_is_bit_exact(tmp_path):
    full = fresh()
    Trainer(cfg(), tmp_path / "full").fit(full, Points())

    crashed = fresh(crash_at=(2, 3))
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg(), tmp_path / "split").fit(crashed, Points())
    assert torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)["epoch"] == 1

    resumed = fresh()
    res = Trainer(cfg(resume=True, num_workers=0), tmp_path / "split").fit(resumed, Points())
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    a = json.loads((tmp_path / "full" / "metrics.json").read_text())["history"]
    assert [r["train_loss"] for r in res.history] == [r["train_loss"] for r in a]
    # a finished run resumes to nothing and returns its history
    again = Trainer(cfg(resume=True), tmp_path / "split").fit(fresh(), Points())
    assert len(again.history) == 3 and again.best_epoch == res.best_epoch


def test_resume_from_another_config_is_refused(tmp_path):
    Trainer(cfg(epochs=1), tmp_path, config={"loss": "mse"}).fit(fresh(), Points())
    with pytest.raises(ResumeError, match="another configuration"):
        Trainer(cfg(epochs=1, resume=True, optim={"name": "adam", "lr": 0.5}), tmp_path,
                config={"loss": "mse"}).fit(fresh(), Points())
    with pytest.raises(ResumeError, match="another configuration"):
        Trainer(cfg(epochs=1, resume=True), tmp_path, config={"loss": "bce"}).fit(fresh(), Points())
    # operational options and the resume flag itself do not count
    fit(fresh(), Points(), cfg(epochs=1, resume=True, progress=True, log_every=3), tmp_path,
        config={"loss": "mse", "resume": True})
    # without resume, a run folder starts over
    res = fit(fresh(), Points(), cfg(epochs=2), tmp_path, config={"loss": "bce"})
    assert len(res.history) == 2 and torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 2


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="epoch 2.*checkpoint of epoch 1 is kept"):
        Trainer(cfg(log_every=2), tmp_path).fit(fresh(nan_epoch=2), Points())
    ckpt = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2
    assert (tmp_path / BEST).exists()


def test_missing_monitor_and_iterable_data(tmp_path):
    with pytest.raises(KeyError, match="monitor 'val_f1'.*val_loss"):
        Trainer(cfg(epochs=1, monitor="val_f1"), tmp_path / "a").fit(fresh(), Points())

    class Batches(list):
        epochs: list[int] = []

        def set_epoch(self, e):
            self.epochs.append(e)

    d = Points()
    data = Batches((d.x[i : i + 16], d.y[i : i + 16], torch.arange(i, i + 16)) for i in range(0, 64, 16))
    res = Trainer(cfg(epochs=2, monitor="train_loss"), tmp_path / "b").fit(fresh(), data)
    assert data.epochs == [1, 2] and res.best_epoch in (1, 2) and len(res.history) == 2


# ---------------------------------------------------------------------------------------- distributed

DDP_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, sys.argv[3])
    from test_engine import Points, Toy, cfg
    from facekd.engine import Trainer, dist_info, seed_everything

    rank = dist_info().rank
    seed_everything(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    task = Toy()
    res = Trainer(cfg(epochs=2), sys.argv[1]).fit(task, Points())
    torch.save({"state": task.state_dict(), "seen": task.seen, "best": res.best_epoch},
               f"{sys.argv[2]}/rank{rank}.pt")
""")


def test_ddp_two_processes_on_cpu(tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "run"), str(tmp_path), str(Path(__file__).parent)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    for k, v in r0["state"].items():
        assert torch.equal(v, r1["state"][k]), k
    assert r0["best"] == r1["best"]
    # each rank saw its own half of the data: 4 batches of 8, disjoint, together all 64 samples
    for e in (1, 2):
        assert len(r0["seen"][e]) == len(r1["seen"][e]) == 32
        assert sorted(r0["seen"][e] + r1["seen"][e]) == list(range(64))
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3
    assert (tmp_path / "run" / BEST).exists() and (tmp_path / "run" / CHECKPOINT).exists()


def test_a_fresh_run_with_resume_on_logs_no_resume_line(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="facekd.engine"):
        Trainer(cfg(epochs=1, resume=True), tmp_path / "fresh").fit(fresh(), Points())
    assert not [r for r in caplog.records if "checkpoint" in r.getMessage() or "resum" in r.getMessage()]
    (tmp_path / "stage_files").mkdir()  # a stage's own files (manifest, caches) written before training
    (tmp_path / "stage_files" / "manifest.json").write_text("{}")
    with caplog.at_level(logging.INFO, logger="facekd.engine"):
        Trainer(cfg(epochs=1, resume=True), tmp_path / "stage_files").fit(fresh(), Points())
    assert not [r for r in caplog.records if "resum" in r.getMessage()]
    (tmp_path / "leftover").mkdir()
    (tmp_path / "leftover" / "metrics.csv").write_text("epoch\n")
    with caplog.at_level(logging.INFO, logger="facekd.engine"):
        Trainer(cfg(epochs=1, resume=True), tmp_path / "leftover").fit(fresh(), Points())
    assert any("holds no checkpoint to resume" in r.getMessage() for r in caplog.records)


def test_damaged_best_and_checkpoint_are_refused_with_the_file_named(tmp_path):
    from facekd.errors import ArtifactError

    Trainer(cfg(epochs=2), tmp_path).fit(fresh(), Points())
    best, ckpt = tmp_path / BEST, tmp_path / CHECKPOINT
    best.write_bytes(best.read_bytes()[:100])  # truncated
    with pytest.raises(ArtifactError, match=rf"{best} is damaged: it cannot be read as safetensors.*delete {tmp_path}"):
        load_best(fresh(), tmp_path)
    ckpt.write_bytes(ckpt.read_bytes()[:200])
    with pytest.raises(ArtifactError, match=rf"{ckpt} is damaged and cannot be resumed.*resume=false"):
        Trainer(cfg(epochs=3, resume=True), tmp_path).fit(fresh(), Points())


@pytest.mark.parametrize("key, value, words", [
    ("epochs", "abc", "distill.train.epochs must be an integer >= 1, got 'abc' (a string)"),
    ("epochs", True, "distill.train.epochs must be an integer >= 1, got true (a boolean)"),
    ("amp", 1, "distill.train.amp must be true or false, got 1"),
    ("optim", {"name": "adam", "lr": True}, "distill.train.optim.lr must be a number > 0"),
    ("grad_clip", "big", "distill.train.grad_clip must be a number > 0 or null"),
])
def test_training_options_of_the_wrong_type_are_refused_naming_the_key(key, value, words):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_config({key: value}, "distill.train")
    assert words in str(err.value)


def test_step_budget_plans_engine_epochs_over_a_repeated_set():
    """steps / eval_every engine epochs of eval_every batches; min_epochs passes make the budget grow with data."""
    from facekd.engine.steps import RepeatedDataset, StepBudget

    section = {"steps": 500, "eval_every": 25, "min_epochs": 10, "batch_size": 80}
    budget = StepBudget.pop(section, "finetune.train")
    assert section == {"batch_size": 80}  # the budget's keys are taken out, the engine's stay
    assert budget.plan(80, 80) == (20, 2000)  # 2-shot ORL: 500 steps, val every 25: 20 epochs of 25 batches
    assert budget.describe(80, 80) == {"steps": 500, "eval_every": 25, "passes": 500.0}
    assert budget.total_steps(3360, 80) == 500  # Pins: 10 passes are 420 steps, under the budget
    assert budget.total_steps(8000, 80) == 1000 and budget.plan(8000, 80) == (40, 2000)  # 10 passes of 100 steps
    assert StepBudget(steps=10, eval_every=25).plan(80, 80) == (1, 800)  # val at the end when eval_every > steps
    assert StepBudget.pop({"epochs": 3}, "finetune.train") is None
    with pytest.raises(ConfigError, match=r"finetune.train.eval_every and finetune.train.min_epochs need "
                                          r"finetune.train.steps"):
        StepBudget.pop({"eval_every": 5}, "finetune.train")
    with pytest.raises(ConfigError, match="finetune.train.steps"):
        StepBudget.pop({"steps": 0}, "finetune.train")
    repeated = RepeatedDataset([10, 11, 12], 7)
    assert len(repeated) == 7 and [repeated[i] for i in range(7)] == [10, 11, 12, 10, 11, 12, 10]


def test_autocast_is_bf16_on_cuda_and_on_a_cpu_with_native_bf16_only(monkeypatch):
    from facekd.engine import device as dev

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert dev.autocast_precision(cuda) == "bf16" and dev.autocast_precision(cuda, enabled=False) == "fp32"
    dev.cpu_bf16_native.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not dev.cpu_bf16_native() and dev.autocast_precision(cpu) == "fp32"
    with dev.autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    dev.cpu_bf16_native.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert dev.cpu_bf16_native() and dev.autocast_precision(cpu) == "bf16"
    with dev.autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert dev.autocast_precision(cpu, enabled=False) == "fp32"
    dev.cpu_bf16_native.cache_clear()
