"""Sources from config: the labeled set's TRAIN images only (val/test never train), holdout, presets."""
import dataclasses

import numpy as np
import pytest
import yaml

from facekd.data.labeled import prepare_labeled
from facekd.data.synthetic import SyntheticFaces
from facekd.distill.sources import (LeakageError, active_source_weights, check_monitor_trains, check_no_leak,
                                    evenly_spaced, folder_source, labeled_mixup_source, labeled_train_source,
                                    mixup_pairs, real_eval_sources, resolve_augment, synthetic_mixup_source,
                                    synthetic_sources)
from facekd.errors import ConfigError
from tests.distill.conftest import CONFIGS

PRESETS = {"none": [], "flip": [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}]}


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    cfg = yaml.safe_load((CONFIGS / "data" / "orl.yaml").read_text())
    return prepare_labeled(cfg, tmp_path_factory.mktemp("labeled"))


def test_labeled_source_is_train_only_and_eval_is_val_test(labeled):
    src = labeled_train_source(labeled, {"views": 2, "augment": "flip", "weight": 0.5}, PRESETS, seed=0)
    root = labeled.faces.root.resolve()
    assert src.files == [str(root / p) for p, _ in labeled.split.train] and src.size == 80 and len(src) == 160
    assert src.read(np.array([0, 1])).shape == (2, 112, 112, 3)
    evals = real_eval_sources(labeled, max_images=5)
    assert {k: v.size for k, v in evals.items()} == {"val": 5, "test": 5}
    held = {str(root / p) for part in ("val", "test") for p, _ in labeled.split.part(part)}
    assert set(evals["val"].files + evals["test"].files) <= held and not held & set(src.files)
    check_no_leak([src], labeled)


def test_leakage_guard_refuses_val_and_test_images(labeled, tmp_path):
    tampered = dataclasses.replace(labeled, split=dataclasses.replace(
        labeled.split, train=labeled.split.train + labeled.split.val[:1]))
    with pytest.raises(LeakageError, match="val/test image"):
        labeled_train_source(tampered, {"views": 1}, PRESETS, seed=0)
    # a folder of "unlabeled" photos that is really the labeled set itself is refused too
    src = folder_source({"root": str(labeled.faces.root), "views": 1}, PRESETS, seed=0)
    with pytest.raises(LeakageError, match="folder"):
        check_no_leak([src], labeled)


def test_synthetic_holdout_and_bad_sizes(gen_run):
    faces = SyntheticFaces(gen_run)
    train, hold = synthetic_sources(faces, {"holdout": 8, "views": 2, "augment": "flip"}, PRESETS, seed=0)
    assert (train.size, hold.size, hold.views, hold.weight) == (56, 8, 1, 0.0)
    assert np.array_equal(hold.read(np.array([0])), faces.batch([56]))
    assert train.fingerprint != hold.fingerprint
    with pytest.raises(ValueError, match="has 64 faces"):
        synthetic_sources(faces, {"holdout": 8, "num_images": 60}, PRESETS, seed=0)
    with pytest.raises(ValueError, match="holdout must be >= 1"):
        synthetic_sources(faces, {"holdout": 0}, PRESETS, seed=0)
    with pytest.raises(ValueError, match="unknown augmentation preset 'nope'"):
        resolve_augment("nope", PRESETS)
    assert evenly_spaced(list(range(10)), 3) == [0, 4, 9] and evenly_spaced([1, 2], None) == [1, 2]


def test_mixup_blends_two_train_photos_by_hand(labeled):
    src = labeled_mixup_source(labeled, {"pairs": 50, "alpha": 0.5, "augment": "none"}, PRESETS, seed=3)
    first, second, lam = mixup_pairs(80, 50, 0.5, 3 + 4)
    assert src.size == 50 and (first != second).all() and ((lam > 0) & (lam < 1)).all()
    photos = labeled_train_source(labeled, {"views": 1}, PRESETS, seed=0).read(np.arange(80)).astype(np.float64)
    got = src.read(np.array([0, 7]))
    for row, i in zip(got, (0, 7)):  # lam * a + (1 - lam) * b, rounded to uint8
        want = np.rint(lam[i] * photos[first[i]] + (1 - lam[i]) * photos[second[i]])
        assert row.dtype == np.uint8 and np.abs(row.astype(np.float64) - want).max() <= 1
    # the blends are seeded, their key follows the settings, and val/test photos never enter them
    again = labeled_mixup_source(labeled, {"pairs": 50, "alpha": 0.5, "augment": "none"}, PRESETS, seed=3)
    assert np.array_equal(again.read(np.arange(50)), src.read(np.arange(50))) and again.fingerprint == src.fingerprint
    other = labeled_mixup_source(labeled, {"pairs": 50, "alpha": 2.0, "augment": "none"}, PRESETS, seed=3)
    assert other.fingerprint != src.fingerprint
    assert set(src.files) == {str(labeled.faces.root.resolve() / p) for p, _ in labeled.split.train}
    tampered = dataclasses.replace(labeled, split=dataclasses.replace(
        labeled.split, train=labeled.split.train + labeled.split.test[:1]))
    with pytest.raises(LeakageError, match="labeled-mixup"):
        labeled_mixup_source(tampered, {"pairs": 5}, PRESETS, seed=0)
    for bad, key in (({"pairs": 0}, "pairs"), ({"alpha": 0.0}, "alpha")):
        with pytest.raises(ValueError, match=f"labeled_mixup.{key}"):
            labeled_mixup_source(labeled, bad, PRESETS, seed=0)


