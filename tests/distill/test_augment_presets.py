"""Every augmentation preset of ``configs/distill.yaml`` builds and maps a photo to a photo of the same shape."""
import numpy as np
import pytest

from facekd.config import compose_config
from facekd.pipeline import augment_preset
from facekd.errors import ConfigError

PRESETS = list(compose_config("distill", []).distill.augment_presets)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_and_keeps_shape(name: str) -> None:
    img = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    _, pipe = augment_preset(name)
    out = pipe(image=img)["image"] if pipe is not None else img
    assert out.shape == img.shape and out.dtype == np.uint8


def test_unknown_preset_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation preset"):
        augment_preset("no_such_preset")
