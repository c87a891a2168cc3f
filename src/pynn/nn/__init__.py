"""Drop-in replacements for torch.nn layers, computing with pynn's kernels."""
from .activation import LeakyReLU, ReLU, Sigmoid, Tanh
from .rnn import LSTM, RNN, LSTMCell, RNNCell

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU"]
__all__ += ["RNN", "LSTM", "RNNCell", "LSTMCell"]
