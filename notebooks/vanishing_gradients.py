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
# # Vanishing gradients, measured
#
# Backpropagation through time multiplies one Jacobian per step. For the Elman RNN,
# $\partial h_s/\partial h_{s-1} = \mathrm{diag}(\phi'(a_s))\,W_{hh}$, so the sensitivity of the last
# state to an early one is a product of $T - t$ such matrices, bounded by
# $(\gamma\,\|W_{hh}\|_2)^{T-t}$ with $\gamma = \max|\phi'|$ (Bengio et al. 1994; Pascanu et al. 2013).
# The LSTM adds a path along which the Jacobian is only $\mathrm{diag}(f_t)$, a product of forget gates
# (Hochreiter & Schmidhuber 1997; Gers et al. 2000).
#
# This notebook measures both with [`seqmem.diagnostics`](../../api/diagnostics/): exact Jacobian
# norms by autograd, for several spectral radii; the LSTM's forget-gate products for several
# forget-gate biases; and what gradient clipping does to an exploding gradient.

# %%
import matplotlib.pyplot as plt
import torch

import seqmem
from seqmem import plotstyle
from seqmem.diagnostics import (
    distances,
    forget_gate_products,
    global_grad_norm,
    hidden_grad_norms,
    jacobian_norms,
    rnn_jacobian_bound,
    spectral_norm,
    spectral_radius,
)

plotstyle.use()  # figures sized for the page, a fixed colour per model
torch.manual_seed(0)
T, H = 60, 32
x = torch.randn(4, T, 4, dtype=torch.float64)  # 4 random sequences of 60 steps
d = distances(T)  # [59, 58, ..., 0]: distance of each index to the last step

# %% [markdown]
# ## The Elman RNN: a product of Jacobians
#
# `jacobian_norms(model, x)` runs the model step by step and returns
# $\|\partial h_{T} / \partial h_t\|_2$ for every $t$, computed exactly by autograd (not estimated).
# We rescale a freshly initialised $W_{hh}$ to several spectral radii $\rho$:


# %%
def rnn_with_radius(radius, seed=0):
    torch.manual_seed(seed)
    rnn = seqmem.RNN(4, H).double()
    with torch.no_grad():
        rnn.weight_hh.mul_(radius / spectral_radius(rnn.weight_hh))
    return rnn


radii = [0.5, 0.8, 1.0, 1.2, 1.5]
fig, ax = plt.subplots()
for radius in radii:
    rnn = rnn_with_radius(radius)
    J = jacobian_norms(rnn, x, reduction="mean")
    (line,) = ax.semilogy(d, J, label=f"ρ = {radius}")
    print(f"rho = {radius}: ||W_hh||_2 = {spectral_norm(rnn.weight_hh):.2f}")
    if radius < 1:
        bound = rnn_jacobian_bound(rnn, T)
        ax.semilogy(d, bound, ":", color=line.get_color(), lw=1.4)
ax.set(xlabel="distance T - t", ylabel="||dh_T / dh_t||_2", ylim=(1e-14, 1e3),
       title="Elman RNN (tanh), dotted: the bound")
ax.legend(ncol=2)
plt.show()

# %% [markdown]
# Below $\rho = 1$ the decay is geometric, and the rate follows $\rho$: at $\rho = 0.5$ a perturbation
# 30 steps back is damped by ten orders of magnitude. The bound uses $\|W_{hh}\|_2$, which is larger
# than $\rho$ for a non-symmetric matrix (printed above: 1.5 at $\rho = 0.8$, so that bound even
# grows while the norm decays): it is a sufficient condition for vanishing, not a prediction. Above $\rho = 1$
# the product no longer decays: `tanh` saturates and keeps it from growing without bound here, but the
# gradient becomes large and erratic.
#
# ## What the loss sees: $\|\partial L/\partial h_t\|$
#
# For a loss read at the last step only, the error signal that reaches step $t$ is
# $\partial L/\partial h_t$, the quantity BPTT propagates. `hidden_grad_norms` measures it (by
# default for $L$ = the sum of the last output):

# %%
fig, ax = plt.subplots()
for radius in radii:
    g = hidden_grad_norms(rnn_with_radius(radius), x, reduction="mean")
    ax.semilogy(range(T), g, label=f"ρ = {radius}")
ax.set(xlabel="time step t", ylabel="||dL / dh_t||_2",
       title="the BPTT error signal, loss at t = T")
ax.legend()
plt.show()

