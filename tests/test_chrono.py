"""Chrono initialisation (Tallec & Ollivier 2018): `LSTM(forget_init="chrono")` and `GRU(update_init="chrono")`.

The keep gate's bias b ~ log U(1, T_max - 1), unit by unit: its distribution (support, moments,
quantiles, a Kolmogorov-Smirnov test), the characteristic forgetting time 1 + e^b uniform over
[2, T_max], b_i = -b_f for the LSTM, everything else initialised as before, seeded determinism, the
checks of the arguments, and that models so initialised compute, differentiate and convert as usual.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import seqmem
from seqmem._chrono import chrono_bias, chrono_forget_time
from seqmem.diagnostics import forget_gate_products, update_gate_products

H_LARGE = 20_000  # biases drawn at once for the distribution tests
H_MODEL = 1_000  # units of the models whose biases are tested (weight_hh is (4H, H))


def _lstm(H, t_max, seed=0, **kw):
    torch.manual_seed(seed)
    return seqmem.LSTM(2, H, forget_init="chrono", chrono_t_max=t_max, **kw)


def _gru(H, t_max, seed=0, **kw):
    torch.manual_seed(seed)
    return seqmem.GRU(2, H, update_init="chrono", chrono_t_max=t_max, **kw)


def _keep_bias(model) -> np.ndarray:
    """The total bias of the keep gate (LSTM f block, GRU z block), as float64 numpy."""
    H = model.hidden_size
    total = (model.bias_ih + model.bias_hh).detach().double()
    return total[H : 2 * H].numpy()


def _log_uniform_cdf(M: float):
    """CDF of log U(1, M) on [0, log M]: P(log U <= b) = (e^b - 1) / (M - 1)."""
    return lambda b: np.clip((np.exp(b) - 1.0) / (M - 1.0), 0.0, 1.0)


@pytest.mark.parametrize("t_max", [10, 200, 1000])
def test_chrono_bias_is_log_uniform(t_max):
    """Support [0, log(T_max - 1)], the mean and standard deviation of log U, its quantiles, and a KS test."""
    torch.manual_seed(0)
    b = chrono_bias(H_LARGE, t_max, like=torch.empty(0, dtype=torch.float64)).numpy()
    M = t_max - 1.0
    assert b.min() >= 0.0 and b.max() <= math.log(M)
    mean = (M * math.log(M) - M + 1.0) / (M - 1.0)  # E[log U], U ~ U(1, M)
    second = (M * math.log(M) ** 2 - 2 * M * math.log(M) + 2 * M - 2.0) / (M - 1.0)  # E[(log U)^2]
    sd = math.sqrt(second - mean**2)
    assert abs(b.mean() - mean) < 5 * sd / math.sqrt(H_LARGE)  # 5 standard errors: fails when the law is off
    assert b.std() == pytest.approx(sd, rel=0.03)
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(b, q) == pytest.approx(math.log(1.0 + q * (M - 1.0)), abs=0.03 * math.log(M))
    assert stats.kstest(b, _log_uniform_cdf(M)).pvalue > 1e-3
    # neither a constant bias of 1 nor log U(1, 2 M) is this law
    assert stats.kstest(np.full(1000, 1.0), _log_uniform_cdf(M)).pvalue < 1e-3
    assert stats.kstest(np.log(np.random.default_rng(0).uniform(1, 2 * M, 5000)), _log_uniform_cdf(M)).pvalue < 1e-3


@pytest.mark.parametrize("build", [_lstm, _gru], ids=["lstm", "gru"])
@pytest.mark.parametrize("t_max", [10, 500])
def test_models_draw_the_keep_gate_bias_from_log_uniform(build, t_max):
    b = _keep_bias(build(H_MODEL, t_max))
    assert b.min() >= 0.0 and b.max() <= math.log(t_max - 1) + 1e-6
    assert stats.kstest(b, _log_uniform_cdf(t_max - 1.0)).pvalue > 1e-3


@pytest.mark.parametrize("build", [_lstm, _gru], ids=["lstm", "gru"])
@pytest.mark.parametrize("t_max", [10, 500])
def test_forgetting_times_spread_uniformly_over_2_to_t_max(build, t_max):
    """1 / (1 - sigmoid(b)) = 1 + e^b is U(2, T_max): every time scale up to T_max equally represented."""
    b = torch.from_numpy(_keep_bias(build(H_MODEL, t_max)))
    tau = chrono_forget_time(b)
    torch.testing.assert_close(tau, 1.0 / (1.0 - torch.sigmoid(b)), rtol=1e-6, atol=0)
    tau = tau.numpy()
    assert tau.min() >= 2.0 - 1e-6 and tau.max() <= t_max + 1e-6
    assert stats.kstest(tau, stats.uniform(loc=2.0, scale=t_max - 2.0).cdf).pvalue > 1e-3
    # the constant bias of 1: every unit forgets within 1 + e steps
    assert float(chrono_forget_time(torch.tensor(1.0))) == pytest.approx(1 + math.e)


def test_lstm_input_gate_bias_is_minus_the_forget_bias_and_the_hh_halves_are_zero():
    lstm = _lstm(64, 100)
    H = 64
    b_i, b_f = (lstm.bias_ih + lstm.bias_hh)[:H], (lstm.bias_ih + lstm.bias_hh)[H : 2 * H]
    torch.testing.assert_close(b_i, -b_f, rtol=0, atol=0)
    assert bool((lstm.bias_hh[: 2 * H] == 0).all())
    assert bool((b_f > 0).all())  # log u > 0 for u > 1 (almost surely)


@pytest.mark.parametrize("build, kw, blocks", [
    (_lstm, {}, (slice(0, 8), slice(8, 16))),  # i and f blocks of i, f, g, o
    (_gru, {}, (slice(8, 16),)),  # the z block of r, z, n
    (_gru, {"reset_after": False}, (slice(8, 16),)),
], ids=["lstm", "gru", "gru-cho"])
def test_everything_else_is_initialised_as_before(build, kw, blocks):
    """Same seed: the weights and the other gates' biases equal the default initialisation's, draw for draw."""
    chrono = build(8, 50, seed=3, **kw)
    torch.manual_seed(3)
    plain = type(chrono)(2, 8, **kw)
    for name in ("weight_ih", "weight_hh"):
        torch.testing.assert_close(getattr(chrono, name), getattr(plain, name), rtol=0, atol=0)
    keep = torch.ones(chrono.bias_ih.shape[0], dtype=torch.bool)
    for block in blocks:
        keep[block] = False
    for name in ("bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(chrono, name)[keep], getattr(plain, name)[keep], rtol=0, atol=0)


@pytest.mark.parametrize("build", [_lstm, _gru], ids=["lstm", "gru"])
def test_seeded_determinism(build):
    a, b, c = build(32, 100, seed=7), build(32, 100, seed=7), build(32, 100, seed=8)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert not np.array_equal(_keep_bias(a), _keep_bias(c))


@pytest.mark.parametrize("build", [_lstm, _gru], ids=["lstm", "gru"])
def test_t_max_2_gives_zero_biases(build):
    assert np.array_equal(_keep_bias(build(16, 2)), np.zeros(16))


@pytest.mark.parametrize("build", [_lstm, _gru], ids=["lstm", "gru"])
def test_reset_parameters_draws_again(build):
    model = build(64, 1000)
    before = _keep_bias(model).copy()
    model.reset_parameters()
    after = _keep_bias(model)
    assert not np.array_equal(before, after)
    assert after.min() >= 0 and after.max() <= math.log(999) + 1e-6


def test_with_zero_weights_the_gate_products_are_powers_of_sigmoid_b():
    """The keep gate is sigmoid(b) when the weights vanish: its product over d steps is sigmoid(b)^d."""
    T = 30
    for model, products in ((_lstm(6, 100).double(), forget_gate_products),
                            (_gru(6, 100).double(), update_gate_products)):
        with torch.no_grad():
            model.weight_ih.zero_()
            model.weight_hh.zero_()
        b = torch.from_numpy(_keep_bias(model))
        P = products(model, torch.randn(2, T, 2, dtype=torch.float64))  # (B, T, H)
        d = torch.arange(T - 1, -1, -1, dtype=torch.float64)  # distance T - 1 - t
        want = torch.sigmoid(b)[None, :] ** d[:, None]  # (T, H)
        torch.testing.assert_close(P[0], want)
        torch.testing.assert_close(P[1], want)


@pytest.mark.parametrize("build", [_lstm, _gru], ids=["lstm", "gru"])
def test_training_works_as_usual(build):
    """Every parameter gets a finite gradient (the biases too), and a few Adam steps lower the loss."""
    model = build(8, 20).double()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 20, 2, generator=gen, dtype=torch.float64)
    target = x[:, :1, :1].expand(16, 20, 1).sum(-1)  # remember the first input
    head = torch.nn.Linear(8, 1).double()
    opt = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-2)
    losses = []
    for _ in range(30):
        y, _ = model(x)
        loss = ((head(y).squeeze(-1) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(model.bias_ih.grad[8:16].abs().sum()) > 0  # the keep gate's bias is trained
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("build, torch_cls", [(_lstm, torch.nn.LSTM), (_gru, torch.nn.GRU)], ids=["lstm", "gru"])
def test_to_torch_and_from_torch_carry_the_biases(build, torch_cls):
    model = build(5, 40).double()
    twin = model.to_torch()
    x = torch.randn(3, 7, 2, dtype=torch.float64)
    torch.testing.assert_close(twin(x)[0], model(x)[0])
    init = {"forget_init": "chrono"} if torch_cls is torch.nn.LSTM else {"update_init": "chrono"}
    back = type(model).from_torch(twin, **init, chrono_t_max=40)  # its own draw, then the copy
    for name in ("bias_ih", "bias_hh"):
        torch.testing.assert_close(getattr(back, name), getattr(model, name))
    assert back.chrono_t_max == 40


@settings(max_examples=10, deadline=None)
@given(H=st.integers(1, 6), T=st.integers(1, 12), t_max=st.integers(2, 300), seed=st.integers(0, 2**16))
def test_numba_backend_agrees_with_torch_on_chrono_models(H, T, t_max, seed):
    for build in (_lstm, _gru):
        model = build(H, t_max, seed=seed).double()
        x = torch.randn(2, T, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        ref = model(x)[0]
        model.backend = "numba"
        torch.testing.assert_close(model(x)[0], ref)


def test_repr_shows_chrono_and_keeps_the_default_repr():
    assert repr(seqmem.LSTM(3, 4)) == "LSTM(3, 4, bias=True, backend='torch', forget_bias=1.0, peephole=False)"
    assert "forget_init='chrono', chrono_t_max=80" in repr(_lstm(4, 80))
    assert repr(seqmem.GRU(3, 4)) == "GRU(3, 4, bias=True, backend='torch', reset_after=True)"
    assert "update_init='chrono', chrono_t_max=80.5" in repr(_gru(4, 80.5))


@pytest.mark.parametrize("cls, init", [(seqmem.LSTM, "forget_init"), (seqmem.GRU, "update_init")])
@pytest.mark.parametrize("kwargs, error, words", [
    ({"INIT": "Chrono"}, ValueError, ["INIT", "'Chrono'", "chrono"]),
    ({"INIT": 1}, TypeError, ["INIT", "string"]),
    ({"INIT": "chrono"}, TypeError, ["chrono_t_max", "None"]),
    ({"INIT": "chrono", "chrono_t_max": 1.5}, ValueError, ["chrono_t_max", ">= 2", "1.5"]),
    ({"INIT": "chrono", "chrono_t_max": float("inf")}, ValueError, ["chrono_t_max", "finite"]),
    ({"INIT": "chrono", "chrono_t_max": float("nan")}, ValueError, ["chrono_t_max", "nan"]),
    ({"INIT": "chrono", "chrono_t_max": True}, TypeError, ["chrono_t_max", "bool"]),
    ({"INIT": "chrono", "chrono_t_max": "100"}, TypeError, ["chrono_t_max", "str"]),
    ({"chrono_t_max": 100}, ValueError, ["chrono_t_max", "INIT='chrono' only"]),
    ({"INIT": "chrono", "chrono_t_max": 100, "bias": False}, ValueError, ["bias=True", "INIT"]),
])
def test_bad_arguments_are_refused_naming_the_parameter(cls, init, kwargs, error, words):
    kwargs = {k.replace("INIT", init): v for k, v in kwargs.items()}
    with pytest.raises(error) as info:
        cls(3, 4, **kwargs)
    for word in words:
        assert word.replace("INIT", init) in str(info.value)


def test_chrono_and_a_constant_forget_bias_are_exclusive():
    with pytest.raises(ValueError, match="forget_bias=3.0 .*forget_init='chrono'"):
        seqmem.LSTM(3, 4, forget_bias=3.0, forget_init="chrono", chrono_t_max=10)
    assert seqmem.LSTM(3, 4, forget_init="constant").forget_init == "constant"


def test_a_network_with_chrono_layers_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    net = seqmem.SequenceNetwork("lstm", 8, input_size=2, output_size=1, n_layers=2,
                                 forget_init="chrono", chrono_t_max=50)
    seqmem.save(net, tmp_path / "net")
    again = seqmem.load(tmp_path / "net")
    assert again.layers[1].forget_init == "chrono" and again.layers[1].chrono_t_max == 50
    for (name, p), q in zip(net.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
