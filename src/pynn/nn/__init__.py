"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU"]
