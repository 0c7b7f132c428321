"""The network registries: configs pick teachers and students by name.

A teacher module registers a class with ``@TEACHERS.register("name")``; the class provides
``from_config(**section)`` (the real network, with its weights) and ``architecture(**section)`` (random
weights, only for model cards).  A student registers a class constructed as ``cls(out_dim=D, **section)``.
Adding a network means adding a module under ``facekd/models/teachers`` or ``students`` and a config
file under ``configs/teacher`` or ``configs/student``.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from facekd.config import plain as _plain
from facekd.models.base import Student, Teacher
from facekd.registry import Registry
from facekd.errors import ConfigError

__all__ = ["TEACHERS", "STUDENTS", "build_teacher", "build_student", "teacher_architecture"]

TEACHERS: Registry = Registry("teacher", "facekd.models.teachers")
STUDENTS: Registry = Registry("student", "facekd.models.students")


def _split(cfg: Mapping, section: str) -> tuple[str, dict[str, Any]]:
    cfg = _plain(cfg)
    if "name" not in cfg:
        raise ConfigError(f"the {section} config needs a 'name' ({section}=NAME)")
    name = cfg.pop("name")
    return name, cfg


def _check_keys(fn: Callable, kwargs: Mapping[str, Any], section: str, name: str, skip: tuple[str, ...] = ()) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    known = [k for k in params if k not in skip]
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ConfigError(f"unknown {section} option(s) {', '.join(f'{section}.{k}' for k in unknown)} "
                          f"for {section} '{name}'; it accepts: {', '.join(f'{section}.{k}' for k in known)}")


def build_teacher(cfg: Mapping) -> Teacher:
    """Build the frozen teacher described by the ``teacher`` config section, e.g. ``{name: sface, feature: embedding}``."""
    name, kwargs = _split(cfg, "teacher")
    cls = TEACHERS.get(name)
    _check_keys(cls.from_config, kwargs, "teacher", name)
    teacher = cls.from_config(**kwargs).freeze()
    assert not any(p.requires_grad for p in teacher.parameters())
    return teacher


def teacher_architecture(cfg: Mapping) -> Teacher:
    """The teacher's architecture with random weights: for model cards only (its features are meaningless)."""
    name, kwargs = _split(cfg, "teacher")
    kwargs.pop("weights", None)
    cls = TEACHERS.get(name)
    _check_keys(cls.architecture, kwargs, "teacher", name)
    return cls.architecture(**kwargs).freeze()


def build_student(cfg: Mapping, out_dim: int) -> Student:
    """Build the student of the ``student`` config section (e.g. ``{name: resnet18, input_size: 64}``) with output ``out_dim``."""
    name, kwargs = _split(cfg, "student")
    cls = STUDENTS.get(name)
    _check_keys(cls.__init__, kwargs, "student", name, skip=("self", "out_dim"))
    return cls(out_dim=int(out_dim), **kwargs)
