"""The data config as a stage sees it: every key checked before any file is read, damaged files out of the split."""
import json

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from facekd.data.faces import FaceDataError
from facekd.data.labeled import check_data_config, prepare_labeled
from facekd.errors import ConfigError, InputFileError


def _folder(root, people=3, per_person=4):
    rng = np.random.default_rng(0)
    for k in range(people):
        (root / f"p{k}").mkdir(parents=True)
        for i in range(per_person):
            Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)).save(root / f"p{k}" / f"{i}.png")
    return root


def _cfg(folder, **kw):
    return {"name": "faces", "root": str(folder), "per_class": 1, "val": 1, "test": 1, "split_seed": 0,
            "too_few": "error", "on_corrupt": "error", "image_size": 16, "framing": "pad", "align": False,
            "augment": None, **kw}


def _truncated_jpeg(path):
    tmp = path.with_name("whole.tmp.jpg")
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp)
    data = tmp.read_bytes()
    tmp.unlink()
    path.write_bytes(data[: len(data) - 40])
    return path


def test_truncated_jpeg_skipped_before_the_manifest_is_written(tmp_path, caplog):
    root = _folder(tmp_path / "faces")
    _truncated_jpeg(root / "p1" / "cut.jpg")
    with pytest.raises(FaceDataError, match="cut.jpg"):
        prepare_labeled(_cfg(root), tmp_path / "runs")
    assert not (tmp_path / "runs" / "splits").exists()  # refused before any manifest
    with caplog.at_level("WARNING", logger="facekd.data.faces"):
        data = prepare_labeled(_cfg(root, on_corrupt="skip"), tmp_path / "runs")
    assert data.faces.skipped == ["p1/cut.jpg"]
    assert any("cut.jpg" in r.getMessage() for r in caplog.records)
    text = data.split_path.read_text()
    assert "cut.jpg" not in text
    manifest = json.loads(text)
    listed = [p for part in ("train", "val", "test") for p, _ in manifest[part]]
    assert len(listed) == 9 and all(p.endswith(".png") for p in listed)


@pytest.mark.parametrize("key,value,message", [
    ("per_class", True, "data.per_class must be an integer >= 1 (training images per identity), got true "
                        "(a boolean); set it like data.per_class=1"),
    ("per_class", "5", "data.per_class must be an integer >= 1 (training images per identity), got '5' "
                       "(a string); set it like data.per_class=1"),
    ("val", 0.5, "data.val must be an integer >= 0 (validation images per identity), got 0.5; "
                 "set it like data.val=0"),
    ("test", True, "data.test must be an integer >= 1 or null (test images per identity; null = all the rest), "
                   "got true (a boolean); set it like data.test=1"),
    ("split_seed", False, "data.split_seed must be an integer >= 0 (seed of the split draw), got false "
                          "(a boolean); set it like data.split_seed=0"),
    ("image_size", True, "data.image_size must be an integer >= 1 (side of the square images, in pixels), got "
                         "true (a boolean); set it like data.image_size=1"),
    ("image_size", 112.0, "data.image_size must be an integer >= 1 (side of the square images, in pixels), got "
                          "112.0 (a float); set it like data.image_size=1"),
    ("align", "yes", "data.align must be true or false (MTCNN alignment of raw photos), got 'yes' (a string); "
                     "set it like data.align=true"),
    ("align", 1, "data.align must be true or false (MTCNN alignment of raw photos), got 1; "
                 "set it like data.align=true"),
    ("framing", "stretch", "data.framing must be one of pad, squash, crop (how non-square photos become square), "
                           "got 'stretch' (a string); set it like data.framing=pad"),
    ("too_few", True, "data.too_few must be one of error, drop (what to do with identities that have too few "
                      "images), got true (a boolean); set it like data.too_few=error"),
    ("on_corrupt", "ignore", "data.on_corrupt must be one of error, skip (what to do with unreadable image files), "
                             "got 'ignore' (a string); set it like data.on_corrupt=error"),
    ("root", 5, "data.root must be a folder path or null (the embedded ORL faces), got 5; "
                "set it like data.root=/path/to/faces"),
])
def test_bad_values_are_refused_naming_the_key(tmp_path, key, value, message):
    with pytest.raises(ConfigError) as e:
        prepare_labeled(_cfg(tmp_path / "never-read", **{key: value}), tmp_path / "runs")
    assert str(e.value) == message
    assert not (tmp_path / "runs").exists()


def test_unset_and_missing_keys(tmp_path):
    cfg = OmegaConf.create(_cfg(tmp_path, root="???"))
    with pytest.raises(ConfigError) as e:
        check_data_config(cfg)
    assert str(e.value) == ("data.root is not set: give it a folder holding one sub-folder of images per identity, "
                            "e.g. data.root=/path/to/faces")
    cfg = _cfg(tmp_path)
    del cfg["per_class"]
    with pytest.raises(ConfigError, match="^data.per_class is not set"):
        check_data_config(cfg)


def test_real_configs_pass(tmp_path):
    from pathlib import Path

    for name in ("orl", "folder", "pins"):
        raw = OmegaConf.load(Path(__file__).parents[2] / "configs" / "data" / f"{name}.yaml")
        raw.pop("defaults", None)
        base = OmegaConf.load(Path(__file__).parents[2] / "configs" / "data" / "orl.yaml")
        cfg = OmegaConf.merge(base, raw)
        cfg.root = str(tmp_path) if cfg.name != "orl" else None
        check_data_config(cfg)


def test_a_file_as_data_root(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "photo.jpg")
    with pytest.raises(InputFileError) as e:
        prepare_labeled(_cfg(tmp_path / "photo.jpg"), tmp_path / "runs")
    assert str(e.value) == (f"data.root={tmp_path / 'photo.jpg'} is a file, not a folder. Set data.root to the "
                            f"folder that holds one sub-folder of images per identity (DIR/<person>/<image>.jpg), "
                            f"not to a single image or an archive (unpack an archive first)")
    with pytest.raises(InputFileError, match="is a file, not a folder"):
        prepare_labeled(_cfg(tmp_path / "photo.jpg", align=True), tmp_path / "runs")
