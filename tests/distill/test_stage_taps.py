"""The label-free distill stage with multi-layer targets (distill.taps) at smoke size, real teacher and faces."""
import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from facekd.distill import load_student
from facekd.distill.stage import distill
from facekd.distill.tap_loss import TapPairError
from facekd.models.taps import TapError


def test_taps_run_saves_adapters_apart_from_the_student(make_cfg, tmp_path):
    run = distill(make_cfg(tmp_path, "student.input_size=32", "distill.taps.weight=1.0", "distill.name=taps"))
    m = json.loads((run / "manifest.json").read_text())
    assert m["complete"] and m["uses_labels"] is False
    assert m["taps"]["pairs"] == ["backbone.layer1->net.body.conv_4", "backbone.layer2->net.body.conv_6",
                                  "backbone.layer3->net.body.conv_12", "backbone.layer4->net.bn1"]
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for k in ("taps", "feature_loss", "kd/skd/0", "kd/skd/3", "real_val_tap0_r2", "real_test_tap3_r2", "holdout_tap2_r2"):
        assert k in rows[0], k
    assert all(float(r["taps"]) > 0 for r in rows)
    adapters = load_file(str(run / "adapters.safetensors"))
    assert any(k.startswith("adapters.0.") for k in adapters) and any(k.startswith("norms.3.") for k in adapters)
    student = load_file(str(run / "student.safetensors"))
    assert not any("adapter" in k or k.startswith("norms.") for k in student)
    loaded = load_student(run)  # the student alone, as finetune reads it
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in student.items() if "num_batches" not in k)
    assert all(not m._forward_hooks for m in loaded.modules())


@pytest.mark.parametrize("override,error,match", [
    ("distill.taps.beta=1.0", TapPairError, "distill.taps.beta must be > 1"),
    ("distill.taps.weight=-1", TapPairError, "distill.taps.weight must be >= 0"),
])
def test_bad_tap_settings_are_refused_before_work(make_cfg, tmp_path, override, error, match):
    with pytest.raises(error, match=match):
        distill(make_cfg(tmp_path, override))


def test_online_tap_targets_equal_the_cached_ones(sface, tmp_path):
    """Online mode hooks the teacher's forward that scores the batch; its pooled maps are the cached targets."""
    from facekd.distill.stage_taps import DEFAULTS, TapTerm, build_tap_loss
    from facekd.distill.tap_cache import teacher_tap_targets
    from facekd.models import build_student

    student = build_student({"name": "resnet18", "input_size": 32}, sface.feature_dim)
    loss = build_tap_loss(DEFAULTS, student, sface)
    term = TapTerm(loss, student, 1.0, teacher=sface)
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    with torch.no_grad():
        sface.features(images)
    online = term.teacher_targets()
    cached = teacher_tap_targets(sface, images, [p.teacher for p in loss.pairs], loss.grids, tmp_path, progress=False)
    assert [tuple(o.shape) for o in online] == [(3, *c.shape[1:]) for c in cached]
    for o, c in zip(online, cached):  # the cache stores fp16
        torch.testing.assert_close(o, torch.from_numpy(np.asarray(c, dtype=np.float32)), rtol=2e-3, atol=2e-3)
    term.remove()
    assert all(not m._forward_hooks for m in sface.modules())


def test_taps_need_per_view_targets_and_real_paths(make_cfg, tmp_path):
    with pytest.raises(TapPairError, match="targets must be 'view'"):
        distill(make_cfg(tmp_path, "distill.taps.weight=1.0", "distill.sources.synthetic.targets=image_mean"))
    with pytest.raises(TapError, match="distill.taps.student='backbone.layer9'"):
        distill(make_cfg(tmp_path, "student.input_size=32", "distill.taps.weight=1.0",
                         "distill.taps.student=[backbone.layer9]", "distill.taps.teacher=[net.bn1]"))


def test_default_tap_sets_are_stages_and_the_old_name_skd_still_works(sface, caplog):
    """``distill.taps.student/teacher`` default to ``stages``; an old config's ``skd`` builds the same pairs."""
    import logging

    from facekd.distill.stage_taps import build_tap_loss, tap_settings
    from facekd.models import build_student

    t = tap_settings({})
    assert (t["student"], t["teacher"], t["loss"]) == ("stages", "stages", "skd")
    student = build_student({"name": "resnet18", "input_size": 32}, sface.feature_dim)
    with caplog.at_level(logging.WARNING, logger="facekd.models.taps"):
        old = build_tap_loss(tap_settings({"taps": {"student": "skd", "teacher": "skd"}}), student, sface)
    assert [r.getMessage() for r in caplog.records] == ["tap set 'skd' is now called 'stages'"] * 2
    assert old.pairs == build_tap_loss(t, student, sface).pairs
    with pytest.raises(TapError, match="distill.taps.teacher='deep'.*stages, top, embedding"):
        build_tap_loss(tap_settings({"taps": {"teacher": "deep"}}), student, sface)
