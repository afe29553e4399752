"""The figures of the Concepts pages, computed with seqmem at build time.

Each function returns PNG bytes. Everything is seeded and small (a few seconds in all on two CPU
cores), so the figures are rebuilt on every `mkdocs build` and always show what the code does now.
`FIGURES` maps the file name under `figures/` to its function; `seqmem_docs.py` calls them.
"""

from __future__ import annotations

from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from seqmem.plotstyle import FIGURE_WIDTH, line_style, model_style, plot_style, png_bytes  # noqa: E402

# For curves that are not models (spectral radii, forget biases, channels): a sequential palette, so
# that an ordered parameter reads as an order; none of its colours is a model's (seqmem.plotstyle).
SHADES = ["#440154", "#3B528B", "#21918C", "#5DC863", "#B5A100"]  # viridis, its yellow darkened


def _png(fig: Figure) -> bytes:
    return png_bytes(fig)


def _figure(nrows: int, height: float = 3.4) -> tuple[Figure, list]:
    """Panels stacked at the page's width: one column, so each panel is shown as large as the page allows."""
    fig = Figure(figsize=(FIGURE_WIDTH, 0.3 + height * nrows))
    axes = [fig.add_subplot(nrows, 1, k + 1) for k in range(nrows)]
    return fig, axes


def _scale_radius(rnn: torch.nn.Module, radius: float) -> None:
    """Rescale an Elman RNN's W_hh in place to the given spectral radius."""
    from seqmem.diagnostics import spectral_radius

    with torch.no_grad():
        rnn.weight_hh.mul_(radius / spectral_radius(rnn.weight_hh))


