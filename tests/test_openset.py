"""Open-set rules by hand: the FAR of a threshold is a count."""
import numpy as np
import pytest

from facekd.errors import ArtifactError, ConfigError
from facekd.openset import (calibrate_threshold, false_accept_rate, open_set_metrics, open_set_roc, open_set_score,
                            read_open_set, write_open_set)


def test_score_is_the_largest_softmax():
    pred, score = open_set_score(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, np.log(3.0)]]))
    assert pred.tolist() == [0, 0, 1]
    assert score == pytest.approx([0.5, np.e ** 2 / (np.e ** 2 + 1), 0.75])


def test_calibration_counts_false_accepts():
    u = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])  # 10 unknown faces
    t = calibrate_threshold(u, 0.2)  # at most 2 of 10 may pass: above the 3rd highest
    assert 0.7 < t <= np.nextafter(0.7, 1) and false_accept_rate(u, t) == 0.2
    t0 = calibrate_threshold(u, 0.05)  # 0.05 x 10 < 1: no unknown may pass
    assert t0 > 0.9 and false_accept_rate(u, t0) == 0.0
    tied = np.array([0.9, 0.7, 0.7, 0.7, 0.1])
    t = calibrate_threshold(tied, 0.4)  # 2 may pass, but three tie at 0.7: only 0.9 passes
    assert false_accept_rate(tied, t) == 0.2


def test_calibration_refuses_bad_far_and_no_unknowns():
    with pytest.raises(ConfigError, match=r"finetune.open_set.far must be a number in \[0, 1\)"):
        calibrate_threshold(np.array([0.5]), 1.5)
    with pytest.raises(ConfigError, match="finetune.open_set.far"):
        calibrate_threshold(np.array([0.5]), True)
    with pytest.raises(ConfigError, match="data.unknown_identities"):
        calibrate_threshold(np.array([]), 0.01)


def test_metrics_and_roc_by_hand():
    known = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))  # scores 0.9 0.8 0.6 0.7
    labels = np.array([0, 1, 1, 1])  # the third is named wrong
    unknown = np.log(np.array([[0.65, 0.35], [0.5, 0.5]]))  # scores 0.65 0.5
    m = open_set_metrics(known, labels, unknown, 0.66)
    assert m["dir"] == 0.75 and m["far"] == 0.0 and m["closed_accuracy"] == 0.75
    m = open_set_metrics(known, labels, unknown, 0.5)
    assert m["dir"] == 0.75 and m["far"] == 1.0
    far, dir_, thr = open_set_roc(known, labels, unknown)
    assert far[0] == 0 and dir_[0] == 0 and thr[0] == np.inf
    assert far[-1] == 1.0 and dir_[-1] == 0.75 and np.all(np.diff(far) >= 0) and np.all(np.diff(dir_) >= 0)


def test_rule_round_trip_and_damage(tmp_path):
    assert read_open_set(tmp_path) is None
    write_open_set(tmp_path, 0.73, 0.01, 50)
    assert read_open_set(tmp_path)["threshold"] == 0.73
    (tmp_path / "open_set.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="open_set.json is damaged"):
        read_open_set(tmp_path)
