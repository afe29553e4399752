"""The kernel toolkit (`seqmem._kernels`): the vectorisable exp, sigmoid, tanh and softplus, compiled and
as Python (`NUMBA_DISABLE_JIT=1`), and the argument checks every numba wrapper shares.

The math is checked in both precisions against float64 references over the whole range, at the ends
(0, +-inf, saturation) and for NaN; the bounds are those the families pinned before sharing it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from seqmem import _kernels as K

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
N_GRID = 2001 if NO_JIT else 200001
SPECIAL = [0.0, 1e-30, -1e-30, 1e-8, 87.0, -87.0, 88.0, 1e4, -1e4, math.inf, -math.inf]


@K.njit(**K.KERNEL)
def _apply(x, e, sig, tnh, sp):  # pragma: no cover - compiled
    for k in range(x.size):
        e[k] = K._exp(x[k])
        sig[k] = K._sigmoid(x[k])
        tnh[k] = K._tanh(x[k])
        sp[k] = K._softplus(x[k])


def _run(x: np.ndarray) -> tuple[np.ndarray, ...]:
    out = tuple(np.empty_like(x) for _ in range(4))
    _apply(x, *out)
    for o in out:
        assert o.dtype == x.dtype  # computed in the argument's precision
    return out


def _grid(np_dtype: type) -> np.ndarray:
    return np.concatenate(
        [np.linspace(-100, 100, N_GRID), np.linspace(-1e-3, 1e-3, 101), SPECIAL]
    ).astype(np_dtype)


@pytest.mark.parametrize("np_dtype", [np.float32, np.float64])
def test_exp_is_accurate_and_exact_at_the_ends(np_dtype: type) -> None:
    """`_exp` within 2 ulp of the exact value where the result is normal; 0 / inf exactly at the ends."""
    finfo = np.finfo(np_dtype)
    x = np.concatenate([np.linspace(-80.0, 80.0, N_GRID // 10), np.linspace(-1.0, 1.0, 2001)]).astype(np_dtype)
    if np_dtype == np.float64:
        x = np.concatenate([x, np.linspace(-700.0, 700.0, 20001)])
    got = _run(x)[0]
    rel = np.abs(got / np.exp(x.astype(np.float64)) - 1.0)
    assert rel.max() <= 2 * finfo.eps, f"max relative error {rel.max() / finfo.eps:.2f} ulp"
    ends = np.array([-1e30, -1e4, 1e4, 1e30, -np.inf, np.inf, 0.0, -0.0], dtype=np_dtype)
    assert np.array_equal(_run(ends)[0], [0.0, 0.0, np.inf, np.inf, 0.0, np.inf, 1.0, 1.0])


@pytest.mark.parametrize("np_dtype", [np.float32, np.float64])
def test_sigmoid_tanh_softplus_are_accurate_and_saturate(np_dtype: type) -> None:
    """Within 4 ulp of torch's (float64) values, exact when saturated, NaN kept."""
    x = _grid(np_dtype)
    _, sig, tnh, sp = _run(x)
    xt = torch.from_numpy(x.astype(np.float64))
    eps = float(np.finfo(np_dtype).eps)
    tiny = float(np.finfo(np_dtype).tiny)
    refs = (("sigmoid", sig, torch.sigmoid(xt)), ("tanh", tnh, torch.tanh(xt)),
            ("softplus", sp, torch.nn.functional.softplus(xt, threshold=1000.0)))
    for name, got, ref in refs:
        got = torch.from_numpy(got.astype(np.float64))
        inf = ref.isinf()
        assert torch.equal(got[inf], ref[inf]), name
        err = (got - ref).abs().masked_fill(inf, 0.0)
        bound = 4 * eps * ref.abs() + 2 * tiny  # below the normal range exp flushes to 0
        worst = int(err.argmax())
        assert (err <= bound).all(), f"{name} {np_dtype.__name__}: error {err[worst]:.3g} at x = {x[worst]}"
    assert sig[-4:].tolist() == [1.0, 0.0, 1.0, 0.0]  # +-1e4, +-inf
    assert tnh[-4:].tolist() == [1.0, -1.0, 1.0, -1.0]
    assert sp[-4:].tolist() == [1e4, 0.0, math.inf, 0.0]
    assert math.copysign(1.0, tnh[0 - len(SPECIAL)]) == 1.0  # tanh(+0) = +0
    nan = _run(np.array([np.nan], np_dtype))
    assert all(np.isnan(v[0]) for v in nan)


def test_float64_sigmoid_and_tanh_are_tight():
    """The float64 bounds the GRU pinned: sigmoid within 6e-16 relative, tanh within 8e-16 absolute."""
    grid = np.concatenate([np.linspace(-45, 45, 1801), np.logspace(-300, 2, 40)])
    if NO_JIT:
        grid = grid[::20]
    _, sig, tnh, _ = _run(grid)
    t = torch.from_numpy(grid)
    torch.testing.assert_close(torch.from_numpy(sig), torch.sigmoid(t), rtol=6e-16, atol=5e-18)
    torch.testing.assert_close(torch.from_numpy(tnh), torch.tanh(t), rtol=0, atol=8e-16)


