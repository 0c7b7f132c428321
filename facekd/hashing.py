"""Content hashes: what every cache is keyed on, and the checksums a stage records for what it writes.

* :func:`file_sha256` hashes one file's bytes.  :func:`content_hashes` hashes many and remembers each hash
  while the file's ``(size, mtime_ns, ctime_ns)`` stay the same, so a second run only stats the files.
  The memo is one small JSON file per folder, under ``<cache dir>/hashes/`` (``$FACEKD_CACHE``, default
  ``~/.cache/facekd``), written atomically; a lost or unreadable memo only means hashing again.  A file
  changed within the last :data:`RACY_NS` of its hash is hashed again next time (a file system with
  coarse timestamps could otherwise hide a rewrite of the same size in the same tick).
* :func:`artifact_checksums` gives the ``artifacts`` entry a stage puts in its ``manifest.json`` (sha256
  and size of each file it wrote); :func:`verify_artifacts` checks files against it before the next stage
  uses them, and refuses a damaged, truncated or replaced file with an :class:`~facekd.errors.ArtifactError`
  naming it and what to do.  A manifest that records no checksums is refused the same way: its files cannot
  be checked.
* :func:`read_safetensors` loads a safetensors file of a run folder, turning the library's errors on a
  truncated, empty or garbled file into the same kind of message.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from facekd.assets import cache_dir
from facekd.errors import ArtifactError, InputFileError
from facekd.runs import atomic_path

__all__ = ["RACY_NS", "file_sha256", "content_hash", "content_hashes", "tensor_sha256", "memo_dir",
           "artifact_checksums", "verify_artifacts", "damaged", "read_safetensors"]

log = logging.getLogger(__name__)

RACY_NS = 2_000_000_000  # a hash taken less than this after the file's last change is not remembered
MEMO_VERSION = 1
_MEMO_PRUNE_ABOVE = 512  # memo files kept before those of vanished folders are dropped


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def tensor_sha256(x: Any) -> str:
    """sha256 of a tensor's bytes (contiguous, on the CPU) and its shape and dtype."""
    h = hashlib.sha256(f"{tuple(x.shape)}/{x.dtype}".encode())
    h.update(x.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def memo_dir() -> Path:
    """Where the hash memos live: ``<cache dir>/hashes``."""
    return cache_dir() / "hashes"


class _Memo:
    """The remembered hashes of the files under one folder: ``{relative path: [size, mtime, ctime, sha256]}``."""

    def __init__(self, folder: Path | None, root: Path) -> None:
        self.root = root
        self.path = None if folder is None else folder / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"
        self.files: dict[str, list] = self._read() if self.path is not None else {}
        self.new: dict[str, list] = {}

    def _read(self) -> dict[str, list]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != MEMO_VERSION or data.get("root") != str(self.root):
            return {}
        files = data.get("files")
        return files if isinstance(files, dict) else {}

    def get(self, rel: str, sig: list[int]) -> str | None:
        hit = self.files.get(rel)
        if isinstance(hit, list) and len(hit) == 4 and hit[:3] == sig and isinstance(hit[3], str):
            return hit[3]
        return None

    def put(self, rel: str, sig: list[int], digest: str) -> None:
        self.new[rel] = [*sig, digest]

    def save(self) -> None:
        if self.path is None or not self.new:
            return
        try:
            created = not self.path.exists()
            files = {**self._read(), **self.new}  # merge with what another process wrote meanwhile
            with atomic_path(self.path) as tmp:
                tmp.write_text(json.dumps({"version": MEMO_VERSION, "root": str(self.root), "files": files},
                                          separators=(",", ":")))
            if created:
                _prune(self.path.parent)
        except OSError as e:  # a read-only cache folder: hash again next time
            log.debug("cannot write the hash memo %s: %s", self.path, e)


def _prune(folder: Path) -> None:
    """Drop the memos of folders that no longer exist once there are many memo files."""
    memos = list(folder.glob("*.json"))
    if len(memos) <= _MEMO_PRUNE_ABOVE:
        return
    for m in memos:
        try:
            root = json.loads(m.read_text()).get("root")
            if not root or not Path(root).is_dir():
                m.unlink()
        except (OSError, ValueError, AttributeError):
            m.unlink(missing_ok=True)


def _signature(st: os.stat_result) -> list[int]:
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns)]


