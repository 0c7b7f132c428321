import torch
from torch import nn

from facekd.modelcard import markdown_table, model_card, model_cards


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
