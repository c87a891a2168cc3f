"""Recurrent regressors: a window of past values -> the next value(s).

input (N, window, features) -> pynn.nn.RNN / pynn.nn.LSTM (batch_first) -> the top layer's
output at the last step -> linear head -> (N, out_features).
"""
from __future__ import annotations

import torch

from ..nn import LSTM, RNN, Linear


class _RecurrentRegressor(torch.nn.Module):
    rnn_class: type

    def __init__(self, input_size: int = 1, hidden_size: int = 32, num_layers: int = 1,
                 out_features: int = 1, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, **rnn_kwargs):
        super().__init__()
        self.rnn = self.rnn_class(input_size, hidden_size, num_layers, batch_first=True,
                                  dropout=dropout, bidirectional=bidirectional, device=device,
                                  dtype=dtype, **rnn_kwargs)
        width = (rnn_kwargs.get("proj_size") or hidden_size) * (2 if bidirectional else 1)
        self.head = Linear(width, out_features, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # (N, window): one feature per step
            x = x.unsqueeze(-1)
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__}: expected input (N, window, features) or "
                             f"(N, window), got shape {tuple(x.shape)}")
        out = self.rnn(x)[0]
        return self.head(out[:, -1])


class RNNRegressor(_RecurrentRegressor):
    """Elman RNN (tanh by default; nonlinearity='relu' is passed through) + linear head."""
    rnn_class = RNN


class LSTMRegressor(_RecurrentRegressor):
    """LSTM (proj_size is passed through) + linear head."""
    rnn_class = LSTM
