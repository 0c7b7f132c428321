"""The command line: --help pages, override checks with suggestions, and the one error path."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from facekd.cli import _guarded, check_overrides, ensure_writable_root, help_text, suggest_keys, yaml_key_comments
from facekd.errors import EXIT_USER_ERROR, ConfigError, FacekdError, InputFileError

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {  # script -> (config, words its --help must hold)
    "generate.py": ("generate", "synthetic faces"),
    "distill.py": ("distill", "distill the teacher"),
    "finetune.py": ("finetune", "specialize the distilled student"),
    "compare_baselines.py": ("compare_baselines", "Compare every method"),
    "demo.py": ("demo", "The main job"),
    "model_card.py": ("model_card", "model card"),
    "probe_teacher.py": ("probe_teacher", "teacher a face teacher"),
    "identify.py": ("identify", "Name the people in photos"),
    "enroll.py": ("enroll", "Enroll people into a gallery"),
    "verify.py": ("verify", "same person or not"),
    "specialize.py": ("specialize", "A face model for your own people"),
    "scale_curve.py": ("scale_curve", "quality against the number of synthetic faces"),
}


def run_script(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _doc(script: str) -> str:
    from facekd.commands import COMMANDS

    return next(c.doc for c in COMMANDS.values() if c.script == script)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_names_the_purpose_and_only_the_groups_the_script_reads(script):
    config, purpose = SCRIPTS[script]
    text = help_text(config, _doc(script), f"python scripts/{script}")
    assert purpose in text.splitlines()[0]
    assert f"usage: python scripts/{script}" in text
    assert len(text.splitlines()) < 130  # not the whole config
    if config == "generate":
        assert "generator: dcgan*, diffusers" in text
        assert "baseline" not in text and "teacher:" not in text
        assert "generate.num_images=2000" in text and "# faces;" in text


SCRIPT_ALIASES = {"distill_features.py": "distill.py"}  # former names: they run the new script after a notice


def test_a_former_script_name_runs_the_new_script_after_a_notice():
    out = run_script("scripts/distill_features.py", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == ("facekd: scripts/distill_features.py is now scripts/distill.py; the old name still "
                                  "works for now")
    assert out.stdout.startswith("Stage 2: distill the teacher's features")


def test_help_runs_from_the_command_line_without_hydra_dump():
    out = run_script("scripts/generate.py", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Stage 1: generate unlabeled synthetic faces.")
    assert "== Config ==" not in out.stdout and "Powered by Hydra" not in out.stdout


def test_yaml_key_comments_reads_dotted_keys_and_comments(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("defaults:\n  - base\na: 1   # the a\nb:\n  c: x  # nested\n  d:\n    - e: 1\n    - f: 2\ng: true\n")
    assert yaml_key_comments(f) == [("a", "the a"), ("b.c", "nested"), ("g", "")]  # list items are not keys


def test_suggest_keys_prefers_siblings_then_the_same_leaf_elsewhere():
    known = ["generate", "generate.num_images", "generate.name", "distill", "distill.train", "distill.train.epochs"]
    assert suggest_keys("generate.num_image", known) == ["generate.num_images"]
    assert suggest_keys("distill.epochs", known) == ["distill.train.epochs"]
    assert suggest_keys("zzz.qqq", known) == []


def test_misspelled_key_gets_the_closest_key_and_no_plus_hint():
    with pytest.raises(ConfigError) as err:
        check_overrides("generate", ["generate.num_image=10"], "python scripts/generate.py")
    msg = str(err.value)
    assert "Unknown config key 'generate.num_image'" in msg and "Did you mean generate.num_images?" in msg
    assert "+generate" not in msg


def test_unknown_group_option_lists_the_options():
    with pytest.raises(ConfigError, match=r"No option 'bcee' in the config group 'loss'.*bce, cosine, mse\. Did you mean bce\?"):
        check_overrides("distill", ["loss=bcee"], "python scripts/distill.py")


def test_override_without_equals_is_refused_with_the_form_to_use():
    with pytest.raises(ConfigError, match="Write each override as key=value"):
        check_overrides("generate", ["seed"], "python scripts/generate.py")


def test_good_overrides_compose_and_multirun_is_left_to_hydra():
    cfg = check_overrides("generate", ["generate.num_images=7", "hydra.run.dir=/tmp/x"], "python scripts/generate.py")
    assert cfg.generate.num_images == 7
    assert check_overrides("generate", ["-m", "seed=1,2"]) is None


def test_root_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    from omegaconf import OmegaConf

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputFileError, match="is a file, not a folder"):
        ensure_writable_root(OmegaConf.create({"paths": {"root": str(afile)}}))
    with pytest.raises(InputFileError, match=r"cannot be written \(Not a directory\)"):
        ensure_writable_root(OmegaConf.create({"paths": {"root": str(afile / "runs")}}))
    ensure_writable_root(OmegaConf.create({"paths": {"root": str(tmp_path / "new" / "runs")}}))
    assert (tmp_path / "new" / "runs").is_dir()


def test_guarded_job_turns_facekd_errors_and_a_full_disk_into_one_paragraph(capsys):
    def mistake(cfg):
        raise ConfigError("data.per_class must be an integer")

    def full(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/shard.npy")

    def short_write(cfg):  # numpy's tofile on a full disk (/dev/full): "N requested and 0 written", no errno
        np.zeros(100_000).tofile("/dev/full")

    def torch_short(cfg):  # torch.save's zip writer on a full disk: a RuntimeError, not an OSError
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 125116288 vs 125116176")

    for job, words in ((mistake, "data.per_class must be an integer"),
                       (full, "The disk is full (no space left on device) while writing /runs/x/shard.npy"),
                       (short_write, "The disk is full (no space left on device). The partial output is kept"),
                       (torch_short, "The disk is full (no space left on device). The partial output is kept")):
        with pytest.raises(SystemExit) as ex:
            _guarded(job)(None)
        assert ex.value.code == EXIT_USER_ERROR
        err = capsys.readouterr().err
        assert err.startswith("facekd: error: ") and words in err and "Traceback" not in err


def test_guarded_job_keeps_unexpected_errors():
    def bug(cfg):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _guarded(bug)(None)
    with pytest.raises(OSError):
        _guarded(lambda cfg: (_ for _ in ()).throw(OSError(errno.EACCES, "denied")))(None)
    with pytest.raises(RuntimeError):  # a RuntimeError that is not a short write stays a bug
        _guarded(lambda cfg: (_ for _ in ()).throw(RuntimeError("shape mismatch")))(None)
    assert issubclass(ConfigError, FacekdError) and issubclass(ConfigError, ValueError)


@pytest.mark.parametrize("args, words", [
    (["scripts/generate.py", "generate.num_image=10"], "Did you mean generate.num_images?"),
    (["scripts/finetune.py", "PATHS_ROOT", "finetune.student_run=/nowhere/run"], "/nowhere/run"),
])
def test_refusals_from_the_command_line_end_without_a_traceback(tmp_path, args, words):
    args = [a.replace("PATHS_ROOT", f"paths.root={tmp_path}") for a in args]
    out = run_script(*args)
    assert out.returncode == EXIT_USER_ERROR, out.stderr
    assert words in out.stderr
    assert "Traceback" not in out.stderr and "HYDRA_FULL_ERROR" not in out.stderr and "+generate" not in out.stderr


def test_every_script_is_wired_through_run_script_and_has_a_help_test():
    scripts = sorted(p.name for p in (ROOT / "scripts").glob("*.py") if p.name not in SCRIPT_ALIASES)
    assert scripts == sorted(SCRIPTS)
    from facekd.commands import COMMANDS

    assert sorted(c.script for c in COMMANDS.values()) == scripts  # one command per script, one table
    for name in scripts:
        assert "run(" in (ROOT / "scripts" / name).read_text(), name


def test_the_installed_command_runs_every_stage_from_any_folder(tmp_path):
    """`facekd <command>` (the console script pip installs) is the same entry as scripts/<name>.py."""
    facekd = Path(sys.executable).parent / "facekd"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}

    def call(*args):
        return subprocess.run([str(facekd), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    listing = call("--help")
    assert listing.returncode == 0 and "generate" in listing.stdout and "specialize" in listing.stdout
    out = call("distill", "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Stage 2: distill the teacher's features") and "usage: facekd distill" in out.stdout
    bad = call("generate", "generate.num_image=3")
    assert bad.returncode == EXIT_USER_ERROR and "Traceback" not in bad.stderr
    assert "`facekd generate --help` lists the keys" in bad.stderr
    unknown = call("distil")
    assert unknown.returncode == 2 and "unknown command 'distil'" in unknown.stderr


def test_path_values_expand_the_home_folder_and_environment_variables(monkeypatch, tmp_path):
    from facekd.cli import expand_override

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PEOPLE", "/data/people")
    assert expand_override("data.root=~/people") == f"data.root={tmp_path}/people"
    assert expand_override("identify.input=[~/a.jpg,~/b/]") == f"identify.input=[{tmp_path}/a.jpg,{tmp_path}/b/]"
    assert expand_override("data.root=$PEOPLE/orl") == "data.root=/data/people/orl"
    assert expand_override("out_dir=${paths.root}/x") == "out_dir=${paths.root}/x"  # Hydra's interpolation: kept
    assert expand_override("data.root=$UNSET_VAR_X/a") == "data.root=$UNSET_VAR_X/a"  # unknown: left as written
    assert expand_override("~data.root") == "~data.root" and expand_override("--help") == "--help"
    # through the command line: the refusal names the expanded folder, not the override syntax
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "x.png")
    out = run_script("scripts/identify.py", "identify.model=~/no_such_run", "identify.input=~/x.png")
    assert out.returncode == EXIT_USER_ERROR and "Traceback" not in out.stderr
    assert f"{Path.home()}/no_such_run" in out.stderr


def test_a_former_row_name_in_an_override_names_the_new_key():
    with pytest.raises(ConfigError, match=r"The row 'feature_kd_bce' is now called 'distill_bce_probe': write "
                                          r"baselines\.distill_bce_probe\.loss \(from baselines\.feature_kd_bce\.loss=mse\)"):
        check_overrides("compare_baselines", ["baselines.feature_kd_bce.loss=mse"], "facekd compare")
