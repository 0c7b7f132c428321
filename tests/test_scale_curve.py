"""The scale curve: exact faces per point, bad settings, and two stream-mode points end to end at smoke size."""
import csv
import json
from pathlib import Path

import pytest

from facekd.cli import compose_config
from facekd.distill.batches import mixture_counts
from facekd.errors import ConfigError
from facekd.scale_curve import curve_points, point_overrides, samples_for, scale_curve


@pytest.mark.parametrize("per_epoch,weights", [(333, [1.0, 1.0]), (1000, [1.0]), (7, [2.0, 1.0]), (10, [1.0, 3.0, 0.5])])
def test_the_epoch_length_gives_the_synthetic_source_exactly_its_faces(per_epoch, weights):
    total = samples_for(per_epoch, weights)
    assert mixture_counts(total, weights)[0] == per_epoch
    assert mixture_counts(total - 1, weights)[0] < per_epoch  # the smallest such length
    batched = samples_for(per_epoch, weights, batch_size=64)  # whole batches: at least as many faces, fewest batches
    assert batched % 64 == 0 and batched - 64 < total <= batched and mixture_counts(batched, weights)[0] >= per_epoch


def test_point_overrides_make_a_stream_run_that_keeps_its_last_epoch():
    overrides, per_epoch = point_overrides(2000, 6, [1.0, 1.0])
    assert per_epoch == 334  # whole epochs: 6 x 334 = 2004 faces
    assert "distill.sources.synthetic.mode=stream" in overrides and "distill.teacher_mode=online" in overrides
    assert "distill.samples_per_epoch=667" in overrides and "distill.train.epochs=6" in overrides
    overrides, per_epoch = point_overrides(2000, 6, [1.0, 1.0], batch_size=64)  # 704 = 11 batches: 352 faces
    assert per_epoch == 352 and "distill.samples_per_epoch=704" in overrides
    assert "distill.sources.synthetic.stream.faces_per_epoch=352" in overrides
    assert "distill.train.monitor=epoch" in overrides and "distill.train.mode=max" in overrides


@pytest.mark.parametrize("curve,match", [
    ({"faces": []}, "curve.faces must be a non-empty list"),
    ({"faces": [100, 0]}, "curve.faces"),
    ({"faces": [100], "epochs": 0}, "curve.epochs"),
    ({"faces": [3], "epochs": 6}, "fewer faces than curve.epochs"),
])
def test_bad_curve_settings_are_refused(curve, match):
    with pytest.raises(ConfigError, match=match):
        curve_points(curve)


def _cfg(root, *overrides):
    return compose_config("scale_curve", ["profile=smoke", "data.test=2", f"paths.root={root}", "progress=false",
                                          "device=cpu", *overrides])


def test_an_unknown_row_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="curve.row='scratch' is not a distilled comparison row"):
        scale_curve(_cfg(tmp_path, "curve.row=scratch", "curve.faces=[8]"))


def test_two_points_end_to_end(tmp_path, capsys):
    quick = ["baselines.distill_bce_probe.finetune.export_onnx=false", "baselines.distill_bce_probe.finetune.plots=false"]
    points = scale_curve(_cfg(tmp_path, "curve.faces=[16,8]", "curve.epochs=2", "curve.references={scratch: 0.5}",
                              *quick))
    assert [p["faces"] for p in points] == [8, 16] and [p["faces_per_epoch"] for p in points] == [4, 8]
    assert [p["faces_seen"] for p in points] == [8, 16]
    for p in points:
        assert 0 <= p["accuracy_mean"] <= 1 and p["accuracy_std"] == 0 and "real_test_r2_mean" in p
    out = tmp_path / "scale_curve"
    assert (out / "curve.png").stat().st_size > 0
    rows = list(csv.DictReader(open(out / "curve.csv")))
    assert [int(r["faces"]) for r in rows] == [8, 16]
    runs = sorted(Path(tmp_path, "distill").glob("resnet18-bce-sface-*"))
    assert len(runs) == 2
    for run in runs:  # each point's distill run streamed its faces and kept its last epoch
        m = json.loads((run / "manifest.json").read_text())
        assert m["config"]["distill"]["sources"]["synthetic"]["mode"] == "stream"
        assert m["best"]["epoch"] == 2 and m["samples_per_epoch"] in (8, 16)
    assert "| 8 | 4 |" in capsys.readouterr().out
    again = scale_curve(_cfg(tmp_path, "curve.faces=[8,16]", "curve.epochs=2", *quick))  # cached: nothing retrained
    assert [p["accuracy_mean"] for p in again] == [p["accuracy_mean"] for p in points]
