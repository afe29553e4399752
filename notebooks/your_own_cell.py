# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Your own cell: write it, check it, break it
#
# seqmem's models are held to a handful of properties: the parallel form equals the streaming form,
# chunked streaming is exact, the model is causal, sequences in a batch do not interact, gradients
# flow. [`seqmem.testing.check_sequence_model`](../../api/testing/) runs those properties on *any*
# model that has the protocol's five members, a model you wrote included.
#
# In this notebook we write a small gated recurrent cell, check it, and then break it in four
# realistic ways to see how each property catches its bug.

# %%
from typing import NamedTuple

import torch
from torch import nn

import seqmem
from seqmem.testing import ConformanceFailure, check_sequence_model

# %% [markdown]
# ## A minimal gated unit
#
# One gate $u_t$ interpolates between the old state and a candidate, as in the GRU without a reset
# gate:
#
# $$\begin{aligned}
#   u_t &= \sigma(W_u x_t + U_u h_{t-1} + b_u), \\
#   \tilde h_t &= \tanh(W_h x_t + U_h h_{t-1} + b_h), \\
#   h_t &= u_t \odot h_{t-1} + (1 - u_t) \odot \tilde h_t .
# \end{aligned}$$
#
# Like seqmem's own models it computes the input projections of the whole sequence in one matrix
# product before the time loop, and its state is a `NamedTuple`. Everything the protocol asks for is
# here: `input_size`, `output_size`, `initial_state`, `forward(x, state)` and `step(x_t, state)`.

# %%
class MGUState(NamedTuple):
    h: torch.Tensor


class MGU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        # [W_u; W_h] x_t + [b_u; b_h] and [U_u; U_h] h_{t-1}
        self.w_x = nn.Linear(input_size, 2 * hidden_size)
        self.w_h = nn.Linear(hidden_size, 2 * hidden_size, bias=False)

    def initial_state(self, batch_size, *, device=None, dtype=None):
        size = (batch_size, self.output_size)
        return MGUState(torch.zeros(size, device=device, dtype=dtype))

    def _cell(self, gx_t, h):
        a_u, a_h = (gx_t + self.w_h(h)).chunk(2, dim=-1)
        u = torch.sigmoid(a_u)
        return u * h + (1 - u) * torch.tanh(a_h)

    def step(self, x_t, state):
        h = self._cell(self.w_x(x_t), state.h)
        return h, MGUState(h)

    def forward(self, x, state=None):
        B, T, _ = x.shape
        if state is None:
            state = self.initial_state(B, device=x.device, dtype=x.dtype)
        gx = self.w_x(x)  # (B, T, 2H): every input projection at once
        h, ys = state.h, []
        for t in range(T):
            h = self._cell(gx[:, t], h)
            ys.append(h)
        return torch.stack(ys, dim=1), MGUState(h)


torch.manual_seed(0)
cell = MGU(input_size=3, hidden_size=8)
print("a SequenceModel:", isinstance(cell, seqmem.SequenceModel))
report = check_sequence_model(cell)
print(report)

# %% [markdown]
# Every property holds, in float64 and then in float32 (backend parity is skipped: our cell has a
# single implementation; the state's size is checked only when asked, with `state_growth=`). The
# check ran on a copy of the model cast to each dtype, with a random batch of 3 sequences of 12
# steps; the last column says what exactly was compared.
#
# ## Breaking it
#
# Each variant below changes one thing. We catch the failure, an `AssertionError` subclass
# (`ConformanceFailure`) whose message names the property and where it broke, and print it.


# %%
def show_failure(model, **kwargs):
    try:
        check_sequence_model(model, **kwargs)
    except ConformanceFailure as failure:
        print(f"property: {failure.property!r}\n")
        print(failure)
    else:
        print("passed")


# %% [markdown]
# ### 1. A peek at the future
#
# A tempting "smoothing" of the input projections, averaging each step with the next one, makes
# `forward` read $x_{t+1}$ before producing $y_t$. The step form cannot do this (it does not have
# $x_{t+1}$ yet), but the first property to notice is **causality**: changing the inputs after $t$
# must not change the outputs up to $t$.

# %%
class Smoothed(MGU):
    def forward(self, x, state=None):
        B, T, _ = x.shape
        if state is None:
            state = self.initial_state(B, device=x.device, dtype=x.dtype)
        gx = self.w_x(x)
        # average step t with step t + 1
        gx = 0.5 * (gx + torch.cat([gx[:, 1:], gx[:, -1:]], dim=1))
        h, ys = state.h, []
        for t in range(T):
            h = self._cell(gx[:, t], h)
            ys.append(h)
        return torch.stack(ys, dim=1), MGUState(h)


torch.manual_seed(0)
show_failure(Smoothed(3, 8))

# %% [markdown]
# ### 2. A state that is ignored
#
# This `forward` always starts from zeros, whatever state it is given. On a single call from the
# initial state nothing looks wrong, and `step` still matches `forward`. What breaks is streaming in
# chunks: `forward(x2, forward(x1)[1])` must equal `forward(cat([x1, x2]))`.

# %%
class Forgetful(MGU):
    def forward(self, x, state=None):
        return super().forward(x, None)  # drops the state it was given


torch.manual_seed(0)
show_failure(Forgetful(3, 8))

# %% [markdown]
# ### 3. Normalising across the batch
#
# Subtracting the batch mean from the hidden state (a misplaced batch normalisation) couples the
# sequences of a batch: the output for sequence $b$ then depends on the other sequences. That breaks
# **batch independence**, and also means a model would answer differently at batch size 1 in
# deployment than it did in training.

# %%
class BatchCoupled(MGU):
    def _cell(self, gx_t, h):
        h = super()._cell(gx_t, h)
        return h - h.mean(dim=0, keepdim=True) if h.shape[0] > 1 else h


torch.manual_seed(0)
show_failure(BatchCoupled(3, 8))

# %% [markdown]
# ### 4. An off-by-one in `step`
#
# Finally a bug in the streaming path only: this `step` mixes in the new token twice (once too many
# input projections), while `forward` is right. Every whole-sequence property passes; **step ==
# forward** catches it, at the very first step.

# %%
class DoubleStep(MGU):
    def step(self, x_t, state):
        # W x_t counted twice
        h = self._cell(2 * self.w_x(x_t) - self.w_x.bias, state.h)
        return h, MGUState(h)


torch.manual_seed(0)
show_failure(DoubleStep(3, 8))

# %% [markdown]
# ## In your test suite
#
# In a pytest file, call `check_sequence_model(model)` in a test: a failure is an `AssertionError`,
# so pytest reports the property and the place. With hypothesis, draw the inputs with
# `seqmem.testing.sequences` and the seeds with `seqmem.testing.seeds`; see
# [Testing your own model](../../testing/).
#
# seqmem's own models pass the same checks, with backend parity over every backend each one has
# (`backends` defaults to all of `model.backends`):

# %%
for spec in seqmem.list_models():
    model = spec.build(input_size=8, width=8)
    report = check_sequence_model(model, seq_len=6)
    print(f"{spec.name:16s} backends {', '.join(model.backends):12s} "
          f"{len(report.checked)} properties passed")
