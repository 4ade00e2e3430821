"""cifar100: train our own CNN on CIFAR-100, see how it went, and use it on your photos."""

__version__ = "0.1.0"
