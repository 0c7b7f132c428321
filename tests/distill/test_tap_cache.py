"""The multi-tap teacher cache: round trip, reuse keyed on image bytes, and the disk-budget refusal."""
import numpy as np
import pytest
import torch

from facekd.distill.tap_cache import TapCacheError, teacher_tap_targets
from facekd.distill.tap_loss import pool_to
from facekd.models import teacher_architecture
from facekd.models.taps import FeatureTaps

PATHS = ["net.body.conv_12", "net.bn1", "net.fc1"]
GRIDS = [(4, 4), (2, 2), None]


@pytest.fixture(scope="module")
def teacher():
    return teacher_architecture({"name": "sface"})


def test_round_trip_and_reuse(tmp_path, teacher):
    images = torch.randint(0, 256, (5, 3, 112, 112), dtype=torch.uint8)
    got = teacher_tap_targets(teacher, images, PATHS, GRIDS, tmp_path, batch_size=2, progress=False)
    assert [a.shape for a in got] == [(5, 512, 4, 4), (5, 1024, 2, 2), (5, 128)]
    assert all(a.dtype == np.float16 and isinstance(a, np.memmap) for a in got)
    with FeatureTaps(teacher, PATHS, detach=True) as taps:
        teacher.features(images)
        direct = [pool_to(t, g) for t, g in zip(taps.collect().values(), GRIDS)]
    for a, d in zip(got, direct):
        assert np.allclose(a.astype(np.float32), d.numpy(), rtol=2e-3, atol=2e-3)

    calls = []
    original = teacher.features
    teacher.features = lambda x: calls.append(1) or original(x)
    try:
        again = teacher_tap_targets(teacher, images, PATHS, GRIDS, tmp_path, progress=False)
        assert not calls, "a cache of the same bytes must not run the teacher"
        assert all(np.array_equal(a, b) for a, b in zip(got, again))
        changed = images.clone()
        changed[0, 0, 0, 0] ^= 1  # one bit of one pixel
        teacher_tap_targets(teacher, changed, PATHS, GRIDS, tmp_path, batch_size=8, progress=False)
        assert calls, "changed image bytes must rebuild the cache"
    finally:
        teacher.features = original
    assert len(list(tmp_path.iterdir())) == 2


def test_refuses_a_cache_over_budget(tmp_path, teacher):
    images = torch.zeros(1000, 3, 112, 112, dtype=torch.uint8)
    with pytest.raises(TapCacheError, match=r"above kd.cache_max_gb=0.001.*Raise kd.cache_max_gb"):
        teacher_tap_targets(teacher, images, PATHS, GRIDS, tmp_path, max_gb=0.001, progress=False)
    assert not list(tmp_path.iterdir()), "nothing is written before the refusal"


def test_a_damaged_tap_array_is_rebuilt_not_read(tmp_path, teacher):
    images = torch.randint(0, 256, (3, 3, 112, 112), dtype=torch.uint8)
    good = [np.array(a) for a in teacher_tap_targets(teacher, images, PATHS[2:], GRIDS[2:], tmp_path, progress=False)]
    (array,) = list(tmp_path.glob("*/0.npy"))
    raw = bytearray(array.read_bytes())
    raw[-2:] = b"\x00\x7c"  # the last fp16 value becomes +inf
    array.write_bytes(bytes(raw))
    again = teacher_tap_targets(teacher, images, PATHS[2:], GRIDS[2:], tmp_path, progress=False)
    assert np.array_equal(np.array(again[0]), good[0])
