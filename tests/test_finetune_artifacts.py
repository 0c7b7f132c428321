"""The finetune stage refuses a distilled student whose file differs from the checksum its run recorded."""
import pytest

from facekd.distill.student_run import STUDENT_FILE
from facekd.errors import ArtifactError
from facekd.finetune import finetune
from facekd.hashing import content_hash
from facekd.runs import read_json, write_json
from tests.test_finetune import compose, write_student_run


@pytest.fixture
def checked_run(tmp_path):
    """A distill-format run whose manifest records the student's checksum, as the distill stage writes it."""
    return write_student_run(tmp_path / "distill" / "toy")


def _refused(run, root):
    with pytest.raises(ArtifactError) as e:
        finetune(compose(f"paths.root={root}", f"finetune.student_run={run}"))
    assert not (root / "finetune").exists()  # refused before anything was written
    return str(e.value)


def _tail(run):
    return (f"It was written by the distill stage; to write it again, rerun it: `python scripts/distill.py "
            f"paths.root={run.parent.parent} distill.name=toy student=resnet18` with any other overrides it was first "
            f"run with.")


def _message(run, detail):
    return f"{run / STUDENT_FILE} is damaged: {detail}. {_tail(run)}"


def test_flipped_truncated_or_empty_student_is_refused_with_the_rerun_command(checked_run, tmp_path):
    run, path = checked_run, checked_run / STUDENT_FILE
    good = path.read_bytes()
    recorded = read_json(run / "manifest.json")["artifacts"][STUDENT_FILE]["sha256"]
    with open(path, "r+b") as f:  # a few bytes inside the weights: safetensors would load it without a word
        f.seek(len(good) - 4096)
        f.write(bytes(b ^ 0x5A for b in good[-4096:-4000]))
    assert _refused(run, tmp_path / "ft") == _message(
        run, f"its sha256 is {content_hash(path)[:16]}..., but {run / 'manifest.json'} recorded {recorded[:16]}... "
             f"when it was written (its bytes changed since)")

    for data, what in ((good[: len(good) // 2], f"it holds {len(good) // 2:,} bytes"), (b"", "it is empty (0 bytes)")):
        path.write_bytes(data)
        assert _refused(run, tmp_path / "ft") == _message(
            run, f"{what}, but {run / 'manifest.json'} recorded {len(good):,} bytes when it was written "
                 f"(truncated or overwritten)")


def test_a_run_that_records_no_checksums_is_refused_with_the_rerun_command(tmp_path):
    run = write_student_run(tmp_path / "distill" / "toy")
    write_json(run / "manifest.json", {k: v for k, v in read_json(run / "manifest.json").items() if k != "artifacts"})
    msg = _refused(run, tmp_path / "ft")
    assert msg.startswith(f"{run / 'manifest.json'} records no checksums, so {STUDENT_FILE} cannot be checked before "
                          "use; to write it again with checksums, rerun it: `python scripts/distill.py")
