"""Run folders: atomic writes, ``manifest.json`` and the checks a stage makes on its input run.

Stages hand over artifacts, not memory: each stage writes a run folder holding a ``manifest.json``
(stage, config, input hashes, versions, seed) beside its outputs, and the next stage reads it back with
:func:`read_manifest`, which refuses a missing, incomplete or mismatched run with the reason.  The
manifest's ``artifacts`` holds the sha256 and size of each file the stage wrote; the next stage checks
the files it uses against it (:func:`facekd.hashing.verify_artifacts`).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from facekd.config import run_profile
from facekd.errors import FacekdError

__all__ = [
    "RunError",
    "atomic_path",
    "write_json",
    "read_json",
    "config_hash",
    "versions",
    "write_manifest",
    "read_manifest",
]

MANIFEST = "manifest.json"


class RunError(FacekdError, RuntimeError):
    """A run folder is missing, incomplete, stale or from another configuration."""


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path`` atomically.

    A crash inside the block leaves ``path`` untouched (and no half-written file under its name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if tmp.exists():  # mkstemp makes 0600 files; give the result the usual umask-based mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def config_hash(obj: Any) -> str:
    """Stable short hash of a JSON-able object (key order does not matter)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def versions() -> dict[str, str]:
    """Versions of the software a result depends on."""
    import numpy
    import torch

    import facekd

    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "facekd": facekd.__version__}
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def write_manifest(run_dir: str | os.PathLike, stage: str, config: dict, **fields: Any) -> dict:
    """Write ``run_dir/manifest.json`` with the stage name, config, its hash, versions and extra fields."""
    manifest = {"stage": stage, "config": config, "config_hash": config_hash(config), "versions": versions(),
                "profile": run_profile(), **fields}
    write_json(Path(run_dir) / MANIFEST, manifest)
    return manifest


def read_manifest(run_dir: str | os.PathLike, stage: str | None = None, *, complete: bool = True) -> dict:
    """Read a run's manifest, refusing a missing folder, a run of another stage or an unfinished run.

    A run counts as complete when its manifest has ``"complete": true``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist" + (f"; run the {stage} stage first" if stage else ""))
    path = run_dir / MANIFEST
    if not path.exists():
        raise RunError(f"{run_dir} has no {MANIFEST}: it is not a facekd run folder, or its stage never started")
    manifest = read_json(path)
    if stage is not None and manifest.get("stage") != stage:
        raise RunError(f"{run_dir} is a '{manifest.get('stage')}' run, expected a '{stage}' run")
    if complete and not manifest.get("complete", False):
        raise RunError(f"{run_dir} is incomplete (its {manifest.get('stage')} stage did not finish); rerun it to resume")
    return manifest
