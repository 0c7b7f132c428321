"""Content hashes with a (size, mtime, ctime) memo; artifact checksums and the refusals of damaged files."""
import hashlib
import json
import os
import time

import pytest
import torch

from facekd import hashing
from facekd.errors import ArtifactError, InputFileError
from facekd.hashing import artifact_checksums, content_hashes, read_safetensors, verify_artifacts


@pytest.fixture
def files(tmp_path):
    folder = tmp_path / "data"
    (folder / "sub").mkdir(parents=True)
    out = [folder / "a.bin", folder / "b.bin", folder / "sub" / "c.bin"]
    for i, f in enumerate(out):
        f.write_bytes(bytes([i]) * (100 + i))
    return out


@pytest.fixture
def counted(monkeypatch):
    """The files :func:`file_sha256` really reads."""
    calls, real = [], hashing.file_sha256
    monkeypatch.setattr(hashing, "file_sha256", lambda p: calls.append(os.path.basename(p)) or real(p))
    return calls


def test_memo_skips_rehashing_until_a_file_changes(files, counted, tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "RACY_NS", 0)  # the files were just written
    memo = tmp_path / "memo"
    first = content_hashes(files, memo=memo)
    assert first == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    assert counted == ["a.bin", "b.bin", "c.bin"] and len(list(memo.glob("*.json"))) == 1

    counted.clear()
    assert content_hashes(files, memo=memo) == first and counted == []  # only stat'ed
    assert content_hashes(files[1:], memo=memo) == first[1:] and counted == []

    # the same size, the same mtime restored: the changed ctime still tells
    time.sleep(0.05)
    st = os.stat(files[1])
    files[1].write_bytes(b"\xff" * st.st_size)
    os.utime(files[1], ns=(st.st_atime_ns, st.st_mtime_ns))
    again = content_hashes(files, memo=memo)
    assert counted == ["b.bin"] and again[1] == hashlib.sha256(b"\xff" * st.st_size).hexdigest() != first[1]
    assert again[0] == first[0] and again[2] == first[2]

    # memo=False never reads or writes a memo
    counted.clear()
    assert content_hashes(files, memo=False) == again and len(counted) == 3


def test_fresh_files_are_hashed_again_and_a_broken_memo_is_ignored(files, counted, tmp_path):
    memo = tmp_path / "memo"
    content_hashes(files, memo=memo)
    content_hashes(files, memo=memo)  # written less than RACY_NS ago: not remembered yet
    assert len(counted) == 6
    for m in memo.glob("*.json"):
        m.write_text("{not json")
    assert content_hashes(files, memo=memo) == [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


def test_content_hashes_name_a_missing_file(files, tmp_path):
    with pytest.raises(InputFileError, match=r"nope\.bin: cannot read it"):
        content_hashes([files[0], tmp_path / "nope.bin"], memo=False)
    with pytest.raises(InputFileError, match="is not a regular file"):
        content_hashes([tmp_path], memo=False)


def _weights_run(folder):
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.arange(4096, dtype=torch.float32)}, str(folder / "w.safetensors"))
    return {"artifacts": artifact_checksums(folder, ["w.safetensors"])}


HOW = {"writer": "the distill stage", "fix": "rerun it: `python scripts/distill.py distill.name=x`"}


def test_artifacts_refuse_flipped_truncated_empty_and_missing_files(tmp_path):
    manifest = _weights_run(tmp_path)
    path = tmp_path / "w.safetensors"
    assert manifest["artifacts"]["w.safetensors"] == {"sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                                      "bytes": path.stat().st_size}
    verify_artifacts(tmp_path, manifest, ["w.safetensors"], **HOW)  # intact: no error
    good = path.read_bytes()
    tail = ("It was written by the distill stage; to write it again, rerun it: "
            "`python scripts/distill.py distill.name=x`.")

    with open(path, "r+b") as f:  # flip bytes inside the weights
        f.seek(len(good) - 100)
        f.write(bytes(b ^ 0xFF for b in good[-100:-90]))
    with pytest.raises(ArtifactError) as e:
        verify_artifacts(tmp_path, manifest, ["w.safetensors"], **HOW)
    got, want = hashlib.sha256(path.read_bytes()).hexdigest(), manifest["artifacts"]["w.safetensors"]["sha256"]
    assert str(e.value) == (f"{path} is damaged: its sha256 is {got[:16]}..., but {tmp_path / 'manifest.json'} "
                            f"recorded {want[:16]}... when it was written (its bytes changed since). " + tail)

    path.write_bytes(good[:1000])
    with pytest.raises(ArtifactError) as e:
        verify_artifacts(tmp_path, manifest, ["w.safetensors"], **HOW)
    assert str(e.value) == (f"{path} is damaged: it holds 1,000 bytes, but {tmp_path / 'manifest.json'} recorded "
                            f"{len(good):,} bytes when it was written (truncated or overwritten). " + tail)

    path.write_bytes(b"")
    with pytest.raises(ArtifactError, match=r"is damaged: it is empty \(0 bytes\), but .* recorded") as e:
        verify_artifacts(tmp_path, manifest, ["w.safetensors"], **HOW)
    assert str(e.value).startswith(f"{path} is damaged: ") and str(e.value).endswith(tail)

    path.unlink()
    with pytest.raises(ArtifactError, match=r"w\.safetensors is missing, though .*manifest\.json records it as "
                                            r"written by the distill stage; to write it again, rerun it"):
        verify_artifacts(tmp_path, manifest, ["w.safetensors"], **HOW)


def test_unrecorded_checksums_are_refused(tmp_path):
    _weights_run(tmp_path)
    with pytest.raises(ArtifactError, match=r"manifest\.json records no checksums, so w\.safetensors cannot be checked "
                                            r"before use; to write it again with checksums, rerun it"):
        verify_artifacts(tmp_path, {"stage": "distill"}, ["w.safetensors"], **HOW)


def test_read_safetensors_turns_library_errors_into_the_damaged_message(tmp_path):
    _weights_run(tmp_path)
    path = tmp_path / "w.safetensors"
    assert torch.equal(read_safetensors(path, **HOW)["w"], torch.arange(4096, dtype=torch.float32))
    good = path.read_bytes()
    for data in (good[: len(good) // 2], b"", good[:8] + b"x" * 20 + good[28:]):
        path.write_bytes(data)
        with pytest.raises(ArtifactError) as e:
            read_safetensors(path, **HOW)
        msg = str(e.value)
        assert msg.startswith(f"{path} is damaged: it cannot be read as safetensors (") and "SafetensorError" not in msg
        assert msg.endswith("to write it again, rerun it: `python scripts/distill.py distill.name=x`.")


def test_memo_file_holds_relative_paths_under_one_root(files, tmp_path, monkeypatch):
    monkeypatch.setattr(hashing, "RACY_NS", 0)
    memo = tmp_path / "memo"
    content_hashes(files, memo=memo)
    (m,) = memo.glob("*.json")
    data = json.loads(m.read_text())
    assert data["root"] == str(files[0].parent)
    assert set(data["files"]) == {"a.bin", "b.bin", os.path.join("sub", "c.bin")}
