"""Every primary config composes, with and without the smoke profile, and shares the base settings."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PRIMARY = sorted(p.stem for p in CONFIGS.glob("*.yaml") if p.stem != "base")


@pytest.mark.parametrize("name", PRIMARY)
@pytest.mark.parametrize("profile", ["default", "smoke"])
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
