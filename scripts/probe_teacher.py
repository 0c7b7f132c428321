"""Few-shot ORL probes on the teacher's features vs a random-init student: is the teacher a face teacher?"""
import hydra
from omegaconf import DictConfig

from facekd.probe import probe_teacher


@hydra.main(config_path="../configs", config_name="probe_teacher", version_base="1.3")
def main(cfg: DictConfig) -> None:
    probe_teacher(cfg)


if __name__ == "__main__":
    main()
