"""seqmem: how does a network remember a sequence?

The Elman RNN, the LSTM, the GRU, causal attention and a selective state-space model behind one
protocol (`SequenceModel`), verified on several backends, and measured side by side.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import diagnostics, tasks
from .compare import compare
from .gru import GRU, GRUGates
from .io import load, save
from .lstm import LSTM, LSTMGates
from .minrnn import MinGRU, MinLSTM, MinRNNState
from .network import SequenceNetwork, size_for_budget
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
from .registry import (
    ModelSpec,
    TaskSpec,
    build,
    list_models,
    list_tasks,
    model_names,
    model_spec,
    register_model,
    register_task,
)
from .rnn import RNN
from .ssm import ScanInputs, SelectiveSSM
from .tasks import get_task, task_names
from .train import TrainResult, evaluate, train
from .transformer import CausalTransformer

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "CausalTransformer",
    "GRUGates",
    "GRUState",
    "KVCache",
    "LSTMGates",
    "LSTMState",
    "MinGRU",
    "MinLSTM",
    "MinRNNState",
    "ModelSpec",
    "RNNState",
    "SSMState",
    "ScanInputs",
    "SelectiveSSM",
    "SequenceModel",
    "SequenceNetwork",
    "State",
    "TaskSpec",
    "TrainResult",
    "__version__",
    "build",
    "compare",
    "diagnostics",
    "evaluate",
    "get_task",
    "list_models",
    "list_tasks",
    "load",
    "map_state",
    "model_names",
    "model_spec",
    "register_model",
    "register_task",
    "save",
    "size_for_budget",
    "state_nbytes",
    "task_names",
    "tasks",
    "train",
]
