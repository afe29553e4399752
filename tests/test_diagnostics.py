"""seqmem.diagnostics: the gradient-flow claims of the classic literature, as properties.

- Elman RNN: ||dh_T/dh_t||_2 stays under Pascanu et al.'s bound (||W_hh||_2 max|tanh'|)^(T-t); it decays
  geometrically when ||W_hh||_2 < 1 and grows in the linear (all-ReLU-active) regime when rho(W_hh) > 1.
- LSTM: along the cell path dc_T/dc_t is exactly diag(prod f) (peepholes too), and a cell path without
  the forget gate, or a product off by one step, would be caught.
- Gradient clipping bounds the global gradient norm and the SGD update.
- Attention: the gradient reaching position t from the last output does not decay geometrically with
  distance, where a contracting RNN's does.
- The measurements agree with independent computations (torch.autograd.functional.jacobian over the
  chunked forward, gradients with respect to a re-entered state).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

import seqmem
from seqmem import LSTMState
from seqmem.diagnostics import (
    attention_grad_by_distance,
    cell_path_jacobian,
    distances,
    forget_gate_products,
    global_grad_norm,
    gradflow_report,
    hidden_grad_norms,
    input_jacobian_norms,
    jacobian_norms,
    rnn_jacobian_bound,
    spectral_norm,
    spectral_radius,
    update_gate_products,
)
from seqmem.testing import Tolerance

F64 = Tolerance().kwargs(torch.float64)
EXACT = {"rtol": 1e-12, "atol": 1e-15}  # tighter than any dtype policy: sums of the same terms
SLACK = 1 + 1e-9  # relative slack of an inequality between two float64 computations
seeds = st.integers(0, 2**31 - 1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def _rand(gen: torch.Generator, *shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(*shape, generator=gen, dtype=torch.float64)


def _randomize(model: torch.nn.Module, gen: torch.Generator, scale: float = 1.0, weights_only=False) -> None:
    """Every parameter (or every weight) from N(0, scale^2), recurrent matrices scaled by 1/sqrt(H)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if weights_only and not name.startswith("weight"):
                continue
            s = scale / p.shape[1] ** 0.5 if name == "weight_hh" else scale
            p.copy_(_randn(gen, *p.shape, scale=s))


def _set_norm(matrix: torch.Tensor, target: float) -> None:
    """Rescale a square matrix in place to spectral norm `target` (so its spectral radius is below it)."""
    with torch.no_grad():
        matrix.mul_(target / spectral_norm(matrix))


def _recurrent(family: str, I: int, H: int, gen: torch.Generator, scale: float = 1.0, **kw) -> torch.nn.Module:
    cls = {"rnn": seqmem.RNN, "lstm": seqmem.LSTM, "gru": seqmem.GRU}[family]
    model = cls(I, H, **kw).double()
    _randomize(model, gen, scale)
    return model


def _reverse_products(factors: torch.Tensor) -> torch.Tensor:
    """`(B, T)` or `(B, T, H)` -> entry t = prod of factors[:, t+1:], written as a plain loop."""
    T = factors.shape[1]
    return torch.stack([factors[:, t + 1 :].prod(dim=1) for t in range(T)], dim=1)


sizes = st.tuples(st.integers(1, 3), st.integers(1, 14), st.integers(1, 4), st.integers(1, 6))  # B, T, I, H


