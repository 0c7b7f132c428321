"""The distill stage end to end at smoke size: real SFace teacher, real DCGAN faces, real ORL eval faces."""
import csv
import json
import shutil

import pytest
import torch
from hydra.errors import MissingConfigException

from facekd.distill import load_student
from facekd.distill.stage import DistillTask, check_dims, distill
from facekd.engine import ResumeError
from facekd.models import build_teacher
from facekd.runs import RunError
from safetensors.torch import load_file
from tests.distill.conftest import compose


def test_run_folder_contract_and_load_student(base_run, gen_run, sface):
    m = json.loads((base_run / "manifest.json").read_text())
    assert m["stage"] == "distill" and m["complete"] and m["uses_labels"] is False and m["uses_train_images"]
    assert m["teacher"] == json.loads(json.dumps(sface.signature)) and m["out_dim"] == 128 and m["input_size"] == 64
    assert m["student"] == {"name": "resnet18", "input_size": 64} and m["generate_run"] == str(gen_run.resolve())
    assert m["generate_config_hash"] == json.loads((gen_run / "manifest.json").read_text())["config_hash"]
    assert m["split_id"] and m["split_path"].endswith(".json")
    for f in ("student.safetensors", "metrics.csv", "loss.png", "r2.png", "summary.txt"):
        assert (base_run / f).is_file(), f
    rows = list(csv.DictReader(open(base_run / "metrics.csv")))
    assert len(rows) == 2
    for part in ("holdout", "real_val", "real_test"):
        for k in ("mse", "mae", "r2"):
            assert f"{part}_{k}" in rows[0]
    best = min(rows, key=lambda r: float(r["holdout_loss"]))
    assert m["best_epoch"] == int(best["epoch"])
    assert "labels not used" in (base_run / "summary.txt").read_text()

    student = load_student(base_run, expected_teacher_signature=sface.signature)
    saved = load_file(str(base_run / "student.safetensors"))
    assert all(torch.equal(student.state_dict()[k], v) for k, v in saved.items() if "num_batches" not in k)
    with pytest.raises(RunError, match="another teacher"):
        load_student(base_run, expected_teacher_signature=build_teacher({"name": "sface", "feature": "bn1"}).signature)


def test_resume_is_exact_and_other_config_refused(base_run, make_cfg, tmp_path, monkeypatch):
    def crash(self, epoch):
        if epoch == 2:
            raise RuntimeError("simulated crash")

    with monkeypatch.context() as mp:
        mp.setattr(DistillTask, "on_epoch_start", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            distill(make_cfg(tmp_path))
    run = tmp_path / "distill" / "resnet18-bce-sface"
    with pytest.raises(RunError, match="incomplete"):
        load_student(run)
    with pytest.raises(ResumeError, match="another configuration"):
        distill(make_cfg(tmp_path, "resume=true", "distill.train.optim.lr=0.01"))
    distill(make_cfg(tmp_path, "resume=true"))
    a, b = load_file(str(base_run / "student.safetensors")), load_file(str(run / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ha = json.loads((base_run / "metrics.json").read_text())["history"]
    hb = json.loads((run / "metrics.json").read_text())["history"]
    assert [r["holdout_r2"] for r in ha] == [r["holdout_r2"] for r in hb]


def test_paper_connector_is_recorded_as_using_labels(make_cfg, tmp_path):
    run = distill(make_cfg(tmp_path, "loss.paper_connector=true", "distill.train.epochs=1",
                           "distill.sources.labeled_train.weight=0", "loss.connector.epochs=5"))
    m = json.loads((run / "manifest.json").read_text())
    assert m["uses_labels"] is True and m["metric_space"] == "connector" and m["uses_train_images"] is False
    assert "labels USED" in (run / "summary.txt").read_text() and (run / "connector.safetensors").is_file()
    assert 0 <= m["connector"]["connector_train_accuracy"] <= 1
    assert load_student(run).out_dim == 128
    with pytest.raises(ValueError, match="use loss=bce"):
        distill(make_cfg(tmp_path, "loss=mse", "+loss.paper_connector=true"))


def test_online_mode_runs_the_teacher_each_step(make_cfg, tmp_path):
    run = distill(make_cfg(tmp_path, "distill.teacher_mode=online", "distill.train.epochs=1", "distill.name=online",
                           "distill.sources.labeled_train.weight=0", "distill.samples_per_epoch=8"))
    m = json.loads((run / "manifest.json").read_text())
    assert m["complete"] and m["teacher_mode"] == "online" and all(s["cache"] is None for s in m["sources"])


@pytest.mark.parametrize("mode", ["cached", "online"])
def test_mixup_blends_of_train_photos_are_a_source(make_cfg, tmp_path, mode):
    run = distill(make_cfg(tmp_path, f"distill.teacher_mode={mode}", "distill.train.epochs=1", f"distill.name=mix_{mode}",
                           "distill.sources.labeled_train.weight=0", "distill.sources.labeled_mixup.weight=1.0",
                           "distill.sources.labeled_mixup.pairs=6", "distill.samples_per_epoch=8"))
    m = json.loads((run / "manifest.json").read_text())
    mix = [s for s in m["sources"] if s["name"] == "labeled-mixup"]
    assert m["complete"] and len(mix) == 1 and mix[0]["images"] == 6
    assert (mix[0]["cache"] is None) == (mode == "online")


def test_image_mean_targets_train_and_refuse_online(make_cfg, tmp_path):
    run = distill(make_cfg(tmp_path, "distill.train.epochs=1", "distill.name=invariant",
                           "distill.sources.labeled_train.views=2", "distill.sources.labeled_train.targets=image_mean"))
    m = json.loads((run / "manifest.json").read_text())
    assert m["complete"] and m["config"]["distill"]["sources"]["labeled_train"]["targets"] == "image_mean"
    with pytest.raises(ValueError, match="image_mean needs the cached teacher features"):
        distill(make_cfg(tmp_path, "distill.teacher_mode=online", "distill.name=online_mean",
                         "distill.sources.synthetic.targets=image_mean"))


def test_bad_inputs(make_cfg, gen_run, sface, tmp_path):
    with pytest.raises(RunError, match="does not exist"):
        distill(make_cfg(tmp_path, f"distill.generate_run={tmp_path / 'nope'}"))
    broken = tmp_path / "gen"
    shutil.copytree(gen_run, broken)
    m = json.loads((broken / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps({**m, "complete": False}))
    with pytest.raises(RunError, match="incomplete"):
        distill(make_cfg(tmp_path, f"distill.generate_run={broken}"))
    with pytest.raises(KeyError, match="unknown loss 'nope'.*bce"):
        cfg = make_cfg(tmp_path)
        cfg.loss.name = "nope"
        distill(cfg)
    with pytest.raises(MissingConfigException, match="loss/nope"):
        compose("distill", ["loss=nope"])
    with pytest.raises(ValueError, match="student.out_dim=256 but teacher 'sface' feature 'embedding' is 128-d"):
        check_dims(sface, {"name": "resnet18", "out_dim": 256})
    assert check_dims(sface, {"name": "resnet18", "out_dim": 128}) == {"name": "resnet18"}
    with pytest.raises(ValueError, match=r"shape \[1024, 7, 7\].*vector"):
        distill(make_cfg(tmp_path, "teacher.feature=bn1_map"))
