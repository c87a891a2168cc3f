"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU"]
__all__ += ["Linear", "Dropout", "Flatten"]
