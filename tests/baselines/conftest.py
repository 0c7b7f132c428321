from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_compare(root, *overrides):
    """The compare_baselines config at smoke size on a small ORL split (2 train / 1 val / 2 test per identity)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="compare_baselines",
                       overrides=["profile=smoke", "data.test=2", f"paths.root={root}", "progress=false",
                                  "device=cpu", *overrides])


@pytest.fixture(scope="session")
def smoke_root(tmp_path_factory):
    return tmp_path_factory.mktemp("baselines")


@pytest.fixture(scope="session")
def smoke_cfg(smoke_root):
    return compose_compare(smoke_root)


@pytest.fixture(scope="session")
def smoke_data(smoke_cfg):
    from facekd.data.labeled import prepare_labeled

    return prepare_labeled(smoke_cfg.data, smoke_cfg.paths.root)


@pytest.fixture(scope="session")
def smoke_row(smoke_cfg):
    """``smoke_row(row)``: the row's config at smoke size (its ``smoke`` section applied, the teacher injected)."""
    from facekd.baselines.compare import row_config

    def get(row):
        return {**row_config(smoke_cfg, row, smoke=True)[1], "progress": False}

    return get


@pytest.fixture(scope="session")
def compose_smoke():
    """``compose_smoke(root, *overrides)``: the smoke compare_baselines config."""
    return compose_compare
