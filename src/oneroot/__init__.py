"""oneroot: one root filesystem for a whole diskless cluster (a Single System Image)."""

__version__ = "0.1.0"
