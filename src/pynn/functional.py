"""pynn's ops under torch.nn.functional's names, signatures and defaults."""
from .ops.activation import leaky_relu, leaky_relu_, relu, relu_, sigmoid, tanh
from .ops.batchnorm import batch_norm
from .ops.conv import conv2d
from .ops.dropout import dropout
from .ops.linear import linear
from .ops.loss import cross_entropy, mse_loss
from .ops.lrn import local_response_norm
from .ops.pool import adaptive_avg_pool2d, avg_pool2d, max_pool2d, max_pool2d_with_indices
from .ops.softmax import log_softmax, softmax

__all__ = sorted(name for name in dir() if not name.startswith("_") and name != "annotations")
