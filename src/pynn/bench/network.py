"""Whole-network benchmark cases: one training step, and inference.

A network case compares a model built from pynn's layers with the same architecture built from
torch.nn, starting from identical weights (pynn's state_dict loaded into the torch twin with
strict=True, which the drop-in layers guarantee). Both sides use the same torch optimizer: the
optimizer is not a pynn kernel, so it costs both the same.

    from pynn.bench.network import network_cases

    def cases():
        return network_cases(
            "fcnn", "13x64x64x1-b256",
            build=lambda device, dtype: FCNN(13, [64, 64], 1, device=device, dtype=dtype),
            reference=lambda device, dtype: torch_twin(device, dtype),
            batch=lambda device, dtype: (torch.randn(256, 13, device=device, dtype=dtype),
                                         torch.randn(256, 1, device=device, dtype=dtype)),
            loss="mse_loss", flops_forward=2 * 256 * (13 * 64 + 64 * 64 + 64), quick=True)

Modes: "train_step" = zero_grad + forward + loss + backward + optimizer.step, returning the loss;
"inference" = eval() and forward under torch.no_grad(). The first call of each side is compared
by the runner (max_abs_diff): the losses or outputs must agree, which catches a mis-wired twin.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .case import Case

TRAIN_STEP, INFERENCE = "train_step", "inference"


def _losses(loss) -> tuple[Callable, Callable]:
    """(pynn loss, torch loss): a torch.nn.functional name resolves on both sides."""
    if not isinstance(loss, str):
        return loss
    import torch.nn.functional as TF

    import pynn.functional as PF

    ours = getattr(PF, loss, None)
    if ours is None:
        raise NotImplementedError(f"pynn.functional has no {loss}: this network case needs it")
    return ours, getattr(TF, loss)


def _default_optimizer(params):
    return torch.optim.SGD(params, lr=1e-3, momentum=0.9)


def make_network(build: Callable, reference: Callable, batch: Callable, mode: str,
                 loss="mse_loss", optimizer: Callable = _default_optimizer) -> Callable:
    """A Case.make for one network and mode (see the module docstring)."""
    if mode not in (TRAIN_STEP, INFERENCE):
        raise ValueError(f"network mode must be {TRAIN_STEP!r} or {INFERENCE!r}, got {mode!r}")

    def make(device, dtype):
        ours = build(device, dtype).to(device=device, dtype=dtype)
        ref = reference(device, dtype).to(device=device, dtype=dtype)
        ref.load_state_dict(ours.state_dict(), strict=True)
        x, target = batch(device, dtype)
        if mode == INFERENCE:
            ours.eval()
            ref.eval()

            def infer(model):
                with torch.no_grad():
                    return model(x)

            return (lambda: infer(ours)), (lambda: infer(ref))

        loss_ours, loss_ref = _losses(loss)
        ours.train()
        ref.train()
        opt_ours, opt_ref = optimizer(ours.parameters()), optimizer(ref.parameters())

        def step(model, opt, loss_fn):
            opt.zero_grad(set_to_none=True)
            value = loss_fn(model(x), target)
            value.backward()
            opt.step()
            return value.detach()

        return (lambda: step(ours, opt_ours, loss_ours)), (lambda: step(ref, opt_ref, loss_ref))

    return make


def network_cases(model: str, shape: str, *, build: Callable, reference: Callable,
                  batch: Callable, loss="mse_loss", optimizer: Callable = _default_optimizer,
                  flops_forward: float = 0.0, bytes_inference: float = 0.0, quick: bool = False,
                  modes: Sequence[str] = (TRAIN_STEP, INFERENCE)) -> list[Case]:
    """Cases in the "network" group named "<model>-<shape>", one per mode.

    flops_forward is one forward pass over the batch; a training step counts three (forward,
    gradient of the input, gradient of the weights). bytes_inference, if known, is the weights
    plus the activations read and written once; left 0, the row has no GB/s.
    """
    out = []
    for mode in modes:
        flops = flops_forward * (3 if mode == TRAIN_STEP else 1)
        out.append(Case(group="network", name=f"{model}-{shape}", mode=mode,
                        make=make_network(build, reference, batch, mode, loss, optimizer),
                        flops=flops, bytes=bytes_inference if mode == INFERENCE else 0.0,
                        quick=quick, tags=("network", model),
                        # A training loop reuses its weights step after step, so one model is
                        # the honest setting; copies would also mean copies of the optimizer.
                        rotate=False))
    return out
