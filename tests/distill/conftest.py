"""Shared fixtures: a real DCGAN generate run and a distill run at smoke size, teacher caches shared."""
from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose(name: str, overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return hydra_compose(name, overrides=overrides)


@pytest.fixture(scope="session")
def dstore(tmp_path_factory):
    """A session folder holding the generate run and the shared teacher-feature caches."""
    return tmp_path_factory.mktemp("distill_store")


@pytest.fixture(scope="session")
def gen_run(dstore):
    """64 real DCGAN faces (smoke profile)."""
    from facekd.generators import generate

    generate(compose("generate", ["profile=smoke", f"paths.root={dstore}"]))
    return dstore / "generate" / "dcgan"


@pytest.fixture(scope="session")
def distill_overrides(dstore, gen_run):
    """Overrides every distill test shares: the paper's recipe (the stage's own defaults; recipe=recommended is
    tested on its own), smoke sizes, the session generate run and cache folder."""
    return ["recipe=paper", "profile=smoke", f"distill.generate_run={gen_run}", f"distill.cache_dir={dstore / 'cache'}"]


@pytest.fixture(scope="session")
def make_cfg(distill_overrides):
    def make(root, *overrides: str):
        return compose("distill", [*distill_overrides, f"paths.root={root}", *overrides])

    return make


@pytest.fixture(scope="session")
def base_run(tmp_path_factory, make_cfg):
    """A finished smoke distill run (resnet18, bce, 2 epochs)."""
    from facekd.distill.stage import distill

    root = tmp_path_factory.mktemp("base")
    return distill(make_cfg(root))


@pytest.fixture(scope="session")
def sface():
    from facekd.models import build_teacher

    return build_teacher({"name": "sface"})
