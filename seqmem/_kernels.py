r"""The kernel toolkit: numba math and argument checks shared by every family's `numba_scan.py`.

Import it only from kernel modules (it imports numba, through `seqmem._numba`, the one settings module).

Elementwise math (`_exp`, `_expm1_neg`, `_sigmoid`, `_tanh`, `_softplus`) is written with arithmetic
only, in the precision of its argument (float32 in, float32 math; float64 in, float64 math): libm's `exp`
and `tanh` are scalar calls that keep LLVM from vectorising a loop, while these vectorise (AVX2/AVX-512:
about 0.4 ns per sigmoid in float32 against 25 ns). They are compiled once each and LLVM inlines them into
the callers' loops (inlining them in Numba's IR instead gives the same code and doubles the compile time
of a kernel family). Every function is exact where it saturates ($\sigma(\pm\infty) \in \{1, 0\}$,
$\tanh(\pm 10^4) = \pm 1$, $e^{-\infty} = 0$), keeps NaN, and needs no `fastmath` (never used: it would
make `isnan` always false).

The exponential. With $k = \mathrm{round}(x / \ln 2)$ and $r = x - k \ln 2$, $|r| \le \ln 2 / 2$
(Cody & Waite: $\ln 2 = \mathrm{ln2_{hi}} + \mathrm{ln2_{lo}}$, $k\,\mathrm{ln2_{hi}}$ exact),

    exp(x) = 2^k (1 + q),    q = expm1(r) = r + r^2/2! + ... + r^n/n!

($n = 13$ in float64, 7 in float32: truncation below 4e-18 and 6e-9 relative), $2^k$ built from its
bits (exact, and vectorisable, unlike `ldexp`). $x$ is first clamped to $[e_{min} \ln 2, e_{max} \ln 2]$
(float32: $e_{min} = -127$, $e_{max} = 128$), whose ends give exactly 0 and inf. Within 2 ulp of the
exact value; results below $2^{e_{min} + 1/2}$ (float32: 8e-39) flush to 0 and results above
$2^{e_{max} - 1/2}$ (float32: 2.4e38) are inf. Keeping $q$ apart gives `expm1` without cancellation
near 0, which `tanh` needs:

    sigmoid(x) = 1 / (1 + e)  (x >= 0),   e / (1 + e)  (x < 0),          e = exp(-|x|)
    tanh(x)    = -sign(x) d / (2 + d),                                   d = expm1(-2|x|)

Argument checks (`_check_tensors`, `_check_shape`, `_check_recurrent_args`) are for the public wrappers,
stumpy's habit: the wrapper validates dtype, device, contiguity-independent shapes first and raises a
`TypeError`/`ValueError` quoting what was expected and what came; the kernels then trust their inputs.

References:
    Cody, W. J. & Waite, W. (1980). Software Manual for the Elementary Functions. Prentice-Hall
    (argument reduction of exp).
    Muller, J.-M. et al. (2018). Handbook of Floating-Point Arithmetic, 2nd ed., Sec. 11.1 (range
    reduction) and 2.4 (fused multiply-add).
"""

from __future__ import annotations

import ctypes
import math
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._numba import JIT, PJIT, intrinsic, njit, numba

__all__: list[str] = []  # private: the names below are imported by the kernel modules

KERNEL = {**JIT, "error_model": "numpy"}
"""Flags of every serial kernel: `JIT` with IEEE division (`x / 0` gives inf or NaN as numpy does). Python's
error model adds a zero-divisor check to every division, which also keeps LLVM from vectorising."""

PKERNEL = {**PJIT, "error_model": "numpy"}
"""`KERNEL` with `parallel=True` (kernels that use `prange`)."""


DTYPES = (torch.float32, torch.float64)
"""The dtypes the kernels are compiled for."""

NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}

EMPTY = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64)}
"""A `(0,)` array per dtype: what a kernel gets for an absent bias (it tests `shape[0] > 0`)."""


# ====================================================================== scalar primitives
if numba.config.DISABLE_JIT:  # plain Python stand-ins: the kernels run as Python, with the same formulas

    def _like(x, v):
        """`v` in the floating type of `x`."""
        return type(x)(v)

    def _is_f64(x):
        """Whether `x` is a float64 (a Python float counts as one)."""
        return not isinstance(x, np.float32)

    def _fma(a, b, c):
        """`a * b + c` (two roundings here; one when compiled)."""
        return a * b + c

    def _pow2(k):
        """`2**k` for an integer-valued float `k` in `[emin, emax]`: 0 at `emin`, inf at `emax`."""
        ftype = type(k)
        bias = 127 if ftype is np.float32 else 1023
        if k <= -bias:
            return ftype(0.0)
        if k > bias:
            return ftype(np.inf)
        return ftype(np.ldexp(1.0, int(k)))

