"""`seqmem.testing`'s properties catch bugs: each deliberately broken model fails with the right property
named and the place it breaks, and correct hand-written models pass."""

from __future__ import annotations

from typing import NamedTuple

import pytest
import torch
from torch import Tensor, nn

from seqmem import testing
from seqmem.testing import (
    ConformanceFailure,
    check_backend_parity,
    check_causal,
    check_chunked,
    check_sequence_model,
    check_state_size,
    check_step_equals_forward,
    random_sequence,
)

F32, F64 = torch.float32, torch.float64


# ------------------------------------------------------------------------------------------------
# hand-written models: a correct Elman cell and its broken variants (no seqmem base class)
# ------------------------------------------------------------------------------------------------
class TinyState(NamedTuple):
    h: Tensor


class Tiny(nn.Module):
    """h_t = tanh(W x_t + b + U h_{t-1}), y_t = h_t; forward has its own loop, separate from step."""

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        gen = torch.Generator().manual_seed(0)
        self.w_ih = nn.Parameter(torch.randn(hidden_size, input_size, generator=gen) / input_size**0.5)
        self.w_hh = nn.Parameter(torch.randn(hidden_size, hidden_size, generator=gen) / hidden_size**0.5)
        self.b = nn.Parameter(0.1 * torch.randn(hidden_size, generator=gen))

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return TinyState(torch.zeros(batch_size, self.output_size, device=device, dtype=dtype))

    def input_projection(self, x):
        return x @ self.w_ih.T + self.b

    def cell(self, gx_t, h, w_hh):
        return torch.tanh(gx_t + h @ w_hh.T)

    def output(self, h):
        return h

    def step_weight(self):
        return self.w_hh

    def step(self, x_t, state):
        h = self.cell(x_t @ self.w_ih.T + self.b, state.h, self.step_weight())
        return self.output(h), TinyState(h)

    def forward(self, x, state=None):
        if state is None:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        gx = self.input_projection(x)  # (B, T, H)
        h, ys = state.h, []
        for t in range(x.shape[1]):
            h = self.cell(gx[:, t], h, self.w_hh)
            ys.append(self.output(h))
        return torch.stack(ys, dim=1), TinyState(h)


class StepUsesOtherWeight(Tiny):
    """step multiplies by U^T where forward uses U: invisible at t = 0 (h = 0), wrong from t = 1."""

    def step_weight(self):
        return self.w_hh.T


class LeaksFuture(Tiny):
    """forward adds the next input to the current one: y_t sees x_{t+1}."""

    def input_projection(self, x):
        nxt = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)  # x_{t+1}, zero at the end
        return super().input_projection(x) + 0.5 * nxt @ self.w_ih.T


class MixesBatch(Tiny):
    """Subtracts the batch mean from the output, in forward and step alike: causal, consistent, wrong."""

    def output(self, h):
        return h - h.mean(dim=0, keepdim=True)


class FinalStateOffByOne(Tiny):
    """forward returns the state before the last step."""

    def forward(self, x, state=None):
        y, _ = super().forward(x, state)
        if x.shape[1] == 1:
            return y, state if state is not None else self.initial_state(x.shape[0], dtype=x.dtype)
        return y, super().forward(x[:, :-1], state)[1]


class DetachesWeight(Tiny):
    def cell(self, gx_t, h, w_hh):
        return torch.tanh(gx_t + h @ w_hh.detach().T)


class _NaNBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h):
        return h.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


class NaNGradient(Tiny):
    def output(self, h):
        return _NaNBackward.apply(h)


class MutatesState(Tiny):
    """step writes the new hidden state into the tensor it was given."""

    def step(self, x_t, state):
        y, new = super().step(x_t, state)
        state.h.copy_(new.h)
        return y, TinyState(state.h)


class IgnoresDtype(Tiny):
    def initial_state(self, batch_size, *, device=None, dtype=None):
        return TinyState(torch.zeros(batch_size, self.output_size))  # always float32


class TimeMajor(Tiny):
    def forward(self, x, state=None):
        y, s = super().forward(x, state)
        return y.transpose(0, 1), s


class _ScaleGrad(torch.autograd.Function):
    """Identity forward, a backward that is off by 10%: a hand-derived backward with a bug."""

    @staticmethod
    def forward(ctx, w):
        return w.clone()

    @staticmethod
    def backward(ctx, g):
        return 1.1 * g


