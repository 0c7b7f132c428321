"""The Eq. 6 rows (ce_skd, distill_bce_finetune_skd, ce_fitnet, ce_at) at smoke size on ORL and the real SFace teacher."""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facekd.baselines import run_method
from facekd.baselines.ce_taps import kd_settings
from facekd.distill.tap_loss import TapPairError
from facekd.models.taps import TapError


@pytest.mark.parametrize("row", ["ce_skd", "ce_fitnet", "ce_at", "distill_bce_finetune_skd"])
def test_ce_taps_rows_run_and_save_their_adapters(row, smoke_cfg, smoke_data, smoke_row, tmp_path):
    mcfg = smoke_row(row)
    res = run_method(mcfg["method"], mcfg, smoke_cfg.data, smoke_cfg.paths.root, 0, data=smoke_data)
    assert 0.0 <= res.accuracy <= 1.0 and res.val and res.cpu_ms_per_img > 0
    assert res.extra["kd_loss"] == {"ce_skd": "skd", "distill_bce_finetune_skd": "skd", "ce_fitnet": "fitnet", "ce_at": "at"}[row]
    assert res.extra["init"] == ("distilled" if row == "distill_bce_finetune_skd" else "random")
    n_pairs = 1 if row == "ce_fitnet" else 4
    assert len(res.extra["pairs"]) == n_pairs
    state = load_file(str(Path(res.run_dir) / "best.safetensors"))
    adapters = [k for k in state if k.startswith("kd.adapters.")]
    assert any(k.startswith("kd.norms.") for k in state)  # the target statistics travel with the run's state
    if row == "ce_at":
        assert not adapters  # attention maps are channel-free: no adapter to train
    else:
        assert adapters, "the adapters are saved with the run's state"
    student = {k[len("net."):] for k in state if k.startswith("net.")}
    assert res.extra["student_params"] == sum(state["net." + k].numel() for k in student if "running" not in k
                                              and "num_batches" not in k)
    assert res.extra["adapter_params"] > 0 or row == "ce_at"


def test_distilled_init_starts_from_the_distilled_backbone(smoke_cfg, smoke_data, smoke_row, tmp_path):
    from facekd.baselines.ce_taps import CETaps, _distilled_backbone
    from facekd.baselines.scratch import build_classifier
    from facekd.distill import load_student

    mcfg = smoke_row("distill_bce_finetune_skd")
    method = CETaps()
    method.prepare(smoke_data, mcfg, smoke_cfg.paths.root, 0)
    net, _ = build_classifier(mcfg["student"], smoke_data.num_classes)
    _distilled_backbone(net, method.student_run, torch.device("cpu"))
    distilled = load_student(method.student_run).state_dict()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in distilled.items() if not k.startswith("proj."))


@pytest.mark.parametrize("kd,match", [
    ({"lambda": -1}, "kd.lambda must be >= 0"),
    ({"beta": 1.0}, "kd.beta must be > 1"),
    ({"lipschitz": -0.5}, "kd.lipschitz must be >= 0"),
    ({"init": "pretrained"}, "kd.init must be 'random' or 'distilled'"),
    ({"teacher_mode": "live"}, "kd.teacher_mode must be 'cached' or 'online'"),
])
def test_bad_kd_settings_name_the_key(kd, match):
    with pytest.raises(TapPairError, match=match):
        kd_settings({"kd": kd})


def test_bad_taps_and_pairs_name_the_key(smoke_cfg, smoke_data, smoke_row):
    base = smoke_row("ce_skd")
    with pytest.raises(TapError, match="kd.student_taps='backbone.layer7'.*backbone.layer1"):
        run_method("ce_taps", {**base, "kd": {**base["kd"], "pairs": [
            {"student": "backbone.layer7", "teacher": "net.bn1"}]}}, smoke_cfg.data, smoke_cfg.paths.root, 0,
            data=smoke_data)
    with pytest.raises(TapPairError, match="pair maps .* with maps and vectors with vectors"):
        run_method("ce_taps", {**base, "kd": {**base["kd"], "pairs": [
            {"student": "backbone.layer4", "teacher": "net.fc1"}]}}, smoke_cfg.data, smoke_cfg.paths.root, 0,
            data=smoke_data)
    with pytest.raises(ValueError, match="above kd.cache_max_gb=1e-06"):
        # 3 views: a cache not built yet (an existing cache is reused whatever its size)
        run_method("ce_taps", {**base, "kd": {**base["kd"], "views": 3, "cache_max_gb": 1e-6}}, smoke_cfg.data,
                   smoke_cfg.paths.root, 0, data=smoke_data)


def test_every_teacher_row_follows_the_comparison_teacher(compose_smoke, tmp_path):
    """The teacher is injected in one place: every row whose plug-in uses a teacher gets the comparison's."""
    from facekd.baselines import METHODS
    from facekd.baselines.compare import resolve_rows
    from facekd.pipeline import distill_name

    cfg = compose_smoke(tmp_path, "teacher=facenet_vggface2")
    rows = resolve_rows("all", cfg, smoke=True)
    uses = [(row, rcfg) for row, plugin, rcfg in rows if METHODS.get(plugin).uses_teacher]
    assert len(uses) >= 17 and {row for row, _ in uses} >= {"teacher_probe", "hinton_kd", "distill_bce_probe", "ce_skd"}
    assert all(rcfg["teacher"]["name"] == "facenet_vggface2" for _, rcfg in uses)
    assert all("teacher" not in rcfg for row, plugin, rcfg in rows if not METHODS.get(plugin).uses_teacher)
    # so the distilled rows read (or make) a distill run of that teacher, never the SFace one
    assert "facenet_vggface2" in distill_name(dict(uses)["distill_bce_probe"])


def test_online_mode_runs_the_teacher_on_fresh_views(smoke_cfg, smoke_data, smoke_row, monkeypatch):
    """Online: the student sees the scratch row's freshly augmented views (plus unlabeled synthetic faces) and
    the teacher scores every batch; the CE term never sees the unlabeled faces' placeholder label."""
    from facekd.baselines.ce_taps import UNLABELED, CETapsTask

    seen = []
    original = CETapsTask.teacher_targets

    def spy(self, images):
        seen.append(len(images))
        return original(self, images)

    monkeypatch.setattr(CETapsTask, "teacher_targets", spy)
    base = smoke_row("ce_skd")
    mcfg = {**base, "kd": {**base["kd"], "teacher_mode": "online", "synthetic": {"count": 8}}}
    res = run_method("ce_taps", mcfg, smoke_cfg.data, smoke_cfg.paths.root, 0, data=smoke_data)
    assert res.extra["teacher_mode"] == "online" and res.extra["synthetic"] == 8 and res.extra["views"] is None
    assert seen == [8, 8], "the teacher scores each of the 2 training batches of 8"
    assert UNLABELED == -1
