"""Stage 1: write reproducible synthetic faces.  ``python scripts/generate.py [overrides]``."""
import hydra
from omegaconf import DictConfig

from facekd.generators import generate


@hydra.main(config_path="../configs", config_name="generate", version_base="1.3")
def main(cfg: DictConfig) -> None:
    generate(cfg)


if __name__ == "__main__":
    main()