else:
    from llvmlite import ir as _ir

    @intrinsic
    def _like(typingctx, x, v):  # pragma: no cover - compiled
        """`v` converted to the floating type of `x` (a constant `v` folds at compile time)."""
        if not isinstance(x, numba.core.types.Float):
            return None

        def codegen(context, builder, signature, args):
            return context.cast(builder, args[1], signature.args[1], signature.return_type)

        return x(x, v), codegen

    @intrinsic
    def _is_f64(typingctx, x):  # pragma: no cover - compiled
        """Whether `x` is a float64, as a compile-time constant (so a branch on it folds away)."""
        if not isinstance(x, numba.core.types.Float):
            return None

        def codegen(context, builder, signature, args):
            return context.get_constant(numba.core.types.boolean, x.bitwidth == 64)

        return numba.core.types.boolean(x), codegen

    @intrinsic
    def _fma(typingctx, a, b, c):  # pragma: no cover - compiled
        """Fused multiply-add `a * b + c` (`llvm.fma`): one rounding, vectorisable."""
        if not (a == b == c) or getattr(a, "bitwidth", 0) not in (32, 64):
            return None

        def codegen(context, builder, signature, args):
            return builder.fma(*args)

        return a(a, a, a), codegen

    @intrinsic
    def _pow2(typingctx, k):  # pragma: no cover - compiled
        """`2**k` for an integer-valued float `k` in `[emin, emax]` (float32: `[-127, 128]`), from its bits:
        the exponent field is `k + bias`, so `emin` gives 0.0 and `emax` gives inf."""
        width = getattr(k, "bitwidth", 0)
        if width not in (32, 64):
            return None
        bias, shift = (127, 23) if width == 32 else (1023, 52)

        def codegen(context, builder, signature, args):
            int_type = _ir.IntType(width)
            bits = builder.fptosi(args[0], int_type)
            bits = builder.shl(builder.add(bits, int_type(bias)), int_type(shift))
            return builder.bitcast(bits, context.get_value_type(signature.return_type))

        return k(k), codegen


# ====================================================================== exp and friends
_LN2 = math.log(2.0)


@njit(**KERNEL)
def _exp_split(x):  # pragma: no cover - compiled
    """`exp(x) = s (1 + q)`: returns `(s, q)`, `s = 2^k` exact (0 or inf at the ends of the range), `q` =
    `expm1(r)` with `|r| <= ln2 / 2`. NaN gives `s = 1`, `q = NaN`."""
    if _is_f64(x):  # fdlibm's split of ln 2: ln2_hi has 32 trailing zero bits
        ln2_hi, ln2_lo = _like(x, 6.93147180369123816490e-01), _like(x, 1.90821492927058770002e-10)
        lo, hi = _like(x, -1023.0 * _LN2), _like(x, 1024.0 * _LN2)
    else:  # ln2_hi has 9 significant bits: k * ln2_hi is exact for |k| <= 2**15
        ln2_hi, ln2_lo = _like(x, 0.693359375), _like(x, -2.12194440e-4)
        lo, hi = _like(x, -127.0 * _LN2), _like(x, 128.0 * _LN2)
    xc = lo if x < lo else x  # the comparisons are false for NaN: NaN stays
    xc = hi if xc > hi else xc
    k = np.floor(_fma(xc, _like(x, 1.0 / _LN2), _like(x, 0.5)))
    k = k if k == k else _like(x, 0.0)  # NaN -> 0 before the integer conversion (r carries the NaN)
    r = _fma(-k, ln2_lo, _fma(-k, ln2_hi, xc))
    # q = r + r^2/2! + ... (Horner from the highest degree)
    if _is_f64(x):
        p = _like(x, 1.0 / 6227020800.0)
        p = _fma(p, r, _like(x, 1.0 / 479001600.0))
        p = _fma(p, r, _like(x, 1.0 / 39916800.0))
        p = _fma(p, r, _like(x, 1.0 / 3628800.0))
        p = _fma(p, r, _like(x, 1.0 / 362880.0))
        p = _fma(p, r, _like(x, 1.0 / 40320.0))
        p = _fma(p, r, _like(x, 1.0 / 5040.0))
    else:
        p = _like(x, 1.0 / 5040.0)
    p = _fma(p, r, _like(x, 1.0 / 720.0))
    p = _fma(p, r, _like(x, 1.0 / 120.0))
    p = _fma(p, r, _like(x, 1.0 / 24.0))
    p = _fma(p, r, _like(x, 1.0 / 6.0))
    p = _fma(p, r, _like(x, 0.5))
    p = _fma(p, r, _like(x, 1.0))
    return _pow2(k), p * r


