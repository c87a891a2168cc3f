"""The train / evaluate pipeline behind `python -m pynn train|evaluate|datasets`."""
from .errors import PipelineError

__all__ = ["PipelineError"]
