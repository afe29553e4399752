"""Conformance tests of two models that know nothing of seqmem, with `seqmem.testing.conformance`.

Each `conformance(...)` below collects as one test per property and dtype
(`test_torch_gru[step_equals_forward-float32]`, ...). Run it with the table of results at the end:

    pytest examples/test_third_party_models.py --seqmem-report

(`-p _seqmem_pytestplugin` loads the plugin where seqmem is not installed with its entry points, e.g.
from a source checkout.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seqmem.testing import conformance


# --8<-- [start:torch_gru]
class TorchGRU(nn.Module):
    """`torch.nn.GRU` behind the protocol. Its state is `nn.GRU`'s own: the bare tensor
    `h` of shape `(num_layers, batch, hidden_size)`."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 2) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.gru = nn.GRU(input_size, hidden_size, num_layers, batch_first=True)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return torch.zeros(self.gru.num_layers, batch_size, self.output_size, device=device, dtype=dtype)

    def forward(self, x, h=None):
        return self.gru(x, h)  # (y, h_n): y (batch, seq_len, hidden_size)

    def step(self, x_t, h):
        y, h = self.gru(x_t[:, None], h)  # a sequence of one step
        return y[:, 0], h
# --8<-- [end:torch_gru]


# --8<-- [start:causal_conv]
class CausalConv(nn.Module):
    """A stateless parallel model: a causal convolution over time, `forward(x) -> y` and nothing else
    (no state, no `step`, no `initial_state`)."""

    def __init__(self, input_size: int, output_size: int, kernel_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size, self.kernel_size = input_size, output_size, kernel_size
        self.conv = nn.Conv1d(input_size, output_size, kernel_size)

    def forward(self, x):
        x = F.pad(x.transpose(1, 2), (self.kernel_size - 1, 0))  # (batch, input_size, k - 1 + seq_len): past only
        return self.conv(x).transpose(1, 2)  # (batch, seq_len, output_size)
# --8<-- [end:causal_conv]


test_torch_gru = conformance(lambda: TorchGRU(3, 8), dtypes=(torch.float64, torch.float32), state_growth="constant")
test_causal_conv = conformance(lambda: CausalConv(3, 5))