# ------------------------------------------------------------------------------------------ Elman RNN
@given(size=sizes, scale=st.floats(0.05, 3.0), seed=seeds)
@example(size=(1, 1, 1, 1), scale=1.0, seed=0)
@example(size=(2, 14, 3, 6), scale=3.0, seed=1)
def test_rnn_jacobian_within_pascanu_bound(size, scale, seed):
    """||dh_T/dh_t||_2 <= prod_s max|tanh'(a_s)| ||W_hh||_2 <= (||W_hh||_2)^(T-t) (Pascanu et al. 2013)."""
    B, T, I, H = size
    gen = _gen(seed)
    rnn = _recurrent("rnn", I, H, gen, scale)
    x = _randn(gen, B, T, I)
    J = jacobian_norms(rnn, x)  # (B, T), spectral norm
    assert J.shape == (B, T) and J.dtype == torch.float64
    torch.testing.assert_close(J[:, -1], torch.ones(B, dtype=torch.float64), **F64)  # distance 0: identity
    bound = rnn_jacobian_bound(rnn, T)  # gamma = max|tanh'| = 1
    assert bound.shape == (T,)
    w = spectral_norm(rnn.weight_hh)
    torch.testing.assert_close(bound, w ** distances(T).double(), **F64)
    # the tighter bound with the largest tanh' actually met at each step: tanh'(a_s) = 1 - h_s^2
    with torch.no_grad():
        h, _ = rnn(x)  # (B, T, H)
    # 1 - h^2 carries an absolute rounding error of a few ulps (large relative to it when a unit
    # saturates), as does autograd's own tanh backward: allow 1e-15 per factor
    dphi = (1 - h.square()).amax(dim=-1) + 1e-15  # (B, T)
    per_step = dphi * w  # (B, T) >= ||diag(tanh'(a_s)) W_hh||_2
    tight = _reverse_products(per_step)  # (B, T)
    assert (J <= tight * SLACK + 1e-300).all(), (J - tight).max()
    assert (tight <= bound * SLACK).all()
    # and with the largest tanh' over the whole run, a single gamma < 1
    gamma = float(dphi.max())
    assert (J <= rnn_jacobian_bound(rnn, T, gamma=gamma) * SLACK + 1e-300).all()


@given(batch=st.integers(1, 2), I=st.integers(1, 3), H=st.integers(2, 8), rho=st.floats(0.2, 0.8), seed=seeds)
def test_rnn_contracting_jacobian_decays_geometrically(batch, I, H, rho, seed):
    """||W_hh||_2 = rho < 1: each step back multiplies the Jacobian norm by at most rho; at distance 20
    it is below rho^20 (Bengio et al. 1994)."""
    T = 24
    gen = _gen(seed)
    rnn = _recurrent("rnn", I, H, gen)
    _set_norm(rnn.weight_hh, rho)
    assert spectral_radius(rnn)["h"] <= spectral_norm(rnn)["h"] * SLACK
    assert spectral_norm(rnn)["h"] == pytest.approx(rho, rel=1e-12)
    J = jacobian_norms(rnn, _randn(gen, batch, T, I))
    assert (J[:, :-1] <= rho * J[:, 1:] * SLACK + 1e-300).all()  # ratio of consecutive distances <= rho
    d = distances(T)
    assert (J[:, d == 20] <= rho**20 * SLACK).all() and (J[:, d == 20] < 0.8**20 * SLACK).all()
    assert (J[:, d >= 20] < 0.02).all()


@given(batch=st.integers(1, 2), T=st.integers(1, 12), I=st.integers(1, 3), H=st.integers(1, 6),
       rho=st.floats(1.1, 1.6), seed=seeds)
@example(batch=1, T=12, I=1, H=1, rho=1.6, seed=0)
def test_rnn_expanding_linear_regime_grows(batch, T, I, H, rho, seed):
    """ReLU RNN with positive inputs, weights and biases: every unit stays active, the map is linear,
    dh_T/dh_t = W_hh^(T-t) exactly, and with rho(W_hh) > 1 its norm grows at least as rho^(T-t)."""
    gen = _gen(seed)
    rnn = seqmem.RNN(I, H, nonlinearity="relu").double()
    with torch.no_grad():
        for p in rnn.parameters():
            p.copy_(_rand(gen, *p.shape, low=0.1, high=1.0))
        rnn.weight_hh.mul_(rho / spectral_radius(rnn.weight_hh))  # Perron root = rho
    assert spectral_radius(rnn)["h"] == pytest.approx(rho, rel=1e-10)
    x = _rand(gen, batch, T, I)
    assert (rnn(x)[0] > 0).all()  # the linear regime
    J = jacobian_norms(rnn, x)
    d = distances(T)
    W = rnn.weight_hh.detach()
    powers = torch.stack([torch.linalg.matrix_norm(torch.linalg.matrix_power(W, int(k)), ord=2) for k in d])
    torch.testing.assert_close(J, powers.expand(batch, T), **F64)
    assert (J >= rho ** d.double() / SLACK).all()  # grows geometrically with the distance


