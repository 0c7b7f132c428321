import pytest
from omegaconf import OmegaConf

from facekd.models import STUDENTS, TEACHERS, build_student, build_teacher
from facekd.models.heads import LinearHead


def test_every_config_file_names_a_registered_network():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "configs"
    teachers = {OmegaConf.load(p).name for p in (root / "teacher").glob("*.yaml")}
    students = {OmegaConf.load(p).name for p in (root / "student").glob("*.yaml")}
    assert teachers == set(TEACHERS.names()) >= {"sface", "vggface2_resnet50", "facenet_vggface2"}
    assert students == set(STUDENTS.names()) == {"resnet18", "convnet9", "mobilefacenet"}


def test_unknown_names_list_the_known_ones():
    with pytest.raises(KeyError, match="known teachers: facenet_casia, facenet_vggface2, sface, vggface2_resnet50"):
        build_teacher({"name": "arcface"})
    with pytest.raises(KeyError, match="known students: convnet9, mobilefacenet, resnet18"):
        build_student({"name": "mobilenet"}, out_dim=128)


def test_config_sections_build(sface):
    cfg = OmegaConf.create({"teacher": {"name": "sface", "feature": "embedding", "weights": None},
                            "student": {"name": "convnet9", "input_size": 112}})
    teacher = build_teacher(cfg.teacher)
    assert teacher.signature == sface.signature
    student = build_student(cfg.student, teacher.feature_dim)
    assert student.out_dim == 128 and student.input_size == 112
    with pytest.raises(ValueError, match=r"unknown teacher option\(s\) teacher\.layer"):
        build_teacher({"name": "sface", "layer": "bn1"})


def test_linear_head():
    import torch

    head = LinearHead(128, 40)
    assert head(torch.zeros(3, 128)).shape == (3, 40)
    with pytest.raises(ValueError):
        LinearHead(128, 1)
