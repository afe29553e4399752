"""The LSTM family: `module.LSTM`, its reference loop and its Numba kernels."""

from .module import LSTM
from .reference import LSTMGates

__all__ = ["LSTM", "LSTMGates"]
