"""Feature distillation: a student learns to reproduce a teacher's penultimate activations.

Modules: ``losses`` (the registry of feature losses, :func:`facekd.distill.losses.build_loss`), ``views``
(unlabeled image sources and their augmented views), ``cache`` (the memory-mapped teacher-feature
cache), ``sources`` (sources from config), ``connector`` (the paper's label-trained connector),
``stage`` (the distill stage, :func:`distill`) and ``student_run`` (the run folder contract).

Later stages load a distilled student with :func:`load_student`; the stage runs through
:func:`facekd.distill.stage.distill`.
"""
from facekd.distill.student_run import load_student, read_student_manifest

__all__ = ["load_student", "read_student_manifest"]
