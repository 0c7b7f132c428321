"""Views are reproducible; the teacher-feature cache is built once, memory-mapped, resumable, and refuses stale keys."""
import numpy as np
import pytest
import torch

from facekd.data.augment import build_augmentation
from facekd.data.synthetic import SyntheticFaces
from facekd.distill.cache import FeatureCache, build_feature_cache, cache_folder, cache_key
from facekd.distill.views import ViewSource, fresh_views, make_views
from facekd.runs import RunError, read_json

STEPS = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5},
         {"_target_": "facekd.distill.augment.ZoomOut", "scale": [0.6, 0.8], "p": 1.0},
         {"_target_": "albumentations.ToGray", "p": 0.5}]


def source(faces, n=6, views=2, seed=0, steps=STEPS):
    return ViewSource(name="toy", size=n, read=faces.batch, fingerprint=faces.config_hash, views=views,
                      augment=build_augmentation(steps), augment_spec=steps, seed=seed)


class Counting(torch.nn.Module):
    """The real teacher, counting the images it sees (and able to fail after some)."""

    def __init__(self, teacher, fail_after=None):
        super().__init__()
        self.teacher, self.fail_after, self.seen = teacher, fail_after, 0

    @property
    def feature_dim(self):
        return self.teacher.feature_dim

    def features(self, x):
        if self.fail_after is not None and self.seen >= self.fail_after:
            raise RuntimeError("simulated interruption")
        self.seen += len(x)
        return self.teacher.features(x)


def test_views_are_reproducible_and_view0_is_clean(gen_run):
    faces = SyntheticFaces(gen_run)
    src = source(faces)
    a, b = make_views(src, [0, 1, 2, 3]), make_views(src, [3, 2, 1, 0])
    assert np.array_equal(a, b[::-1]) and a.dtype == np.uint8
    assert np.array_equal(a[0], faces[0]) and not np.array_equal(a[1], faces[0])
    assert make_views(src, [1], out_size=32).shape == (1, 32, 32, 3)
    f1, f2 = fresh_views(src, [0, 0], [5, 6]), fresh_views(src, [0], [5])
    assert np.array_equal(f1[0], f2[0]) and not np.array_equal(f1[0], f1[1])
    with pytest.raises(ValueError, match="need an augmentation"):
        ViewSource(name="x", size=2, read=faces.batch, fingerprint="f", views=3)


def test_cache_build_reuse_resume_and_staleness(gen_run, sface, tmp_path):
    faces = SyntheticFaces(gen_run)
    src, sig = source(faces), sface.signature
    # an interrupted build keeps its finished chunks and is completed later
    with pytest.raises(RuntimeError, match="simulated interruption"):
        build_feature_cache(src, Counting(sface, fail_after=4), sig, tmp_path, 32, "cpu", batch_size=4, chunk=4)
    folder = cache_folder(tmp_path, cache_key(src, sig, 32))
    assert read_json(folder / "manifest.json") ["done"] == 4
    with pytest.raises(RunError, match="incomplete"):
        FeatureCache(folder)
    resumed = Counting(sface)
    cache = build_feature_cache(src, resumed, sig, tmp_path, 32, "cpu", batch_size=4, chunk=4)
    assert resumed.seen == len(src) - 4 and len(cache) == 12 and cache.dim == 128
    assert isinstance(cache.features, np.memmap) and isinstance(cache.images, np.memmap)
    assert cache.images.shape == (12, 32, 32, 3) and cache.features.dtype == np.float16

    # equal to a fresh uninterrupted build, and to the teacher on the same views
    direct = sface.features(torch.from_numpy(make_views(src, np.arange(12))).permute(0, 3, 1, 2)).numpy()
    assert np.allclose(cache.features, direct, atol=2e-2 * np.abs(direct).max())
    mean, std = cache.stats()
    assert np.allclose(mean, np.asarray(cache.features, np.float64).mean(0), atol=1e-3)

    # reuse: the teacher does not run again
    again = Counting(sface)
    assert build_feature_cache(src, again, sig, tmp_path, 32, "cpu").folder == folder and again.seen == 0

    # another student input size re-renders the views but copies the features
    resized_teacher = Counting(sface)
    resized = build_feature_cache(src, resized_teacher, sig, tmp_path, 48, "cpu")
    assert resized_teacher.seen == 0 and resized.folder != folder and resized.images.shape[1:3] == (48, 48)
    assert np.array_equal(resized.features, cache.features)

    # another teacher, views or store size is a different cache; a stale key is refused with the field
    other = source(faces, views=3)
    assert cache_folder(tmp_path, cache_key(other, sig, 32)) != folder
    with pytest.raises(RunError, match=r"differing fields.*teacher.feature: cached 'embedding' != expected 'bn1'"):
        FeatureCache(folder, cache_key(src, {**sig, "feature": "bn1"}, 32))
    with pytest.raises(RunError, match="store_size"):
        FeatureCache(folder, cache_key(src, sig, 64))


def test_image_mean_targets_pair_every_view_with_its_images_mean(gen_run, sface, tmp_path):
    from facekd.distill.cache import ImageMeanTargets

    faces = SyntheticFaces(gen_run)
    src = source(faces, n=3, views=2)
    cache = build_feature_cache(src, sface, sface.signature, tmp_path, 32, "cpu", batch_size=3)
    per_view = np.asarray(cache.features, dtype=np.float32)
    means = ImageMeanTargets(cache, views=2)
    assert len(means) == len(cache) == 6 and means.dim == cache.dim and means.images is cache.images
    got = np.asarray(means.features[np.array([5, 0, 1, 4])], dtype=np.float32)
    # views 0 and 1 belong to image 0, views 4 and 5 to image 2: each gets its image's mean (float16 storage)
    want0, want2 = per_view[0:2].mean(0), per_view[4:6].mean(0)
    np.testing.assert_allclose(got[[1, 2]], np.stack([want0, want0]), atol=2e-3)
    np.testing.assert_allclose(got[[0, 3]], np.stack([want2, want2]), atol=2e-3)
    assert not np.allclose(per_view[0], per_view[1])  # the two views' own targets differ
    mean, std = means.stats()
    np.testing.assert_allclose(mean, per_view.reshape(3, 2, -1).mean(1).mean(0), atol=2e-3)
    assert (std >= 0).all() and std.shape == (cache.dim,)
    with pytest.raises(ValueError, match="whole number of images"):
        ImageMeanTargets(cache, views=4)
    with pytest.raises(ValueError, match="targets must be one of view, image_mean"):
        ViewSource(name="x", size=2, read=faces.batch, fingerprint="f", targets="mean")


def test_cache_progress_bar_follows_the_progress_flag(gen_run, sface, tmp_path, capsys):
    src = source(SyntheticFaces(gen_run), n=2, views=1)
    build_feature_cache(src, sface, sface.signature, tmp_path / "quiet", 32, "cpu", progress=False)
    assert "teacher features" not in capsys.readouterr().err
    build_feature_cache(src, sface, sface.signature, tmp_path / "loud", 32, "cpu", progress=True)
    assert "teacher features: toy" in capsys.readouterr().err
