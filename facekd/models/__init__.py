"""Networks: face teachers (SFace, VGGFace2 ResNet-50, facenet), students (ResNet-18, ConvNet-9), heads.

Other layers use only this API::

    teacher = build_teacher(cfg.teacher)              # frozen; teacher.features(uint8 images) -> B x D
    student = build_student(cfg.student, teacher.feature_dim)
    student.embed(student.preprocess(images))         # B x D, distilled towards the teacher
"""
from facekd.models.base import ModelWeightsError, Student, Teacher, load_state_strict, require_weights_file
from facekd.models.heads import CosineHead, LinearHead
from facekd.models.registry import STUDENTS, TEACHERS, build_student, build_teacher, teacher_architecture

__all__ = ["TEACHERS", "STUDENTS", "build_teacher", "build_student", "teacher_architecture", "Teacher", "Student",
           "LinearHead", "CosineHead", "ModelWeightsError", "load_state_strict", "require_weights_file"]