class TwoBackends(Tiny):
    """Backend "fast" computes the same values with a wrong gradient for w_hh."""

    backends = ("torch", "fast")

    def __init__(self, *args, backend="torch", **kwargs):
        super().__init__(*args, **kwargs)
        self.backend = backend

    def cell(self, gx_t, h, w_hh):
        if self.backend == "fast":
            w_hh = _ScaleGrad.apply(w_hh)
        return super().cell(gx_t, h, w_hh)


# a two-part state: h_t = tanh(W x_t + U h_{t-1} + c_{t-1}), c_t = c_{t-1} / 2 + h_t
class PairState(NamedTuple):
    h: Tensor
    c: Tensor


class Pair(Tiny):
    drop_c = False

    def initial_state(self, batch_size, *, device=None, dtype=None):
        z = torch.zeros(batch_size, self.output_size, device=device, dtype=dtype)
        return PairState(z, z.clone())

    def _cell(self, gx_t, state):
        h = torch.tanh(gx_t + state.h @ self.w_hh.T + state.c)
        return h, PairState(h, 0.5 * state.c + h)

    def step(self, x_t, state):
        return self._cell(x_t @ self.w_ih.T + self.b, state)

    def forward(self, x, state=None):
        if state is None:
            state = self.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        elif self.drop_c:  # the bug: the second half of the state does not cross the chunk boundary
            state = PairState(state.h, torch.zeros_like(state.c))
        gx = self.input_projection(x)
        ys = []
        for t in range(x.shape[1]):
            y, state = self._cell(gx[:, t], state)
            ys.append(y)
        return torch.stack(ys, dim=1), state


class DropsStateBetweenChunks(Pair):
    drop_c = True


# a KV-cache toy: y_t = tanh(W attn(q_t, x_{<=t}) + p * pos_t), the cache holds the past inputs
class Cache(NamedTuple):
    k: Tensor  # (batch, t, input_size)


class ToyAttention(nn.Module):
    mask_offset = 0  # 1: the classic off-by-one in the causal mask
    restart_positions = False  # True: a chunk numbers its positions from 0 whatever the cache holds

    def __init__(self, input_size: int = 3, hidden_size: int = 4) -> None:
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        gen = torch.Generator().manual_seed(1)
        self.q = nn.Parameter(torch.randn(input_size, input_size, generator=gen))
        self.w = nn.Parameter(torch.randn(hidden_size, input_size, generator=gen))
        self.p = nn.Parameter(0.3 * torch.randn(hidden_size, generator=gen))

    def initial_state(self, batch_size, *, device=None, dtype=None):
        return Cache(torch.zeros(batch_size, 0, self.input_size, device=device, dtype=dtype))

    def forward(self, x, state=None):
        B, T, _ = x.shape
        if state is None:
            state = self.initial_state(B, device=x.device, dtype=x.dtype)
        t0 = state.k.shape[1]
        keys = torch.cat([state.k, x], dim=1)  # (B, t0+T, I)
        scores = torch.einsum("bti,bsi->bts", x @ self.q.T, keys)  # (B, T, t0+T)
        mask = torch.ones(T, t0 + T, dtype=torch.bool).tril(diagonal=t0 + self.mask_offset)
        attn = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        pos = torch.arange(T) if self.restart_positions else torch.arange(t0, t0 + T)
        y = torch.tanh((attn @ keys) @ self.w.T + pos.to(x.dtype)[:, None] * self.p)
        return y, Cache(keys)

    def step(self, x_t, state):
        keys = torch.cat([state.k, x_t[:, None]], dim=1)  # (B, t+1, I)
        attn = torch.einsum("bi,bsi->bs", x_t @ self.q.T, keys).softmax(dim=-1)
        ctx = torch.einsum("bs,bsi->bi", attn, keys)
        return torch.tanh(ctx @ self.w.T + state.k.shape[1] * self.p), Cache(keys)


class MaskOffByOne(ToyAttention):
    mask_offset = 1


class PositionsRestart(ToyAttention):
    restart_positions = True


def _fails(model, prop, *fragments, **kwargs):
    """check_sequence_model fails on `prop`, with each fragment in the message; returns the failure."""
    with pytest.raises(ConformanceFailure) as info:
        check_sequence_model(model, **kwargs)
    err = info.value
    message = str(err)
    assert err.property == prop, message
    assert f"fails {prop!r}" in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message}"
    assert isinstance(err, AssertionError)
    return err


