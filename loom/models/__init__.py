"""Models a job file can name: small nets for small images, CIFAR ResNets, torchvision's."""

from loom.models.cifar_resnet import CifarResNet
from loom.models.mlp import MLP
from loom.models.small_cnn import SmallCNN
from loom.models.torchvision_model import torchvision_model

__all__ = ["MLP", "CifarResNet", "SmallCNN", "torchvision_model"]
