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
# # Your model, your data
#
# seqmem compares its own models on its own tasks, and just as well yours on yours. In this
# notebook we
#
# 1. write a minimal minGRU (Feng et al. 2024, "Were RNNs all we needed?") in twenty lines,
# 2. check it with `seqmem.testing`,
# 3. register it, so every seqmem command knows it by name,
# 4. write a small data set of variable-length sequences to an `.npz` file,
# 5. compare it with seqmem's LSTM and GRU on that file, at matched parameter budgets.
#
# The same works from the command line: `seqmem compare --models lstm,mypkg.cells:MinGRU --data
# mine.npz` takes a model by its import path and your data by its file.

# %%
from pathlib import Path
from tempfile import mkdtemp
from typing import NamedTuple

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

import seqmem
from seqmem import plotstyle
from seqmem.testing import check_sequence_model

plotstyle.use()  # figures sized for the page, each model in its colour

# %% [markdown]
# ## A minGRU in twenty lines
#
# The minGRU drops the GRU's dependence on $h_{t-1}$ inside its gates, so its update gate $z_t$ and
# candidate $\tilde h_t$ depend on the input alone (Feng et al. 2024, sec. 3.1):
#
# $$z_t = \sigma(W_z x_t + b_z), \qquad \tilde h_t = W_h x_t + b_h, \qquad
#   h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t .$$
#
# The recurrence is linear in $h$, which is what lets the paper train it with a parallel scan; here
# we write the plain loop. Everything the protocol asks for is here: `input_size`, `output_size`,
# `initial_state`, `forward(x, state)` and `step(x_t, state)`.

# %%
class MinGRUState(NamedTuple):
    h: torch.Tensor


class MinGRU(nn.Module):
    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.input_size, self.output_size = input_size, hidden_size
        self.proj = nn.Linear(input_size, 2 * hidden_size)  # [W_z; W_h] x_t + [b_z; b_h]

    def initial_state(self, batch_size, *, device=None, dtype=None):
        w = self.proj.weight
        return MinGRUState(torch.zeros(batch_size, self.output_size, device=device or w.device, dtype=dtype or w.dtype))

    def step(self, x_t, state):
        z, h_tilde = self.proj(x_t).chunk(2, dim=-1)  # (B, H) each
        z = torch.sigmoid(z)
        h = (1 - z) * state.h + z * h_tilde
        return h, MinGRUState(h)

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0], dtype=x.dtype) if state is None else state
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, dim=1), state  # (B, T, H)


# %% [markdown]
# ## Check it
#
# `check_sequence_model` runs the conformance properties (shapes, step == forward, chunked
# streaming, causality, batch independence, gradients) in float64 and float32 and says which
# passed.

# %%
torch.manual_seed(0)
report = check_sequence_model(MinGRU(3, 8), seq_len=12)
print(report)

# %% [markdown]
# ## Register it
#
# A [`ModelSpec`](../../api/seqmem/#seqmem.ModelSpec) says how to build the model at a width: its
# width argument is `hidden_size`, its input argument `input_size`, so a `SequenceNetwork` stacks it
# as layers, like seqmem's LSTM. Registration builds it once at a tiny width and checks the
# protocol. (`replace=True` lets the cell run twice.)

# %%
spec = seqmem.register_model(
    seqmem.ModelSpec("my-mingru", MinGRU, description="minGRU (Feng et al. 2024), written in a notebook"),
    replace=True,
)
print(spec.name, spec.width_arg, spec.stacking, spec.backends)
print([s.name for s in seqmem.list_models()])

# %% [markdown]
# ## A data set of your own
#
# Sequences of 6 to 16 steps, right-padded to 16, with two features: a value, and a marker that is 1
# at the first step only. The label is the sign of the first step's value, so a model must carry one
# bit from the start of the sequence to its last valid step. (Without the marker the minGRU could
# not solve it: its gates see the input alone, and nothing else tells the first step from the rest.) The file holds `x` `(N, T, F)`, `y` `(N,)` and `lengths` `(N,)`; seqmem infers the
# kind (sequence classification), splits off a seeded, stratified validation set and masks the
# padding out of the loss and the metric. See [Your own data](../../data/) for every key.

# %%
rng = np.random.default_rng(0)
N, T = 600, 16
x = np.zeros((N, T, 2), dtype=np.float32)
x[:, :, 0] = rng.normal(size=(N, T))  # the values
x[:, 0, 1] = 1.0  # the marker
lengths = rng.integers(6, T + 1, size=N)
y = (x[:, 0, 0] > 0).astype(np.int64)
folder = Path(mkdtemp())
np.savez(folder / "first_sign.npz", x=x, y=y, lengths=lengths)
print(seqmem.tasks.ArrayTask(None, folder / "first_sign.npz").describe())

# %% [markdown]
# ## Compare
#
# `compare` sizes each network to the same parameter budget, trains it and evaluates it on the
# whole validation split. The records land in `results.jsonl` (a second run resumes), and
# `seqmem report` renders them later without training.

# %%
records = seqmem.compare(
    models=["my-mingru", "lstm", "gru"], data=folder / "first_sign.npz", seeds=[0, 1],
    steps=120, params=3000, lr=1e-2, out=folder / "sweep", plot=False,
)
from seqmem.report import markdown_table  # noqa: E402

print(markdown_table(records))

# %%
from seqmem.summary import summarize  # noqa: E402

rows = summarize(records)
fig, ax = plt.subplots(figsize=(plotstyle.FIGURE_WIDTH, 3.6))
for i, row in enumerate(rows):
    color, _ = plotstyle.model_style(row["model"])  # a spec's colour, or one picked from the name
    ax.bar(i, row["mean"], color=color, label=row["model"])
    ax.errorbar(i, row["mean"], yerr=[[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]],
                color="black", capsize=4)
ax.axhline(records[0]["chance"], color="gray", linestyle="--", label="chance (majority class)")
ax.set(xticks=range(len(rows)), xticklabels=[r["model"] for r in rows], ylabel="validation accuracy",
       ylim=(0.4, 1.02), title="first sign, 6-16 steps, 3k parameters, 2 seeds")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
plt.show()
