"""Data: download, check, split, transform, load. Configs name a datamodule by its module path,
e.g. ``datamodules.mnist.MNISTDataModule``."""