# %% [markdown]
# ## The LSTM: a product of forget gates
#
# Along the LSTM's cell path, $c_t = f_t \odot c_{t-1} + i_t \odot g_t$, the Jacobian is
# $\mathrm{diag}(f_t)$, so from step $t$ to $T$ the gain is $\prod_{s=t+1}^{T} f_s$, unit by unit.
# `forget_gate_products` computes it from the model's own gate activations. At initialisation the
# gates are near $\sigma(b_f)$, which is why the initial forget bias matters:

# %%
fig, ax = plt.subplots(figsize=(plotstyle.FIGURE_WIDTH, 5.2))
for forget_bias in [0.0, 1.0, 2.0, 3.0, 5.0]:
    torch.manual_seed(0)
    lstm = seqmem.LSTM(4, H, forget_bias=forget_bias).double()
    gain = forget_gate_products(lstm, x)  # (batch, T, H)
    mean_f = lstm.gates(x).f.mean().item()
    ax.semilogy(d, gain.mean(dim=(0, 2)),
                label=f"forget_bias = {forget_bias:g} (mean f = {mean_f:.2f})")
J_rnn = jacobian_norms(rnn_with_radius(0.8), x, reduction="mean")
ax.semilogy(d, J_rnn, "--", color=plotstyle.model_style("rnn")[0],
            label="Elman RNN, ρ = 0.8")
ax.set(xlabel="distance T - t", ylabel="mean over units of prod f",
       ylim=(1e-14, 2), title="the LSTM's cell path at initialisation")
ax.legend(loc="lower left")
plt.show()

# %% [markdown]
# With `forget_bias = 5` the mean gate is about $0.99$ and about half of the signal survives 60
# steps on the cell path, with no weight matrix in the way. The gates are *learned*: training moves
# $f_t$ towards 1 on the units and at the steps where something must be kept, and towards 0 where it
# should be forgotten, which no setting of $W_{hh}$ can do for the Elman RNN.
#
# The cell path is only one of the LSTM's paths. `jacobian_norms(lstm, x, field="c")` measures the full
# $\|\partial c_T/\partial c_t\|_2$, paths through $h$ and the gates included:

# %%
torch.manual_seed(0)
lstm = seqmem.LSTM(4, H, forget_bias=1.0).double()
fig, ax = plt.subplots()
best_unit = forget_gate_products(lstm, x).amax(dim=2).mean(0)
ax.semilogy(d, best_unit, label="cell path, best unit")
for field in ("c", "h"):
    J = jacobian_norms(lstm, x, field=field, reduction="mean")
    ax.semilogy(d, J, label=f"full ||d{field}_T / d{field}_t||_2")
ax.set(xlabel="distance T - t", title="LSTM, forget_bias = 1")
ax.legend()
plt.show()

# %% [markdown]
# ## Exploding gradients and clipping
#
# With a large recurrent matrix and a non-saturating nonlinearity, the product grows instead. A `relu`
# RNN with $\rho = 2$: the gradient of a loss at the last step with respect to the parameters, then
# the same gradient clipped by `torch.nn.utils.clip_grad_norm_` to a global norm of 1 (Pascanu et al.
# 2013, Algorithm 1), measured with `global_grad_norm`:

# %%
torch.manual_seed(0)
relu_rnn = seqmem.RNN(4, H, nonlinearity="relu").double()
with torch.no_grad():
    relu_rnn.weight_hh.mul_(2.0 / spectral_radius(relu_rnn.weight_hh))
for T_explode in (10, 20, 40):
    relu_rnn.zero_grad()
    y, _ = relu_rnn(x[:, :T_explode])
    y[:, -1].pow(2).mean().backward()
    before = global_grad_norm(relu_rnn.parameters())
    torch.nn.utils.clip_grad_norm_(relu_rnn.parameters(), max_norm=1.0)
    after = global_grad_norm(relu_rnn.parameters())
    print(f"T = {T_explode:3d}: gradient norm {before:10.3e}"
          f"  ->  clipped {after:.3f}")

# %% [markdown]
# Clipping keeps the direction of the gradient and bounds its length, so one step on a cliff of the
# loss surface cannot throw the parameters away. It does nothing for vanishing gradients: that needs a
# different architecture, the subject of the [LSTM](../../concepts/lstm/),
# [GRU](../../concepts/gru/) and [SSM](../../concepts/ssm/) pages.
#
# ## One call for everything
#
# `gradflow_report` runs every measurement that applies to a model and returns a JSON-ready dict:

# %%
from seqmem.diagnostics import gradflow_report

report = gradflow_report(seqmem.LSTM(4, 16), torch.randn(2, 20, 4))
for key, value in report.items():
    if isinstance(value, list):
        shown = f"list of {len(value)} values, last {value[-1]:.3g}"
    else:
        shown = value
    print(f"{key:22s} {shown}")
