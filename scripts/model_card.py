"""Print the model card (params, FLOPs, CPU latency) of every registered network as a markdown table."""
import hydra
from omegaconf import DictConfig

from facekd.modelcard import print_model_cards


@hydra.main(config_path="../configs", config_name="model_card", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print_model_cards(cfg)


if __name__ == "__main__":
    main()
