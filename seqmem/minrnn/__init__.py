"""The minimal RNNs of Feng et al. (2024): minGRU and minLSTM, sequential, log-space parallel and Numba."""

from .module import MinGRU, MinLSTM, MinRNNState

__all__ = ["MinGRU", "MinLSTM", "MinRNNState"]
