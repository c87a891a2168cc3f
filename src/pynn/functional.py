"""pynn's ops under torch.nn.functional's names, signatures and defaults."""
from .ops.activation import leaky_relu, leaky_relu_, relu, relu_, sigmoid, tanh
from .ops.batchnorm import batch_norm
from .ops.lrn import local_response_norm

__all__ = ["sigmoid", "tanh", "relu", "relu_", "leaky_relu", "leaky_relu_", "local_response_norm",
           "batch_norm"]
