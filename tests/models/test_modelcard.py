import json
import tempfile

import pytest
import torch
from torch import nn

from facekd.model_cards import model_cards
from facekd.modelcard import markdown_table, model_card


def test_model_card_counts_a_known_network():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    before = torch.get_num_threads()
    card = model_card(net, 4, repeats=3, warmup=1)
    assert set(card) == {"params", "mflops", "cpu_ms_per_img", "cpu_share", "load1", "busy"}
    assert card["cpu_share"] is None and card["busy"] is False  # microseconds are too short to judge
    assert card["load1"] >= 0
    assert card["params"] == 3 * 8 * 9 + 128 * 10 + 10
    assert abs(card["mflops"] - 2 * (8 * 16 * 27 + 128 * 10) / 1e6) < 1e-9  # a multiply-add counts 2
    assert card["cpu_ms_per_img"] > 0 and torch.get_num_threads() == before


def test_model_cards_rows_and_table():
    rows = model_cards(teachers=[], students=["convnet9"], student_sizes=[64], out_dim=128, repeats=1, warmup=0)
    assert [(r["network"], r["input"], r["params"]) for r in rows] == [("convnet9", 64, 17_405_984 + 2048 * 128 + 128)]
    table = markdown_table(rows, [("network", "network", ""), ("mflops", "MFLOPs", ".0f")])
    assert table.splitlines()[0] == "| network | MFLOPs |" and "| convnet9 |" in table


def test_model_card_marks_a_measurement_that_lost_the_cpu(monkeypatch):
    """The timing thread ran for only part of the wall time: the figure is flagged as measured under load."""
    import time as real_time

    import facekd.modelcard as mc

    class HalfSpeedClock:  # the thread's CPU time advances at half the wall clock: another process had the core
        perf_counter = staticmethod(real_time.perf_counter)

        @staticmethod
        def thread_time():
            return real_time.perf_counter() / 2

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
    monkeypatch.setattr(mc, "time", HalfSpeedClock)
    assert model_card(net, 8, repeats=5, warmup=1)["busy"] is False  # microseconds: too short to judge
    monkeypatch.setattr(mc, "MIN_TIMED_S", 0.0)
    card = model_card(net, 8, repeats=5, warmup=1)
    assert card["busy"] is True and abs(card["cpu_share"] - 0.5) < 0.05


def _tiny_onnx(path, size=16):
    from facekd.data.preprocess import Preprocess
    from facekd.export import export_onnx

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.preprocess = Preprocess(size=size)
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(8 * size * size, 4))

        def forward(self, images):
            return self.net(self.preprocess(images))

    return export_onnx(Tiny().eval(), path, size)


def test_onnx_card_times_an_exported_file(tmp_path):
    from facekd.modelcard import onnx_card

    path = _tiny_onnx(tmp_path / "tiny.onnx")
    card = onnx_card(path, repeats=3, warmup=1)
    assert set(card) == {"onnx_ms_per_img", "cpu_share", "load1", "busy", "file_mb"}
    assert card["onnx_ms_per_img"] > 0 and card["file_mb"] == pytest.approx(path.stat().st_size / 1e6)
    assert card["cpu_share"] is None and card["busy"] is False  # microseconds are too short to judge