# ------------------------------------------------------------------------------ the recurrent matrix
def test_spectral_radius_and_norm_of_known_matrices():
    """Radius and norm differ for non-normal matrices: a nilpotent one has radius 0 and norm |a|."""
    nilpotent = torch.tensor([[0.0, 3.0], [0.0, 0.0]], dtype=torch.float64)
    assert spectral_radius(nilpotent) == 0.0 and spectral_norm(nilpotent) == pytest.approx(3.0, rel=1e-14)
    c, s = math.cos(0.7), math.sin(0.7)
    rotation = 0.9 * torch.tensor([[c, -s], [s, c]], dtype=torch.float64)  # eigenvalues 0.9 e^{+-0.7i}
    assert spectral_radius(rotation) == pytest.approx(0.9, rel=1e-12)
    assert spectral_norm(rotation) == pytest.approx(0.9, rel=1e-12)
    assert spectral_radius(torch.diag(torch.tensor([0.5, -2.0, 1.0]))) == pytest.approx(2.0, rel=1e-14)


@given(n=st.integers(1, 8), c=st.floats(-3.0, 3.0), seed=seeds)
def test_spectral_radius_properties(n, c, seed):
    """rho(W) = max|eig| (numpy as the oracle), rho(cW) = |c| rho(W), rho(W) <= ||W||_2."""
    np = pytest.importorskip("numpy")
    W = _randn(_gen(seed), n, n)
    rho = spectral_radius(W)
    assert rho == pytest.approx(float(np.abs(np.linalg.eigvals(W.numpy())).max()), rel=1e-9)
    assert spectral_radius(c * W) == pytest.approx(abs(c) * rho, rel=1e-9, abs=1e-12)
    assert rho <= spectral_norm(W) * SLACK
    assert spectral_norm(W) == pytest.approx(float(np.linalg.norm(W.numpy(), 2)), rel=1e-10)


@pytest.mark.parametrize(("family", "gates"), [("rnn", "h"), ("lstm", "ifgo"), ("gru", "rzn")])
def test_spectral_radius_per_gate_block(family, gates):
    """Gated models report one radius per H x H block of weight_hh, in torch.nn gate order."""
    H = 5
    model = _recurrent(family, 3, H, _gen(7))
    radii, norms = spectral_radius(model), spectral_norm(model)
    assert list(radii) == list(gates) and list(norms) == list(gates)
    for k, gate in enumerate(gates):
        block = model.weight_hh[k * H : (k + 1) * H]
        assert radii[gate] == spectral_radius(block) and norms[gate] == spectral_norm(block)
    assert len(set(radii.values())) == len(gates)  # distinct blocks, not the same one repeated


# --------------------------------------------------------------------------------- the LSTM cell path
def _lstm(size, gen, peephole, bias=True, forget_bias=1.0, scale=1.0):
    B, T, I, H = size
    lstm = seqmem.LSTM(I, H, bias=bias, forget_bias=forget_bias, peephole=peephole).double()
    _randomize(lstm, gen, scale, weights_only=True)  # the forget-gate bias keeps its initialisation
    return lstm


def _cell_path_agrees(J: torch.Tensor, products: torch.Tensor) -> bool:
    """The check both the property and its mutants go through: J == diag(products), to 1e-12."""
    try:
        torch.testing.assert_close(J, torch.diag_embed(products), **EXACT)
    except AssertionError:
        return False
    return True


@given(size=sizes, peephole=st.booleans(), bias=st.booleans(), forget_bias=st.floats(-2.0, 3.0),
       scale=st.floats(0.1, 2.0), with_state=st.booleans(), seed=seeds)