def test_synthetic_mixup_blends_a_train_photo_with_a_face_shown_like_the_photos_by_hand(labeled, gen_run):
    from facekd.data.synthetic import render_synthetic

    faces = SyntheticFaces(gen_run)
    train, _ = synthetic_sources(faces, {"holdout": 8, "views": 1, "augment": "none"}, PRESETS, seed=0)
    cfg = {"pairs": 40, "alpha": 1.0, "augment": "none"}
    src = synthetic_mixup_source(labeled, train, cfg, PRESETS, seed=2)
    rng = np.random.default_rng([2, 6])  # the documented draw: photo, face, lam
    photo_idx, face_idx = rng.integers(0, 80, size=40), rng.integers(0, train.size, size=40)
    lam = rng.beta(1.0, 1.0, size=40)
    assert (face_idx < 56).all()  # the generate run's training range: the holdout never enters a blend
    photos = labeled_train_source(labeled, {"views": 1}, PRESETS, seed=0).read(np.arange(80)).astype(np.float64)
    got = src.read(np.array([0, 5]))
    assert got.shape == (2, 112, 112, 3) and got.dtype == np.uint8
    for row, i in zip(got, (0, 5)):
        face = render_synthetic(faces.batch([int(face_idx[i])]), 112, grey=True)[0].permute(1, 2, 0).numpy()
        assert (face[..., 0] == face[..., 2]).all()  # ORL is grey, so the face is shown grey
        want = np.rint(lam[i] * photos[photo_idx[i]] + (1 - lam[i]) * face.astype(np.float64))
        assert np.abs(row.astype(np.float64) - want).max() <= 1
    again = synthetic_mixup_source(labeled, train, cfg, PRESETS, seed=2)
    assert again.fingerprint == src.fingerprint and np.array_equal(again.read(np.arange(40)), src.read(np.arange(40)))
    assert synthetic_mixup_source(labeled, train, {**cfg, "alpha": 2.0}, PRESETS, seed=2).fingerprint != src.fingerprint
    tampered = dataclasses.replace(labeled, split=dataclasses.replace(
        labeled.split, train=labeled.split.train + labeled.split.val[:1]))
    with pytest.raises(LeakageError, match="synthetic-mixup"):
        synthetic_mixup_source(tampered, train, {"pairs": 5}, PRESETS, seed=0)
    for bad, key in (({"pairs": 0}, "pairs"), ({"alpha": -1.0}, "alpha")):
        with pytest.raises(ConfigError, match=f"synthetic_mixup.{key}"):
            synthetic_mixup_source(labeled, train, bad, PRESETS, seed=0)


def test_active_source_weights_in_build_order():
    cfg = {"folder": {"weight": 2.0, "root": "/faces"}, "labeled_mixup": {"weight": 1.0}, "synthetic": {"weight": 1.0},
           "labeled_train": {"weight": 0}}
    assert list(active_source_weights(cfg).items()) == [("synthetic", 1.0), ("labeled_mixup", 1.0), ("folder", 2.0)]
    # a folder without a root, a weight of None and a missing section train nothing
    assert active_source_weights({"synthetic": {"weight": 0.5}, "folder": {"weight": 1.0, "root": None},
                                  "labeled_train": {"weight": None}}) == {"synthetic": 0.5}


def test_holdout_monitor_needs_training_synthetic_faces():
    no_synth = {"synthetic": {"weight": 0.0}, "labeled_train": {"weight": 1.0}, "labeled_mixup": {"weight": 1.0}}
    with pytest.raises(ConfigError) as err:
        check_monitor_trains("holdout_loss", no_synth)
    msg = str(err.value)
    assert "distill.train.monitor" in msg and "distill.sources.synthetic.weight" in msg and "real_val_loss" in msg
    check_monitor_trains("real_val_loss", no_synth)  # the unlabeled val photos can still choose the epoch
    check_monitor_trains("holdout_loss", {**no_synth, "synthetic": {"weight": 1.0}})