def test_scalar_calls_from_python():
    """The functions also run on Python floats (compiled for float64, or as Python without the JIT)."""
    assert K._sigmoid(math.inf) == 1.0 and K._sigmoid(-math.inf) == 0.0
    assert K._tanh(math.inf) == 1.0 and K._tanh(-math.inf) == -1.0
    assert math.isnan(K._sigmoid(math.nan)) and math.isnan(K._tanh(math.nan)) and math.isnan(K._exp(math.nan))
    assert abs(K._exp(1.0) - math.e) <= 2 * math.ulp(math.e)
    assert abs(K._softplus(3.0) - math.log1p(math.exp(3.0))) <= 4 * math.ulp(3.0)


# ---------------------------------------------------------------------------------------------- checks
def _recurrent(B=2, T=3, I=4, H=5, gates=4, dtype=torch.float64):
    x = torch.zeros(B, T, I, dtype=dtype)
    params = {"weight_ih": torch.zeros(gates * H, I, dtype=dtype), "weight_hh": torch.zeros(gates * H, H, dtype=dtype),
              "bias_ih": torch.zeros(gates * H, dtype=dtype), "bias_hh": None,
              "weight_peephole": torch.zeros(3, H, dtype=dtype)}
    return x, params, {"state.h": torch.zeros(B, H, dtype=dtype), "state.c": None}


def test_check_recurrent_args_accepts_good_arguments_and_names_the_bad_one():
    x, params, states = _recurrent()
    K._check_recurrent_args("f", x, params, states, 4, 3)  # passes
    K._check_recurrent_args("f", x[:, 0], params, {"h": states["state.h"]}, 4, 2)
    cases = [
        (TypeError, r"f: x must be a torch.Tensor, got ndarray", dict(x=x.numpy())),
        (TypeError, r"f: weight_hh must be a torch.Tensor, got None", dict(weight_hh=None)),
        (TypeError, r"f: x must be float32 or float64 \(backend 'numba'\), got torch.float16", dict(x=x.half())),
        (TypeError, r"f: bias_ih has dtype torch.float32 but x has torch.float64; use one dtype",
         dict(bias_ih=params["bias_ih"].float())),
        (ValueError, r"f: backend 'numba' runs on the CPU only, got weight_ih on meta",
         dict(weight_ih=params["weight_ih"].to("meta"))),
        (ValueError, r"f: x must have shape \(batch, seq_len, input_size\) with batch, seq_len >= 1, got \(2, 0, 4\)",
         dict(x=x[:, :0])),
        (ValueError, r"f: weight_hh must have shape \(4 \* hidden_size, hidden_size\), got \(20, 4\)",
         dict(weight_hh=params["weight_hh"][:, :4])),
        (ValueError, r"f: weight_ih must have shape \(20, 4\), got \(20, 3\)", dict(weight_ih=params["weight_ih"][:, :3])),
        (ValueError, r"f: weight_peephole must have shape \(3, 5\), got \(2, 5\)",
         dict(weight_peephole=params["weight_peephole"][:2])),
        (ValueError, r"f: state.h must have shape \(2, 5\), got \(1, 5\)", dict(h=states["state.h"][:1])),
    ]
    for error, message, change in cases:
        xx = change.pop("x", x)
        h = change.pop("h", states["state.h"])
        with pytest.raises(error, match=message):
            K._check_recurrent_args("f", xx, {**params, **change}, {**states, "state.h": h}, 4, 3)
    with pytest.raises(ValueError, match=r"f: x_t must have shape \(batch, input_size\) with batch >= 1"):
        K._check_recurrent_args("f", x, params, {"h": states["state.h"]}, 4, 2)
    with pytest.raises(TypeError, match="f: h must be a torch.Tensor, got None"):
        K._check_recurrent_args("f", x[:, 0], params, {"h": None}, 4, 2)


def test_tensor_helpers():
    t = torch.arange(6.0).reshape(2, 3).T  # not contiguous
    a = K._np(t.requires_grad_())
    assert a.flags.c_contiguous and a.tolist() == t.tolist()
    base = torch.zeros(3)
    assert np.shares_memory(K._np(base), base.numpy())
    w = torch.zeros(2, requires_grad=True)
    assert K._needs_grad(None, 1.0, w) and not K._needs_grad(None, torch.zeros(2))
    with torch.no_grad():
        assert not K._needs_grad(w)


def test_empty_gives_torch_buffers_small_and_large():
    """`_empty` is `torch.empty` (seen by torch's profiler), huge pages asked for from 4 MiB: any size works."""
    for shape in [(0, 3), (2, 3), (1024, 1024 + 7)]:
        t = K._empty(shape, torch.float32)
        assert isinstance(t, torch.Tensor) and t.shape == shape and t.dtype == torch.float32 and t.is_contiguous()
        t.fill_(1.5)
        assert bool((t == 1.5).all())
