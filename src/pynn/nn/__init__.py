"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .activation import LogSoftmax, Softmax
from .loss import CrossEntropyLoss, MSELoss

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU"]
__all__ += ["Softmax", "LogSoftmax", "MSELoss", "CrossEntropyLoss"]
