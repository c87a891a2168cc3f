"""pynn's ops under torch.nn.functional's names, signatures and defaults."""
from .ops.activation import leaky_relu, leaky_relu_, relu, relu_, sigmoid, tanh
from .ops.conv import conv2d

__all__ = ["sigmoid", "tanh", "relu", "relu_", "leaky_relu", "leaky_relu_"]
__all__ += ["conv2d"]
