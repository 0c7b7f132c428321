"""Every primary config composes, with and without the smoke profile, and shares the base settings."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRIMARY = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("name", PRIMARY)
@pytest.mark.parametrize("profile", ["default", "smoke", "gpu", "gpu_stream"])
def test_primary_config_composes(name, profile):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=name, overrides=[f"profile={profile}", "paths.root=/tmp/x"])
    assert cfg.paths.root == "/tmp/x" and "seed" in cfg and "device" in cfg


@pytest.mark.parametrize("data", ["orl", "pins", "folder"])
def test_data_group(data):
    with initialize_config_dir(config_dir=str(CONFIGS / "data"), version_base="1.3"):
        cfg = compose(config_name=data)
    assert cfg.per_class >= 1 and cfg.augment
    if data == "pins":
        assert cfg.per_class == 32 and cfg.name == "pins"


def test_gpu_profiles_set_the_scale_the_readme_names():
    from facekd.config import plain
    from facekd.distill.stream import StreamSettings

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        gen = compose(config_name="generate", overrides=["profile=gpu"])
        stream = compose(config_name="distill", overrides=["profile=gpu_stream"])
    assert gen.generate.num_images == 102400 and gen.device == "cuda"
    settings = StreamSettings.from_config(plain(stream.distill))
    assert settings is not None and stream.distill.teacher_mode == "online"
    assert stream.distill.sources.synthetic.stream.faces_per_epoch == 1_000_000
