"""The speed/accuracy points: deployed ONNX times from a model card beside a comparison's accuracies."""
import json

import pytest

from facekd.errors import ConfigError
from facekd.speed_accuracy import card_time, main, row_points

CARD = {"rows": [
    {"network": "sface", "input": 112, "onnx_fp32_ms": 16.0, "onnx_int8_ms": 9.0},
    {"network": "mobilefacenet", "input": 64, "onnx_fp32_ms": 1.6, "onnx_int8_ms": 0.8},
    {"network": "mobilefacenet", "input": 112, "onnx_fp32_ms": 4.4, "onnx_int8_ms": None}]}
RESULTS = {"rows": [
    {"method": "teacher_probe", "seeds": 3, "accuracy_mean": 0.968, "accuracy_std": 0.003},
    {"method": "edge", "seeds": 3, "accuracy_mean": 0.95, "accuracy_std": 0.01,
     "int8": {"seeds": 3, "test_accuracy_int8_mean": 0.94, "test_accuracy_int8_std": 0.02,
              "test_accuracy_fp32_mean": 0.951, "test_accuracy_fp32_std": 0.01}}]}


def test_points_take_the_card_time_and_the_row_accuracy():
    assert card_time(CARD, "mobilefacenet", 64, "int8") == 0.8
    with pytest.raises(ConfigError, match="no int8 ONNX time of mobilefacenet at 112 px"):
        card_time(CARD, "mobilefacenet", 112, "int8")
    fp32, int8 = row_points(CARD, RESULTS, "edge", "mobilefacenet", 64)
    assert (fp32["ms"], fp32["accuracy"], fp32["accuracy_std"]) == (1.6, 95.0, 1.0)
    assert (int8["ms"], int8["accuracy"], int8["precision"]) == (0.8, 94.0, "int8") and "95.1 ± 1.0" in int8["source"]
    [teacher] = row_points(CARD, RESULTS, "teacher_probe", "sface", 112)
    assert teacher["ms"] == 16.0 and teacher["precision"] == "fp32"
    with pytest.raises(ConfigError, match="row 'scratch' is not in that results.json"):
        row_points(CARD, RESULTS, "scratch", "resnet18", 64)


def test_main_writes_chart_and_json_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    card, results = tmp_path / "card.json", tmp_path / "results.json"
    card.write_text(json.dumps(CARD))
    results.write_text(json.dumps(RESULTS))
    main([str(card), "--results", str(results), "--row", "teacher_probe=sface@112", "--row", "edge=mobilefacenet@64",
          "--cite", "big=mobilefacenet@112:96.0:0.5:elsewhere", "--out", str(tmp_path / "out")])
    saved = json.loads((tmp_path / "out" / "speed_accuracy.json").read_text())["points"]
    assert {p["label"]: p["pareto"] for p in saved} == {
        "teacher_probe (sface@112)": True, "edge (mobilefacenet@64)": True, "edge (mobilefacenet@64) int8": True,
        "big": True}
    assert (tmp_path / "out" / "speed_accuracy.png").stat().st_size > 0
    assert "| edge (mobilefacenet@64) int8 | 0.80 | 94.0 ± 2.0 | yes |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="facekd: error: .*name a network as NETWORK@SIZE"):
        main([str(card), "--results", str(results), "--row", "edge=mobilefacenet", "--out", str(tmp_path / "o")])
