"""Face generators and the generate stage.

``generate(cfg)`` writes N reproducible synthetic faces into ``<paths.root>/generate/<name>``;
``GENERATORS`` maps ``generator=<name>`` to a builder (``dcgan``: the embedded DCGAN as a diffusers
pipeline; ``diffusers``: any unconditional diffusers pipeline in a local folder).
"""
from .base import FaceSampler, GeneratorError
from .registry import GENERATORS
from .stage import GenerateSettings, build_generator, generate, run_dir_for

__all__ = ["GENERATORS", "FaceSampler", "GeneratorError", "GenerateSettings", "build_generator", "generate",
           "run_dir_for"]
