"""Report: the markdown table formatter, the run-folder readers and the figures."""
import numpy as np
import pytest
from PIL import Image

from facekd.plots import confusion_matrix, pareto_front, plot_speed_accuracy
from facekd.report import (RESULT_COLUMNS, RESULT_FORMATS, RESULT_HEADERS, format_table, load_test_features,
                           percent, plot_confusion, plot_curves, plot_run_curves, plot_tsne, result_row)
from facekd.runs import RunError, write_json, write_manifest


def test_format_table_exact_markdown():
    rows = [{"method": "distilled", "accuracy": 0.8642, "params": 11247296, "ms": 3.14159},
            {"method": "a|b", "accuracy": (0.9, 0.0123), "params": None}]
    table = format_table(rows, ["method", "accuracy", "params", "ms"], headers={"accuracy": "accuracy %"},
                         formats={"accuracy": percent})
    assert table.splitlines() == [
        "| method | accuracy % | params | ms |",
        "|---|---|---|---|",
        "| distilled | 86.4 | 11,247,296 | 3.142 |",
        "| a\\|b | 90.0 ± 1.2 | – | – |",
    ]
    with pytest.raises(ValueError):
        format_table(rows, [])


def test_result_table_of_finished_runs(tmp_path):
    run = tmp_path / "finetune" / "orl-x"
    test = {"accuracy": 0.75, "f1_macro": 0.7778, "precision_macro": 0.8333}
    write_json(run / "metrics.json", {"method": "distilled student + linear head", "test": test,
                                      "val": {"accuracy": 1.0}, "params": 11247296, "mflops": 148.9,
                                      "cpu_ms_per_img": 4.26, "best_epoch": 7,
                                      "history": [{"epoch": e, "val_f1_macro": e / 10, "val_accuracy": e / 9}
                                                  for e in range(1, 10)]})
    write_manifest(run, "finetune", {}, complete=False)
    with pytest.raises(RunError, match="incomplete"):
        result_row(run)
    write_manifest(run, "finetune", {}, complete=True)
    row = result_row(run, method="distilled ResNet-18")
    assert row["method"] == "distilled ResNet-18" and row["val_accuracy"] == 1.0 and row["best_epoch"] == 7
    table = format_table([row], RESULT_COLUMNS, headers=RESULT_HEADERS, formats=RESULT_FORMATS)
    assert table.splitlines()[0] == "| method | accuracy % | macro-F1 % | params (M) | MFLOPs | CPU ms/img |"
    assert table.splitlines()[2] == "| distilled ResNet-18 | 75.0 | 77.8 | 11.25 | 149 | 4.3 |"
    png = plot_run_curves(run, tmp_path / "curve.png")
    with Image.open(png) as im:
        assert im.format == "PNG"
    with pytest.raises(RunError, match="test_features"):
        load_test_features(run)
    np.savez(run / "test_features.npz", features=np.ones((3, 2)), labels=np.arange(3))
    feats, labels = load_test_features(run)
    assert feats.shape == (3, 2) and labels.tolist() == [0, 1, 2]


def test_confusion_matrix_counts_by_hand():
    cm = confusion_matrix([0, 1, 2, 2], [0, 1, 1, 2], 3)
    assert cm.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="out of range"):
        confusion_matrix([0, 3], [0, 0], 3)


def test_figures_are_written(tmp_path):
    hist = [{"epoch": e, "val_f1_macro": 1 - 1 / e, "val_accuracy": 1 - 0.5 / e} for e in range(1, 21)]
    curve = plot_curves(hist, ["val_f1_macro", "val_accuracy"], tmp_path / "c.png", best=12, title="t")
    with pytest.raises(KeyError, match="val_f1_micro"):
        plot_curves(hist, ["val_f1_micro"], tmp_path / "d.png")
    conf = plot_confusion([0, 1, 2, 2], [0, 1, 1, 2], ["ann", "bob", "cy"], tmp_path / "cm.png")
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    a = rng.normal(size=(40, 16)) + 3 * labels[:, None]  # well separated
    b = rng.normal(size=(40, 8))
    tsne = plot_tsne({"distilled": (a, labels), "scratch": (b, labels)}, tmp_path / "tsne.png")
    sizes = {}
    for p in (curve, conf, tsne):
        with Image.open(p) as im:
            assert im.format == "PNG"
            sizes[p.name] = im.size
    assert sizes["tsne.png"][0] > 1.7 * sizes["tsne.png"][1]  # two panels side by side
    with pytest.raises(ValueError, match="labels"):
        plot_tsne({"x": (a, labels[:5])}, tmp_path / "bad.png")


def test_pareto_front_and_speed_accuracy_chart(tmp_path):
    pts = [{"label": "teacher", "ms": 28.0, "accuracy": 96.8, "accuracy_std": 0.3},
           {"label": "resnet18", "ms": 5.4, "accuracy": 96.7, "accuracy_std": 0.2},
           {"label": "slow and worse", "ms": 12.0, "accuracy": 90.0},
           {"label": "edge", "ms": 1.9, "accuracy": 95.0, "accuracy_std": 0.5},
           {"label": "edge int8", "ms": 1.1, "accuracy": 94.8, "precision": "int8"},
           {"label": "tie, slower", "ms": 2.5, "accuracy": 95.0}]
    assert [p["label"] for p in pareto_front(pts)] == ["edge int8", "edge", "resnet18", "teacher"]
    path = plot_speed_accuracy(pts, tmp_path / "speed.png", title="t")
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]
