"""The comparison: table, CSV, chart, paper numbers; unknown rows; cached reruns."""
import csv

import pytest

from facekd.baselines import base
from facekd.baselines.compare import compare_baselines, resolve_rows


def test_unknown_row_lists_known_ones(smoke_cfg):
    with pytest.raises(KeyError, match=r"unknown row\(s\) nope; known rows .*hinton_kd.*maml_fo.*pixels"):
        resolve_rows(["pixels", "nope"], smoke_cfg)
    rows = resolve_rows(["scratch_convnet9", "pixels"], smoke_cfg, smoke=True)
    assert [(r, p) for r, p, _ in rows] == [("scratch_convnet9", "scratch"), ("pixels", "pixels")]
    assert rows[0][2]["train"]["steps"] == 2 and "smoke" not in rows[0][2]  # the row's smoke section, applied
    assert resolve_rows(["scratch"], smoke_cfg)[0][2]["train"]["steps"] == 500  # at full size: the row's own


def test_a_new_row_is_one_file(tmp_path, monkeypatch):
    """A config-only row is one new YAML under configs/baseline/: compose picks it up with no other edit."""
    import shutil

    from hydra import compose, initialize_config_dir

    from facekd import config

    configs = tmp_path / "configs"
    shutil.copytree(config.CONFIGS, configs)
    (configs / "baseline" / "scratch_wide.yaml").write_text("defaults:\n  - scratch\n  - _self_\ntrain: {steps: 7}\n")
    monkeypatch.setattr(config, "ROW_DIR", configs / "baseline")
    config.register_rows()
    try:
        with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
            cfg = compose(config_name="compare_baselines", overrides=["methods=[scratch_wide]", "paths.root=/x"])
        [(row, plugin, rcfg)] = resolve_rows(cfg.methods, cfg)
        assert (row, plugin, rcfg["train"]["steps"]) == ("scratch_wide", "scratch", 7)
    finally:
        monkeypatch.undo()
        config.register_rows()


