"""Utilities for parity tests against torch."""
import torch


def clone_leaf(t, requires_grad=True):
    """A detached copy with the same strides (so channels_last / non-contiguous layouts survive)."""
    out = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
    out.copy_(t.detach())
    return out.requires_grad_(requires_grad)


def non_contiguous(t):
    """The same values, laid out transposed in memory (a non-contiguous view)."""
    if t.dim() < 2:
        return t.repeat_interleave(2)[::2]
    return t.transpose(-1, -2).contiguous().transpose(-1, -2)
