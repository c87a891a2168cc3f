"""Models the pipeline can build by name, and the input each one takes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import PipelineError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input: str                    # "flat" rows, "sequence" windows, or "image"
    build: Callable               # build(in_features | in_channels, out, args) -> nn.Module
    image_size: int | None = None
    channels: int | None = None   # images are repeated to this many channels when set
    tasks: tuple = ("regression", "classification")


def _fcnn(n_in, n_out, args):
    from ..models import FCNN

    return FCNN(n_in, args.get("hidden", [64, 32]), n_out, activation=args.get("activation", "relu"),
                dropout=args.get("dropout", 0.0))


def _recurrent(kind):
    def build(n_in, n_out, args):
        from .. import models

        cls = models.LSTMRegressor if kind == "lstm" else models.RNNRegressor
        return cls(input_size=n_in, hidden_size=args.get("hidden_size", 32),
                   num_layers=args.get("num_layers", 1), out_features=n_out)
    return build


def _cnn(n_in, n_out, args):
    from ..models import CNN

    return CNN(n_in, args.get("layers", [16, "M", 32, "M"]), n_out, hidden=args.get("hidden", [64]),
               input_size=16, batch_norm=args.get("batch_norm", True))


def _lenet(n_in, n_out, args):
    from ..models import lenet5

    return lenet5(n_out, in_channels=n_in, activation=args.get("activation", "tanh"),
                  pooling=args.get("pooling", "avg"))


def _zoo(name):
    def build(n_in, n_out, args):
        from .. import models

        kwargs = {"num_classes": n_out}
        if name == "googlenet":
            kwargs["init_weights"] = True
        return getattr(models, name)(**kwargs)
    return build


SPECS = {s.name: s for s in [
    ModelSpec("fcnn", "flat", _fcnn),
    ModelSpec("rnn", "sequence", _recurrent("rnn"), tasks=("regression",)),
    ModelSpec("lstm", "sequence", _recurrent("lstm"), tasks=("regression",)),
    ModelSpec("cnn", "image", _cnn, image_size=16),
    ModelSpec("lenet5", "image", _lenet, image_size=32),
    ModelSpec("alexnet", "image", _zoo("alexnet"), image_size=64, channels=3),
    ModelSpec("alexnet_paper", "image", _zoo("alexnet_paper"), image_size=224, channels=3),
    *[ModelSpec(n, "image", _zoo(n), image_size=32, channels=3)
      for n in ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]],
]}


def get_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        import difflib

        close = difflib.get_close_matches(name, list(SPECS), n=2)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise PipelineError(f"unknown model {name!r}{hint}; choose from {', '.join(SPECS)}")
    return SPECS[name]
