"""pynn: classic neural-network kernels in our own C++ and CUDA, for PyTorch users.

    import pynn
    import pynn.functional as F
    layer = pynn.nn.Linear(128, 64)        # drop-in for torch.nn.Linear
"""
from ._backend import cuda_available, cuda_built, get_num_threads, set_num_threads
from . import data, functional, models, nn
from .convert import ConvertReport, convert, revert

__version__ = "0.1.0"

__all__ = ["functional", "nn", "models", "data", "convert", "revert", "ConvertReport", "cuda_available", "cuda_built", "get_num_threads",
           "set_num_threads", "__version__"]