# ---------------------------------------------------------------------------------- the Elman RNN
def rnn_bptt() -> bytes:
    """Forward: the hidden states of an Elman RNN. Backward: ||dL/dh_t|| for a loss at the last step."""
    import seqmem
    from seqmem.diagnostics import hidden_grad_norms

    torch.manual_seed(0)
    T, H = 60, 32
    x = torch.randn(1, T, 4, dtype=torch.float64)
    fig, (ax_h, ax_g) = _figure(2)
    rnn = seqmem.RNN(4, H).double()
    with torch.no_grad():
        y, _ = rnn(x)
    im = ax_h.imshow(y[0].T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    ax_h.grid(False)
    ax_h.set(xlabel="time step t", ylabel="hidden unit", title="forward: $h_t$ (one sequence)")
    fig.colorbar(im, ax=ax_h, shrink=0.9, label="$h_{t,j}$")
    for k, radius in enumerate((0.7, 1.0, 1.5)):
        torch.manual_seed(0)
        rnn = seqmem.RNN(4, H).double()
        _scale_radius(rnn, radius)
        g = hidden_grad_norms(rnn, x.repeat(8, 1, 1) + 0.5 * torch.randn(8, T, 4, dtype=torch.float64),
                              reduction="mean")
        ax_g.semilogy(range(T), g, color=SHADES[k + 1], label=rf"$\rho(W_{{hh}})$ = {radius}")
    ax_g.set(xlabel="time step t", ylabel=r"$\|\partial L / \partial h_t\|_2$",
             title=r"backward: BPTT error signal, $L = \sum_j h_{T,j}$")
    ax_g.legend()
    return _png(fig)


# ----------------------------------------------------------------------- vanishing and exploding
def vanishing() -> bytes:
    """||dh_T/dh_t|| against distance for several spectral radii, and the gradient cliff with clipping."""
    import seqmem
    from seqmem.diagnostics import distances, jacobian_norms, rnn_jacobian_bound

    T, H, B = 60, 24, 4
    fig, (ax_j, ax_c) = _figure(2)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(B, T, 4, generator=gen, dtype=torch.float64)
    d = distances(T)
    for k, radius in enumerate((0.5, 0.9, 1.0, 1.2, 1.6)):
        torch.manual_seed(1)
        rnn = seqmem.RNN(4, H).double()
        _scale_radius(rnn, radius)
        j = jacobian_norms(rnn, x, reduction="mean")
        ax_j.semilogy(d, j, color=SHADES[k], label=rf"$\rho$ = {radius}")
        if radius <= 1.0:
            ax_j.semilogy(d, rnn_jacobian_bound(rnn, T), ":", color=SHADES[k], lw=1.4)
    ax_j.set_ylim(1e-12, 1e3)
    ax_j.set(xlabel="distance T - t", ylabel=r"$\|\partial h_T / \partial h_t\|_2$",
             title="Elman RNN (tanh), H = 24: Jacobian norm vs distance")
    ax_j.legend(ncol=2, title="dotted: the bound $\\|W_{hh}\\|_2^{T-t}$")

    # The cliff (Pascanu et al. 2013, sec. 3): a one-unit RNN h_t = tanh(w h_{t-1} + b), read at T.
    # 400 values of w at once: 400 independent units, W_hh = diag(w), no input.
    n, steps, b, target = 400, 40, -0.5, 0.8
    w_grid = torch.linspace(0.5, 3.0, n, dtype=torch.float64)
    rnn = seqmem.RNN(1, n).double()
    with torch.no_grad():
        rnn.weight_ih.zero_()
        rnn.weight_hh.copy_(torch.diag(w_grid))
        rnn.bias_ih.fill_(b)
        rnn.bias_hh.zero_()
    h0 = seqmem.RNNState(torch.full((1, n), 0.9, dtype=torch.float64))
    y, _ = rnn(torch.zeros(1, steps, 1, dtype=torch.float64), h0)
    loss = (y[0, -1] - target) ** 2  # (n,): one loss per w
    (grad,) = torch.autograd.grad(loss.sum(), rnn.weight_hh)
    g = grad.diagonal().abs().detach()
    tau = 1.0
    ax_c.semilogy(w_grid, loss.detach().clamp_min(1e-12), color=SHADES[0], label="loss $L(w)$")
    ax_c.semilogy(w_grid, g.clamp_min(1e-12), color=SHADES[3], label=r"$|\partial L / \partial w|$")
    ax_c.semilogy(w_grid, g.clamp(1e-12, tau), "--", color=SHADES[4], label=rf"clipped at $\tau$ = {tau}")
    ax_c.set(xlabel="recurrent weight w", title=rf"the cliff: $h_t = \tanh(w h_{{t-1}} {b:+})$, T = {steps}")
    ax_c.legend()
    return _png(fig)


# ----------------------------------------------------------------------------------------- the LSTM
def lstm_highway() -> bytes:
    """Forget-gate products against distance for several forget-bias inits, and the full Jacobians."""
    import seqmem
    from seqmem.diagnostics import distances, forget_gate_products, jacobian_norms

    T, H, B = 80, 24, 4
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, 4, generator=gen, dtype=torch.float64)
    d = distances(T)
    fig, (ax_f, ax_j) = _figure(2)
    for k, fb in enumerate((0.0, 1.0, 2.0, 3.0)):
        torch.manual_seed(2)
        lstm = seqmem.LSTM(4, H, forget_bias=fb).double()
        p = forget_gate_products(lstm, x).mean(dim=(0, 2))
        ax_f.semilogy(d, p, color=SHADES[k], label=f"forget_bias = {fb:g}")
    torch.manual_seed(2)
    rnn = seqmem.RNN(4, H).double()
    ax_f.semilogy(d, jacobian_norms(rnn, x, reduction="mean"), "--", color=model_style("rnn")[0],
                  label=r"Elman RNN $\|\partial h_T/\partial h_t\|$")
    ax_f.set_ylim(1e-10, 2)
    ax_f.set(xlabel="distance T - t", ylabel="forget-gate product,\nmean over units",
             title="the cell path at initialisation: $\\partial c_T/\\partial c_t$ = diag($\\prod f$)")
    ax_f.legend(ncol=2)

    torch.manual_seed(2)
    lstm = seqmem.LSTM(4, H, forget_bias=1.0).double()
    curves = [
        (forget_gate_products(lstm, x).amax(dim=2).mean(0), "cell path alone, largest unit"),
        (jacobian_norms(lstm, x, field="c", reduction="mean"), r"full $\|\partial c_T/\partial c_t\|_2$"),
        (jacobian_norms(lstm, x, field="h", reduction="mean"), r"full $\|\partial h_T/\partial h_t\|_2$"),
    ]
    for k, (curve, label) in enumerate(curves):
        ax_j.semilogy(d, curve, color=SHADES[(0, 2, 3)[k]], label=label)
    ax_j.set(xlabel="distance T - t", title="LSTM (forget_bias = 1): cell path vs full Jacobian")
    ax_j.legend()
    return _png(fig)


