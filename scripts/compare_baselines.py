"""Baseline comparison: every method under the same split and seeds.  ``python scripts/compare_baselines.py``."""
import hydra
from omegaconf import DictConfig

from facekd.baselines.compare import compare_baselines


@hydra.main(config_path="../configs", config_name="compare_baselines", version_base="1.3")
def main(cfg: DictConfig) -> None:
    compare_baselines(cfg)


if __name__ == "__main__":
    main()
