"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .lrn import LocalResponseNorm

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU", "LocalResponseNorm", "BatchNorm1d",
           "BatchNorm2d"]
