import math

import numpy as np
import pytest

from facekd.errors import ConfigError
from facekd.validate import check_bool, check_choice, check_float, check_int


def test_check_int():
    assert check_int(3, "a.b") == 3 and type(check_int(np.int64(3), "a.b")) is int
    assert check_int(None, "a.b", allow_none=True) is None
    for bad in (True, False, "3", 3.0, 2.5, None, [3]):
        with pytest.raises(ConfigError, match=r"^a\.b must be an integer"):
            check_int(bad, "a.b")
    with pytest.raises(ConfigError) as e:
        check_int(0, "data.per_class", minimum=1, what="training images per identity")
    assert str(e.value) == ("data.per_class must be an integer >= 1 (training images per identity), got 0; "
                            "set it like data.per_class=1")
    with pytest.raises(ConfigError) as e:
        check_int(11, "k", minimum=1, maximum=10)
    assert str(e.value) == "k must be an integer >= 1 and <= 10, got 11; set it like k=1"


def test_check_float():
    assert check_float(1, "x") == 1.0 and type(check_float(1, "x")) is float
    assert check_float(0.25, "x", minimum=0.0, maximum=1.0) == 0.25
    for bad in (True, "0.5", None, math.nan, math.inf):
        with pytest.raises(ConfigError, match=r"^x must be a number"):
            check_float(bad, "x")
    with pytest.raises(ConfigError) as e:
        check_float(0.0, "finetune.lr", minimum=0.0, strict=True)
    assert str(e.value) == "finetune.lr must be a number > 0.0, got 0.0 (a float); set it like finetune.lr=1.0"
    with pytest.raises(ConfigError) as e:
        check_float(True, "data.fraction", minimum=0, maximum=1, allow_none=True)
    assert str(e.value) == ("data.fraction must be a number >= 0 and <= 1 or null, got true (a boolean); "
                            "set it like data.fraction=0")


def test_check_bool_and_choice():
    assert check_bool(True, "f") is True and check_bool(np.bool_(False), "f") is False
    for bad in (1, 0, "true", "yes", None):
        with pytest.raises(ConfigError, match=r"^f must be true or false"):
            check_bool(bad, "f")
    assert check_choice("b", "k", ("a", "b")) == "b"
    with pytest.raises(ConfigError) as e:
        check_choice(None, "k", ("a", "b"))
    assert str(e.value) == "k must be one of a, b, got null; set it like k=a"