# ------------------------------------------------------------------------------------------------
# correct models pass
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model", [Tiny(), Pair(), ToyAttention(), Tiny(1, 1)], ids=["elman", "pair", "attention", "size1"]
)
@pytest.mark.parametrize("dtype", [F64, F32], ids=["float64", "float32"])
def test_correct_hand_written_models_pass(model, dtype):
    report = check_sequence_model(model, dtype=dtype)
    assert report.passed and report.dtypes == (dtype,)
    assert report.checked == [p for p in testing.PROPERTIES if p not in (testing.BACKEND_PARITY, testing.STATE_SIZE)]
    assert report.skipped == [testing.BACKEND_PARITY, testing.STATE_SIZE]
    text = str(report)
    name = str(dtype).removeprefix("torch.")
    assert f"{type(model).__name__}(" in text and f"PASSED  {name}  step == forward" in text
    assert f"SKIPPED {name}  backend parity" in text
    assert next(model.parameters()).dtype == F32  # the user's model is checked on a copy


def test_a_plain_object_without_nn_module_passes():
    class Doubler:  # no parameters, no nn.Module: only the protocol
        input_size = output_size = 2

        def initial_state(self, batch_size, *, device=None, dtype=None):
            return (torch.zeros(batch_size, 2, device=device, dtype=dtype),)

        def step(self, x_t, state):
            h = 0.5 * state[0] + x_t
            return 2 * h, (h,)

        def forward(self, x, state=None):
            state = state if state is not None else self.initial_state(x.shape[0], dtype=x.dtype)
            ys = []
            for t in range(x.shape[1]):
                y, state = self.step(x[:, t], state)
                ys.append(y)
            return torch.stack(ys, 1), state

    report = check_sequence_model(Doubler(), batch_size=2, seq_len=5)
    assert report.passed and "0 parameter tensors" in str(report)


def test_kv_cache_toy_grows_linearly_and_the_elman_cell_not():
    x = random_sequence(2, 6, 3, dtype=F64)
    assert "linear" in check_state_size(ToyAttention().double(), x, growth="linear")
    assert "constant" in check_state_size(Tiny().double(), x, growth="constant")
    with pytest.raises(
        ConformanceFailure, match=r"the state grows: 0 bytes initially, 48 bytes after 1 steps"
    ):
        check_state_size(ToyAttention().double(), x, growth="constant")
    with pytest.raises(ConformanceFailure, match="the state does not grow"):
        check_state_size(Tiny().double(), x, growth="linear")
    with pytest.raises(ValueError, match="growth must be 'constant' or 'linear'"):
        check_state_size(Tiny().double(), x, growth="quadratic")


# ------------------------------------------------------------------------------------------------
# broken models fail with the right property, and say where
# ------------------------------------------------------------------------------------------------
def test_step_with_another_weight_fails_step_equals_forward_at_step_1():
    err = _fails(
        StepUsesOtherWeight(),
        "step == forward",
        "at step t=1 (of 12)",
        "first time step that diverges: t=1",
        "max abs error",
        "relative RMS error",
        "float64, batch 3, seq_len 12, seed 0",
    )
    assert "StepUsesOtherWeight(3 -> 4)" in str(err)


def test_future_leak_fails_causality():
    _fails(
        LeaksFuture(),
        "causality",
        "changing only x[:, 1:] changed y[:, :1]",
        "the output at step 0 depends on a later input (cut at t=1)",
    )


def test_future_leak_in_gradient_only_is_caught():
    class GradientLeak(Tiny):
        """Values are causal, but the gradient reaches the future: x_{t+1} - x_{t+1}.detach() is 0."""

        def input_projection(self, x):
            nxt = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
            return super().input_projection(x) + (nxt - nxt.detach()) @ self.w_ih.T

    x = random_sequence(2, 6, 3, dtype=F64)
    with pytest.raises(
        ConformanceFailure, match=r"d y\[:, :1\] / d x\[:, 1:\] is not zero: .* reaches the input at step 1"
    ):
        check_causal(GradientLeak().double(), x)


def test_batch_mixing_fails_batch_independence():
    _fails(
        MixesBatch(),
        "batch independence",
        "changing only row 2 of x changed row",
        "first at step 0",
        "the rows of a batch must not interact",
    )


