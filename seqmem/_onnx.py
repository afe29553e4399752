"""ONNX Runtime's LSTM and GRU operators as benchmark baselines (extra `seqmem[bench]`).

The graph is one `LSTM` or `GRU` node built in code with `onnx.helper` (nothing is downloaded),
with the weights of a `torch.nn.LSTM`/`GRU` reordered to ONNX's gate order, so the baseline computes
the same function as seqmem's model with those weights (checked by `max_abs_diff`):

| | torch.nn | ONNX |
| --- | --- | --- |
| LSTM gates | `i, f, g, o` | `i, o, f, c` |
| GRU gates | `r, z, n` | `z, r, h`, `linear_before_reset=1` for torch's form |

Shapes are ONNX's default layout, sequence first: `X (T, B, I)`, `W (1, G H, I)`, `R (1, G H, H)`,
`B (1, 2 G H)` (`[W_b, R_b]`), states `(1, B, H)`.

References:
    ONNX operator specifications: LSTM and GRU (opset 14).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["OnnxRecurrent", "onnx_missing"]

_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2)}
"""ONNX's gate blocks, as indices of torch's: LSTM `i, o, f, c` = torch's `i, o, f, g`; GRU `z, r, h`."""


def onnx_missing() -> str | None:
    """`None` if `onnx` and `onnxruntime` are importable, else what to install."""
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'seqmem[bench]')"
    return None


def _reorder(w: torch.Tensor, kind: str) -> np.ndarray:  # kind: the ONNX operator, "LSTM" or "GRU"
    """Gate blocks of `w` `(G H, ...)` from torch's order to ONNX's, as float32 numpy with a leading 1."""
    blocks = w.detach().to(torch.float32).chunk(len(_ORDER[kind]), dim=0)
    return torch.cat([blocks[i] for i in _ORDER[kind]], dim=0).unsqueeze(0).numpy()


class OnnxRecurrent:
    """An ONNX Runtime session running one LSTM or GRU layer with a `torch.nn` module's weights.

    Args:
        module: a single-layer, unidirectional `torch.nn.LSTM` or `torch.nn.GRU` with biases.
        num_threads: intra-op threads of the session.

    Raises:
        ImportError: if `onnx` or `onnxruntime` is missing.
        TypeError: for another module.
    """

    def __init__(self, module: nn.Module, num_threads: int = 1) -> None:
        missing = onnx_missing()
        if missing:
            raise ImportError(missing)
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        if isinstance(module, nn.LSTM):
            kind, n_states = "LSTM", 2
        elif isinstance(module, nn.GRU):
            kind, n_states = "GRU", 1
        else:
            raise TypeError(f"OnnxRecurrent: expects torch.nn.LSTM or torch.nn.GRU, got {type(module).__name__}")
        self.kind = kind
        self.batch_first = module.batch_first
        H, I = module.hidden_size, module.input_size
        self.hidden_size = H
        W = _reorder(module.weight_ih_l0, kind)  # (1, G H, I)
        R = _reorder(module.weight_hh_l0, kind)  # (1, G H, H)
        Bias = np.concatenate([_reorder(module.bias_ih_l0, kind), _reorder(module.bias_hh_l0, kind)], axis=1)
        inits = [numpy_helper.from_array(a, name) for a, name in ((W, "W"), (R, "R"), (Bias, "B"))]
        state_names = ["initial_h", "initial_c"][:n_states]
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", I])] + [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "N", H]) for n in state_names
        ]
        out_names = ["Y", "Y_h", "Y_c"][: 2 + (n_states - 1)]
        outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", 1, "N", H])] + [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, "N", H]) for n in out_names[1:]
        ]
        node_inputs = ["X", "W", "R", "B", ""] + state_names  # "" : no sequence_lens
        attrs: dict[str, Any] = {"hidden_size": H}
        if kind == "GRU":
            attrs["linear_before_reset"] = 1  # torch's reset_after form
        node = helper.make_node(kind, node_inputs, out_names, **attrs)
        graph = helper.make_graph([node], f"seqmem_{kind.lower()}", inputs, outputs, initializer=inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        onnx.checker.check_model(model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self._state_names = state_names
        self._out_names = out_names

    def initial_state(self, batch_size: int) -> list[np.ndarray]:
        """Zeros, `(1, batch, H)` per state."""
        return [np.zeros((1, batch_size, self.hidden_size), np.float32) for _ in self._state_names]

    def run(self, x: np.ndarray, state: list[np.ndarray] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
        """The layer over a sequence.

        Args:
            x: `(T, B, I)` float32 (sequence first).
            state: the states `(1, B, H)`, or `None` for zeros.

        Returns:
            `(Y, state)`: `Y` `(T, 1, B, H)` and the final states.
        """
        state = self.initial_state(x.shape[1]) if state is None else state
        feeds = {"X": x, **dict(zip(self._state_names, state, strict=True))}
        y, *final = self.session.run(self._out_names, feeds)
        return y, final

    def step(self, x_t: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        """One token per call (`x_t` `(1, B, I)`), as a streaming user would call it; the new states."""
        feeds = {"X": x_t, **dict(zip(self._state_names, state, strict=True))}
        return self.session.run(self._out_names[1:], feeds)

    def max_abs_diff(self, module: nn.Module, x: torch.Tensor) -> float:
        """The largest difference between this session's outputs and `module`'s on `x` `(B, T, I)`."""
        with torch.no_grad():
            ref = module(x if module.batch_first else x.transpose(0, 1))[0]
        ref = ref if module.batch_first else ref.transpose(0, 1)  # (B, T, H)
        y, _ = self.run(x.transpose(0, 1).contiguous().float().numpy())
        return float(np.abs(y[:, 0].transpose(1, 0, 2) - ref.float().numpy()).max())
