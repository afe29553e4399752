"""The GRU family: `module.GRU`, its reference loop and its Numba kernels."""

from .module import GRU
from .reference import GRUGates

__all__ = ["GRU", "GRUGates"]
