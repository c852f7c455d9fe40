"""Datasets a job file can name (embedded, synthetic, torchvision sets from local files),
and the wrappers a job can put around them (label noise, dict samples)."""

from loom.data.as_dict import AsDict
from loom.data.cifar import cifar10, cifar100
from loom.data.digits import digits
from loom.data.image_folder import image_folder
from loom.data.label_noise import NoisyLabels
from loom.data.mnist import fashion_mnist, mnist
from loom.data.synthetic import synthetic

__all__ = [
    "AsDict",
    "NoisyLabels",
    "cifar10",
    "cifar100",
    "digits",
    "fashion_mnist",
    "image_folder",
    "mnist",
    "synthetic",
]
