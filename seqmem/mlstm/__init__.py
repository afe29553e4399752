"""The mLSTM of xLSTM (Beck et al. 2024): a matrix memory with exponential gating, parallel and recurrent."""

from .module import MLSTM, MLSTMState

__all__ = ["MLSTM", "MLSTMState"]
