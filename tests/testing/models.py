"""Models written as third-party code is: states of every shape (a bare tensor, a list, a dict with an int
in it, `None`), models without `step`, without `initial_state`, with a `forward(x)` that takes no state,
and a parallel form that drifts in float32. Each has a switch that plants one realistic bug.

The two models of the documentation's example (`TorchGRU`, a bare-tensor state, and `CausalConv`,
stateless) are loaded from `examples/test_third_party_models.py`, so the page and the tests share them.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "test_third_party_models.py"


def _load_example():
    spec = importlib.util.spec_from_file_location("seqmem_docs_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load_example()
TorchGRU, CausalConv = example.TorchGRU, example.CausalConv


class ForgetfulGRU(TorchGRU):
    """The bug: forward drops the state it is given (`self.gru(x)`), so a second chunk restarts from zeros."""

    def forward(self, x, h=None):
        return self.gru(x)


class PeekingConv(CausalConv):
    """The bug: "same" padding, split around the window, so y_t sees x_{t+1}."""

    def forward(self, x):
        k = self.kernel_size
        x = F.pad(x.transpose(1, 2), ((k - 1) // 2, k // 2))
        return self.conv(x).transpose(1, 2)


class PointwiseMLP(nn.Module):
    """Stateless in the protocol's own terms: `initial_state` is None, `step` and `forward` pass None along."""

    def __init__(self, input_size: int = 3, output_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, output_size
        self.net = nn.Sequential(nn.Linear(input_size, 8), nn.Tanh(), nn.Linear(8, output_size))

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return None

    def step(self, x_t, state):
        return self.net(x_t), None

    def forward(self, x, state=None):
        return self.net(x), None


class LayerStack(nn.Module):
    """Two stacked tanh cells; the state is a list `[h0, h1]`."""

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.cells = nn.ModuleList([nn.RNNCell(input_size, hidden_size), nn.RNNCell(hidden_size, hidden_size)])

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return [torch.zeros(batch_size, self.output_size, device=device, dtype=dtype) for _ in self.cells]

    def step(self, x_t, state):
        new = []
        for cell, h in zip(self.cells, state):
            x_t = cell(x_t, h)
            new.append(x_t)
        return x_t, new

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype) if state is None else state
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, dim=1), state


class NoInitialState(LayerStack):
    """`forward(x)` starts from zeros of its own; there is no `initial_state` to ask."""

    initial_state = None

    def forward(self, x, state=None):
        if state is None:
            state = [torch.zeros(x.shape[0], self.output_size, dtype=x.dtype) for _ in self.cells]
        return super().forward(x, state)


class ConvSSMState(NamedTuple):
    conv: Tensor  # (batch, d_conv - 1, d_model): the last inputs of the convolution
    ssm: Tensor  # (batch, d_model): the recurrence


