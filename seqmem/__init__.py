"""seqmem: how does a network remember a sequence?

The Elman RNN, the LSTM, the GRU, causal attention and a selective state-space model behind one
protocol (`SequenceModel`), verified on several backends, and measured side by side.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .gru import GRU
from .lstm import LSTM, LSTMGates
from .protocol import (
    GRUState,
    KVCache,
    LSTMState,
    RNNState,
    SequenceModel,
    SSMState,
    State,
    map_state,
    state_nbytes,
)
from .registry import build, model_names
from .rnn import RNN
from .ssm import SelectiveSSM
from .transformer import CausalTransformer

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "CausalTransformer",
    "GRUState",
    "KVCache",
    "LSTMGates",
    "LSTMState",
    "RNNState",
    "SSMState",
    "SelectiveSSM",
    "SequenceModel",
    "State",
    "__version__",
    "build",
    "map_state",
    "model_names",
    "state_nbytes",
]