@example(size=(1, 1, 1, 1), peephole=False, bias=True, forget_bias=1.0, scale=1.0, with_state=False, seed=0)
@example(size=(2, 14, 3, 6), peephole=True, bias=True, forget_bias=0.0, scale=2.0, with_state=True, seed=3)
def test_lstm_cell_path_jacobian_is_diag_of_forget_products(size, peephole, bias, forget_bias, scale,
                                                          with_state, seed):
    """dc_T/dc_t along the cell path (gates held fixed) == diag(prod_{s=t+1}^{T} f_s) exactly: the
    constant error carousel with a forget gate (Hochreiter & Schmidhuber 1997; Gers et al. 2000)."""
    B, T, I, H = size
    gen = _gen(seed)
    lstm = _lstm(size, gen, peephole, bias, forget_bias, scale)
    x = _randn(gen, B, T, I)
    state = LSTMState(_randn(gen, B, H), _randn(gen, B, H)) if with_state else None
    J = cell_path_jacobian(lstm, x, state)
    P = forget_gate_products(lstm, x, state)
    assert J.shape == (B, T, H, H) and P.shape == (B, T, H)
    assert _cell_path_agrees(J, P)
    off_diagonal = J * (1 - torch.eye(H, dtype=J.dtype))
    assert (off_diagonal == 0).all()
    # the products are those of the model's own forget gates
    gates = lstm.gates(x, state)
    torch.testing.assert_close(P, _reverse_products(gates.f), **EXACT)
    assert (P[:, -1] == 1).all() and ((P >= 0) & (P <= 1)).all()
    # ... and those gates drive the model's cell: c_t = f_t c_{t-1} + i_t g_t reproduces forward's c_T
    c = torch.zeros(B, H, dtype=x.dtype) if state is None else state.c
    for t in range(T):
        c = gates.f[:, t] * c + gates.i[:, t] * gates.g[:, t]
    torch.testing.assert_close(c, lstm(x, state)[1].c, **F64)


def _no_forget_gate_jacobian(lstm, x):
    """The cell-path Jacobian of a mutated LSTM whose cell drops the forget gate, c_t = c_{t-1} + i_t g_t,
    differentiated by autograd as cell_path_jacobian does."""
    gates = lstm.gates(x)
    i, g = gates.i.detach(), gates.g.detach()
    B, T, H = i.shape
    c, probes = torch.zeros(B, H, dtype=x.dtype), []
    for t in range(T):
        c = c + i[:, t] * g[:, t]  # the mutation: no f_t *
        probes.append(torch.zeros_like(c, requires_grad=True))
        c = c + probes[-1]
    rows = [torch.autograd.grad(c[:, j].sum(), probes, retain_graph=True) for j in range(H)]
    return torch.stack([torch.stack([rows[j][t] for j in range(H)], dim=1) for t in range(T)], dim=1)


def _mutant_products(mutant: str, f: torch.Tensor) -> torch.Tensor:
    if mutant == "products_without_forget_gate":  # c_t = c_{t-1} + i g: the product would be 1
        return torch.ones_like(f)
    if mutant == "products_from_s_equals_t":  # one step off: the gate of step t itself included
        return torch.flip(torch.cumprod(torch.flip(f, [1]), 1), [1])
    if mutant == "products_from_the_start":  # accumulated the wrong way
        return torch.cumprod(f, 1)
    raise AssertionError(mutant)


MUTANTS = ["products_without_forget_gate", "products_from_s_equals_t", "products_from_the_start",
           "jacobian_without_forget_gate"]


@pytest.mark.parametrize("mutant", MUTANTS)
@given(batch=st.integers(1, 2), H=st.integers(1, 4), peephole=st.booleans(), seed=seeds)
def test_lstm_cell_path_check_catches_mutants(mutant, batch, H, peephole, seed):
    """The exactness check above fails on a wrong product, or on a cell path without a forget gate
    (whose Jacobian is the identity: the bare constant error carousel)."""
    T, I = 5, 2
    gen = _gen(seed)
    lstm = _lstm((batch, T, I, H), gen, peephole)
    x = _randn(gen, batch, T, I)
    J, P = cell_path_jacobian(lstm, x), forget_gate_products(lstm, x)
    assert _cell_path_agrees(J, P)
    if mutant == "jacobian_without_forget_gate":
        J_wrong = _no_forget_gate_jacobian(lstm, x)
        torch.testing.assert_close(J_wrong, torch.eye(H, dtype=x.dtype).expand_as(J_wrong), **EXACT)
        assert not _cell_path_agrees(J_wrong, P)
    else:
        assert not _cell_path_agrees(J, _mutant_products(mutant, lstm.gates(x).f.detach()))