@njit(**KERNEL)
def _exp(x):  # pragma: no cover - compiled
    """`exp(x)` in the precision of `x`, vectorisable; exactly 0 at -inf, inf at +inf, NaN kept."""
    s, q = _exp_split(x)
    return (_like(x, 1.0) + q) * s


@njit(**KERNEL)
def _expm1_neg(x):  # pragma: no cover - compiled
    """`exp(x) - 1` for `x <= 0` (and NaN), without cancellation near 0; exactly -1 at -inf."""
    s, q = _exp_split(x)
    return _fma(s, q, s - _like(x, 1.0))


@njit(**KERNEL)
def _sigmoid(x):  # pragma: no cover - compiled
    """The logistic function `1 / (1 + exp(-x))`, without overflow; exactly 1 and 0 when saturated."""
    e = _exp(-abs(x))
    s = _like(x, 1.0) / (_like(x, 1.0) + e)
    return s if x >= _like(x, 0.0) else e * s


@njit(**KERNEL)
def _tanh(x):  # pragma: no cover - compiled
    """`tanh(x) = -sign(x) d / (2 + d)`, `d = expm1(-2|x|)`: accurate near 0, exactly +-1 when saturated."""
    d = _expm1_neg(_like(x, -2.0) * abs(x))
    t = _like(x, 0.0) - d / (_like(x, 2.0) + d)  # (0 - ..., not -...: tanh(0) = +0)
    return t if x >= _like(x, 0.0) else -t


@njit(**KERNEL)
def _softplus(x):  # pragma: no cover - compiled
    """`log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))`, without overflow (`log1p` is libm's: scalar)."""
    m = x if x > _like(x, 0.0) else _like(x, 0.0)
    return m + np.log1p(_exp(-abs(x))) if x == x else x


# ====================================================================== tensors <-> numpy
def _np(t: Tensor) -> np.ndarray:
    """A C-contiguous numpy view of a CPU tensor (a copy if it is not contiguous), cut from the graph."""
    return t.detach().contiguous().numpy()


