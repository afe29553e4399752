"""The GRU family: `module.GRU`, its reference loop and its Numba kernels."""

from .module import GRU

__all__ = ["GRU"]