def test_session_card_feeds_a_float_input_and_marks_lost_cpu(monkeypatch):
    """A float 0-255 input (SFace's shipped file takes one) gets float pixels; a half-speed thread clock is busy."""
    import time as real_time

    from onnx import TensorProto, helper

    import facekd.modelcard as mc

    graph = helper.make_graph([helper.make_node("Relu", ["data"], ["out"])], "g",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = mc.onnx_session(model.SerializeToString())
    assert mc.session_card(session, repeats=2, warmup=0)["onnx_ms_per_img"] > 0

    class HalfSpeedClock:
        perf_counter = staticmethod(real_time.perf_counter)

        @staticmethod
        def thread_time():
            return real_time.perf_counter() / 2

    monkeypatch.setattr(mc, "time", HalfSpeedClock)
    monkeypatch.setattr(mc, "MIN_TIMED_S", 0.0)
    card = mc.session_card(session, repeats=5, warmup=1)
    assert card["busy"] is True and abs(card["cpu_share"] - 0.5) < 0.05


def test_deployed_card_times_fp32_and_int8_onnx():
    """One student at one size: exported, quantized on DCGAN faces, both files timed; the speed-up is against
    SFace's fp32 ONNX (exported just for the reference, as SFace has no row here)."""
    from facekd.model_cards import card_rows_markdown

    rows = model_cards(teachers=[], students=["resnet18"], student_sizes=[64], repeats=1, warmup=0, deployed=True,
                       onnx_repeats=2, onnx_warmup=1)
    [row] = rows
    assert row["onnx_fp32_ms"] > 0 and row["onnx_int8_ms"] > 0 and row["cpu_ms_per_img"] > 0
    assert 5 < row["int8_mb"] < 0.5 * 4 * row["params"] / 1e6  # int8 weights: well under the fp32 bytes
    assert row["x_faster"] > 0 and row["x_faster_fp32"] > 0
    assert abs(row["x_faster"] / row["x_faster_fp32"] - row["onnx_fp32_ms"] / row["onnx_int8_ms"]) < 1e-9
    table = card_rows_markdown(rows, deployed=True)
    header = table.splitlines()[0]
    assert "ONNX fp32 ms/img" in header and "ONNX int8 ms/img" in header and "int8 file MB" in header
    assert "int8 × faster than SFace fp32 ONNX" in header and "fp32 × faster than SFace fp32 ONNX" in header
    assert "CPU ms/img" in header
    assert f"{row['x_faster']:.1f}×" in table


def test_shipped_sface_row_and_table_marks():
    """SFace's own int8 block-quantized file is timed as shipped; unmeasured cells read "–", busy figures "*"."""
    from facekd.model_cards import card_rows_markdown
    from facekd.modelcard_onnx import Deployment

    base = {"role": "teacher", "input": 112, "params": 9_640_000, "mflops": 1148.0}
    with tempfile.TemporaryDirectory() as tmp:
        dep = Deployment(tmp, repeats=2, warmup=1)
        shipped = dep.shipped_sface(base)
        dep.reference_ms = 2 * shipped["onnx_int8_ms"]
        student = {**base, "network": "convnet9", "role": "student", "input": 64, "output": "128", "weights": "random",
                   "cpu_ms_per_img": 12.0, "cpu_share": 0.5, "busy": True, "onnx_fp32_ms": 3.0, "onnx_fp32_busy": False,
                   "onnx_int8_ms": 1.0, "onnx_int8_busy": True, "int8_mb": 4.4}
        rows = [shipped, student]
        dep.add_speedups(rows)
    assert shipped["onnx_int8_ms"] > 0 and shipped["int8_mb"] > 5 and shipped["x_faster"] == pytest.approx(2.0)
    table = card_rows_markdown(rows, deployed=True).splitlines()
    assert table[2].startswith("| sface (file as shipped) |") and "| – | – | – |" in table[2]
    assert "| 12.0 * | 0.50 | 3.00 | 1.00 * | 4.4 |" in table[3] and table[-1].startswith("\\* measured while")


def test_model_card_script_writes_json_and_markdown(tmp_path):
    from omegaconf import OmegaConf

    from facekd.model_cards import print_model_cards

    cfg = OmegaConf.create({"teachers": [], "students": ["mobilefacenet"], "student_sizes": [32], "out_dim": 8,
                            "teacher_weights": {}, "repeats": 1, "warmup": 0, "threads": 1, "deployed": False,
                            "out": str(tmp_path / "card")})
    table = print_model_cards(cfg)
    saved = json.loads((tmp_path / "card" / "model_card.json").read_text())
    assert [r["network"] for r in saved["rows"]] == ["mobilefacenet"] and saved["rows"][0]["input"] == 32
    assert (tmp_path / "card" / "model_card.md").read_text() == table + "\n"
