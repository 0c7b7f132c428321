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


def test_the_stages_default_to_the_recommended_recipe_and_share_it():
    """recipe=recommended (default): distill adds mixup blends into its own folder, and finetune reads that folder
    and fine-tunes the whole student; recipe=paper gives each stage's own defaults; a command-line key still wins."""
    from facekd.config import compose_config

    d, f = compose_config("distill", ["paths.root=/r"]), compose_config("finetune", ["paths.root=/r"])
    assert d.distill.sources.labeled_mixup.weight == 1.0 and d.distill.name == "resnet18-bce-sface-mixup"
    assert f.finetune.student_run == f"/r/distill/{d.distill.name}"
    assert (f.finetune.loss, f.finetune.unfreeze, f.finetune.augment, f.finetune.backbone_lr_scale) == ("ce", True,
                                                                                                      True, 0.1)
    p = compose_config("finetune", ["paths.root=/r", "recipe=paper", "finetune.train.epochs=7"])
    dp = compose_config("distill", ["paths.root=/r", "recipe=paper"])
    assert p.finetune.student_run == f"/r/distill/{dp.distill.name}" and dp.distill.sources.labeled_mixup.weight == 0
    assert (p.finetune.loss, p.finetune.unfreeze, p.finetune.train.epochs) == ("bce", False, 7)
    assert compose_config("finetune", ["finetune.loss=bce"]).finetune.loss == "bce"  # over the recipe


def test_an_unknown_recipe_lists_the_recipes():
    from facekd.cli import check_overrides
    from facekd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"No option 'fast' in the config group 'recipe' \(from recipe=fast\)\. "
                                          r"The options are: paper, recommended"):
        check_overrides("finetune", ["recipe=fast"], "facekd finetune")
