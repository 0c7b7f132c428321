"""The distill stage's run folder: what it holds, and loading the distilled student back from it.

A finished distill run folder holds::

    manifest.json        stage "distill", "complete": true; the student config section, the teacher
                         signature, out_dim, input_size, the generate run (path + config_hash), the
                         labeled split (path + id) when its training images were used, uses_labels
    student.safetensors  the student's state_dict at the best epoch (chosen on held-out synthetic loss)
    metrics.csv/.json    per-epoch metrics (training loss; MSE, MAE, R² on held-out synthetic and real faces)
    loss.png  r2.png     curves
    summary.txt          the one-line summary

The manifest's ``artifacts`` records the sha256 and size of ``student.safetensors`` (and of the other
weights the run wrote).  Later stages call :func:`load_student`, which checks the file against it and
refuses a damaged, truncated, empty or replaced file (:class:`facekd.errors.ArtifactError` naming it and
the command that makes it again); they never read the files themselves.  A run that records no checksums is
refused the same way.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any, Mapping

import torch

from facekd.hashing import read_safetensors, verify_artifacts
from facekd.models import Student, build_student, load_state_strict
from facekd.runs import RunError, read_manifest

__all__ = ["STAGE", "STUDENT_FILE", "read_student_manifest", "load_student", "signature_diff", "distill_command"]

STAGE = "distill"
STUDENT_FILE = "student.safetensors"


def signature_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The fields where two (nested) dicts differ, as ``path: a != b`` strings."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += signature_diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        a, b = list(a), list(b)
    return [] if a == b else [f"{prefix.rstrip('.')}: {a!r} != {b!r}"]


def distill_command(run_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> str:
    """The command that makes the distill run ``run_dir`` again, from what its manifest recorded."""
    run_dir = Path(run_dir).resolve()
    cfg = manifest.get("config") or {}
    root = run_dir.parent.parent if run_dir.parent.name == STAGE else (cfg.get("paths") or {}).get("root")
    args = [f"paths.root={root}"] if root else []
    args.append(f"distill.name={run_dir.name}")
    for group in ("teacher", "student", "loss"):
        section = cfg.get(group)
        if isinstance(section, Mapping) and section.get("name"):
            args.append(f"{group}={section['name']}")
    if "seed" in cfg:
        args.append(f"seed={cfg['seed']}")
    return (f"`python scripts/distill.py {' '.join(shlex.quote(str(a)) for a in args)}` with any other "
            "overrides it was first run with")


def read_student_manifest(run_dir: str | os.PathLike,
                          expected_teacher_signature: Mapping[str, Any] | None = None) -> dict:
    """The manifest of a finished distill run; refuses a missing/incomplete run or another teacher's.

    Raises :class:`facekd.runs.RunError` with the reason.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir, STAGE, complete=True)
    for key in ("student", "teacher", "out_dim"):
        if key not in manifest:
            raise RunError(f"{run_dir}/manifest.json lacks '{key}': not a distill run this version can read")
    if expected_teacher_signature is not None:
        diff = signature_diff(manifest["teacher"], dict(expected_teacher_signature))
        if diff:
            raise RunError(f"{run_dir} was distilled from another teacher (run != expected): {'; '.join(diff)}")
    if not (run_dir / STUDENT_FILE).is_file():
        raise RunError(f"{run_dir} is marked complete but has no {STUDENT_FILE}; rerun the distill stage: "
                       f"{distill_command(run_dir, manifest)}")
    return manifest


def load_student(run_dir: str | os.PathLike, expected_teacher_signature: Mapping[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> Student:
    """The distilled student of a finished distill run, weights of its best epoch, in eval mode.

    ``expected_teacher_signature`` (a ``Teacher.signature``), when given, must equal the teacher the run
    distilled from.  The student is built from the manifest's ``student`` section with ``out_dim`` from
    the manifest; ``student.distill_manifest`` holds the manifest.  A missing, incomplete or mismatched
    folder raises :class:`facekd.runs.RunError`; a student file that differs from its recorded checksum,
    or cannot be read, raises :class:`facekd.errors.ArtifactError`.
    """
    run_dir = Path(run_dir)
    manifest = read_student_manifest(run_dir, expected_teacher_signature)
    how = dict(writer="the distill stage", fix=f"rerun it: {distill_command(run_dir, manifest)}")
    verify_artifacts(run_dir, manifest, [STUDENT_FILE], **how)
    student = build_student(manifest["student"], int(manifest["out_dim"]))
    weights = read_safetensors(run_dir / STUDENT_FILE, **how)
    try:
        state = {k: v for k, v in weights.items() if not k.endswith("num_batches_tracked")}
        load_state_strict(student, state, str(run_dir / STUDENT_FILE))
    except ValueError as e:
        raise RunError(f"{run_dir}: the saved student does not fit its manifest ({e})") from e
    student.distill_manifest = manifest
    return student.to(device).eval()