# ------------------------------------------------------------------------------------------ the GRU
def gru_gradflow() -> bytes:
    """Jacobian norms against distance at initialisation: RNN, GRU (both conventions), LSTM."""
    import seqmem
    from seqmem.diagnostics import distances, jacobian_norms

    T, H, B = 60, 24, 4
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(B, T, 4, generator=gen, dtype=torch.float64)
    d = distances(T)
    fig, (ax,) = _figure(1, height=4.6)
    models = [
        ("Elman RNN", lambda: seqmem.RNN(4, H), None, "rnn", "-"),
        ("GRU, reset_after=True (torch/cuDNN)", lambda: seqmem.GRU(4, H, reset_after=True), None, "gru", "-"),
        ("GRU, reset_after=False (Cho et al.)", lambda: seqmem.GRU(4, H, reset_after=False), None, "gru", "--"),
        ("LSTM, h block", lambda: seqmem.LSTM(4, H), "h", "lstm", "-"),
        ("LSTM, c block", lambda: seqmem.LSTM(4, H), "c", "lstm", "--"),
    ]
    for label, make, field, family, style in models:
        torch.manual_seed(3)
        model = make().double()
        ax.semilogy(d, jacobian_norms(model, x, field=field, reduction="mean"), style,
                    color=model_style(family)[0], label=label)
    ax.set(xlabel="distance T - t", ylabel=r"$\|\partial h_T / \partial h_t\|_2$, mean of 4",
           title=f"gradient flow at initialisation, H = {H} (torch.nn init)")
    ax.legend()
    return _png(fig)


# ------------------------------------------------------------------------------------ causal attention
def attention() -> bytes:
    """State bytes against t for every model, and gradient by distance: attention vs recurrences."""
    import seqmem
    from seqmem.diagnostics import attention_grad_by_distance, distances, input_jacobian_norms

    W = 32
    fig, (ax_s, ax_g) = _figure(2)
    ts = [8, 32, 128, 512]
    for name in seqmem.model_names():
        torch.manual_seed(4)
        model = seqmem.model_spec(name).build(W, W)
        sizes = []
        with torch.no_grad():
            for t in ts:
                _, state = model(torch.randn(1, t, W))
                sizes.append(seqmem.state_nbytes(state))
        ax_s.loglog(ts, sizes, label=name, **line_style(name))
    ax_s.set(xlabel="tokens seen t", ylabel="state_nbytes(state) per sequence",
             title=f"memory carried between steps (width {W}, float32)")
    ax_s.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

    T = 48
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, T, W, generator=gen, dtype=torch.float64)
    d = distances(T)
    torch.manual_seed(4)
    tf = seqmem.CausalTransformer(W, n_heads=4, n_layers=2).double()
    ax_g.semilogy(d, attention_grad_by_distance(tf, x, reduction="mean"), color=model_style("transformer")[0],
                  label="transformer (2 layers)")
    for name in ("rnn", "lstm", "gru"):
        torch.manual_seed(4)
        model = seqmem.build(name, W, W).double()
        ax_g.semilogy(d, input_jacobian_norms(model, x, reduction="mean"), color=model_style(name)[0], label=name)
    ax_g.set(xlabel="distance T - t", ylabel=r"$\|\partial y_T / \partial x_t\|_2$",
             title="how much of input $x_t$ reaches the last output (at init)")
    ax_g.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(fig)


