"""Classic networks assembled from pynn layers only."""
from .fcnn import FCNN

__all__ = ["FCNN"]