@given(size=sizes, ord=st.sampled_from([2, "fro"]), seed=seeds)
def test_lstm_without_recurrent_weights_is_all_cell_path(size, ord, seed):
    """With W_hh = 0 and no peepholes the gates ignore the state, so the full dc_T/dc_t of
    jacobian_norms (step form) equals the cell path's diag(prod f): norm max_j (ord 2) or ||.||_2 (fro)."""
    B, T, I, H = size
    gen = _gen(seed)
    lstm = _lstm(size, gen, peephole=False)
    with torch.no_grad():
        lstm.weight_hh.zero_()
    x = _randn(gen, B, T, I)
    P = forget_gate_products(lstm, x)
    J = jacobian_norms(lstm, x, ord=ord, field="c")
    expected = P.amax(dim=-1) if ord == 2 else torch.linalg.vector_norm(P, dim=-1)
    torch.testing.assert_close(J, expected, **F64)


@given(size=sizes, reset_after=st.booleans(), seed=seeds)
@example(size=(1, 1, 1, 1), reset_after=True, seed=0)
def test_gru_gates_rebuild_the_state_and_give_the_update_gate_products(size, reset_after, seed):
    """GRU.gates: h_t = (1 - z_t) n_t + z_t h_{t-1} reproduces forward's outputs, and
    update_gate_products is the reverse running product of z (written as a plain loop)."""
    B, T, I, H = size
    gen = _gen(seed)
    gru = _recurrent("gru", I, H, gen, reset_after=reset_after)
    x = _randn(gen, B, T, I)
    y, _ = gru(x)
    r, z, n = gru.gates(x)
    h, rebuilt = torch.zeros(B, H, dtype=x.dtype), []
    for t in range(T):
        h = (1 - z[:, t]) * n[:, t] + z[:, t] * h
        rebuilt.append(h)
    torch.testing.assert_close(torch.stack(rebuilt, dim=1), y, **EXACT)
    assert bool(((r >= 0) & (r <= 1)).all())
    torch.testing.assert_close(update_gate_products(gru, x), _reverse_products(z.detach()), **EXACT)


@given(size=sizes, reset_after=st.booleans(), ord=st.sampled_from([2, "fro"]), seed=seeds)
def test_gru_without_recurrent_weights_is_all_update_gate_path(size, reset_after, ord, seed):
    """With W_hh = 0 no gate sees the state, so dh_s/dh_{s-1} = diag(z_s): jacobian_norms equals the
    norm of diag(prod z), max_j for ord 2, ||.||_2 for fro; gradflow_report carries the mean product."""
    B, T, I, H = size
    gen = _gen(seed)
    gru = _recurrent("gru", I, H, gen, reset_after=reset_after)
    with torch.no_grad():
        gru.weight_hh.zero_()
    x = _randn(gen, B, T, I)
    P = update_gate_products(gru, x)
    expected = P.amax(dim=-1) if ord == 2 else torch.linalg.vector_norm(P, dim=-1)
    torch.testing.assert_close(jacobian_norms(gru, x, ord=ord), expected, **F64)
    report = gradflow_report(gru, x)
    assert report["update_gate_product"] == pytest.approx(P.mean(dim=(0, 2)).tolist(), rel=1e-12)
    assert "forget_gate_product" not in report


def test_update_gate_products_refuse_other_models():
    x = torch.randn(1, 3, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="expects a seqmem.GRU, got LSTM"):
        update_gate_products(seqmem.LSTM(2, 3).double(), x)


# ------------------------------------------------------------------- agreement with independent math
@given(family=st.sampled_from(["rnn", "gru", "lstm", "lstm-h", "lstm-c"]), size=sizes,
       ord=st.sampled_from([2, "fro"]), seed=seeds)
