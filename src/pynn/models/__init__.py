"""Classic networks assembled from pynn layers only."""
from .fcnn import FCNN
from .recurrent import LSTMRegressor, RNNRegressor

__all__ = ["FCNN", "RNNRegressor", "LSTMRegressor"]