class ConvSSM(nn.Module):
    """A causal depthwise convolution (`d_conv` taps) then a diagonal linear recurrence, as in Mamba's
    block, `layers` deep. One layer keeps a `NamedTuple` state `ConvSSMState(conv, ssm)`; two layers a
    dict of per-layer lists, `{"conv": [buf0, buf1], "ssm": [h0, h1]}`.

    `step_keeps` plants the issue's bug: the last layer's `step` keeps that many rows of its
    convolution buffer (`d_conv` instead of `d_conv - 1`) while `forward` keeps `d_conv - 1`."""

    layers = 1
    step_keeps: int | None = None

    def __init__(self, d_model: int = 4, d_conv: int = 3) -> None:
        super().__init__()
        self.input_size = self.output_size = d_model
        self.d_conv = d_conv
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Parameter(torch.randn(self.layers, d_model, d_conv, generator=gen) / d_conv)
        self.decay = nn.Parameter(torch.rand(self.layers, d_model, generator=gen) * 0.9)

    def _pack(self, conv: list[Tensor], ssm: list[Tensor]):
        return ConvSSMState(conv[0], ssm[0]) if self.layers == 1 else {"conv": conv, "ssm": ssm}

    def _unpack(self, state) -> tuple[list[Tensor], list[Tensor]]:
        return ([state.conv], [state.ssm]) if self.layers == 1 else (state["conv"], state["ssm"])

    def initial_state(self, batch_size, *, device=None, dtype=None):
        def zeros(*shape):
            return torch.zeros(*shape, device=device, dtype=dtype)

        conv = [zeros(batch_size, self.d_conv - 1, self.output_size) for _ in range(self.layers)]
        return self._pack(conv, [zeros(batch_size, self.output_size) for _ in range(self.layers)])

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype) if state is None else state
        (conv_in, ssm_in), conv, ssm, u = self._unpack(state), [], [], x
        for layer in range(self.layers):
            window = torch.cat([conv_in[layer], u], dim=1)  # (B, d_conv - 1 + T, D)
            v = (window.unfold(1, self.d_conv, 1) * self.conv[layer]).sum(-1)  # (B, T, D)
            h, hs = ssm_in[layer], []
            for t in range(u.shape[1]):
                h = self.decay[layer] * h + v[:, t]
                hs.append(h)
            u = torch.tanh(torch.stack(hs, dim=1))
            conv.append(window[:, window.shape[1] - (self.d_conv - 1) :])
            ssm.append(h)
        return u, self._pack(conv, ssm)

    def step(self, x_t, state):
        (conv_in, ssm_in), conv, ssm, u = self._unpack(state), [], [], x_t
        for layer in range(self.layers):
            window = torch.cat([conv_in[layer], u[:, None]], dim=1)  # (B, rows + 1, D)
            v = (window[:, -self.d_conv :] * self.conv[layer].T).sum(1)  # (B, D)
            h = self.decay[layer] * ssm_in[layer] + v
            u = torch.tanh(h)
            last = layer == self.layers - 1
            keep = self.step_keeps if last and self.step_keeps is not None else self.d_conv - 1
            conv.append(window[:, window.shape[1] - keep :])
            ssm.append(h)
        return u, self._pack(conv, ssm)


class TwoLayerConvSSM(ConvSSM):
    layers = 2


class StepKeepsExtraRow(ConvSSM):
    step_keeps = 3  # d_conv rows, one too many


class TwoLayerStepKeepsExtraRow(TwoLayerConvSSM):
    step_keeps = 3


class CountingCell(nn.Module):
    """A cell whose state is a dict with a position counter: `{"h": tensor, "t": int}`."""

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.cell = nn.RNNCell(input_size, hidden_size)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return {"h": torch.zeros(batch_size, self.output_size, device=device, dtype=dtype), "t": 0}

    def step(self, x_t, state):
        h = self.cell(x_t, state["h"])
        return h, {"h": h, "t": state["t"] + 1}

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype) if state is None else state
        h, ys = state["h"], []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return torch.stack(ys, dim=1), {"h": h, "t": state["t"] + x.shape[1]}


class CacheState(NamedTuple):
    h: Tensor  # (batch, hidden_size)
    pos: Tensor  # (batch,) int64: the next position


class BreaksAtStep3(nn.Module):
    """A cell with a position in its state whose `step` raises at position 3 (a cache that is too short)."""

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.cell = nn.RNNCell(input_size, hidden_size)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        z = torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)
        return CacheState(z, torch.zeros(batch_size, dtype=torch.long, device=device))

    def step(self, x_t, state):
        if int(state.pos[0]) == 3:
            raise RuntimeError("position 3 is past the end of the cache")
        h = self.cell(x_t, state.h)
        return h, CacheState(h, state.pos + 1)

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype) if state is None else state
        h, ys = state.h, []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            ys.append(h)
        return torch.stack(ys, dim=1), CacheState(h, state.pos + x.shape[1])


