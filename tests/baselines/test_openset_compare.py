"""The comparison on the open-set protocol: every row gets DIR@FAR and the observed test FAR; closed-set rows
keep their tables and cache keys."""
import csv

import pytest

from facekd.baselines.base import method_hash
from facekd.baselines.compare import comparison_markdown, compare_baselines, write_csv
from facekd.errors import ConfigError


def test_pixels_row_on_the_open_set_variant_has_the_open_set_columns(tmp_path, compose_smoke):
    cfg = compose_smoke(tmp_path, "data=orl_openset", "data.test=2", "methods=[pixels]", "open_set_far=0.1")
    (row,) = compare_baselines(cfg)
    assert row["open_set"] and row["far_target"] == 0.1
    assert 0 <= row["dir_mean"] <= row["accuracy_mean"] and 0 <= row["test_far_mean"] <= 1
    assert row["calibration_far_mean"] <= 0.1  # reached on the calibration unknowns, never above the target
    out = tmp_path / "compare_baselines"
    md = (out / "comparison.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| method |"))
    assert "| F1 (macro) % | F1 (weighted) % | DIR@FAR % | test FAR % | params (M) |" in header
    assert "calibrated at FAR 10% on the 50 images of 5 calibration unknown identities" in md
    with open(out / "comparison.csv") as f:
        (table,) = list(csv.DictReader(f))
    assert float(table["dir_mean"]) == pytest.approx(row["dir_mean"]) and "test_far_std" in table


def test_closed_set_table_unchanged_and_cache_key_follows_the_protocol(tmp_path):
    row = {"method": "pixels", "student": "pixels", "seeds": 1, "accuracy_mean": 0.5, "accuracy_std": 0.0,
           "params": 0, "mflops": 0.0, "cpu_ms_per_img": 1.0, "train_seconds": 0.0}
    assert "DIR@FAR" not in comparison_markdown([row])
    with open(write_csv([row], tmp_path / "c.csv")) as f:
        assert "dir_mean" not in f.readline()
    data = {"name": "orl", "per_class": 2, "val": 1, "test": None}
    key = method_hash("pixels", {"size": 32}, data, "split", 0, None, "content")
    assert method_hash("pixels", {"size": 32}, data, "split", 0, None, "content", open_set_far=0.05) != key
    assert method_hash("pixels", {"size": 32}, {**data, "unknown_identities": 5}, "split", 0, None, "content") != key


def test_bad_open_set_far_is_refused_naming_the_key(tmp_path, compose_smoke):
    with pytest.raises(ConfigError, match=r"^open_set_far must be a number in \[0, 1\)"):
        compare_baselines(compose_smoke(tmp_path, "methods=[pixels]", "open_set_far=2"))
    assert not (tmp_path / "splits").exists()  # refused before any file was written
