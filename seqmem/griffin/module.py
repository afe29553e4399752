"""`seqmem.Hawk` and `seqmem.Griffin`: residual stacks of RG-LRU recurrent blocks, and of local attention."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._module import ActivationElements, SequenceModule, _check_flag, _check_positive_int, check_choice
from ..protocol import _state_type
from ..transformer.reference import apply_rotary, rotary_cos_sin
from ..transformer.spec import auto_heads
from .parallel import local_attention, rglru_scan
from .reference import C_DEFAULT, local_attention_reference, rglru_step

__all__ = ["BLOCK_TYPES", "Griffin", "GriffinState", "Hawk", "HawkState"]

BLOCK_TYPES = ("recurrent", "attention")
"""The temporal-mixing blocks of a residual block: the RG-LRU recurrent block, or local multi-query attention."""

_NORM_EPS = 1e-6

ScanFn = Callable[..., tuple[Tensor, Tensor]]


def _gelu(x: Tensor) -> Tensor:
    """GeLU in its tanh approximation (Hendrycks & Gimpel 2016), as the authors' released code (RecurrentGemma)
    computes it (JAX's default); also 4-5x faster than the erf form on the small tensors of a step."""
    return F.gelu(x, approximate="tanh")


@_state_type
class HawkState(NamedTuple):
    """State of `Hawk`: per recurrent block, the convolution's last inputs and the RG-LRU state.

    Attributes:
        conv: `(n_recurrent, batch, d_rnn, d_conv - 1)` the last `d_conv - 1` inputs of each recurrent
            block's causal convolution.
        h: `(n_recurrent, batch, d_rnn)` the RG-LRU state $h_t$ of each recurrent block (eq. 4).
    """

    conv: Tensor
    h: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.h.shape[1]


@_state_type
class GriffinState(NamedTuple):
    """State of `Griffin`: the recurrent blocks' states and a window of keys and values per attention block.

    Its size is fixed by the window, whatever the sequence length: the attention blocks keep the keys and
    values of the last `window` positions (the next query sees those and itself), in time order, the most
    recent last.

    Attributes:
        conv: `(n_recurrent, batch, d_rnn, d_conv - 1)` the last inputs of each recurrent block's convolution.
        h: `(n_recurrent, batch, d_rnn)` the RG-LRU state of each recurrent block (eq. 4).
        k: `(n_attention, batch, window, head_dim)` the keys of the last `window` positions (the one
            key/value head of multi-query attention), before rotary positions are applied.
        v: `(n_attention, batch, window, head_dim)` their values.
        n_cached: `(batch,)` how many of the `window` slots hold a position, `min(t, window)` after
            `t` steps (the last ones; the others are masked). A count stored in the state's dtype, so the
            state has one dtype (exact: windows are far below $2^{24}$).
    """

    conv: Tensor
    h: Tensor
    k: Tensor
    v: Tensor
    n_cached: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.h.shape[1]


# ---------------------------------------------------------------------------------------------- blocks
class _GatedMLP(nn.Module):
    """The gated MLP block (sec. 2.1, fig. 2b): `fc_out(GeLU(fc_gate(x)) * fc_in(x))`, width `M * D`."""

    def __init__(self, d_model: int, mlp_ratio: int, bias: bool) -> None:
        super().__init__()
        self.fc_gate = nn.Linear(d_model, mlp_ratio * d_model, bias=bias)  # the GeLU branch
        self.fc_in = nn.Linear(d_model, mlp_ratio * d_model, bias=bias)
        self.fc_out = nn.Linear(mlp_ratio * d_model, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(_gelu(self.fc_gate(x)) * self.fc_in(x))


class _RGLRU(nn.Module):
    """The RG-LRU's parameters (sec. 2.4): gates `gate_a` ($W_a$, $b_a$), `gate_x` ($W_x$, $b_x$), and $\\Lambda$."""

    def __init__(self, d_rnn: int, c: float) -> None:
        super().__init__()
        self.c = c
        self.gate_a = nn.Linear(d_rnn, d_rnn)  # W_a x + b_a, eq. (1)
        self.gate_x = nn.Linear(d_rnn, d_rnn)  # W_x x + b_x, eq. (2)
        self.Lambda = nn.Parameter(torch.empty(d_rnn))  # a = sigmoid(Lambda), eq. (3)

    def reset_parameters(self) -> None:
        r"""LeCun normal gate weights ($\mathcal{N}(0, 1/d_{rnn})$), zero gate biases, and $\Lambda$ such that
        $a^c$ is uniform in $[0.9, 0.999]$ (sec. 2.4): $a = u^{1/c}$, $\Lambda = \log a - \log(1 - a)$."""
        with torch.no_grad():
            for gate in (self.gate_a, self.gate_x):
                nn.init.normal_(gate.weight, mean=0.0, std=gate.in_features**-0.5)
                nn.init.zeros_(gate.bias)
            u = torch.empty(self.Lambda.shape, dtype=torch.float64).uniform_(0.9, 0.999)  # a^c
            log_a = torch.log(u) / self.c
            self.Lambda.copy_(log_a - torch.log(-torch.expm1(log_a)))  # logit(a)

    def forward(self, u: Tensor, h: Tensor, scan: ScanFn) -> tuple[Tensor, Tensor]:
        """`u (B, T, D_rnn)`, `h (B, D_rnn)` -> states `(B, T, D_rnn)` and the last `(B, D_rnn)`."""
        return scan(u, self.gate_a(u), self.gate_x(u), self.Lambda, self.c, initial_state=h)

    def step(self, u_t: Tensor, h: Tensor, step: ScanFn) -> tuple[Tensor, Tensor]:
        """`u_t (B, D_rnn)`, `h (B, D_rnn)` -> `(y_t, h_t)`, each `(B, D_rnn)`."""
        return step(u_t, self.gate_a(u_t), self.gate_x(u_t), self.Lambda, self.c, h)


class _RecurrentBlock(nn.Module):
    """The recurrent block (sec. 2.3, fig. 2c): `linear_out(GeLU(linear_y(x)) * RG-LRU(conv1d(linear_x(x))))`."""

    def __init__(self, d_model: int, d_rnn: int, d_conv: int, c: float, bias: bool) -> None:
        super().__init__()
        self.d_conv = d_conv
        self.linear_y = nn.Linear(d_model, d_rnn, bias=bias)  # the GeLU branch
        self.linear_x = nn.Linear(d_model, d_rnn, bias=bias)  # the recurrent branch
        self.conv1d = nn.Conv1d(d_rnn, d_rnn, kernel_size=d_conv, groups=d_rnn, padding=d_conv - 1)
        self.rg_lru = _RGLRU(d_rnn, c)
        self.linear_out = nn.Linear(d_rnn, d_model, bias=bias)

    def forward(
        self, x: Tensor, conv: Tensor, h: Tensor, scan: ScanFn
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`x (B, T, D)`, `conv (B, D_rnn, K-1)`, `h (B, D_rnn)` -> `y (B, T, D)` and the new `conv`, `h`."""
        K = self.d_conv
        gate = _gelu(self.linear_y(x))  # (B, T, D_rnn)
        xc = torch.cat([conv, rearrange(self.linear_x(x), "b t d -> b d t")], dim=-1)  # (B, D_rnn, K-1+T)
        new_conv = xc[..., xc.shape[-1] - (K - 1) :].clone()  # (B, D_rnn, K-1): the inputs the next call needs
        u = F.conv1d(xc, self.conv1d.weight, self.conv1d.bias, groups=xc.shape[1])  # (B, D_rnn, T), causal
        u = rearrange(u, "b d t -> b t d").contiguous()  # (B, T, D_rnn): one copy for the gates and the scan
        y, h = self.rg_lru(u, h, scan)  # (B, T, D_rnn), (B, D_rnn)
        return self.linear_out(y * gate), new_conv, h

    def step(self, x_t: Tensor, conv: Tensor, h: Tensor, step: ScanFn) -> tuple[Tensor, Tensor, Tensor]:
        """`x_t (B, D)`, `conv (B, D_rnn, K-1)`, `h (B, D_rnn)` -> `y_t (B, D)` and the new `conv`, `h`."""
        gate = _gelu(self.linear_y(x_t))  # (B, D_rnn)
        window = torch.cat([conv, self.linear_x(x_t)[..., None]], dim=-1)  # (B, D_rnn, K)
        u = (window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias  # (B, D_rnn)
        y, h = self.rg_lru.step(u, h, step)
        return self.linear_out(y * gate), window[..., 1:], h  # a view of the new window, not of the given state


class _LocalAttention(nn.Module):
    """Local multi-query attention (sec. 2.2): `n_heads` query heads, one key/value head, rotary positions."""

    def __init__(self, d_model: int, n_heads: int, window: int, rope_base: float, bias: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.window = window
        self.rope_base = rope_base
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)  # n_heads * head_dim query features
        self.k_proj = nn.Linear(d_model, self.head_dim, bias=bias)  # one key head
        self.v_proj = nn.Linear(d_model, self.head_dim, bias=bias)  # one value head
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        self._rotary_cache: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def _rotary(self, C: int, T: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin `(C + T, hd/2)` of the positions -C .. T-1, kept for the last few shapes (a step always
        asks for the same ones)."""
        cache, key = self._rotary_cache, (C, T, self.rope_base, x.dtype, x.device)
        found = cache.get(key)
        if found is None:
            positions = torch.arange(-C, T, device=x.device)
            found = rotary_cos_sin(positions, self.head_dim, self.rope_base, dtype=x.dtype)
            if len(cache) >= 8:
                cache.clear()  # (atomic: safe when several threads share the model)
            cache[key] = found
        return found

    def _project(self, x: Tensor, k_cache: Tensor, v_cache: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """`x (B, T, D)`, caches `(B, C, hd)` -> rotated `q (B, H, T, hd)`, `k (B, C+T, hd)`, `v (B, C+T, hd)`,
        and the unrotated keys and the values of the last `C` positions (the next cache)."""
        C, T = k_cache.shape[1], x.shape[1]
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.n_heads)  # (B, H, T, hd)
        k = torch.cat([k_cache, self.k_proj(x)], dim=1)  # (B, C+T, hd), unrotated
        v = torch.cat([v_cache, self.v_proj(x)], dim=1)  # (B, C+T, hd)
        # positions relative to this call: cached keys at -C .. -1, the new ones at 0 .. T-1; the scores
        # depend on offsets only (Su et al. 2021, sec. 3.2), so the cache needs no absolute position
        cos, sin = self._rotary(C, T, x)  # (C+T, hd/2)
        q = apply_rotary(q, cos[C:], sin[C:])
        k_rot = apply_rotary(k, cos, sin)
        return q, k_rot, v, k[:, T:].clone(), v[:, T:].clone()

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, n_cached: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`x (B, T, D)`, caches `(B, window, hd)`, `n_cached (B,)` -> `y (B, T, D)` and the new caches."""
        q, k, v, k_next, v_next = self._project(x, k_cache, v_cache)
        y = local_attention(q, k, v, self.window, n_cached)  # (B, H, T, hd): banded blocks
        return self.out_proj(rearrange(y, "b h t d -> b t (h d)")), k_next, v_next

    def step(self, x_t: Tensor, k_cache: Tensor, v_cache: Tensor, n_cached: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`x_t (B, D)`, caches, `n_cached` -> `y_t (B, D)` and the new caches."""
        q, k, v, k_next, v_next = self._project(x_t[:, None], k_cache, v_cache)
        y = local_attention_reference(q, k, v, self.window, n_cached)  # (B, H, 1, hd): one query, every key
        return self.out_proj(rearrange(y, "b h t d -> b t (h d)"))[:, 0], k_next, v_next


class _ResidualBlock(nn.Module):
    """The residual block (sec. 2.1, fig. 2a): `x + mix(RMSNorm(x))`, then `x + MLP(RMSNorm(x))`."""

    def __init__(self, d_model: int, mix: nn.Module, mlp_ratio: int, bias: bool) -> None:
        super().__init__()
        self.norm_mix = nn.RMSNorm(d_model, eps=_NORM_EPS)
        self.mix = mix  # the temporal-mixing block: _RecurrentBlock or _LocalAttention
        self.norm_mlp = nn.RMSNorm(d_model, eps=_NORM_EPS)
        self.mlp = _GatedMLP(d_model, mlp_ratio, bias)

    def forward(self, x: Tensor, *state: Any) -> tuple[Tensor, ...]:
        """`x (B, T, D)` and the mixing block's state -> `x (B, T, D)` and its new state."""
        y, *state = self.mix(self.norm_mix(x), *state)
        x = x + y
        return (x + self.mlp(self.norm_mlp(x)), *state)

    def step(self, x_t: Tensor, *state: Any) -> tuple[Tensor, ...]:
        """`x_t (B, D)` and the mixing block's state -> `x_t (B, D)` and its new state."""
        y, *state = self.mix.step(self.norm_mix(x_t), *state)
        x_t = x_t + y
        return (x_t + self.mlp(self.norm_mlp(x_t)), *state)


# ---------------------------------------------------------------------------------------------- the stacks
class _RGLRUStack(SequenceModule):
    """What `Hawk` and `Griffin` share: the residual blocks, the final RMSNorm, the backend dispatch."""

    backends = ("torch", "numba")
    _cache_len = 0  # positions each attention block keeps (Griffin: window)
    _head_dim = 0

    def _build(
        self,
        d_model: int,
        n_layers: int,
        d_rnn: int | None,
        mlp_ratio: int,
        d_conv: int,
        c: float,
        bias: bool,
        block_types: Sequence[str],
        attention: Callable[[], nn.Module] | None,
    ) -> None:
        where = type(self).__name__
        _check_positive_int(where, d_model=d_model, n_layers=n_layers, mlp_ratio=mlp_ratio, d_conv=d_conv)
        d_rnn = round(4 * d_model / 3) if d_rnn is None else d_rnn
        _check_positive_int(where, d_rnn=d_rnn)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not (math.isfinite(c) and c > 0):
            raise ValueError(f"{where}: c must be a positive finite number, got {c!r}")
        _check_flag(where, bias=bias)
        self.d_model = d_model
        self.n_layers = n_layers
        self.d_rnn = d_rnn  # D_RNN in the paper
        self.mlp_ratio = mlp_ratio  # M in the paper
        self.d_conv = d_conv  # temporal width of the Conv1D
        self.c = float(c)
        self.bias = bool(bias)
        self.block_types = tuple(block_types)
        self.input_size = self.output_size = d_model
        self.layer_types = tuple(self.block_types[i % len(self.block_types)] for i in range(n_layers))
        blocks = []
        for kind in self.layer_types:
            mix = _RecurrentBlock(d_model, d_rnn, d_conv, self.c, self.bias) if kind == "recurrent" else attention()
            blocks.append(_ResidualBlock(d_model, mix, mlp_ratio, self.bias))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.RMSNorm(d_model, eps=_NORM_EPS)
        self.n_recurrent = self.layer_types.count("recurrent")
        self.n_attention = self.layer_types.count("attention")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Initialise as the authors' released code (RecurrentGemma) does; the RG-LRU as the paper says.

        - Every projection: LeCun normal weights $\mathcal{N}(0, 1/\text{fan\_in})$, zero biases; the last
          projection of each residual branch (`linear_out`, `out_proj`, `fc_out`) with variance
          $(2 / N) / \text{fan\_in}$, so the residual stream's variance does not grow with the depth $N$.
        - The RG-LRU (sec. 2.4): LeCun normal gate weights $W_a$, $W_x$, zero $b_a$, $b_x$, and $\Lambda$
          such that $a^c$ is uniform in $[0.9, 0.999]$.
        - `conv1d`: the `torch.nn` default; the RMSNorms: unit scale.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=module.in_features**-0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.Conv1d, nn.RMSNorm)):
                module.reset_parameters()
        for block in self.blocks:
            mix = block.mix
            for last in (mix.linear_out if isinstance(mix, _RecurrentBlock) else mix.out_proj, block.mlp.fc_out):
                nn.init.normal_(last.weight, mean=0.0, std=(2.0 / self.n_layers / last.in_features) ** 0.5)
            if isinstance(mix, _RecurrentBlock):
                mix.rg_lru.reset_parameters()

    def _scan_fns(self) -> tuple[ScanFn, ScanFn]:
        """The RG-LRU over a sequence and one step, on this model's backend (`reference.py`'s signatures)."""
        if self.backend == "numba":
            from .numba_scan import rglru_numba, rglru_step_numba

            return rglru_numba, rglru_step_numba
        return rglru_scan, rglru_step

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Any:
        """Zeros, and an empty window: the state before the first step.

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            `HawkState(conv, h)` or `GriffinState(conv, h, k, v, n_cached)`, zeros: `conv`
            `(n_recurrent, batch_size, d_rnn, d_conv - 1)`, `h` `(n_recurrent, batch_size, d_rnn)`, and for
            Griffin `k`, `v` `(n_attention, batch_size, window, head_dim)` and `n_cached` `(batch_size,)`
            (no slot holds a position yet).

        Raises:
            ValueError: if `batch_size` is not a positive int.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        ref = self.norm_out.weight
        kw = {"device": ref.device if device is None else device, "dtype": ref.dtype if dtype is None else dtype}
        zeros = {
            "conv": torch.zeros(self.n_recurrent, batch_size, self.d_rnn, self.d_conv - 1, **kw),
            "h": torch.zeros(self.n_recurrent, batch_size, self.d_rnn, **kw),
            "k": torch.zeros(self.n_attention, batch_size, self._cache_len, self._head_dim, **kw),
            "v": torch.zeros(self.n_attention, batch_size, self._cache_len, self._head_dim, **kw),
            "n_cached": torch.zeros(batch_size, **kw),
        }
        return self.state_type(*(zeros[name] for name in self.state_type._fields))

    def _run(self, x: Tensor, state: Any, one_step: bool) -> tuple[Tensor, Any]:
        """Run every block over `x` `(B, T, D)` (or one step, `(B, D)`) from `state`; return `norm_out(x)` and
        the new state."""
        scan, step = self._scan_fns()
        conv, h, k, v = [], [], [], []
        n_cached = getattr(state, "n_cached", None)
        i_rec = i_att = 0
        for block, kind in zip(self.blocks, self.layer_types, strict=True):
            if kind == "recurrent":
                args = (state.conv[i_rec], state.h[i_rec], step if one_step else scan)
                x, c_i, h_i = block.step(x, *args) if one_step else block(x, *args)
                conv.append(c_i)
                h.append(h_i)
                i_rec += 1
            else:
                args = (state.k[i_att], state.v[i_att], n_cached)
                x, k_i, v_i = block.step(x, *args) if one_step else block(x, *args)
                k.append(k_i)
                v.append(v_i)
                i_att += 1
        stacked = {
            "conv": torch.stack(conv) if conv else state.conv,
            "h": torch.stack(h) if h else state.h,
        }
        if n_cached is not None:
            T = 1 if one_step else x.shape[1]
            stacked["k"] = torch.stack(k) if k else state.k
            stacked["v"] = torch.stack(v) if v else state.v
            stacked["n_cached"] = (n_cached.detach() + T).clamp(max=self._cache_len)  # a count: no gradient
        return self.norm_out(x), self.state_type(**stacked)

    def _activation_elements(self, train: bool, batch_size: int, seq_len: int, cached: int = 0) -> ActivationElements:
        # per position, for seqmem._memory: measured with torch.profiler at the default block sizes
        # (d_rnn = 4D/3, mlp_ratio 3) and scaled by the block's width (1 + mlp_ratio) D + 2 d_rnn. A recurrent
        # block keeps its branches, gates and scan terms for the backward (the numba scan about half the
        # torch one's); an attention block its projections and, per head, the banded scores of its window
        # (raised 1.6x over the first fit, which the tests' small sizes exceeded by up to 1.45x).
        unit = ((1 + self.mlp_ratio) * self.d_model + 2 * self.d_rnn) * 3 / 20  # = d_model at the defaults
        numba = self.backend == "numba"
        kept = transient = 0.0
        for kind in self.layer_types:
            if kind == "recurrent" and train:
                block = ((28.8 if numba else 54.0) * unit, 3.0 * unit)
            elif kind == "recurrent":
                block = ((0.6 if numba else 1.9) * unit, (11.5 if numba else 15.3) * unit)
            else:
                scores = self.n_heads * min(self.window, seq_len + cached)  # type: ignore[attr-defined]
                block = (36.0 * unit + 7.0 * scores, 5.0 * unit) if train else (3.0 * unit, 24.0 * unit + 6.0 * scores)
            kept += block[0]
            transient = max(transient, block[1])
        return ActivationElements(kept, transient)

    def _forward(self, x: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self._run(x, state, one_step=False)

    def _step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        return self._run(x_t, state, one_step=True)

    def _extra(self) -> str:
        return ""

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_layers={self.n_layers}, d_rnn={self.d_rnn}{self._extra()}, "
            f"mlp_ratio={self.mlp_ratio}, d_conv={self.d_conv}, c={self.c}, bias={self.bias}, "
            f"backend={self.backend_choice!r}"
        )


class Hawk(_RGLRUStack):
    r"""Hawk (De et al. 2024): a residual stack of recurrent blocks built on the RG-LRU, with gated MLPs.

    Each of the `n_layers` residual blocks (sec. 2.1, fig. 2a) computes
    $x \leftarrow x + \mathrm{Rec}(\mathrm{RMSNorm}(x))$, then $x \leftarrow x + \mathrm{MLP}(\mathrm{RMSNorm}(x))$,
    and a final RMSNorm closes the stack. The recurrent block (sec. 2.3, fig. 2c) has two branches of width
    $D_{RNN}$ = `d_rnn`: `linear_y` then GeLU, and `linear_x` then a causal depthwise `Conv1D` of temporal
    width `d_conv` then the RG-LRU; their product goes through `linear_out`. The RG-LRU (sec. 2.4) runs, per
    channel,

    $$r_t = \sigma(W_a x_t + b_a), \quad i_t = \sigma(W_x x_t + b_x), \quad a_t = a^{c r_t},\ a = \sigma(\Lambda),
    \quad h_t = a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t)$$

    (eq. 1-4, $c = 8$, $a_t$ in log space), a diagonal linear recurrence whose gates do not depend on
    $h_{t-1}$: `forward` runs it as a parallel scan (`seqmem.griffin.parallel`), `step` one step at a time.
    The gated MLP (sec. 2.1, fig. 2b) is `fc_out(GeLU(fc_gate(x)) * fc_in(x))` with width `mlp_ratio * d_model`.

    The state is `HawkState(conv, h)`: `n_layers * d_rnn * d_conv` numbers per sequence, whatever its
    length. Chunked calls are exact: `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`.

    Args:
        d_model: model width $D$ (input and output size).
        n_layers: number of residual blocks $N$.
        d_rnn: width $D_{RNN}$ of the recurrent branch and the RG-LRU; `None` for `round(4 * d_model / 3)`
            (the block's three projections then hold $4 D^2$ weights, as many as an attention block's).
        mlp_ratio: expansion factor $M$ of the gated MLP (3 in the paper).
        d_conv: temporal width of the causal `Conv1D` (4 in the paper).
        c: the constant $c$ of eq. (3) (8 in the paper).
        bias: learn biases in the projections of the recurrent block and of the MLP (the gates' $b_a$, $b_x$
            and the convolution's bias are always learned).
        backend: `"torch"` (the parallel scan), or `"numba"` (the RG-LRU scan compiled, with a hand-derived
            backward; the rest stays in torch).

    Attributes:
        blocks: the residual blocks; block `l` holds `norm_mix`, `mix` (the recurrent block: `linear_y`,
            `linear_x` `(d_rnn, d_model)`, `conv1d` weight `(d_rnn, 1, d_conv)`, `rg_lru` with `gate_a`,
            `gate_x` `(d_rnn, d_rnn)` and `Lambda` `(d_rnn,)`, `linear_out` `(d_model, d_rnn)`), `norm_mlp`
            and `mlp` (`fc_gate`, `fc_in` `(mlp_ratio * d_model, d_model)`, `fc_out`).
        norm_out: the final RMSNorm.

    Raises:
        TypeError: if `bias` is not a bool.
        ValueError: for a non-positive size, a non-positive or non-finite `c`, or an unknown backend.

    References:
        De, S., Smith, S. L., Fernando, A. et al. (2024). Griffin: mixing gated linear recurrences with local
        attention for efficient language models. arXiv:2402.19427, sec. 2.1-2.4, fig. 2, eq. (1)-(4).
        Zhang, B. & Sennrich, R. (2019). Root mean square layer normalization. NeurIPS.
        Botev, A., De, S., Smith, S. L. et al. (2024). RecurrentGemma. arXiv:2404.07839 (the released code:
        initialisation, tanh GeLU).

    Example:
        >>> import torch, seqmem
        >>> hawk = seqmem.Hawk(d_model=8, n_layers=2)  # d_rnn = 11, d_conv = 4
        >>> y, state = hawk(torch.randn(2, 10, 8))
        >>> y.shape, state.conv.shape, state.h.shape
        (torch.Size([2, 10, 8]), torch.Size([2, 2, 11, 3]), torch.Size([2, 2, 11]))
        >>> seqmem.state_nbytes(state)  # 2 layers x 2 sequences x 11 x (3 + 1) float32
        704
    """

    state_type = HawkState

    def __init__(
        self,
        d_model: int,
        n_layers: int = 2,
        d_rnn: int | None = None,
        mlp_ratio: int = 3,
        d_conv: int = 4,
        c: float = C_DEFAULT,
        bias: bool = True,
        backend: str = "torch",
    ) -> None:
        super().__init__(backend)
        self._build(d_model, n_layers, d_rnn, mlp_ratio, d_conv, c, bias, ("recurrent",), None)


class Griffin(_RGLRUStack):
    r"""Griffin (De et al. 2024): residual blocks that mix RG-LRU recurrent blocks with local attention.

    The blocks of `Hawk`, where every third temporal-mixing block is local multi-query attention instead of a
    recurrent block (the paper's pattern: two recurrent blocks, then one attention block; `block_types`,
    repeated over the `n_layers` blocks). The attention (sec. 2.2) has `n_heads` query heads and one
    key/value head (multi-query attention, Shazeer 2019), rotary positions (Su et al. 2021), and a sliding
    window: the query at position $t$ sees the positions $t - w \le s \le t$, $w$ = `window` (the mask of the
    authors' released code, RecurrentGemma). `forward` computes
    it in banded blocks, $O(T w)$ in the sequence length $T$; `step` attends over the kept keys.

    The state is `GriffinState(conv, h, k, v, n_cached)`: the recurrent blocks' states and, per attention
    block, the keys and values of the last `window` positions: bounded by the window, whatever the
    sequence length (a transformer's cache grows with it). Chunked calls are exact across the window
    boundary: `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`.

    Args:
        d_model: model width $D$ (input and output size).
        n_heads: query heads $H$ of the attention blocks; `d_model // n_heads` must be even (rotary pairs).
            `None` picks 4 heads, fewer if `d_model` needs it (`seqmem.network.auto_heads`).
        n_layers: number of residual blocks $N$.
        window: positions before its own each query sees (the paper uses 1024 or 2048 tokens; windows
            of tens to hundreds suit seqmem's tasks).
        d_rnn: width $D_{RNN}$ of the recurrent branch; `None` for `round(4 * d_model / 3)`.
        mlp_ratio: expansion factor $M$ of the gated MLP (3 in the paper).
        d_conv: temporal width of the recurrent block's causal `Conv1D` (4 in the paper).
        c: the constant $c$ of eq. (3) (8 in the paper).
        block_types: the temporal-mixing blocks, `"recurrent"` or `"attention"`, repeated over the layers;
            the paper's `("recurrent", "recurrent", "attention")` by default.
        bias: learn biases in the projections (the gates' and the convolution's are always learned).
        rope_base: base of the rotary frequencies, $\theta_i = \text{rope\_base}^{-2(i-1)/d_h}$.
        backend: `"torch"`, or `"numba"` (the RG-LRU scan compiled; attention stays in torch).

    Attributes:
        head_dim: size of one head, `d_model // n_heads`.
        layer_types: the type of each block, `block_types` repeated to `n_layers`.
        blocks: the residual blocks (see `Hawk`); an attention block's `mix` holds `q_proj`
            `(d_model, d_model)`, `k_proj`, `v_proj` `(head_dim, d_model)` and `out_proj` `(d_model, d_model)`.
        norm_out: the final RMSNorm.

    Raises:
        TypeError: if `bias` is not a bool.
        ValueError: for a non-positive size or window, `d_model` not divisible by `n_heads`, an odd head size,
            an empty `block_types` or one with an unknown type, a non-positive `c` or `rope_base`, or an
            unknown backend.

    References:
        De, S. et al. (2024). Griffin. arXiv:2402.19427, sec. 2.1-2.4 (blocks), sec. 3 (the 2:1 pattern),
        Appendix E (the window size).
        Shazeer, N. (2019). Fast transformer decoding: one write-head is all you need. arXiv:1911.02150.
        Beltagy, I., Peters, M. E. & Cohan, A. (2020). Longformer. arXiv:2004.05150 (sliding windows).
        Su, J. et al. (2021). RoFormer: enhanced transformer with rotary position embedding. arXiv:2104.09864.
        Botev, A. et al. (2024). RecurrentGemma. arXiv:2404.07839 (the released code: the window mask).

    Example:
        >>> import torch, seqmem
        >>> griffin = seqmem.Griffin(d_model=8, n_heads=2, n_layers=3, window=4)
        >>> griffin.layer_types
        ('recurrent', 'recurrent', 'attention')
        >>> y, state = griffin(torch.randn(2, 10, 8))
        >>> y.shape, state.k.shape  # k: (n_attention, batch, window, head_dim)
        (torch.Size([2, 10, 8]), torch.Size([1, 2, 4, 4]))
        >>> n = seqmem.state_nbytes(state)
        >>> seqmem.state_nbytes(griffin(torch.randn(2, 100, 8))[1]) == n  # bounded by the window
        True
    """

    state_type = GriffinState

    def __init__(
        self,
        d_model: int,
        n_heads: int | None = None,
        n_layers: int = 3,
        window: int = 128,
        d_rnn: int | None = None,
        mlp_ratio: int = 3,
        d_conv: int = 4,
        c: float = C_DEFAULT,
        block_types: Sequence[str] = ("recurrent", "recurrent", "attention"),
        bias: bool = True,
        rope_base: float = 10000.0,
        backend: str = "torch",
    ) -> None:
        where = type(self).__name__
        _check_positive_int(where, d_model=d_model, window=window)
        if n_heads is None:
            if d_model % 2:
                raise ValueError(f"{where}: d_model must be even (each head rotates pairs of features), got {d_model}")
            n_heads = auto_heads(d_model)
        _check_positive_int(where, n_heads=n_heads)
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ValueError(
                f"{where}: d_model must split into n_heads heads of even size (rotary embeddings rotate pairs), "
                f"got d_model={d_model}, n_heads={n_heads}"
            )
        if isinstance(block_types, str) or not isinstance(block_types, Sequence) or not block_types:
            raise ValueError(f"{where}: block_types must be a non-empty sequence of {list(BLOCK_TYPES)}, got "
                             f"{block_types!r}")
        for kind in block_types:
            check_choice("block type", kind, BLOCK_TYPES, where)
        if isinstance(rope_base, bool) or not isinstance(rope_base, (int, float)):
            raise ValueError(f"{where}: rope_base must be a positive number, got {rope_base!r}")
        if not (math.isfinite(rope_base) and rope_base > 0):
            raise ValueError(f"{where}: rope_base must be a positive finite number, got {rope_base!r}")
        super().__init__(backend)
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.window = window
        self.rope_base = float(rope_base)
        self._head_dim = self.head_dim
        self._cache_len = window

        def attention() -> nn.Module:
            return _LocalAttention(d_model, n_heads, window, self.rope_base, bool(bias))

        self._build(d_model, n_layers, d_rnn, mlp_ratio, d_conv, c, bias, block_types, attention)

    def _extra(self) -> str:
        return f", n_heads={self.n_heads}, window={self.window}, block_types={self.block_types}"