def content_hashes(paths: Iterable[str | os.PathLike], *, memo: str | os.PathLike | bool | None = None) -> list[str]:
    """sha256 of each file in ``paths`` (in order), reusing a remembered hash while the file is unchanged.

    ``memo``: the folder of the memo files (None: :func:`memo_dir`; False: hash every file, remember
    nothing).  A missing path or one that is not a file raises :class:`~facekd.errors.InputFileError`
    naming it.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        return []
    absolute, sigs = [], []
    for p in paths:
        a = os.path.abspath(p)  # no symlink resolution: stat follows links, so a retargeted link is seen anyway
        try:
            st = os.stat(a)
        except OSError as e:
            raise InputFileError(f"{p}: cannot read it ({e.strerror or e}); check the path") from e
        if not stat.S_ISREG(st.st_mode):
            raise InputFileError(f"{p} is not a regular file; expected an image or data file there")
        absolute.append(a)
        sigs.append(_signature(st))
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    prefix = len(os.path.join(root, ""))
    folder = None if memo is False else (memo_dir() if memo in (None, True) else Path(memo))
    book = _Memo(folder, Path(root))
    now = time.time_ns()
    out = []
    for orig, r, sig in zip(paths, absolute, sigs):
        rel = r[prefix:]
        digest = book.get(rel, sig)
        if digest is None:
            try:
                digest = file_sha256(r)
                after = _signature(os.stat(r))
            except OSError as e:
                raise InputFileError(f"{orig}: cannot read it ({e.strerror or e}); check the path") from e
            if after == sig and now - max(sig[1], sig[2]) >= RACY_NS:  # unchanged while hashed, and not too fresh
                book.put(rel, sig, digest)
        out.append(digest)
    book.save()
    return out


def content_hash(path: str | os.PathLike, *, memo: str | os.PathLike | bool | None = None) -> str:
    """:func:`content_hashes` of one file."""
    return content_hashes([path], memo=memo)[0]


# ------------------------------------------------------------------------------------------ artifacts


def artifact_checksums(folder: str | os.PathLike, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"sha256": ..., "bytes": ...}}`` of the files ``names`` (relative to ``folder``), for a manifest."""
    folder = Path(folder)
    paths = [folder / n for n in names]
    digests = content_hashes(paths)
    return {n: {"sha256": d, "bytes": p.stat().st_size} for n, p, d in zip(names, paths, digests)}


def damaged(path: str | os.PathLike, detail: str, writer: str, fix: str) -> ArtifactError:
    """The error for a damaged artifact: what is wrong, which file, who wrote it and what to do."""
    return ArtifactError(f"{path} is damaged: {detail}. It was written by {writer}; to write it again, {fix}.")


def verify_artifacts(folder: str | os.PathLike, manifest: Mapping[str, Any], names: Sequence[str], *, writer: str,
                     fix: str, manifest_file: str = "manifest.json") -> None:
    """Check the files ``names`` of ``folder`` against the checksums ``manifest["artifacts"]`` recorded (names the
    manifest does not list are not checked).  A manifest that records no checksums, or a missing, resized or
    changed file, raises :class:`~facekd.errors.ArtifactError` naming it, ``writer`` (who wrote it) and ``fix``
    (what to do)."""
    folder = Path(folder)
    recorded = manifest.get("artifacts")
    where = folder / manifest_file
    if not isinstance(recorded, Mapping):
        raise ArtifactError(f"{where} records no checksums, so {', '.join(names)} cannot be checked before use; "
                            f"to write {'it' if len(names) == 1 else 'them'} again with checksums, {fix}.")
    names = [n for n in names if n in recorded]
    for n in names:
        path, want = folder / n, recorded[n]
        if not path.is_file():
            raise ArtifactError(f"{path} is missing, though {where} records it as written by {writer}; to write it "
                                f"again, {fix}.")
        size, want_size = path.stat().st_size, int(want.get("bytes", -1))
        if size != want_size:
            what = "it is empty (0 bytes)" if size == 0 else f"it holds {size:,} bytes"
            raise damaged(path, f"{what}, but {where} recorded {want_size:,} bytes when it was written "
                                f"(truncated or overwritten)", writer, fix)
    for n, got in zip(names, content_hashes([folder / n for n in names])):
        want = str(recorded[n].get("sha256"))
        if got != want:
            raise damaged(folder / n, f"its sha256 is {got[:16]}..., but {where} recorded {want[:16]}... when it was "
                                      f"written (its bytes changed since)", writer, fix)


def read_safetensors(path: str | os.PathLike, *, writer: str, fix: str, device: str = "cpu") -> dict:
    """``safetensors.torch.load_file(path)``, with a truncated, empty or garbled file refused as damaged."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise ArtifactError(f"{path} is missing; it is written by {writer}; to write it again, {fix}.") from e
        raise damaged(path, f"it cannot be read as safetensors ({e})", writer, fix) from e
