import pytest
import torch

from facekd.data.preprocess import Preprocess


def test_known_pixel_bgr_mean_subtraction():
    # the VGGFace2 recipe: BGR, 0-255, minus mean BGR, no std
    p = Preprocess(size=4, bgr=True, scale=1.0, mean=(91.4953, 103.8827, 131.0912))
    img = torch.zeros(1, 3, 4, 4, dtype=torch.uint8)
    img[0, 0], img[0, 1], img[0, 2] = 200, 100, 50  # R, G, B
    out = p(img)[0, :, 0, 0]
    assert torch.allclose(out, torch.tensor([50 - 91.4953, 100 - 103.8827, 200 - 131.0912]), atol=1e-4)


def test_sface_style_normalisation():
    p = Preprocess(size=2, scale=1.0, mean=(127.5,) * 3, std=(128.0,) * 3)
    img = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(p(img), torch.full((1, 3, 2, 2), 127.5 / 128))


def test_resize_short_side_then_centre_crop():
    p = Preprocess(size=224, resize=256)
    img = torch.zeros(2, 3, 300, 400, dtype=torch.uint8)
    img[..., 150, 200] = 255
    out = p(img)
    assert out.shape == (2, 3, 224, 224)
    centre = out[0, 0, 100:124, 100:124]
    assert centre.max() > 0  # the centre pixel survives the centre crop


@pytest.mark.parametrize("kw", [dict(size=0), dict(size=224, resize=200), dict(size=8, std=(1, 0, 1))])
def test_bad_sizes(kw):
    with pytest.raises(ValueError):
        Preprocess(**kw)