@example(family="lstm", size=(2, 3, 2, 3), ord=2, seed=0)
def test_jacobian_norms_match_autograd_functional(family, size, ord, seed):
    """jacobian_norms (probes in the step loop) == the norm of torch.autograd.functional.jacobian of the
    map state_t -> state_T, run through the chunked forward."""
    B, T, I, H = size
    name, _, field = family.partition("-")
    field = field or None
    gen = _gen(seed)
    model = _recurrent(name, I, H, gen, scale=1.5)
    x = _randn(gen, B, T, I)
    J = jacobian_norms(model, x, ord=ord, field=field)
    t = seed % T
    _, s_t = model(x[:, : t + 1])
    fields = list(model.state_type._fields)
    chosen = fields if field is None else [field]
    for b in range(B):
        base = {f: getattr(s_t, f)[b : b + 1].detach() for f in fields}

        def final_state(*values, b=b, base=base):
            state = model.state_type(**{**base, **dict(zip(chosen, values, strict=True))})
            if t + 1 == T:
                out = state
            else:
                out = model(x[b : b + 1, t + 1 :], state)[1]
            return torch.cat([getattr(out, f).reshape(-1) for f in chosen])

        blocks = torch.autograd.functional.jacobian(final_state, tuple(base[f] for f in chosen))
        full = torch.cat([blk.reshape(blk.shape[0], -1) for blk in blocks], dim=1)  # (D, D)
        torch.testing.assert_close(J[b, t], torch.linalg.matrix_norm(full, ord=ord), **F64)


@given(family=st.sampled_from(["rnn", "gru", "lstm-h", "lstm-c", "lstm", "mamba"]), size=sizes, seed=seeds)
@example(family="mamba", size=(2, 6, 3, 2), seed=0)
def test_hidden_grad_norms_match_vjp(family, size, seed):
    """hidden_grad_norms[:, t] == ||dL/dh_t|| computed independently: the gradient of the loss with
    respect to the state re-entered at step t (for the LSTM's c: plus the path through h_t = o tanh(c_t))."""
    B, T, I, H = size
    name, _, field = family.partition("-")
    field = field or None
    gen = _gen(seed)
    if name == "mamba":
        model = seqmem.SelectiveSSM(I, d_state=3, d_conv=3, expand=2).double()
        _randomize(model, gen, 0.5, weights_only=True)
    else:
        model = _recurrent(name, I, H, gen, scale=1.5)
    x = _randn(gen, B, T, I)
    w = _randn(gen, model.output_size)

    def loss_fn(y):
        return (y[:, -1] * w).sum()

    N = hidden_grad_norms(model, x, loss_fn, field=field)
    assert N.shape == (B, T) and N.dtype == torch.float64
    assert all(p.grad is None for p in model.parameters())  # no side effect on the parameters
    torch.testing.assert_close(hidden_grad_norms(model, x, loss_fn, field=field, reduction="mean"), N.mean(0))
    for t in range(T - 1):
        _, s_t = model(x[:, : t + 1])
        leaves = type(s_t)(*(s.detach().requires_grad_(True) for s in s_t))
        y_rest, _ = model(x[:, t + 1 :], leaves)
        grads = dict(zip(s_t._fields, torch.autograd.grad(loss_fn(y_rest), list(leaves)), strict=True))
        if name == "lstm":  # delta c_t = dL/dc_t (c re-entered) + delta h_t * o_t * tanh'(c_t)
            o_t = model.gates(x).o[:, t]
            grads["c"] = grads["c"] + grads["h"] * o_t * (1 - torch.tanh(s_t.c).square())
        chosen = list(s_t._fields) if field is None else [field]
        expected = torch.linalg.vector_norm(torch.cat([grads[f].reshape(B, -1) for f in chosen], 1), dim=1)
        torch.testing.assert_close(N[:, t], expected.detach(), **F64)
    if name in ("rnn", "gru") or field == "h":  # y_{T-1} = h_{T-1}: dL/dh_{T-1} = w
        torch.testing.assert_close(N[:, -1], torch.linalg.vector_norm(w).expand(B), **F64)


@given(B=st.integers(1, 2), T=st.integers(1, 10), n_layers=st.integers(1, 2), seed=seeds)
@example(B=1, T=1, n_layers=1, seed=0)
def test_hidden_grad_norms_of_the_transformer_residual_stream(B, T, n_layers, seed):
    """layer 0 is the input: ||dL/dx_t||; layer n_layers is the last block's output, which reaches the
    last output only at its own position (causal, position-wise afterwards). The default loss does not
    vanish through the final LayerNorm (whose outputs always sum to the same value)."""
    gen = _gen(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = seqmem.CausalTransformer(8, n_heads=2, n_layers=n_layers).double()
    x = _randn(gen, B, T, 8)
    w = _randn(gen, 8)

    def loss_fn(y):
        return (y[:, -1] * w).sum()

    N0 = hidden_grad_norms(model, x, loss_fn)
    xx = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(model(xx)[0]), xx)
    torch.testing.assert_close(N0, torch.linalg.vector_norm(g, dim=-1), **F64)
    last = hidden_grad_norms(model, x, layer=n_layers)  # the default loss
    assert (last[:, :-1] == 0).all() and (last[:, -1] > 1e-3).all()
    assert (hidden_grad_norms(model, x)[:, -1] > 1e-3).all()
    assert hidden_grad_norms(model, x, layer=n_layers - 1, reduction="max").shape == (T,)
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------- clipping
@given(family=st.sampled_from(["rnn", "lstm", "gru"]), size=sizes, max_norm=st.floats(1e-3, 10.0),
       scale=st.floats(0.5, 3.0), lr=st.floats(1e-3, 1.0), seed=seeds)
