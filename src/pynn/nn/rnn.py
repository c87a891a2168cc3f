"""Drop-in RNN, LSTM, RNNCell and LSTMCell: torch.nn's constructor arguments, parameter names,
state_dict keys, initialisation and repr; the compute is pynn's (pynn/ops/rnn.py)."""
from __future__ import annotations

import math
import numbers
import warnings

import torch
from torch.nn import Parameter, init
from torch.nn.utils.rnn import PackedSequence

from .. import _backend as B
from ..ops import rnn as R


def _check_int(value, name: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be greater than zero" if minimum == 1
                         else f"{name} must be at least {minimum}")


def _check_state(t, op: str, label: str, name: str, expected: tuple, input: torch.Tensor) -> None:
    """A hidden / cell state must have exactly `expected` shape, input's device and dtype. The
    shape message is torch's (label: hidden, hidden[0], hidden[1]); name: h_0 or c_0."""
    if tuple(t.shape) != expected:
        raise RuntimeError(f"{op}: Expected {label} size {expected}, got {list(t.shape)} "
                           f"for {name}")
    B.check_same(op, input=input, **{name: t})


class RNNBase(torch.nn.Module):
    """Shared by RNN and LSTM: parameters weight_ih_l{k}[_reverse], weight_hh_l{k}...,
    bias_ih_l{k}..., bias_hh_l{k}..., weight_hr_l{k}... (LSTM with proj_size), registered in
    torch's order so state_dicts are interchangeable."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None, dtype=None):
        super().__init__()
        if (not isinstance(dropout, numbers.Number) or isinstance(dropout, bool)
                or not 0 <= dropout <= 1):
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so "
                          "non-zero dropout expects num_layers greater than 1, but got "
                          f"dropout={dropout} and num_layers={num_layers}", stacklevel=3)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        _check_int(input_size, "input_size", 1)
        _check_int(hidden_size, "hidden_size", 1)
        _check_int(num_layers, "num_layers", 1)
        if not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if mode not in ("LSTM", "RNN_TANH", "RNN_RELU"):
            raise ValueError(f"Unrecognized RNN mode: {mode}")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        self.mode = mode
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory = {"device": device, "dtype": dtype}
        gate_size = 4 * hidden_size if mode == "LSTM" else hidden_size
        real_hidden = proj_size or hidden_size
        D = 2 if bidirectional else 1
        self._flat_weights_names = []
        for layer in range(num_layers):
            for d in range(D):
                layer_input = input_size if layer == 0 else real_hidden * D
                suffix = f"_l{layer}" + ("_reverse" if d == 1 else "")
                shapes = [("weight_ih", (gate_size, layer_input)),
                          ("weight_hh", (gate_size, real_hidden))]
                if bias:
                    shapes += [("bias_ih", (gate_size,)), ("bias_hh", (gate_size,))]
                if proj_size:
                    shapes.append(("weight_hr", (proj_size, hidden_size)))
                for name, shape in shapes:
                    setattr(self, name + suffix, Parameter(torch.empty(shape, **factory)))
                    self._flat_weights_names.append(name + suffix)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def flatten_parameters(self) -> None:
        """Kept for drop-in use: pynn reads each weight where it is, so there is nothing to pack."""

    @property
    def _flat_weights(self) -> list:
        return [getattr(self, n) for n in self._flat_weights_names]

    @property
    def all_weights(self) -> list:
        per = len(self._flat_weights_names) // (self.num_layers * (2 if self.bidirectional else 1))
        w = self._flat_weights
        return [w[i:i + per] for i in range(0, len(w), per)]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        return s

    def _run(self, input, hx):
        """Checks like torch's, then the whole stack in one autograd node. hx: None, a tensor
        (RNN) or a (h_0, c_0) pair (LSTM). Returns (output, h_n, c_n)."""
        op = type(self).__name__
        lstm = self.mode == "LSTM"
        if isinstance(input, PackedSequence):
            raise NotImplementedError(
                f"pynn.nn.{op}: PackedSequence input is not supported; pad the batch "
                "(torch.nn.utils.rnn.pad_packed_sequence) and pass a tensor")
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{op}: input must be a Tensor, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"{op}: Expected input to be 2D or 3D, got {input.dim()}D instead")
        B.check_tensor(input, op, "input")
        batched = input.dim() == 3
        states = ()
        if hx is not None:
            if lstm:
                if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
                    raise TypeError(f"{op}: hx must be a tuple (h_0, c_0) of tensors, got "
                                    f"{type(hx).__name__}")
                states = tuple(hx)
            else:
                states = (hx,)
            for i, s in enumerate(states):
                if not isinstance(s, torch.Tensor):
                    name = f"hx[{i}]" if lstm else "hx"
                    raise TypeError(f"{op}: {name} must be a Tensor, got {type(s).__name__}")
            want = 3 if batched else 2
            if any(s.dim() != want for s in states):
                got = ", ".join(f"{s.dim()}-D" for s in states)
                kind = "batched 3-D" if batched else "unbatched 2-D"
                names = "hx and cx" if lstm else "hx"
                raise RuntimeError(f"{op}: For {kind} input, {names} should also be {want}-D but "
                                   f"got ({got}) tensor{'s' if lstm else ''}")
        if not batched:
            input = input.unsqueeze(1)
            states = tuple(s.unsqueeze(1) for s in states)
        elif self.batch_first:
            input = input.transpose(0, 1)
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{op}: input.size(-1) must be equal to input_size. Expected "
                               f"{self.input_size}, got {input.shape[-1]}")
        if input.shape[0] == 0:
            raise RuntimeError(f"{op}: Expected sequence length to be larger than 0 in RNN")
        weights = self._flat_weights
        B.check_same(op, input=input, **{n: w for n, w in zip(self._flat_weights_names, weights)})
        D = 2 if self.bidirectional else 1
        batch = input.shape[1]
        h_shape = (self.num_layers * D, batch, self.proj_size or self.hidden_size)
        c_shape = (self.num_layers * D, batch, self.hidden_size)
        if states:
            _check_state(states[0], op, "hidden[0]" if lstm else "hidden", "h_0", h_shape, input)
            if lstm:
                _check_state(states[1], op, "hidden[1]", "c_0", c_shape, input)
            h0 = states[0]
            c0 = states[1] if lstm else None
        else:
            h0 = input.new_zeros(h_shape)
            c0 = input.new_zeros(c_shape) if lstm else None
        cfg = R.RecurrentConfig(self.mode, self.num_layers, self.bidirectional, self.bias,
                                self.hidden_size, self.proj_size, self.dropout, self.training)
        out, h_n, c_n = R.recurrent(input, h0, c0, weights, cfg)
        if not batched:
            return out.squeeze(1), h_n.squeeze(1), c_n.squeeze(1) if lstm else None
        if self.batch_first:
            out = out.transpose(0, 1)  # torch returns this same transposed view
        return out, h_n, c_n if lstm else None


class RNN(RNNBase):
    """Elman RNN, h_t = nonlinearity(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh). Drop-in for
    torch.nn.RNN; forward(input, hx=None) -> (output, h_n)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None, dtype=None):
        if nonlinearity == "tanh":
            mode = "RNN_TANH"
        elif nonlinearity == "relu":
            mode = "RNN_RELU"
        else:
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
        self.nonlinearity = nonlinearity
        super().__init__(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, 0, device, dtype)

    def forward(self, input, hx=None):
        out, h_n, _ = self._run(input, hx)
        return out, h_n


