"""Data: download, check, split, transform, load."""

from datamodules.base import SplitDataModule
from datamodules.cifar10 import CIFAR10DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mnist import MNISTDataModule
from datamodules.sequences import MNISTRowsDataModule
from datamodules.synthetic import GaussianClustersDataModule, PolynomialDataModule
from datamodules.vision import VisionDataModule

__all__ = [
    "CIFAR10DataModule",
    "GaussianClustersDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "MNISTRowsDataModule",
    "PolynomialDataModule",
    "SplitDataModule",
    "VisionDataModule",
]
