"""AlexNet: the paper's network (Krizhevsky, Sutskever, Hinton 2012) and torchvision's variant."""
from __future__ import annotations

import torch

from .. import nn
from ._common import check_weights


class AlexNetPaper(torch.nn.Module):
    """Five convolutions and three fully connected layers, ReLU, local response normalisation
    after the first two convolutions, overlapping 3x3/2 max pooling and dropout in the classifier.

    ``groups=2`` splits conv2, conv4 and conv5 into the two halves the original trained on two
    GPUs (conv3 saw both halves). Takes 224x224 inputs (conv1 pads by 2, giving 55x55 maps).
    """

    def __init__(self, num_classes: int = 1000, groups: int = 1, dropout: float = 0.5,
                 lrn_size: int = 5, lrn_alpha: float = 1e-4, lrn_beta: float = 0.75, lrn_k: float = 2.0):
        super().__init__()
        if groups not in (1, 2):
            raise ValueError(f"alexnet_paper: groups must be 1 or 2, got {groups}")
        lrn = lambda: nn.LocalResponseNorm(lrn_size, lrn_alpha, lrn_beta, lrn_k)  # noqa: E731
        self.features = torch.nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=groups), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
        )
        self.classifier = torch.nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(x, 1))


def alexnet_paper(num_classes: int = 1000, groups: int = 1, dropout: float = 0.5, **kwargs) -> AlexNetPaper:
    return AlexNetPaper(num_classes=num_classes, groups=groups, dropout=dropout, **kwargs)


class AlexNet(torch.nn.Module):
    """torchvision's AlexNet (one-GPU variant without LRN), with its module names."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        self.features = torch.nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = torch.nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def alexnet(*, weights=None, progress: bool = True, **kwargs) -> AlexNet:
    check_weights(weights, "alexnet")
    return AlexNet(**kwargs)
