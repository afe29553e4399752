"""The Elman RNN family: `module.RNN`, its reference loop and its Numba kernels."""

from .module import RNN

__all__ = ["RNN"]
