"""Stream mode: faces made per step on the device, reproducible from (seed, step); hard-face resampling."""
import csv
import json

import pytest
import torch

from facekd.config import plain
from facekd.distill.stage import distill
from facekd.distill.stream import HardPool, StreamBatches, StreamFaces, StreamSettings, build_stream_generator
from facekd.distill.views import ViewSource
from facekd.engine import ResumeError
from facekd.errors import ConfigError
from tests.distill.conftest import compose

STREAM = ["distill.sources.synthetic.mode=stream", "distill.online_view_size=64", "student.input_size=32"]


def settings(**hard) -> StreamSettings:
    d = {"teacher_mode": "online", "sources": {"synthetic": {
        "mode": "stream", "stream": {"generator": {"name": "dcgan"}, "faces_per_epoch": 8, "stats_faces": 4,
                                     "augment": {}, "hard": hard}}}}
    return StreamSettings.from_config(d)


@pytest.fixture(scope="module")
def faces():
    s = settings()
    return StreamFaces(build_stream_generator(s, torch.device("cpu")), s, seed=3, view_size=48)


def test_stream_faces_reproducible_from_seed_and_step(faces):
    a, za, _ = faces.make(6, (1, 0, 0))
    b, zb, _ = faces.make(6, (1, 0, 0))
    c, zc, _ = faces.make(6, (1, 1, 0))
    assert a.shape == (6, 3, 48, 48) and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(za, zb)
    assert not torch.equal(za, zc) and (a.float() - c.float()).abs().mean() > 1
    other = StreamFaces(faces.sampler, faces.settings, seed=4, view_size=48)
    assert not torch.equal(other.make(6, (1, 0, 0))[1], za)


def test_stream_batches_mix_sources_by_weight(faces):
    import numpy as np

    photos = np.random.default_rng(0).integers(0, 255, (5, 48, 48, 3), dtype=np.uint8)
    other = ViewSource(name="photos", size=5, read=lambda i: photos[i], fingerprint="x", seed=0)
    stream = ViewSource(name="synthetic-stream", size=8, read=None, fingerprint="s", seed=0)
    data = StreamBatches([stream, other], [1.0, 1.0], 4, 48, 16, seed=0)
    batches = list(data)
    assert len(batches) == 4 and sum(int(b["stream"].sum()) for b in batches) == 8
    for b in batches:
        images, z, mask = faces.fill(b)
        assert images.shape == (4, 3, 48, 48) and int(mask.sum()) == b["key"][3]
        assert (images[~mask].float().mean() > 0) if (~mask).any() else True
        if z is not None:
            assert len(z) == int(mask.sum()) and images[mask].float().std() > 1
    again = list(data)
    assert all(torch.equal(x["views"], y["views"]) and x["key"] == y["key"] for x, y in zip(batches, again))


def test_hard_pool_keeps_the_lowest_cosines():
    pool = HardPool(3, 2)
    assert pool.filled == 0 and pool.mean_cosine() != pool.mean_cosine()  # nan when empty
    pool.update(torch.arange(8.0).view(4, 2), torch.tensor([0.5, -0.2, 0.9, 0.1]))
    assert pool.filled == 3 and torch.allclose(pool.cosine, torch.tensor([-0.2, 0.1, 0.5]))
    assert torch.equal(pool.latents[0], torch.tensor([2.0, 3.0]))
    pool.update(torch.zeros(1, 2), torch.tensor([-1.0]))
    assert torch.allclose(pool.cosine, torch.tensor([-1.0, -0.2, 0.1]))


def test_hard_faces_come_from_the_pool(faces):
    s = settings(fraction=0.5, noise=0.0, pool_size=4)
    hard = StreamFaces(faces.sampler, s, seed=3, view_size=48)
    _, z0, n0 = hard.make(4, (1, 0, 0))
    assert n0 == 0  # an empty pool gives fresh faces only
    hard.pool.update(torch.ones(2, z0.shape[1]), torch.tensor([0.1, 0.2]))
    _, z1, n1 = hard.make(4, (1, 0, 0))
    assert n1 == 2 and torch.equal(z1[:2], torch.ones(2, z0.shape[1])) and torch.equal(z1[2:], z0[2:])


def test_stream_distill_run_is_complete_and_records_the_generator(make_cfg, tmp_path):
    """A stream run with the multi-layer term: the teacher's maps come from the forward that scores each batch."""
    run = distill(make_cfg(tmp_path, *STREAM, "distill.train.epochs=1", "distill.name=stream",
                           "distill.samples_per_epoch=16", "distill.taps.weight=1.0"))
    m = json.loads((run / "manifest.json").read_text())
    assert m["complete"] and m["teacher_mode"] == "online"  # stream mode chose the online teacher itself
    assert m["config"]["distill"]["sources"]["synthetic"]["mode"] == "stream"
    assert m["config"]["distill"]["teacher_mode"] == "online"  # recorded as chosen (the default is auto)
    assert m["stream"]["generator"]["kind"] == "dcgan" and m["stream"]["generator_config"]["name"] == "dcgan"
    names = {s["name"]: s for s in m["sources"]}
    assert names["synthetic-stream"]["cache"] is None and names["synthetic-stream"]["images"] == 16
    assert m["samples_per_epoch"] == 16
    assert "labeled-train" in names and (run / "student.safetensors").is_file()
    assert m["taps"]["pairs"][-1] == "backbone.layer4->net.bn1" and (run / "adapters.safetensors").is_file()
    row = next(csv.DictReader(open(run / "metrics.csv")))
    assert float(row["taps"]) > 0 and float(row["kd/skd/0"]) > 0 and "real_val_tap3_r2" in row


