"""Classic networks assembled from pynn layers."""
__all__ = []

from .recurrent import LSTMRegressor, RNNRegressor  # noqa: E402
__all__ += ["RNNRegressor", "LSTMRegressor"]
