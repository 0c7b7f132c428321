"""Stage 2: distill the teacher's features into a student.  ``python scripts/distill_features.py loss=bce``."""
import hydra
from omegaconf import DictConfig

from facekd.distill.stage import distill


@hydra.main(config_path="../configs", config_name="distill", version_base="1.3")
def main(cfg: DictConfig) -> None:
    distill(cfg)


if __name__ == "__main__":
    main()