def test_clipping_bounds_the_gradient_and_the_sgd_update(family, size, max_norm, scale, lr, seed):
    """After clip_grad_norm_(tau) the global norm is <= tau (Pascanu et al. 2013, Algorithm 1), so an SGD
    step moves the parameters by at most lr * tau."""
    B, T, I, H = size
    gen = _gen(seed)
    model = _recurrent(family, I, H, gen, scale)
    params = list(model.parameters())
    (model(_randn(gen, B, T, I, scale=3.0))[0].square().sum() * 10).backward()
    before = global_grad_norm(params)
    assert before == pytest.approx(float(torch.cat([p.grad.reshape(-1) for p in params]).norm()), rel=1e-12)
    assert global_grad_norm(params, float("inf")) == pytest.approx(
        max(float(p.grad.abs().max()) for p in params), rel=1e-12)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm)
    assert float(total) == pytest.approx(before, rel=1e-12)
    after = global_grad_norm(params)
    assert after <= max_norm * (1 + 1e-6)
    if before <= max_norm:
        assert after == pytest.approx(before, rel=1e-12)
    old = [p.detach().clone() for p in params]
    torch.optim.SGD(params, lr=lr).step()
    update = float(torch.cat([(p.detach() - o).reshape(-1) for p, o in zip(params, old, strict=True)]).norm())
    assert update <= lr * max_norm * (1 + 1e-6)
    assert update == pytest.approx(lr * after, rel=1e-9)


# --------------------------------------------------------------------------- attention vs. recurrence
T_CONTRAST = 24
_d = distances(T_CONTRAST)
NEAR, FAR = (_d >= 1) & (_d <= 4), _d >= 16


def _far_over_near(norms: torch.Tensor) -> float:
    """Mean norm at distances 16..23 over the mean at distances 1..4 (distance 0 has a direct path)."""
    return float(norms[..., FAR].mean() / norms[..., NEAR].mean())


GEOMETRIC_09 = _far_over_near(0.9 ** _d.double())  # what a decay by a factor 0.9 per step gives (~0.16)


@given(d_model=st.sampled_from([8, 12, 16]), n_heads=st.sampled_from([1, 2]), n_layers=st.integers(1, 2),
       batch=st.integers(1, 2), seed=seeds)
def test_attention_gradient_does_not_decay_with_distance(d_model, n_heads, n_layers, batch, seed):
    """||dy_T/dx_t|| of a random causal transformer keeps far positions within a constant factor of near
    ones, beyond any geometric decay with factor <= 0.9, where a contracting Elman RNN's falls below it."""
    gen = _gen(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = seqmem.CausalTransformer(d_model, n_heads=n_heads, n_layers=n_layers).double()
    x = _randn(gen, batch, T_CONTRAST, d_model)
    A = attention_grad_by_distance(model, x)
    assert A.shape == (batch, T_CONTRAST)
    torch.testing.assert_close(A, input_jacobian_norms(model, x), **F64)
    assert _far_over_near(A) > GEOMETRIC_09

    rnn = _recurrent("rnn", d_model, 8, gen)
    _set_norm(rnn.weight_hh, 0.5)
    assert _far_over_near(input_jacobian_norms(rnn, x)) < GEOMETRIC_09
    assert _far_over_near(jacobian_norms(rnn, x)) < GEOMETRIC_09


# ------------------------------------------------------------------------------- report and errors
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "transformer", "mamba"])
def test_gradflow_report_is_json_ready(name):
    T = 6
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = seqmem.build(name, 8, 8) if name in ("rnn", "lstm", "gru") else seqmem.build(name, 8)
    model = model.double()
    x = _randn(_gen(0), 2, T, 8)
    report = json.loads(json.dumps(gradflow_report(model, x)))
    assert report["model"] == type(model).__name__ and report["seq_len"] == T and report["batch_size"] == 2
    assert report["distance"] == list(range(T - 1, -1, -1))
    curves = [k for k, v in report.items() if isinstance(v, list)]
    assert {"hidden_grad_norm", "input_jacobian_norm"} <= set(curves)
    assert all(len(report[k]) == T for k in curves)
    assert report["param_grad_norm"] > 0
    if name in ("rnn", "lstm", "gru"):
        assert report["spectral_radius"] == spectral_radius(model)
        assert report["jacobian_norm"][-1] == pytest.approx(1.0)
    if name == "lstm":
        assert report["forget_gate_product"][-1] == 1.0
    assert all(p.grad is None for p in model.parameters())


