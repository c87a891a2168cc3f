"""Writes tests/fixtures/torchvision/<model>.txt: torchvision's state_dict keys and shapes.

Run where torchvision is installed (CI need not have it):
    python tools/torchvision_fixtures.py
The zoo tests then check that pynn's models have exactly these keys and shapes.
"""
from pathlib import Path

import torch
import torchvision

MODELS = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
          "vgg19_bn", "googlenet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torchvision"
out.mkdir(parents=True, exist_ok=True)
for name in MODELS:
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None, **kwargs)
    lines = [f"{k} {' '.join(map(str, v.shape))}" for k, v in model.state_dict().items()]
    (out / f"{name}.txt").write_text(f"# torchvision {torchvision.__version__}\n" + "\n".join(lines) + "\n")
    print(name, len(lines))