# ---------------------------------------------------------------------------------- selective SSMs
def ssm() -> bytes:
    """The LTI convolution kernel of an s4d block, and the scan with and without selection."""
    import seqmem
    from seqmem.ssm.reference import lti_kernel

    D, T = 16, 64
    fig, (ax_k, ax_a) = _figure(2)
    torch.manual_seed(5)
    s4d = seqmem.build("s4d", D)
    x = torch.randn(1, T, D)
    with torch.no_grad():
        lti = s4d.scan_inputs(x)
        kernel = lti_kernel(lti.delta[0, 0], lti.A, lti.B, lti.C, T)  # (d_inner, T)
    for k, ch in enumerate((0, 5, 11, 23)):
        ax_k.plot(range(T), kernel[ch], color=SHADES[k], label=f"channel {ch}")
    ax_k.set(xlabel="lag k", ylabel=r"$K_k = \sum_n C_n \bar A_n^k \bar B_n$",
             title="s4d (LTI): one fixed convolution kernel per channel")
    ax_k.legend(ncol=2)

    # The scan itself, on one channel with one state (A = -1), fed an input that is zero except for
    # three tokens: +1 at t = 8, a "reset" token (input 0) at t = 32, and -1 at t = 48.
    from seqmem.ssm.reference import selective_scan

    u = torch.zeros(1, T, 1)
    u[0, 8], u[0, 48] = 1.0, -1.0
    events = (8, 32, 48)
    A = -torch.ones(1, 1)
    C = torch.ones(1, 1)
    # LTI: the same step and input matrix at every token (B = 1/Delta, so a token is written at full size).
    y_lti, _ = selective_scan(u, torch.full((1, T, 1), 0.1), A, torch.full((1, 1), 10.0), C)
    # Selective: Delta_t and B_t depend on the token. A large step forgets the state and writes the
    # token (B_t = 1/Delta_t), a tiny step ignores the token and keeps the state almost unchanged.
    delta = torch.full((1, T, 1), 1e-3)
    delta[0, list(events)] = 8.0
    y_sel, _ = selective_scan(u, delta, A, 1.0 / delta, C.expand(1, T, 1))
    ax_a.plot(range(T), y_lti[0, :, 0], color=model_style("s4d")[0],
              label=r"LTI (s4d): $\Delta = 0.1$, $B = 10$ at every step")
    ax_a.plot(range(T), y_sel[0, :, 0], color=model_style("mamba")[0],
              label="selective (mamba): $\\Delta_t = 8$ at marked tokens,\n"
                    r"$10^{-3}$ elsewhere; $B_t = 1/\Delta_t$")
    for t in events:
        ax_a.axvline(t, color="gray", lw=0.8, ls=":")
    ax_a.set(xlabel="time step t", ylabel="$y_t = C h_t$ (one channel, $A = -1$)", ylim=(-1.3, 1.6),
             title="the scan: +1 at t = 8, reset at t = 32, -1 at t = 48")
    ax_a.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=1)
    return _png(fig)


def _styled(make: Callable[[], bytes]) -> Callable[[], bytes]:
    """`make`, drawn with seqmem's figure settings (`seqmem.plotstyle`)."""

    def draw() -> bytes:
        with plot_style():
            return make()

    draw.__doc__ = make.__doc__
    return draw


FIGURES: dict[str, Callable[[], bytes]] = {
    name: _styled(make)
    for name, make in {
        "rnn_bptt.png": rnn_bptt,
        "vanishing.png": vanishing,
        "lstm_highway.png": lstm_highway,
        "gru_gradflow.png": gru_gradflow,
        "attention.png": attention,
        "ssm.png": ssm,
    }.items()
}
"""File name under `figures/` -> function returning its PNG bytes."""
