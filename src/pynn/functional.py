"""pynn's ops under torch.nn.functional's names, signatures and defaults."""
from .ops.activation import leaky_relu, leaky_relu_, relu, relu_, sigmoid, tanh
from .ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d, max_pool2d_with_indices

__all__ = ["sigmoid", "tanh", "relu", "relu_", "leaky_relu", "leaky_relu_"]
__all__ += ["max_pool2d", "max_pool2d_with_indices", "avg_pool2d", "adaptive_avg_pool2d"]
