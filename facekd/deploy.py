"""The one deploy format of a model folder: a finetune run, or a comparison row that saved its model.

The folder's ``manifest.json`` is complete and records ``classes``, ``image_size``, ``framing``, the sha256 of
every file in ``artifacts``, and ``deploy`` (:func:`deploy_section`): the format version, the backends it ships
(``onnx``: ``model.onnx``; ``torch``: ``model.safetensors``, finetune runs only; none for an embedding row), whether
its faces are MTCNN-aligned, who wrote it and what remakes it.  :func:`read_deployed` is the one reader, for
identify, enroll and verify alike: whichever stage wrote the folder, it is read the same way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from facekd.hashing import verify_artifacts
from facekd.openset import OPEN_SET_FILE, read_open_set
from facekd.runs import MANIFEST, RunError, read_json

__all__ = ["DEPLOY_FORMAT", "MODEL_FOLDERS", "Deployed", "deploy_section", "read_deployed"]

DEPLOY_FORMAT = 1
MODEL_FOLDERS = ("a finetune run (a folder under <paths.root>/finetune/, made by `python scripts/finetune.py` or "
                 "`python scripts/specialize.py`) or a comparison row that saved its model "
                 "(<paths.root>/baselines/<row>-<hash>/)")


def deploy_section(*, backends: Sequence[str], data_cfg: Mapping[str, Any], writer: str, remake: str) -> dict:
    """The manifest's ``deploy`` record: ``backends`` shipped, whether the faces are aligned (``data.align`` on a
    folder of raw photos), ``writer`` (who made the folder) and ``remake`` (what makes it again)."""
    aligned = bool(data_cfg.get("align", False)) and data_cfg.get("root") is not None
    return {"format": DEPLOY_FORMAT, "backends": list(backends), "aligned": aligned, "writer": writer, "remake": remake}


@dataclass
class Deployed:
    """A checked model folder: what identify, enroll and verify need to frame faces and run its models."""

    path: Path
    manifest: dict
    classes: list[str]
    image_size: int
    framing: str
    aligned: bool
    backends: tuple[str, ...]
    open_set: Mapping[str, Any] | None

    @property
    def threshold(self) -> float | None:
        """The classifier's open-set threshold, or None for a closed-set model (no rejection)."""
        return None if self.open_set is None else float(self.open_set["threshold"])

    def verify(self, files: Sequence[str]) -> None:
        """Refuse any of ``files`` that the manifest recorded and that is now missing or changed."""
        deploy = self.manifest["deploy"]
        verify_artifacts(self.path, self.manifest, list(files), writer=deploy["writer"], fix=deploy["remake"])


def _no_manifest(path: Path) -> str:
    """Why a folder without a manifest holds no model: a comparison row that shipped none, or not a run at all."""
    try:
        method = read_json(path / "config.json")["method"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"holds no {MANIFEST}, so it is not a facekd run folder"
    try:
        extra = read_json(path / "result.json").get("extra") or {}
    except (OSError, ValueError, AttributeError):
        extra = {}
    if extra.get("finetune_run"):
        return f"is the folder of the comparison row '{method}', whose model is its finetune run {extra['finetune_run']}"
    return f"is the folder of the comparison row '{method}', which saved no model"


def read_deployed(path: str | os.PathLike, key: str | None = None) -> Deployed:
    """The model folder at ``path``, checked: a finished run whose manifest records a model in this deploy format,
    and whose recorded ``open_set.json`` (when any) is intact.  Anything else raises :class:`RunError` naming ``key``
    (the config key that gave ``path``, when one did)."""
    path = Path(path).expanduser()
    where = f"{key}={path}" if key else str(path)
    if not path.is_dir():
        raise RunError(f"{where} {'is a file, not a folder' if path.exists() else 'does not exist'}; "
                       f"pass {MODEL_FOLDERS}.")
    if not (path / MANIFEST).is_file():
        raise RunError(f"{where} {_no_manifest(path)}; pass {MODEL_FOLDERS}.")
    manifest = read_json(path / MANIFEST)
    deploy = manifest.get("deploy")
    if not isinstance(deploy, Mapping) or deploy.get("format") != DEPLOY_FORMAT:
        what = manifest.get("method") or (manifest.get("config") or {}).get("method") or manifest.get("stage")
        raise RunError(f"{where} is a '{what}' run, which ships no model; pass {MODEL_FOLDERS}.")
    if not manifest.get("complete"):
        raise RunError(f"{where} is unfinished; {deploy['remake']}")
    found = Deployed(path=path, manifest=manifest, classes=list(manifest.get("classes") or []),
                     image_size=int(manifest["image_size"]), framing=str(manifest["framing"]),
                     aligned=bool(deploy["aligned"]), backends=tuple(deploy["backends"]), open_set=None)
    found.verify([OPEN_SET_FILE])  # a recorded open_set.json that is missing or changed would move the rejection
    found.open_set = read_open_set(path)
    return found
