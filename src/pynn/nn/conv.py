import math
from numbers import Integral

import torch

from .. import functional as F

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value, name):
    if isinstance(value, Integral) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(int(v) for v in value)
    raise ValueError(f"Conv2d: {name} must be an int or a tuple of 2 ints, got {value!r}")


class Conv2d(torch.nn.Module):
    """torch.nn.Conv2d computed by pynn's conv2d kernels.

    Same constructor, parameters (weight [out, in/groups, kH, kW], bias [out]), initialisation,
    state_dict keys and repr. Non-zero padding modes pad the input first (as torch does) with
    torch.nn.functional.pad, then convolve without padding.
    """

    __constants__ = ["stride", "padding", "dilation", "groups", "padding_mode", "in_channels",
                     "out_channels", "kernel_size"]

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        if not isinstance(groups, Integral) or groups <= 0:
            raise ValueError(f"Conv2d: groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise ValueError(f"Conv2d: in_channels ({in_channels}) must be divisible by "
                             f"groups ({groups})")
        if out_channels % groups != 0:
            raise ValueError(f"Conv2d: out_channels ({out_channels}) must be divisible by "
                             f"groups ({groups})")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"Conv2d: padding_mode must be one of {_PADDING_MODES}, got "
                             f"{padding_mode!r}")
        kernel_size = _pair(kernel_size, "kernel_size")
        stride = _pair(stride, "stride")
        dilation = _pair(dilation, "dilation")
        if min(kernel_size) <= 0:
            raise ValueError(f"Conv2d: kernel_size must be positive, got {kernel_size}")
        if min(stride) <= 0:
            raise ValueError(f"Conv2d: stride must be positive, got {stride}")
        if min(dilation) <= 0:
            raise ValueError(f"Conv2d: dilation must be positive, got {dilation}")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Conv2d: invalid padding string {padding!r}, expected 'same' "
                                 "or 'valid'")
            if padding == "same" and stride != (1, 1):
                raise ValueError("Conv2d: padding='same' is not supported for strided "
                                 "convolutions")
        else:
            padding = _pair(padding, "padding")
            if min(padding) < 0:
                raise ValueError(f"Conv2d: padding must be non-negative, got {padding}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = False
        self.output_padding = (0, 0)
        self.groups = groups
        self.padding_mode = padding_mode
        # F.pad's order (left, right, top, bottom) for the non-zero padding modes; for 'same' the
        # odd extra row/column goes at the end, as in torch.
        if padding == "valid":
            self._reversed_padding_repeated_twice = [0, 0, 0, 0]
        elif padding == "same":
            rp = []
            for d, k in zip(reversed(dilation), reversed(kernel_size)):
                total = d * (k - 1)
                rp += [total // 2, total - total // 2]
            self._reversed_padding_repeated_twice = rp
        else:
            self._reversed_padding_repeated_twice = [padding[1], padding[1], padding[0],
                                                     padding[0]]
        factory = {"device": device, "dtype": dtype}
        self.weight = torch.nn.Parameter(
            torch.empty((out_channels, in_channels // groups, *kernel_size), **factory))
        if bias:
            self.bias = torch.nn.Parameter(torch.empty(out_channels, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch's default: kaiming_uniform_ with a=sqrt(5) (uniform in +-1/sqrt(fan_in)) for the
        # weight, and the same bound for the bias.
        torch.nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(self.weight)
            if fan_in != 0:
                bound = 1 / math.sqrt(fan_in)
                torch.nn.init.uniform_(self.bias, -bound, bound)

    def _conv_forward(self, input, weight, bias):
        # Kept under torch's name: subclasses of torch.nn.Conv2d (weight standardisation, ...)
        # override forward and call it with their own weight.
        if self.padding_mode != "zeros":
            padded = torch.nn.functional.pad(input, self._reversed_padding_repeated_twice,
                                             mode=self.padding_mode)
            return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation,
                        self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        s += f", stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s