def test_batch_mixing_passes_when_skipped_on_request():
    report = check_sequence_model(MixesBatch(), skip={"batch independence"})
    assert "batch independence" in report.skipped
    with pytest.raises(ValueError, match="unknown properties in skip: \\['batch independance'\\]"):
        check_sequence_model(MixesBatch(), skip={"batch independance"})


def test_state_dropped_between_chunks_fails_chunked_streaming():
    _fails(
        DropsStateBetweenChunks(),
        "chunked streaming",
        "split at t=1",
        "differs from forward(x) from step t=1",
        "first time step that diverges: t=1",
    )


def test_final_state_off_by_one_fails_step_equals_forward_on_the_state():
    _fails(
        FinalStateOffByOne(),
        "step == forward",
        "the outputs agree but the final states differ",
        "final state after 12 steps: state.h differs",
    )


def test_kv_mask_off_by_one_fails_causality():
    _fails(MaskOffByOne(), "causality", "the output at step 0 depends on a later input (cut at t=1)")


def test_kv_positions_restarting_per_chunk_fail_chunked_streaming():
    err = _fails(PositionsRestart(), "chunked streaming", "split at t=1", "from step t=1")
    # the step form numbers positions from the cache, so step == forward held before
    assert "step == forward" not in err.detail


def test_detached_weight_fails_gradients():
    _fails(DetachesWeight(), "gradients", "parameters that get no gradient: ['w_hh']")


def test_nan_gradient_fails_gradients():
    _fails(NaNGradient(), "gradients", "the gradient of x is not finite at index (0, 0, 0): nan")


def test_state_mutated_in_place_fails_inputs_unchanged():
    _fails(
        MutatesState(),
        "inputs unchanged",
        "step(x[:, 0], state) modified state.h of the state it was given in place",
    )


def test_initial_state_ignoring_dtype_fails_shapes():
    _fails(
        IgnoresDtype(),
        "shapes and dtypes",
        "initial_state(...).h has dtype torch.float32 but the input is torch.float64",
    )


def test_time_major_output_fails_shapes():
    _fails(TimeMajor(), "shapes and dtypes", "y = forward(x)[0] must have shape (3, 12, 4), got (12, 3, 4)")


def test_missing_attribute_fails_protocol():
    class NoOutputSize(Tiny):
        def __init__(self):
            super().__init__()
            del self.output_size

    _fails(NoOutputSize(), "protocol", "the model has no attribute 'output_size'")


def test_exceptions_are_reported_under_the_property():
    class StepRaises(Tiny):
        def step(self, x_t, state):
            raise RuntimeError("boom")

    _fails(StepRaises(), "shapes and dtypes", "raised RuntimeError: boom")


def test_wrong_backward_of_one_backend_fails_parity():
    err = _fails(
        TwoBackends(),
        "backend parity",
        "backend 'fast' against 'torch'",
        "gradient of parameter 'w_hh' differs",
    )
    assert err.model.startswith("TwoBackends(3 -> 4")
    # asked only for torch, there is nothing to compare
    assert check_sequence_model(TwoBackends(), backends=("torch",)).passed
    x = random_sequence(2, 4, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"has no backend 'numba'; it lists \['torch', 'fast'\]"):
        check_backend_parity(TwoBackends().double(), x, backends=("numba",))


def test_float32_is_checked_too():
    _fails(
        StepUsesOtherWeight(),
        "step == forward",
        "float32, batch 3",
        "float32 tolerance (rtol=0.0001, atol=1e-05)",
        dtype=F32,
    )


def test_misuse_is_a_value_error_not_a_failure():
    with pytest.raises(
        ValueError, match=r"x must have shape \(batch, seq_len, 3\) for this model, got \(2, 5, 4\)"
    ):
        check_step_equals_forward(Tiny().double(), random_sequence(2, 5, 4, dtype=F64))
    with pytest.raises(TypeError, match="floating-point"):
        check_chunked(Tiny(), torch.ones(2, 5, 3, dtype=torch.long))


def test_per_property_functions_report_what_they_checked():
    x = random_sequence(2, 10, 3, dtype=F64)
    model = Tiny().double()
    assert "10 steps" in check_step_equals_forward(model, x)
    assert check_chunked(model, x[:, :1]) == "seq_len 1: nothing to split"
    assert "cuts t in [2, 7]" in check_causal(model, x, cuts=[2, 7, 0, 10])
