"""Every method runs at smoke size on the real ORL faces and the real SFace teacher, under the shared split."""
import json
from pathlib import Path

import pytest
import torch

from facekd.baselines import run_method
from facekd.baselines.hinton_kd import hinton_kd_loss
from facekd.config import ROW_ALIASES, row_names

ROWS = row_names()  # every registered row: a new file under configs/baseline/ is tested without an edit here


@pytest.mark.parametrize("row", ROWS)
def test_method_runs_at_smoke_size(row, smoke_cfg, smoke_data, smoke_row):
    mcfg = smoke_row(row)
    res = run_method(mcfg.get("method", row), mcfg, smoke_cfg.data, smoke_cfg.paths.root, 0, data=smoke_data)
    assert set(res.test) >= {"accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_micro", "f1_weighted"}
    assert 0.0 <= res.accuracy <= 1.0 and res.val and res.train_seconds > 0
    assert res.cpu_ms_per_img > 0 and res.mflops >= 0
    if row == "teacher_probe":
        # the frozen SFace teacher is a real face teacher: far above chance (2.5%) even with a 20-step head
        assert res.accuracy > 0.3 and res.extra["teacher_ncm_accuracy"] > 0.8
    if row == "hinton_kd":
        assert res.extra["alpha"] == 0.1 and "teacher_accuracy" in res.extra
    if row == "subclass_kd":
        assert res.extra["subclasses"] == 4 and res.extra["subclasses_total"] == 4 * smoke_data.num_classes
        assert 0 < res.extra["subclasses_used"] <= res.extra["subclasses_total"] and "teacher_accuracy" in res.extra
    if row in ("triplet", "pixels"):
        assert 0.0 <= res.extra["triplet_accuracy"] <= 1.0 and "embedding_std" in res.extra
    if row == "triplet":
        assert res.extra["collapsed"] is False
    if row.startswith("maml"):
        assert res.extra["first_order"] is (row == "maml_fo")
    if mcfg.get("method") == "distilled":
        from facekd.distill import load_student
        from facekd.finetune import load_finetuned

        distilled = load_student(res.extra["student_run"]).state_dict()
        tuned = load_finetuned(res.extra["finetune_run"])[0].student.state_dict()
        same = all(torch.equal(distilled[k], tuned[k]) for k in distilled if k.endswith("weight"))
        unfrozen = bool(mcfg["finetune"].get("unfreeze", False))
        assert unfrozen is ("_finetune" in row) and row.endswith("_probe") is not unfrozen  # what their names say
        assert same is not unfrozen  # the unfrozen rows train the backbone, the frozen ones never
        manifest = json.loads((Path(res.extra["student_run"]) / "manifest.json").read_text())
        assert (manifest["taps"] is not None) is (row == "distill_bce_maps_probe")  # multi-layer targets only where asked
        sources = [s["name"] for s in manifest["sources"]]
        assert ("labeled-mixup" in sources) is ("mixup" in row)  # blends of the train photos only where asked
        assert manifest["student"]["name"] == ("mobilefacenet" if row.endswith("mobilefacenet") else "resnet18")
    if row.endswith("mobilefacenet"):  # the edge row ships int8 copies, timed as deployed
        assert all(i["shipped"] for i in res.extra["int8"].values()) and set(res.extra["int8"]) == {
            "model.onnx", "embedder.onnx"}
        assert {"model.onnx", "model.int8.onnx", "embedder.int8.onnx"} <= set(res.extra["deployed"])
        assert (Path(res.extra["finetune_run"]) / "model.int8.onnx").is_file()


