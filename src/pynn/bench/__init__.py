"""pynn vs torch speed comparison: python -m pynn.bench (see __main__.py)."""
from .case import Case, time_pair

__all__ = ["Case", "time_pair"]