def test_errors_are_clear():
    rnn, lstm = seqmem.RNN(3, 4).double(), seqmem.LSTM(3, 4).double()
    transformer = seqmem.CausalTransformer(8, n_heads=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, seq_len, 3\), got \(5, 3\)"):
        hidden_grad_norms(rnn, x[0])
    with pytest.raises(ValueError, match="at least one step"):
        jacobian_norms(rnn, x[:, :0])
    with pytest.raises(TypeError, match="SequenceModel"):
        hidden_grad_norms(torch.nn.Linear(3, 3), x)
    with pytest.raises(ValueError, match="ord must be 2"):
        jacobian_norms(rnn, x, ord=1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        hidden_grad_norms(rnn, x, reduction="sum")
    with pytest.raises(ValueError, match=r"unknown state field 'c'; RNNState has fields \['h'\]"):
        jacobian_norms(rnn, x, field="c")
    with pytest.raises(TypeError, match="loss_fn must return a scalar"):
        hidden_grad_norms(rnn, x, loss_fn=lambda y: y[:, -1])
    with pytest.raises(ValueError, match="attention_grad_by_distance"):
        jacobian_norms(transformer, torch.randn(1, 4, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"layer must be an int in 0 .. n_layers=2"):
        hidden_grad_norms(transformer, torch.randn(1, 4, 8, dtype=torch.float64), layer=3)
    with pytest.raises(TypeError, match="expects a seqmem.CausalTransformer, got RNN"):
        attention_grad_by_distance(rnn, x)
    with pytest.raises(TypeError, match="expects a seqmem.LSTM, got RNN"):
        forget_gate_products(rnn, x)
    with pytest.raises(TypeError, match="expects a seqmem.LSTM, got RNN"):
        cell_path_jacobian(rnn, x)
    with pytest.raises(TypeError, match="dtype torch.float32 but the parameters are torch.float64"):
        forget_gate_products(lstm, x.float())
    with pytest.raises(ValueError, match=r"square matrix \(n, n\), got shape \(2, 3\)"):
        spectral_radius(torch.zeros(2, 3))
    with pytest.raises(TypeError, match="recurrent matrix"):
        spectral_norm(transformer)
    with pytest.raises(TypeError, match="expects a seqmem.RNN"):
        rnn_jacobian_bound(lstm, 5)
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        distances(0)


@pytest.mark.parametrize("family", ["rnn", "lstm", "gru"])
def test_measurements_run_on_the_torch_reference_and_restore_the_backend(family):
    """A model on another backend is measured through the torch reference, and keeps its backend."""
    cls = {"rnn": seqmem.RNN, "lstm": seqmem.LSTM, "gru": seqmem.GRU}[family]
    if "numba" not in cls.backends:
        pytest.skip(f"{cls.__name__} has no numba backend")
    pytest.importorskip("numba")
    model = _recurrent(family, 3, 4, _gen(0))
    x = _randn(_gen(1), 2, 6, 3)
    expected = jacobian_norms(model, x), hidden_grad_norms(model, x)
    model.backend = "numba"
    got = jacobian_norms(model, x), hidden_grad_norms(model, x)
    assert model.backend == "numba"
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, **F64)
