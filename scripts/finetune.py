"""Stage 3: a linear head on the distilled student, trained on the labeled set.  ``python scripts/finetune.py [overrides]``."""
import hydra
from omegaconf import DictConfig

from facekd.finetune import finetune


@hydra.main(config_path="../configs", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> None:
    finetune(cfg)


if __name__ == "__main__":
    main()