class LSTM(RNNBase):
    """LSTM with torch's gate order (i, f, g, o) and optional projection (proj_size). Drop-in for
    torch.nn.LSTM; forward(input, hx=None) -> (output, (h_n, c_n))."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None):
        super().__init__("LSTM", input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, proj_size, device, dtype)

    def forward(self, input, hx=None):
        out, h_n, c_n = self._run(input, hx)
        return out, (h_n, c_n)


class RNNCellBase(torch.nn.Module):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device=None, dtype=None):
        super().__init__()
        _check_int(input_size, "input_size", 1)
        _check_int(hidden_size, "hidden_size", 1)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        factory = {"device": device, "dtype": dtype}
        self.weight_ih = Parameter(torch.empty(num_chunks * hidden_size, input_size, **factory))
        self.weight_hh = Parameter(torch.empty(num_chunks * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = Parameter(torch.empty(num_chunks * hidden_size, **factory))
            self.bias_hh = Parameter(torch.empty(num_chunks * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        nl = getattr(self, "nonlinearity", "tanh")
        if nl != "tanh":
            s += f", nonlinearity={nl}"
        return s

    def _weights(self):
        """(weight_ih, weight_hh, bias_ih, bias_hh), read from _parameters: a Module attribute
        lookup goes through __getattr__, about 0.55 us each, 3 us of a 29 us step of a small
        cell driven from Python. A parametrization or weight norm moves a name out of
        _parameters; such a module takes its weights as attributes, as torch's cells do."""
        p = self._parameters
        try:
            return p["weight_ih"], p["weight_hh"], p["bias_ih"], p["bias_hh"]
        except KeyError:
            return self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh

    def _prepare(self, input, states, weights):
        """Torch-like checks; returns (2-D input, 2-D states, batched). A cell runs once per
        step of a loop in Python, so the common case reads each property once and builds an
        error message only when a check fails."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"{type(self).__name__}: input must be a Tensor, got "
                            f"{type(input).__name__}")
        shape = input.shape
        dim = len(shape)
        if dim != 2 and dim != 1:
            raise ValueError(f"{type(self).__name__}: Expected input to be 1D or 2D, got "
                             f"{dim}D instead")
        dt, dev = input.dtype, input.device
        if dt not in B.FLOATING or not (input.is_cpu or input.is_cuda):
            B.check_tensor(input, type(self).__name__, "input")
        if shape[-1] != self.input_size:
            raise RuntimeError(f"{type(self).__name__}: input has inconsistent input_size: got "
                               f"{shape[-1]} expected {self.input_size}")
        batched = dim == 2
        for name, s in zip(("hx", "cx"), states):
            if s is None:
                continue
            if not isinstance(s, torch.Tensor):
                raise TypeError(f"{type(self).__name__}: {name} must be a Tensor, got "
                                f"{type(s).__name__}")
            s_shape = s.shape
            if (len(s_shape) != dim or s_shape[-1] != self.hidden_size
                    or (batched and s_shape[0] != shape[0])):
                self._bad_state(name, s, input)
            if s.dtype != dt or s.device != dev:
                B.check_same(type(self).__name__, input=input, **{name: s})
        for name, w in zip(("weight_ih", "weight_hh"), weights):
            if w.dtype != dt or w.device != dev:
                B.check_same(type(self).__name__, input=input, **{name: w})
        if not batched:
            input = input.unsqueeze(0)
            states = tuple(s.unsqueeze(0) if s is not None else None for s in states)
        if states[0] is None or states[-1] is None:
            zeros = input.new_zeros(input.shape[0], self.hidden_size)
            states = tuple(zeros if s is None else s for s in states)
        return input, states, batched

    def _bad_state(self, name, s, input):
        """Raises torch's message for a state whose shape does not fit input."""
        op = type(self).__name__
        if s.dim() != input.dim():
            raise RuntimeError(f"{op}: {name} must be {input.dim()}-D like input "
                               f"({'batched' if input.dim() == 2 else 'unbatched'}), got "
                               f"{s.dim()}-D with shape {list(s.shape)}")
        if input.dim() == 2 and s.shape[0] != input.shape[0]:
            raise RuntimeError(f"{op}: Input batch size {input.shape[0]} doesn't match "
                               f"{name} batch size {s.shape[0]}")
        raise RuntimeError(f"{op}: {name} has inconsistent hidden_size: got "
                           f"{s.shape[-1]}, expected {self.hidden_size}")


class RNNCell(RNNCellBase):
    """Drop-in for torch.nn.RNNCell: h' = nonlinearity(x W_ih^T + b_ih + h W_hh^T + b_hh)."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None):
        if nonlinearity not in R.NONLINEARITIES:
            raise ValueError(f"Unknown nonlinearity: {nonlinearity}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)

    def forward(self, input, hx=None):
        weights = self._weights()
        x, (h,), batched = self._prepare(input, (hx,), weights)
        out = R.rnn_cell(x, h, *weights, self.nonlinearity)
        return out if batched else out.squeeze(0)


class LSTMCell(RNNCellBase):
    """Drop-in for torch.nn.LSTMCell: forward(input, (h, c)=None) -> (h', c'); the gate math of a
    step is one fused kernel."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None):
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input, hx=None):
        if hx is not None and not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise TypeError(f"LSTMCell: hx must be a tuple (h_0, c_0) of tensors, got "
                            f"{type(hx).__name__}")
        weights = self._weights()
        x, (h, c), batched = self._prepare(input, tuple(hx) if hx is not None else (None, None),
                                           weights)
        h1, c1 = R.lstm_cell(x, h, c, *weights)
        if not batched:
            return h1.squeeze(0), c1.squeeze(0)
        return h1, c1
