"""Feature distillation: a student learns to reproduce a teacher's penultimate activations.

Modules: ``losses`` (the registry of feature losses, :func:`facekd.distill.losses.build_loss`), and the
distillation stage's own modules beside it.  Nothing is imported here, so importing one module does not
pull in the others.
"""