def test_hinton_kd_loss_known_values():
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert hinton_kd_loss(s, t, y, alpha=1.0, temperature=1.0) == pytest.approx(float(ce))
    # identical logits: the KL term vanishes at any temperature
    assert hinton_kd_loss(s, s, y, alpha=0.1, temperature=4.0) == pytest.approx(0.1 * float(ce))
    # alpha = 0, T = 2: T^2 * KL(p_t || p_s) by hand
    pt, ps = torch.softmax(t / 2, 1), torch.softmax(s / 2, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean()
    assert hinton_kd_loss(s, t, y, alpha=0.0, temperature=2.0) == pytest.approx(4 * float(kl), rel=1e-5)
    with pytest.raises(ValueError):
        hinton_kd_loss(s, t, y, alpha=1.5, temperature=1.0)


def test_distilled_rows_distill_a_student_per_seed(smoke_cfg, smoke_data, smoke_row):
    from facekd.pipeline import distill_name, student_run_path
    from facekd.runs import RunError, read_manifest

    mcfg = smoke_row("distill_bce_probe")
    root = smoke_cfg.paths.root
    res = run_method("distilled", mcfg, smoke_cfg.data, root, 1, data=smoke_data)
    split = smoke_data.split.id
    run = student_run_path(mcfg, root, 1, split)
    base = distill_name(mcfg, split_id=split)  # resnet18-bce-<hash of the smoke distill_overrides>-split<id>
    assert base.startswith("resnet18-bce-sface-") and base.endswith(f"-split{split[:8]}")
    assert run.name == f"{base}-seed1" and res.extra["student_run"] == str(run)
    # another split: another folder (its student may have seen this split's test photos)
    assert distill_name(mcfg, 1, "0" * 16) != run.name
    assert read_manifest(run, "distill", complete=True)["config"]["seed"] == 1
    # no overrides: the distill stage's default folder; other overrides: another folder
    assert distill_name({"student": "resnet18", "loss": "bce"}) == "resnet18-bce-sface"
    assert distill_name({"student": "resnet18", "loss": "bce", "teacher": {"name": "facenet_vggface2"}}) == "resnet18-bce-facenet_vggface2"
    assert distill_name({**mcfg, "distill_overrides": ["distill.train.epochs=1"]}) not in (base, "resnet18-bce-sface")
    assert student_run_path({**mcfg, "student_run": "/x/y"}, root, 3) == Path("/x/y")  # one given run for all seeds
    with pytest.raises(RunError, match=f"seed=2 distill.name={base}-seed2"):
        run_method("distilled", {**mcfg, "run_missing": False}, smoke_cfg.data, root, 2, data=smoke_data)


def test_every_former_row_name_resolves_to_a_registered_row(smoke_cfg, caplog):
    """The rows' former names still run (with a one-line notice), and each names a registered row."""
    from facekd.baselines.compare import resolve_rows

    assert set(ROW_ALIASES.values()) <= set(row_names())
    with caplog.at_level("WARNING"):
        rows = resolve_rows(list(ROW_ALIASES), smoke_cfg, smoke=True)
    assert [r for r, _, _ in rows] == list(ROW_ALIASES.values())
    assert "row 'feature_kd_bce_mixup_lr01' is now called 'distill_bce_mixup_finetune'" in caplog.text


def test_a_distilled_row_reports_the_scores_its_finetune_stage_computed(smoke_cfg, smoke_data, smoke_row, monkeypatch):
    """One evaluation path: the finetune stage scores test once (facekd.evaluation), and the row reports exactly
    those figures instead of scoring test a second time."""
    from facekd.baselines import base

    def again(*args, **kwargs):
        raise AssertionError("the row scored its finetune run's model a second time")

    monkeypatch.setattr(base, "evaluate_fitted", again)
    mcfg = smoke_row("distill_bce_probe")
    mcfg["finetune"] = {**mcfg["finetune"], "train": {"epochs": 3}}  # a row not cached yet (same distill run)
    res = run_method("distilled", mcfg, smoke_cfg.data, smoke_cfg.paths.root, 0, data=smoke_data)
    metrics = json.loads((Path(res.extra["finetune_run"]) / "metrics.json").read_text())
    assert res.test == metrics["test"] and res.val == metrics["val"]
