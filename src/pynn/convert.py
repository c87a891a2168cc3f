"""pynn.convert(model) / pynn.revert(model): swap torch.nn layers for their pynn twins and back.

The swap changes each layer's class in place. The object stays the same, so its parameters and
buffers (and any optimizer holding them), requires_grad flags, training mode, device, dtype,
hooks and the parent's reference all survive untouched. This works because every pynn layer keeps
the attributes of the torch layer it replaces (same constructor, same names); a twin that needs
more defines `_pynn_check_convertible()` to refuse a configuration it cannot run (the layer is then
left as it was and reported).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ConvertReport:
    converted: list = field(default_factory=list)    # (qualified name, class name)
    unsupported: list = field(default_factory=list)  # (qualified name, class name, reason)

    def __str__(self) -> str:
        lines = [f"converted {len(self.converted)} layer(s), left {len(self.unsupported)} alone"]
        for name, cls, why in self.unsupported:
            lines.append(f"  {name or '<root>'} ({cls}): {why}")
        return "\n".join(lines)


def _twins() -> dict:
    """torch.nn class -> pynn.nn class, for every pynn layer named like a torch.nn layer."""
    from . import nn as pnn

    pairs = {}
    for name in getattr(pnn, "__all__", []):
        ours, theirs = getattr(pnn, name, None), getattr(torch.nn, name, None)
        if isinstance(ours, type) and isinstance(theirs, type) and ours is not theirs:
            pairs[theirs] = ours
    return pairs


def _swap(model: torch.nn.Module, mapping: dict, report: ConvertReport, direction: str):
    for name, module in model.named_modules():
        cls = type(module)
        target = mapping.get(cls)
        if target is None:
            # a leaf layer we have no twin for (containers and user modules are not layers)
            if direction == "convert" and not list(module.children()) and cls.__module__.startswith("torch.nn"):
                report.unsupported.append((name, cls.__name__, "no pynn twin"))
            continue
        module.__class__ = target
        # torch's recurrent layers cache weak references to their weights; rebuild them.
        if direction == "revert" and hasattr(module, "_init_flat_weights"):
            module._init_flat_weights()
        check = getattr(module, "_pynn_check_convertible", None)
        if direction == "convert" and check is not None:
            try:
                check()
            except NotImplementedError as exc:
                module.__class__ = cls
                report.unsupported.append((name, cls.__name__, str(exc)))
                continue
        report.converted.append((name, cls.__name__))
    return report


def convert(model: torch.nn.Module) -> ConvertReport:
    """Replaces every supported torch.nn layer inside `model` (the model itself included) with
    its pynn twin, in place. Returns a report listing what was converted and what was left."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: model must be a torch.nn.Module, got {type(model).__name__}")
    return _swap(model, _twins(), ConvertReport(), "convert")


def revert(model: torch.nn.Module) -> ConvertReport:
    """Undoes convert(): every pynn layer inside `model` becomes its torch.nn twin again."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"revert: model must be a torch.nn.Module, got {type(model).__name__}")
    return _swap(model, {v: k for k, v in _twins().items()}, ConvertReport(), "revert")
