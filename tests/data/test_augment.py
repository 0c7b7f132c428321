import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from facekd.data.augment import build_augmentation, frame_square
from facekd.data.datasets import LabeledFaces
from facekd.data.splits import SplitProtocol, make_split
from facekd.errors import ConfigError


@pytest.fixture(scope="module")
def orl_augment():
    cfg = OmegaConf.load("configs/data/orl.yaml")
    return build_augmentation(cfg.augment)


def test_paper_augmentations_are_all_there(orl_augment):
    names = {type(t).__name__ for t in orl_augment.transforms}
    assert {"Affine", "HorizontalFlip", "GaussianBlur", "ColorJitter", "Erasing"} <= names


def test_two_draws_differ_per_sample(orl, orl_augment):
    img = frame_square(orl.image(0), 112)
    draws = [orl_augment(image=img)["image"] for _ in range(4)]
    assert all(d.shape == img.shape and d.dtype == np.uint8 for d in draws)
    assert any((draws[0] != d).any() for d in draws[1:])  # parameters are drawn anew each call


def test_dataset_applies_augmentation_only_when_asked(orl, orl_augment):
    split = make_split(orl, SplitProtocol())
    plain = LabeledFaces(orl.root, split.train[:3], 64)
    aug = LabeledFaces(orl.root, split.train[:3], 64, augment=orl_augment)
    x0, y0 = plain[0]
    assert x0.shape == (3, 64, 64) and x0.dtype == torch.uint8 and int(y0) == split.train[0][1]
    assert torch.equal(plain[0][0], plain[0][0])  # eval transforms are deterministic
    assert not all(torch.equal(aug[0][0], aug[0][0]) for _ in range(3))


def test_framing_modes():
    img = np.zeros((112, 92, 3), np.uint8)
    img[:, :] = 200
    assert frame_square(img, 112, "pad").shape == (112, 112, 3)
    assert frame_square(img, 64, "crop").shape == (64, 64, 3)
    assert (frame_square(img, 112, "pad") == 200).all()  # replicated borders, no black bars
    with pytest.raises(ConfigError, match="^framing must be one of pad, squash, crop"):
        frame_square(img, 64, "zoom")


def test_step_without_target_is_refused():
    with pytest.raises(ConfigError) as e:
        build_augmentation([{"p": 0.5}], "data.augment")
    assert str(e.value) == ("data.augment[0] needs a _target_ naming an albumentations transform, e.g. "
                            "{_target_: albumentations.HorizontalFlip, p: 0.5}; got {'p': 0.5}")


def test_unknown_transform_is_a_config_error_naming_the_step():
    steps = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5}, {"_target_": "albumentations.NoSuchThing"}]
    with pytest.raises(ConfigError) as e:
        build_augmentation(steps, "data.augment")
    assert str(e.value).startswith("data.augment[1]: cannot build albumentations.NoSuchThing with {}: "
                                   "Error locating target 'albumentations.NoSuchThing'. Check the transform's name")
