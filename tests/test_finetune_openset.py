"""The finetune stage on the open-set variant of ORL (smoke size, a freshly built student): the threshold is
calibrated on the calibration unknowns and written to open_set.json, test is scored open-set, the ROC drawn."""
from pathlib import Path

import pytest
import torch

from facekd.distill.student_run import STUDENT_FILE
from facekd.engine import save_safetensors
from facekd.errors import ConfigError
from facekd.finetune import finetune
from facekd.finetune.stage import FinetuneSettings, run_dir_for
from facekd.models import build_student
from facekd.openset import read_open_set
from facekd.hashing import artifact_checksums
from facekd.runs import read_json, read_manifest, write_manifest

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEACHER = {"name": "sface", "feature": "embedding", "feature_shape": [128], "preprocess": {"size": 112}}
STUDENT_CFG = {"name": "resnet18", "input_size": 32}


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose("finetune", overrides=["recipe=paper", "profile=smoke", *overrides])


@pytest.fixture(scope="module")
def student_run(tmp_path_factory):
    """A distill-format run folder holding a freshly built (untrained) student: enough to exercise the stage."""
    folder = tmp_path_factory.mktemp("student")
    torch.manual_seed(0)
    save_safetensors(build_student(STUDENT_CFG, 128).state_dict(), folder / STUDENT_FILE)
    write_manifest(folder, "distill", {"student": STUDENT_CFG, "note": "random init, for tests"}, student=STUDENT_CFG,
                   teacher=TEACHER, out_dim=128, input_size=32, uses_labels=False, complete=True,
                   artifacts=artifact_checksums(folder, [STUDENT_FILE]))
    return folder


def test_open_set_finetune_writes_threshold_metrics_and_roc(tmp_path, student_run):
    cfg = compose(f"paths.root={tmp_path}", f"finetune.student_run={student_run}", "data=orl_openset",
                  "finetune.export_onnx=false", "finetune.open_set.far=0.1", "finetune.train.epochs=2")
    metrics = finetune(cfg)
    run = Path(metrics["run_dir"])
    assert run == run_dir_for(cfg) and run.name.endswith("-open5")
    assert metrics["num_classes"] == 30 and metrics["n_images"]["test"] == 210
    rule = read_open_set(run)
    assert rule["far"] == 0.1 and rule["n_calibration"] == 50 and rule["far_calibration"] <= 0.1
    o = metrics["open_set"]
    assert o["threshold"] == rule["threshold"] and o["far_target"] == 0.1 and o["n_unknown"] == 50
    assert 0 <= o["dir"] <= o["closed_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert 0 <= o["far"] <= 1
    assert read_json(run / "metrics.json")["open_set"]["dir"] == o["dir"]
    assert (run / "open_set_roc.png").stat().st_size > 1000
    assert "open_set.json" in read_manifest(run, "finetune", complete=True)["artifacts"]


def test_closed_set_finetune_config_records_the_whole_section():
    from facekd.data.labeled import data_identity
    from facekd.finetune.stage import _stage_config

    cfg = compose("finetune.student_run=/nowhere")
    settings = FinetuneSettings.from_config(cfg["finetune"])
    stage = _stage_config(cfg, settings)
    assert stage["finetune"]["open_set"] == {"far": 0.01} and stage["data"]["unknown_identities"] == 0
    assert "open_set" not in settings.hashed() and data_identity(cfg["data"]) == stage["data"]
    assert not run_dir_for(cfg).name.endswith("-open0")


@pytest.mark.parametrize("far", [1.5, True, "0.01"])
def test_bad_far_is_refused_naming_the_key(far):
    with pytest.raises(ConfigError, match=r"^finetune.open_set.far must be a number in \[0, 1\)"):
        FinetuneSettings.from_config({"student_run": "x", "open_set": {"far": far}})
    with pytest.raises(ConfigError, match="finetune.open_set must be a mapping with the key far"):
        FinetuneSettings.from_config({"student_run": "x", "open_set": {"fra": 0.01}})


def test_too_many_unknowns_refused_before_training(tmp_path, student_run):
    with pytest.raises(ConfigError, match="data.unknown_identities=20 .* at most 19"):
        finetune(compose(f"paths.root={tmp_path}", f"finetune.student_run={student_run}", "data=orl_openset",
                         "data.unknown_identities=20"))
    assert not (tmp_path / "splits").exists() or not any((tmp_path / "splits").iterdir())
    assert not (tmp_path / "finetune").exists()
