import torch


class Flatten(torch.nn.Module):
    """Drop-in torch.nn.Flatten: merges dims start_dim..end_dim. No kernel: it is a view when
    the strides allow one (torch.flatten's rule), a copy otherwise."""

    __constants__ = ["start_dim", "end_dim"]

    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
