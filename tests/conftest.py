import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def orl():
    """The real embedded ORL faces (fetched once into the user's cache)."""
    from facekd.data.faces import load_orl

    return load_orl()
