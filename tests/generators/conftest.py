from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def make_cfg(tmp_path):
    """Compose configs/generate.yaml (smoke profile, runs under tmp_path) with extra overrides."""
    from hydra import compose, initialize_config_dir

    def make(*overrides: str):
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("generate", overrides=["profile=smoke", f"paths.root={tmp_path / 'runs'}", *overrides])

    return make


@pytest.fixture(scope="session")
def tiny_ddpm(tmp_path_factory):
    """A tiny random-weight DDPM pipeline (UNet2DModel + DDPMScheduler) saved to a folder."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=4)
    folder = tmp_path_factory.mktemp("tiny_ddpm")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50)).save_pretrained(folder)
    return folder
