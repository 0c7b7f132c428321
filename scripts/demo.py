"""The main job: generate -> distill -> finetune, beside the references, as one table.

``python scripts/demo.py [overrides]`` (``make demo``)."""
import hydra
from omegaconf import DictConfig

from facekd.pipeline import main_job


@hydra.main(config_path="../configs", config_name="demo", version_base="1.3")
def main(cfg: DictConfig) -> None:
    main_job(cfg)


if __name__ == "__main__":
    main()
