"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .conv import Conv2d

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU"]
__all__ += ["Conv2d"]
