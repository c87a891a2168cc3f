"""Networks built only from pynn layers."""
from .alexnet import AlexNet, AlexNetPaper, alexnet, alexnet_paper
from .cnn import CNN
from .googlenet import BasicConv2d, GoogLeNet, GoogLeNetOutputs, Inception, InceptionAux, googlenet
from .lenet import LeNet5, lenet5
from .resnet import (BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50, resnet101,
                     resnet152)
from .vgg import (VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)

__all__ = [
    "CNN", "LeNet5", "lenet5", "AlexNetPaper", "alexnet_paper", "AlexNet", "alexnet",
    "VGG", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux", "BasicConv2d", "googlenet",
    "ResNet", "BasicBlock", "Bottleneck", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
]