def test_compare_writes_table_csv_chart_and_reuses_results(smoke_root, compose_smoke, monkeypatch, capsys):
    cfg = compose_smoke(smoke_root, "methods=[pixels,scratch]", "seeds=2")
    rows = compare_baselines(cfg)
    assert [r["method"] for r in rows] == ["pixels", "scratch"] and all(r["seeds"] == 2 for r in rows)
    out = smoke_root / "compare_baselines"
    md = (out / "comparison.md").read_text()
    assert "| pixels |" in md and "±" in md and "different data" in md and "52.14" in md  # the paper's ResNet-18 scratch
    with open(out / "comparison.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["method"] for r in table] == ["pixels", "scratch"]
    assert 0 <= float(table[0]["accuracy_mean"]) <= 1 and float(table[0]["accuracy_std"]) == 0.0  # pixels: no randomness
    assert (out / "accuracy.png").stat().st_size > 1000 and (out / "results.json").exists()
    assert "Beside the paper" in capsys.readouterr().out

    def boom(*args, **kwargs):
        raise AssertionError("retrained a cached row")

    monkeypatch.setattr(base.METHODS.get("scratch"), "fit", boom)
    again = compare_baselines(cfg)
    assert [r["accuracy_mean"] for r in again] == [r["accuracy_mean"] for r in rows]


def _row(method, acc, busy=False, **extra):
    return {"method": method, "seeds": 3, "accuracy_mean": acc, "accuracy_std": 0.01, "f1_macro_mean": acc - 0.01,
            "f1_macro_std": 0.02, "params": 11_200_000, "mflops": 296.4, "cpu_ms_per_img": 10.44,
            "latency_busy": busy, **extra}


def test_headline_table_shows_the_teacher_ncm_and_flags_busy_latency():
    from facekd.baselines.compare import BUSY_NOTE, headline_markdown

    rows = [_row("scratch", 0.954), _row("teacher_probe", 0.968, busy=True, teacher_ncm_accuracy_mean=0.989,
                                         teacher_ncm_accuracy_std=0.0)]
    text = headline_markdown(rows)
    lines = text.splitlines()
    assert lines[0] == "| method | accuracy % | macro-F1 % | params (M) | MFLOPs | CPU ms/img |"
    assert lines[2] == "| scratch | 95.4 ± 1.0 | 94.4 ± 2.0 | 11.20 | 296 | 10.4 |"
    assert lines[3] == "| teacher_probe (nearest class mean 98.9 ± 0.0%) | 96.8 ± 1.0 | 95.8 ± 2.0 | 11.20 | 296 | 10.4 * |"
    assert lines[-1] == BUSY_NOTE


def test_smoke_profile_is_read_from_the_run():
    from facekd.baselines.compare import run_profile

    assert run_profile({"run_profile": "smoke"}) == "smoke" and run_profile({}) == "default"


@pytest.mark.parametrize("variant, parent, key, value", [
    ("subclass_kd_synthetic", "subclass_kd", ("kd", "synthetic", "count"), 1280),
    ("distill_bce_finetune", "distill_bce_finetune_samelr", ("finetune", "backbone_lr_scale"), 0.1),
    ("distill_bce_mixup_probe", "distill_bce_probe", ("distill_overrides",), ["recipe=recommended"]),
    ("distill_bce_mixup_finetune_cosface", "distill_bce_mixup_finetune", ("finetune", "loss"), "cosface"),
    ("distill_bce_mixup_finetune_cosface_hold", "distill_bce_mixup_finetune_cosface", ("finetune", "hold"),
     {"weight": 1.0, "faces": 1000, "batch_size": 32})])
def test_variant_rows_differ_from_their_parent_in_one_key(variant, parent, key, value):
    """A variant row is its parent's config with one key changed (at the real sizes, not the smoke profile), so
    the two rows of one table differ only in what the variant's name says."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="compare_baselines", overrides=["paths.root=/nonexistent"])
    rows = {k: {kk: vv for kk, vv in v.items() if kk != "smoke"}  # the smoke sizes are not the row
            for k, v in OmegaConf.to_container(cfg.baselines, resolve=True).items()}
    child, base = rows[variant], rows[parent]
    *path, last = key
    node_child, node_base = child, base
    for k in path:
        node_child, node_base = node_child[k], node_base[k]
    assert node_child.pop(last) == value and node_base.pop(last, None) != value
    assert child == base


@pytest.mark.parametrize("row, recipe", [("distill_bce_probe", "paper"), ("distill_bce_mixup_finetune", "recommended")])
def test_a_recipe_row_trains_what_the_stages_recipe_trains(row, recipe):
    """The main job's recipe rows run the recipes of configs/recipe/ as `facekd distill` and `facekd finetune` do:
    the same distill overrides and every finetune key that changes the model (the row adds only what it exports)."""
    from facekd.baselines.compare import row_config
    from facekd.config import compose_config, plain
    from facekd.finetune.settings import FinetuneSettings

    cfg = plain(compose_config("compare_baselines", ["paths.root=/nonexistent"]))
    _, resolved = row_config(cfg, row)
    assert resolved["recipe"] == recipe
    assert resolved["distill_overrides"] == ([] if recipe == "paper" else [f"recipe={recipe}"])
    stage = plain(compose_config("finetune", [f"recipe={recipe}", "paths.root=/nonexistent"])["finetune"])
    row_side = FinetuneSettings.from_config({**resolved["finetune"], "student_run": "x"}).hashed()
    stage_side = FinetuneSettings.from_config({**stage, "student_run": "x", "name": None}).hashed()
    for side in (row_side, stage_side):
        side["train"].pop("progress")  # a bar or none: not the model
    assert row_side == stage_side
    if recipe == "recommended":
        assert stage_side["train"]["steps"] == 500 and stage_side["unfreeze"] is True


def test_the_edge_row_is_the_recommended_recipe_with_another_student():
    """distill_bce_mixup_finetune_mobilefacenet changes the student, and only adds what ships (ONNX and int8 files)."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    configs = Path(__file__).resolve().parents[2] / "configs"
    with initialize_config_dir(config_dir=str(configs), version_base="1.3"):
        cfg = compose(config_name="compare_baselines", overrides=["paths.root=/nonexistent"])
    rows = {k: {kk: vv for kk, vv in v.items() if kk != "smoke"}
            for k, v in OmegaConf.to_container(cfg.baselines, resolve=True).items()}
    edge, base = rows["distill_bce_mixup_finetune_mobilefacenet"], rows["distill_bce_mixup_finetune"]
    assert (edge.pop("student"), base.pop("student")) == ("mobilefacenet", "resnet18")
    assert edge["finetune"].pop("export_onnx") is True and base["finetune"].pop("export_onnx") is False
    assert edge["finetune"].pop("int8") == {"enabled": True} and "int8" not in base["finetune"]
    assert edge == base
