"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU"]
__all__ += ["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]