HARD = [*STREAM, "distill.name=hard", "distill.sources.labeled_train.weight=0", "distill.eval_real=false",
        "distill.samples_per_epoch=8", "distill.sources.synthetic.stream.hard.fraction=0.5"]


def test_hard_resampling_logs_the_pool_cosine(make_cfg, tmp_path):
    run = distill(make_cfg(tmp_path, *HARD))
    history = json.loads((run / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(-1 <= r["hard_pool_cosine"] <= 1 for r in history)
    assert json.loads((run / "manifest.json").read_text())["stream"]["hard"]["fraction"] == 0.5


def test_resume_refuses_another_generator(make_cfg, tmp_path, monkeypatch):
    from facekd.distill.stage import DistillTask

    def crash(self, epoch):
        if epoch == 2:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as mp:
        mp.setattr(DistillTask, "on_epoch_start", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            distill(make_cfg(tmp_path, *HARD))
    with pytest.raises(ResumeError, match=r"stream\.generator\.precision was 'auto', now 'fp32'"):
        distill(make_cfg(tmp_path, *HARD, "resume=true", "distill.sources.synthetic.stream.generator.precision=fp32"))
    resumed = distill(make_cfg(tmp_path, *HARD, "resume=true"))
    assert len(json.loads((resumed / "metrics.json").read_text())["history"]) == 2


def test_stream_bad_inputs(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"hard\.fraction must be in \[0, 1\)"):
        distill(make_cfg(tmp_path, *STREAM, "distill.sources.synthetic.stream.hard.fraction=1.0"))
    with pytest.raises(ConfigError, match=r"hard\.fraction must be a number >= 0"):
        distill(make_cfg(tmp_path, *STREAM, "distill.sources.synthetic.stream.hard.fraction=-0.1"))
    with pytest.raises(ConfigError, match="set distill.teacher_mode=online"):  # asked for cached explicitly
        distill(make_cfg(tmp_path, "distill.sources.synthetic.mode=stream", "distill.teacher_mode=cached"))
    with pytest.raises(ConfigError, match="mode must be one of shards, stream"):
        distill(make_cfg(tmp_path, "distill.sources.synthetic.mode=disk"))
    with pytest.raises(ConfigError, match="generator.device=cuda but training runs on cpu"):
        distill(make_cfg(tmp_path, *STREAM, "device=cpu", "+distill.sources.synthetic.stream.generator.device=cuda"))



def test_a_generator_that_cannot_stream_is_refused(monkeypatch):
    from facekd.generators import stage
    from facekd.generators.base import FaceSampler

    class Steps(FaceSampler):  # like a diffusion pipeline: seeds in, many denoising steps, no latent map
        info = {"kind": "diffusers"}

        def generate(self, prepared):
            raise AssertionError("never called")

    monkeypatch.setattr(stage, "build_generator", lambda spec, device: Steps(device))
    s = StreamSettings(**{**settings().__dict__, "generator": {"name": "diffusers", "path": "x"}})
    with pytest.raises(ConfigError, match="generator.name=diffusers cannot stream on cpu"):
        build_stream_generator(s, torch.device("cpu"))


def test_shards_mode_records_the_whole_config():
    from facekd.distill.stage import _hashed, _run_config

    cfg = compose("distill", [])
    recorded = _run_config(cfg)
    d = recorded["distill"]
    assert d["sources"]["synthetic"]["mode"] == "shards" and StreamSettings.from_config(d) is None
    assert d == {**plain(cfg)["distill"], "teacher_mode": "cached"}  # auto, recorded as what it chose
    assert plain(cfg)["distill"]["teacher_mode"] == "auto" and "stream" in d["sources"]["synthetic"]
    assert "hydra" not in recorded
    assert _hashed(recorded)["distill"]["sources"] == d["sources"]


def test_two_stream_runs_with_one_seed_train_the_same_student(make_cfg, tmp_path):
    from safetensors.torch import load_file

    common = [*STREAM, "distill.train.epochs=1", "distill.samples_per_epoch=8", "distill.eval_real=false",
              "distill.sources.synthetic.stream.hard.fraction=0.5"]
    a = load_file(str(distill(make_cfg(tmp_path, *common, "distill.name=a")) / "student.safetensors"))
    b = load_file(str(distill(make_cfg(tmp_path, *common, "distill.name=b")) / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