class ParallelOnly(nn.Module):
    """A linear recurrence `h_t = a * h_{t-1} + W x_t` whose parallel `forward(x)` takes no state and
    returns `y` alone (as many pure-PyTorch Mamba ports do); `step` and `initial_state` stream it.
    `step_decay_power` plants a bug in `step` only."""

    step_decay_power = 1

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.proj = nn.Linear(input_size, hidden_size)
        self.decay = nn.Parameter(torch.linspace(0.3, 0.9, hidden_size))

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)

    def forward(self, x):
        u, h, ys = self.proj(x), x.new_zeros(x.shape[0], self.output_size), []
        for t in range(x.shape[1]):
            h = self.decay * h + u[:, t]
            ys.append(h)
        return torch.stack(ys, dim=1)

    def step(self, x_t, h):
        h = self.decay**self.step_decay_power * h + self.proj(x_t)
        return h, h


class ParallelOnlyWrongStep(ParallelOnly):
    step_decay_power = 2


class SumState(NamedTuple):
    h: Tensor  # (batch, hidden_size)


class RunningSum(nn.Module):
    """A running sum `y_t = h_0 + sum_{s <= t} W x_s`: `forward` in parallel (a cumsum), `step` one add."""

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        with torch.random.fork_rng(devices=[]):  # the same weights whatever ran before (the float16 drift
            torch.manual_seed(0)  # of HalfPrecisionSum, which tolerances must cover, depends on them)
            self.proj = nn.Linear(input_size, hidden_size)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return SumState(torch.zeros(batch_size, self.output_size, device=device, dtype=dtype))

    def cumsum(self, u: Tensor) -> Tensor:
        return torch.cumsum(u, dim=1)

    def forward(self, x, state=None):
        h = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype).h if state is None else state.h
        y = h[:, None] + self.cumsum(self.proj(x))  # (B, T, H)
        return y, SumState(y[:, -1])

    def step(self, x_t, state):
        h = state.h + self.proj(x_t)
        return h, SumState(h)


class HalfPrecisionSum(RunningSum):
    """Its parallel `forward` accumulates in float16 when given float32 (as a fused kernel with a
    low-precision accumulator would) while `step` adds in the input's dtype: in float32 the long
    `forward(x)` drifts from the exact sum; in float64 both sides are exact."""

    def cumsum(self, u: Tensor) -> Tensor:
        acc = torch.float16 if u.dtype == torch.float32 else u.dtype
        return torch.cumsum(u.to(acc), dim=1).to(u.dtype)


class WrongStepSum(RunningSum):
    """The bug: `step` counts the input twice."""

    def step(self, x_t, state):
        h = state.h + 2 * self.proj(x_t)
        return h, SumState(h)


class Float32OnlyBug(RunningSum):
    """A bug on the float32 path only (a kernel specialised by dtype): `step` adds 1e-3 in float32."""

    def step(self, x_t, state):
        y, new = super().step(x_t, state)
        return (y + 1e-3, SumState(new.h + 1e-3)) if x_t.dtype == torch.float32 else (y, new)


class _HalfPrecisionReverseCumsum(torch.autograd.Function):
    """`cumsum` over time, exact; its backward (a reverse cumsum) accumulates in float16 for float32."""

    @staticmethod
    def forward(ctx, u):
        return torch.cumsum(u, dim=1)

    @staticmethod
    def backward(ctx, g):
        acc = torch.float16 if g.dtype == torch.float32 else g.dtype
        return g.to(acc).flip(1).cumsum(1).flip(1).to(g.dtype)


class HalfPrecisionBackward(RunningSum):
    """Exact values, but a hand-written backward that accumulates in float16 for float32 inputs: the
    gradients of one long call and of two chunks drift apart, by rounding alone."""

    def cumsum(self, u: Tensor) -> Tensor:
        return _HalfPrecisionReverseCumsum.apply(u)


class DetachesState(RunningSum):
    """Exact in every dtype, but `forward` detaches the state it is given: no gradient crosses a chunk."""

    def forward(self, x, state=None):
        return super().forward(x, None if state is None else SumState(state.h.detach()))


class FinalSSMOffByOne(TwoLayerConvSSM):
    """`forward` returns layer 1's recurrent state one step late (the state before the last step)."""

    def forward(self, x, state=None):
        y, new = super().forward(x, state)
        if x.shape[1] > 1:
            new["ssm"][1] = super().forward(x[:, :-1], state)[1]["ssm"][1]
        return y, new
