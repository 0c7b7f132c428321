"""Small checks for config values: each refusal is a :class:`~facekd.errors.ConfigError` naming the key.

YAML and command-line overrides happily turn ``true`` into a boolean and ``'5'`` into a string, and
Python treats ``True`` as the integer 1.  These checks accept only what the key means::

    per_class = check_int(cfg["per_class"], "data.per_class", minimum=1, what="training images per identity")
    lr = check_float(cfg["lr"], "finetune.lr", minimum=0.0, strict=True)
    align = check_bool(cfg["align"], "data.align")
    framing = check_choice(cfg["framing"], "data.framing", ("pad", "squash", "crop"))

A message reads, for example: ``data.per_class must be an integer >= 1 (training images per identity),
got true (a boolean); set it like data.per_class=1``.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

from facekd.config import plain
from facekd.errors import ConfigError

__all__ = ["check_int", "check_float", "check_bool", "check_choice", "check_path", "known_section", "show_value"]


def _is_bool(value: Any) -> bool:
    return type(value).__name__ in {"bool", "bool_"}  # Python and numpy booleans


def show_value(value: Any) -> str:
    """``value`` as a user wrote it in YAML, with its kind when that is the problem: ``true (a boolean)``."""
    if value is None:
        return "null"
    if _is_bool(value):
        return f"{str(bool(value)).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return f"{float(value)!r} (a float)" if float(value).is_integer() else repr(float(value))
    return f"{value!r} (a {type(value).__name__})"


def _bounds(minimum: Any, maximum: Any, strict: bool = False) -> str:
    lo = "" if minimum is None else f" {'>' if strict else '>='} {minimum}"
    hi = "" if maximum is None else f" <= {maximum}"
    return lo + ("" if not lo or not hi else " and") + hi


def _refuse(key: str, expected: str, value: Any, what: str | None, example: Any, allow_none: bool) -> ConfigError:
    kind = f" ({what})" if what else ""
    nothing = " or null" if allow_none else ""
    return ConfigError(f"{key} must be {expected}{nothing}{kind}, got {show_value(value)}; "
                       f"set it like {key}={example}")


def check_int(value: Any, key: str, *, minimum: int | None = None, maximum: int | None = None,
              allow_none: bool = False, what: str | None = None) -> int | None:
    """``value`` as an ``int``; booleans, strings and fractional numbers are refused (ConfigError naming ``key``)."""
    if value is None and allow_none:
        return None
    example = minimum if minimum is not None else (maximum if maximum is not None else 0)
    expected = "an integer" + _bounds(minimum, maximum)
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise _refuse(key, expected, value, what, example, allow_none)
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise _refuse(key, expected, value, what, example, allow_none)
    return value


def check_float(value: Any, key: str, *, minimum: float | None = None, maximum: float | None = None,
                strict: bool = False, allow_none: bool = False, what: str | None = None) -> float | None:
    """``value`` as a finite ``float`` (integers are accepted); booleans and strings are refused.

    ``strict``: the value must be greater than ``minimum``, not equal to it.
    """
    if value is None and allow_none:
        return None
    if minimum is not None:
        example = minimum + 1 if strict else minimum
    else:
        example = maximum if maximum is not None else 0
    expected = "a number" + _bounds(minimum, maximum, strict)
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise _refuse(key, expected, value, what, example, allow_none)
    out = float(value)
    if (not math.isfinite(out) or (minimum is not None and (out <= minimum if strict else out < minimum))
            or (maximum is not None and out > maximum)):
        raise _refuse(key, expected, value, what, example, allow_none)
    return out


def check_bool(value: Any, key: str, *, allow_none: bool = False, what: str | None = None) -> bool | None:
    """``value`` as a ``bool``: only ``true``/``false`` are accepted, never 0/1 or strings like ``'yes'``."""
    if value is None and allow_none:
        return None
    if not _is_bool(value):
        raise _refuse(key, "true or false", value, what, "true", allow_none)
    return bool(value)


def check_choice(value: Any, key: str, choices: Iterable[str], *, what: str | None = None) -> str:
    """``value`` when it is one of ``choices`` (strings); anything else is refused, listing the choices."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise _refuse(key, "one of " + ", ".join(choices), value, what, choices[0], False)
    return value


def known_section(section: Any, fields: Iterable[str], name: str) -> dict:
    """A config section as a plain dict, refusing a key not in ``fields`` (a :class:`ConfigError` naming it)."""
    sec = dict(plain(section) or {})
    unknown = set(sec) - set(fields)
    if unknown:
        raise ConfigError(f"unknown {name} keys {sorted(unknown)}; known: {sorted(fields)}")
    return sec


def check_path(value: Any, key: str, *, allow_none: bool = True, what: str = "a path") -> str | None:
    """A path-valued key, with ``~`` and ``$VARS`` expanded; anything but a non-empty path is refused."""
    import os

    if value is None and allow_none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"{key} must be {what}{' or null' if allow_none else ''}, got {show_value(value)}")
    return os.path.expandvars(os.path.expanduser(str(value)))
