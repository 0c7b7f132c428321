import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from facekd.config import register_rows  # noqa: E402

register_rows()  # the Hydra config `rows` (every configs/baseline/*.yaml), for tests that compose directly


@pytest.fixture(scope="session")
def orl():
    """The real embedded ORL faces (fetched once into the user's cache)."""
    from facekd.data.faces import load_orl

    return load_orl()
