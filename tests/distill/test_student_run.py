"""The distill run-folder contract: load_student and its refusals (a real end-to-end run is in test_stage)."""
import pytest
import torch

from facekd.distill import load_student
from facekd.distill.student_run import STUDENT_FILE
from facekd.engine import save_safetensors
from facekd.hashing import artifact_checksums
from facekd.models import build_student
from facekd.runs import RunError, write_manifest

SIG = {"name": "sface", "feature": "embedding", "feature_shape": [128], "preprocess": {"size": 112}, "weights": "abc"}


def _write_run(folder, complete=True, teacher=SIG):
    torch.manual_seed(0)
    student = build_student({"name": "resnet18", "input_size": 64}, 128)
    save_safetensors(student.state_dict(), folder / STUDENT_FILE)
    write_manifest(folder, "distill", {"x": 1}, student={"name": "resnet18", "input_size": 64}, teacher=teacher,
                   out_dim=128, input_size=64, uses_labels=False, complete=complete,
                   artifacts=artifact_checksums(folder, [STUDENT_FILE]))
    return student


def test_load_student_roundtrip_and_refusals(tmp_path):
    original = _write_run(tmp_path)
    loaded = load_student(tmp_path, expected_teacher_signature=SIG)
    assert not loaded.training and loaded.out_dim == 128 and loaded.distill_manifest["uses_labels"] is False
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.allclose(loaded.embed(loaded.preprocess(x)), original.eval().embed(original.preprocess(x)))

    with pytest.raises(RunError, match="another teacher.*feature: 'embedding' != 'bn1'"):
        load_student(tmp_path, expected_teacher_signature={**SIG, "feature": "bn1"})
    with pytest.raises(RunError, match="does not exist"):
        load_student(tmp_path / "nope")
    _write_run(tmp_path, complete=False)
    with pytest.raises(RunError, match="incomplete"):
        load_student(tmp_path)
