"""seqmem: how does a network remember a sequence?

The Elman RNN, the LSTM, the GRU, causal attention and a selective state-space model behind one
protocol (`SequenceModel`), verified on several backends, and measured side by side.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # for type checkers and the API docs; at run time, `__getattr__` below imports these
    from . import diagnostics, tasks
    from .compare import compare
    from .griffin import Griffin, GriffinState, Hawk, HawkState
    from .gru import GRU, GRUGates
    from .io import load, save
    from .linear_attention import LinearAttention, LinearAttentionState
    from .lstm import LSTM, LSTMGates
    from .minrnn import MinGRU, MinLSTM, MinRNNState
    from .mlstm import MLSTM, MLSTMState
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
    "MLSTM",
    "RNN",
    "CausalTransformer",
    "GRUGates",
    "GRUState",
    "Griffin",
    "GriffinState",
    "Hawk",
    "HawkState",
    "KVCache",
    "LSTMGates",
    "LSTMState",
    "LinearAttention",
    "LinearAttentionState",
    "MLSTMState",
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

# Where each public name lives (name -> module), imported on first use (PEP 562): `import seqmem` does not
# import torch, so `seqmem --help` and `seqmem --version` answer at once. Keep in step with the block above;
# the submodules in `__all__` (diagnostics, tasks) are found as any submodule is.
_HOME: dict[str, str] = {
    "compare": "compare",
    "Griffin": "griffin", "GriffinState": "griffin", "Hawk": "griffin", "HawkState": "griffin",
    "GRU": "gru", "GRUGates": "gru",
    "load": "io", "save": "io",
    "LinearAttention": "linear_attention", "LinearAttentionState": "linear_attention",
    "LSTM": "lstm", "LSTMGates": "lstm",
    "MinGRU": "minrnn", "MinLSTM": "minrnn", "MinRNNState": "minrnn",
    "MLSTM": "mlstm", "MLSTMState": "mlstm",
    "SequenceNetwork": "network", "size_for_budget": "network",
    "GRUState": "protocol", "KVCache": "protocol", "LSTMState": "protocol", "RNNState": "protocol",
    "SequenceModel": "protocol", "SSMState": "protocol", "State": "protocol", "map_state": "protocol",
    "state_nbytes": "protocol",
    "ModelSpec": "registry", "TaskSpec": "registry", "build": "registry", "list_models": "registry",
    "list_tasks": "registry", "model_names": "registry", "model_spec": "registry", "register_model": "registry",
    "register_task": "registry",
    "RNN": "rnn",
    "ScanInputs": "ssm", "SelectiveSSM": "ssm",
    "get_task": "tasks", "task_names": "tasks",
    "TrainResult": "train", "evaluate": "train", "train": "train",
    "CausalTransformer": "transformer",
}
# functions named after their module: `seqmem.compare` is the function `seqmem.compare.compare`
_SHADOWED = frozenset(name for name, module in _HOME.items() if name == module)


def __getattr__(name: str) -> Any:
    """`seqmem.NAME`: a public name imported from its module on first use, or a submodule."""
    if name in _HOME:
        value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")  # e.g. seqmem.tasks, seqmem.registry
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """The `seqmem` module: importing the submodule `seqmem.compare` (or `seqmem.train`) would bind it as the
    attribute `seqmem.compare`; that attribute stays the function, as `from .compare import compare` made it."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _SHADOWED and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
