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
# # The three-way trade-offs, measured in a few seconds
#
# Recurrences (Elman RNN, LSTM, GRU), causal attention and state-space models (Mamba and its LTI
# ablation) pay for memory in different currencies:
#
# | | recurrences | attention (KV cache) | SSMs |
# | --- | --- | --- | --- |
# | state after $t$ tokens | $O(1)$ | $O(t)$ | $O(1)$ |
# | time per streamed token | $O(1)$ | $O(t)$ | $O(1)$ |
# | training over $T$ tokens | $T$ sequential steps | parallel, $O(T^2)$ work | a scan (or a convolution) |
#
# This notebook measures the three with [`seqmem.bench.bench`](../../api/bench/) on a small grid
# (width 32, sequence lengths 16 to 256, the `"torch"` backend of every model, one thread), and plots
# them against the sequence length on log-log axes, where $O(T)$ is a line of slope 1 and $O(T^2)$ a
# line of slope 2. The full-size measurements, with the Numba backend and the `torch.nn` baselines,
# are on the [trade-offs page](../../tradeoffs/).
#
# Timings on a shared or busy machine are noisy; the shapes of the curves are what to read.

# %%
import matplotlib.pyplot as plt

import seqmem
from seqmem import plotstyle
from seqmem.bench import bench, format_bytes, format_seconds

plotstyle.use()  # figures sized for the page, a fixed colour per model
seq_lens = (16, 64, 256)
records = bench(
    backends=("torch",),
    modes=("forward", "train", "step"),
    seq_lens=seq_lens,
    batch_sizes=(8,),
    width=32,
    repeats=3,
    baselines=False,
    memory=False,  # peak memory needs the profiler: slower, not needed here
)
print(f"{len(records)} cases measured")


# %%
def curve(model, mode, value):
    rows = sorted((r.seq_len, value(r)) for r in records
                  if r.model == model and r.mode == mode)
    return [t for t, _ in rows], [v for _, v in rows]


def guides(ax, ys):
    """Grey O(T) and O(T^2) lines through the smallest value, to read slopes."""
    lo = min(ys)
    for power, label, style in ((1, "O(T)", ":"), (2, "O(T²)", "-.")):
        ys = [lo * (t / seq_lens[0]) ** power for t in seq_lens]
        ax.plot(seq_lens, ys, style, color="grey", lw=1.2, label=label)


seconds = lambda r: r.median_s  # noqa: E731
panels = [
    # (mode, measure, y label, title, draw the O(T) and O(T^2) guides)
    ("forward", seconds, "seconds per call", "1. forward, batch 8", True),
    ("train", seconds, "seconds per call", "2. train step, batch 8", True),
    ("step", seconds, "seconds per token", "3. streaming, batch 1", True),
    ("step", lambda r: r.state_bytes, "bytes", "4. state after T", False),
]
fig, axes = plt.subplots(len(panels), 1, sharex=True,
                         figsize=(plotstyle.FIGURE_WIDTH, 12))
for ax, (mode, value, ylabel, title, with_guides) in zip(axes, panels):
    all_y = []
    for model in seqmem.model_names():
        ts, ys = curve(model, mode, value)
        ax.plot(ts, ys, label=model, **plotstyle.line_style(model))
        all_y += ys
    if with_guides:
        guides(ax, all_y)
    ax.set(xscale="log", yscale="log", ylabel=ylabel, title=title)
axes[-1].set_xticks(seq_lens, [str(t) for t in seq_lens])
axes[-1].set_xticks([], minor=True)
axes[-1].set_xlabel("seq_len T")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center",
           ncols=4)
plt.show()

# %% [markdown]
# How to read the four panels:
#
# 1. **Forward.** Every model is close to linear in $T$ at these lengths; attention's $T^2$ term is a
#    small matrix product here and only dominates at longer sequences (the benchmark on the
#    trade-offs page goes to 1024; add 4096 to `--seq-lens` to see it take over). The recurrences, in
#    their reference form, pay a Python-level loop over $T$.
# 2. **Train.** The recurrences must run the loop forward and then backward; attention runs both
#    passes as a few large matrix products, parallel over all positions, which is why it trains fast
#    per token.
# 3. **Streaming.** The cost of one more token is flat in $T$ for the recurrences and the SSMs; for
#    attention it grows, since token $t$ attends over $t$ cached keys (at these short lengths the
#    growth is partly hidden by fixed per-call overheads).
# 4. **State.** Flat for everything but attention, whose KV cache grows linearly: $2 \times$ layers
#    $\times$ width $\times$ 4 bytes per token.
#
# ## The same numbers as a table

# %%
def row(name, mode, *cells):
    print(f"{name:12s} {mode:8s}", *(f"{c:>10s}" for c in cells))


row("model", "mode", *(f"T={t}" for t in seq_lens))
for model in seqmem.model_names():
    for mode in ("forward", "train", "step"):
        ts, ys = curve(model, mode, seconds)
        row(model, mode, *map(format_seconds, ys))
    ts, states = curve(model, "step", lambda r: r.state_bytes)
    row(model, "state", *map(format_bytes, states))

# %% [markdown]
# What this notebook does not measure is what each model can *remember*: that needs training, and is
# what `seqmem compare` does (XOR-echo, selective copying, associative recall), with the results on
# the [trade-offs page](../../tradeoffs/). To run the benchmark at full size on your machine:
#
# ```bash
# seqmem bench --seq-lens 64,256,1024,4096 \
#     --json bench.json --out bench
# ```
