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
# # Playground: an Elman RNN and an LSTM on XOR-echo
#
# **XOR-echo** asks a single question about a random string: *is its last symbol equal to its
# first?* Everything in between is a distractor, so a network reading the string from left to right
# must carry the first symbol (two bits, with an alphabet of four) across the whole sequence and
# compare it with the last one.
#
# This notebook trains an Elman RNN and an LSTM of the same width on strings of length 16, then
# streams one string through each trained network token by token with `step`, and plots how
# confident each one is, after every token, that *the string ends here with a match*. It runs in
# well under a minute on a laptop CPU.

# %%
import matplotlib.pyplot as plt
import torch

import seqmem
from seqmem import plotstyle
from seqmem.network import SequenceNetwork
from seqmem.tasks import XorEcho
from seqmem.train import train

plotstyle.use()  # figures sized for the page, a fixed colour per model
task = XorEcho(seq_len=16, alphabet=4)
batch = task.sample(4, torch.Generator().manual_seed(0))
print(task)
print("x =", batch.x.tolist())
print("y =", batch.y.tolist(), " (1 when the last symbol equals the first)")

# %% [markdown]
# ## Train both networks
#
# A [`SequenceNetwork`](../../api/network/) wraps a sequence model between an embedding of the
# tokens and a linear head, so the two networks differ only in their recurrence. Both are 32 units
# wide (the LSTM, with four gate blocks, has about four times the parameters; `seqmem compare`
# matches parameter budgets instead) and get the same optimiser (AdamW), schedule, gradient clipping and batches, 600 steps of 64
# strings ([`seqmem.train.train`](../../api/train/)).

# %%
results, networks = {}, {}
for name in ("rnn", "lstm"):
    net = SequenceNetwork.for_task(name, task, width=32)
    result = train(net, task, steps=600, batch_size=64, lr=1e-2, seed=0,
                   eval_batches=4)
    networks[name], results[name] = net, result
    print(f"{name:5s} {net.num_parameters():6d} parameters   "
          f"held-out accuracy {result.metric:.3f}   ({result.wall_s:.1f} s)")

# %%
fig, ax = plt.subplots(figsize=(plotstyle.FIGURE_WIDTH, 3.6))
for name, result in results.items():
    losses = torch.tensor(result.losses)[None, None]
    smooth = torch.nn.functional.avg_pool1d(losses, 20, stride=1)[0, 0]
    ax.plot(range(len(smooth)), smooth, label=name,
            color=plotstyle.model_style(name)[0])
ax.axhline(torch.log(torch.tensor(2.0)).item(), color="gray", ls="--", lw=1,
           label="chance (ln 2)")
ax.set(xlabel="training step", ylabel="cross-entropy (nats)",
       title="training loss (smoothed), seq_len 16")
ax.legend()
plt.show()

# %% [markdown]
# The LSTM's loss sits at chance for a while, then drops to zero: it has found how to hold the first
# symbol in its cell state. The Elman RNN's loss stays at $\ln 2$, the loss of a coin flip. The
# information is in its input just as it is for the LSTM, but the gradient that should teach it to keep
# the first symbol has to cross 15 steps of $\mathrm{diag}(\phi') W_{hh}$, and arrives
# [vanishingly small](../../concepts/vanishing/).
#
# ## Token by token, with `step`
#
# Now stream one string through each trained network, one token at a time. After every token the
# network's head outputs a distribution over the two classes; we plot its probability of "match"
# (class 1). The network was only trained to answer at the last position, but its answer at position
# $t$ is what it would say if the string ended there, so a network that remembers the first symbol
# should say "match" exactly at the positions where the current symbol equals the first one.

# %%
# first symbol 2, last symbol 2
x = torch.tensor([2, 0, 1, 3, 2, 1, 0, 0, 3, 2, 1, 3, 0, 1, 3, 2])
assert len(x) == task.seq_len

confidence = {}
with torch.no_grad():
    for name, net in networks.items():
        net.eval()
        state, probs = None, []
        for t in range(len(x)):
            logits_t, state = net.step(x[t : t + 1], state)  # one token
            probs.append(logits_t.softmax(-1)[0, 1].item())
        confidence[name] = probs
        print(f"{name:5s} state carried between tokens: "
              f"{seqmem.state_nbytes(state)} bytes (after 16 as after 1)")

matches = [t for t in range(len(x)) if x[t] == x[0]]
fig, ax = plt.subplots(figsize=(plotstyle.FIGURE_WIDTH, 3.8))
for name, probs in confidence.items():
    ax.plot(range(len(x)), probs, label=name, **plotstyle.line_style(name))
for t in matches:
    ax.axvspan(t - 0.4, t + 0.4, color="gold", alpha=0.3, lw=0)
ax.set_xticks(range(len(x)), [str(v) for v in x.tolist()])
ax.set(xlabel="token (shaded: equal to the first token)", ylabel="P(match)",
       ylim=(-0.05, 1.05), title="P(match), token by token")
ax.legend()
plt.show()

# %% [markdown]
# The LSTM's confidence jumps to 1 at the shaded tokens, where the current symbol equals the first,
# and drops to 0 elsewhere: it reads each new symbol against a copy of the first that it carries in
# its state. At the last token, the only one it was trained on, it is confidently right. The RNN hovers
# near 0.5 everywhere: it has not learned to keep the first symbol.
#
# The same check, done properly over held-out strings, is `train`'s evaluation above; done for every
# architecture and several lengths, it is `seqmem compare` (see the
# [trade-offs page](../../tradeoffs/)).
#
# ## The streaming form is the parallel form
#
# `step` and `forward` compute the same function, so the probabilities above are exactly what a
# whole-sequence `forward` gives at every position:

# %%
with torch.no_grad():
    for name, net in networks.items():
        logits, _ = net(x[None])  # (1, 16, 2)
        parallel = logits.softmax(-1)[0, :, 1]
        err = (parallel - torch.tensor(confidence[name])).abs().max()
        print(f"{name:5s} max |step - forward| = {err:.1e}")

# %% [markdown]
# ## Try it
#
# - Make the strings longer (`XorEcho(seq_len=40)`): the LSTM needs more steps, the RNN stays at chance.
# - Make them shorter (`seq_len=6`): the RNN learns too.
# - Swap in `"gru"`, `"transformer"` or `"mamba"`: `SequenceNetwork.for_task("gru", task, width=32)`.
# - Initialise the LSTM with `forget_bias=0.0` (pass it to `for_task`) and watch how much longer it
#   takes to leave chance.
