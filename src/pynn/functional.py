"""pynn's ops under torch.nn.functional's names, signatures and defaults."""
from .ops.activation import leaky_relu, leaky_relu_, relu, relu_, sigmoid, tanh
from .ops.loss import cross_entropy, mse_loss
from .ops.softmax import log_softmax, softmax

__all__ = ["sigmoid", "tanh", "relu", "relu_", "leaky_relu", "leaky_relu_"]
__all__ += ["softmax", "log_softmax", "mse_loss", "cross_entropy"]