_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14  # Linux's value
_madvise = ctypes.CDLL(None).madvise if sys.platform.startswith("linux") else None
if _madvise is not None:
    _madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def _empty(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """`torch.empty(shape)`, asking Linux for huge pages when it spans several (4 MiB or more), as numpy does.

    A fresh buffer's first touch costs a page fault per 4 KiB page: about 0.45 ms per MiB here, a third of
    that with huge pages (measured 7 ms and 2.3 ms for 16 MiB). The buffers are torch tensors (not numpy
    arrays) so that torch's profiler counts them in peak memory.
    """
    t = torch.empty(shape, dtype=dtype)
    nbytes = t.numel() * t.element_size()
    if _madvise is not None and nbytes >= 2 * _HUGE_PAGE:
        start = -(-t.data_ptr() // _HUGE_PAGE) * _HUGE_PAGE
        end = (t.data_ptr() + nbytes) // _HUGE_PAGE * _HUGE_PAGE
        _madvise(start, end - start, _MADV_HUGEPAGE)  # advice only: a failure changes nothing
    return t


def _needs_grad(*tensors: Any) -> bool:
    """Whether autograd must record an operation on these tensors (`None` and non-tensors are skipped)."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


# ====================================================================== argument checks
def _check_tensors(where: str, named: Mapping[str, Any], ref: str) -> None:
    """Each entry of `named` that is not `None` must be a CPU tensor of `named[ref]`'s dtype, float32 or float64.

    Raises:
        TypeError: a non-tensor, a dtype other than float32/float64, or a dtype other than `ref`'s.
        ValueError: a tensor off the CPU.
    """
    ref_t = named[ref]
    for name, t in named.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype not in DTYPES:
            raise TypeError(f"{where}: {name} must be float32 or float64 (backend 'numba'), got {t.dtype}")
        if isinstance(ref_t, Tensor) and t.dtype != ref_t.dtype:
            raise TypeError(f"{where}: {name} has dtype {t.dtype} but {ref} has {ref_t.dtype}; use one dtype")
        if t.device.type != "cpu":
            raise ValueError(f"{where}: backend 'numba' runs on the CPU only, got {name} on {t.device}")


def _check_shape(where: str, name: str, t: Tensor | None, shape: tuple[int, ...], text: str = "") -> None:
    """`t` (unless `None`) must have `shape`; `text` names the axes, e.g. `"(batch, d_inner)"`."""
    if t is not None and tuple(t.shape) != shape:
        want = f"{text} = {shape}" if text else f"{shape}"
        raise ValueError(f"{where}: {name} must have shape {want}, got {tuple(t.shape)}")


def _recurrent_args_ok(x: Any, params: Mapping[str, Any], states: Mapping[str, Any], gates: int, rank: int) -> bool:
    """The usual case of `_check_recurrent_args`, cheaply: whether every check passes."""
    if not isinstance(x, Tensor) or x.dtype not in DTYPES or not x.is_cpu:
        return False
    dt = x.dtype
    for group in (params, states):
        for t in group.values():
            if t is not None and (not isinstance(t, Tensor) or t.dtype != dt or not t.is_cpu):
                return False
    w_ih, w_hh = params["weight_ih"], params["weight_hh"]
    if w_ih is None or w_hh is None or any(t is None for t in states.values() if rank == 2):
        return False
    xs, ws = x.shape, w_hh.shape
    if len(xs) != rank or xs[0] == 0 or xs[-2] == 0 or len(ws) != 2 or ws[0] != gates * ws[1]:
        return False
    return all(
        t is None or t.shape == shape for t, shape in _recurrent_shapes(xs, ws, gates, params, states)
    )


def _recurrent_shapes(xs: Any, ws: Any, gates: int, params: Mapping[str, Any], states: Mapping[str, Any]):
    """`(tensor, expected shape)` for every parameter and state but `weight_hh` and `x`."""
    B, I, H = xs[0], xs[-1], ws[1]
    G = gates * H
    want = {"weight_ih": (G, I), "bias_ih": (G,), "bias_hh": (G,), "weight_peephole": (3, H)}
    for name, t in params.items():
        if name != "weight_hh":
            yield t, want[name]
    for t in states.values():
        yield t, (B, H)


def _check_recurrent_args(
    where: str,
    x: Any,
    params: Mapping[str, Any],
    states: Mapping[str, Any],
    gates: int,
    rank: int,
) -> None:
    """Check a gated recurrence's arguments: a scan (`rank=3`, `x (batch, seq_len, input_size)`) or a step
    (`rank=2`, `x_t (batch, input_size)`).

    `params` holds `weight_ih (gates * H, I)`, `weight_hh (gates * H, H)` (both required) and any of
    `bias_ih`, `bias_hh` `(gates * H,)` and `weight_peephole (3, H)` (`None` for absent); `states` the state
    tensors `(batch, H)` by name (`None` for zeros, allowed in a scan only).

    Raises:
        TypeError: a non-tensor, a dtype other than float32/float64, or mixed dtypes.
        ValueError: a tensor off the CPU, a wrong rank or shape, an empty batch or sequence.
    """
    if _recurrent_args_ok(x, params, states, gates, rank):
        return
    xname = "x" if rank == 3 else "x_t"
    for name in ("weight_ih", "weight_hh", *(states if rank == 2 else ())):
        if params.get(name, states.get(name)) is None:
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got None")
    _check_tensors(where, {xname: x, **params, **states}, xname)
    if rank == 3 and (x.dim() != 3 or x.shape[0] == 0 or x.shape[1] == 0):
        raise ValueError(
            f"{where}: x must have shape (batch, seq_len, input_size) with batch, seq_len >= 1, got {tuple(x.shape)}"
        )
    if rank == 2 and (x.dim() != 2 or x.shape[0] == 0):
        raise ValueError(f"{where}: x_t must have shape (batch, input_size) with batch >= 1, got {tuple(x.shape)}")
    weight_hh = params["weight_hh"]
    if weight_hh.dim() != 2 or weight_hh.shape[0] != gates * weight_hh.shape[1]:
        raise ValueError(
            f"{where}: weight_hh must have shape ({gates} * hidden_size, hidden_size), got {tuple(weight_hh.shape)}"
        )
    names = [n for n in params if n != "weight_hh"] + list(states)
    for name, (t, shape) in zip(names, _recurrent_shapes(x.shape, weight_hh.shape, gates, params, states), strict=True):
        _check_shape(where, name, t, shape)
    raise AssertionError(f"{where}: arguments rejected by the fast check only")  # pragma: no cover
