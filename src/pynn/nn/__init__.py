"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import Conv2d
from .dropout import Dropout
from .flatten import Flatten
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .lrn import LocalResponseNorm
from .pool import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .rnn import LSTM, LSTMCell, RNN, RNNCell

__all__ = sorted(name for name in dir() if not name.startswith("_") and name[0].isupper())
