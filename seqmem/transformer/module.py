"""`seqmem.CausalTransformer`: a pre-norm decoder-only transformer with rotary positions and a KV cache."""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from torch import Tensor, nn

from .._module import ActivationElements, SequenceModule, _check_flag, _check_positive_int, _check_real
from ..protocol import KVCache
from .reference import apply_rotary, causal_attention, rotary_cos_sin

__all__ = ["CausalTransformer"]


class _CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: fused `qkv` projection, rotary q/k, `out_proj`."""

    def __init__(self, d_model: int, n_heads: int, bias: bool) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)  # rows: q, k, v; heads inside each
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, cos: Tensor, sin: Tensor, last: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """`x (B, T, C)`, caches `(B, nh, t0, hs)`, `cos/sin (T, hs/2)`
        -> `y (B, T, C)`, `k, v (B, nh, t0+T, hs)`. With `last=n`, only the last `n` positions query
        (every position still gives its key and value): `y (B, n, C)`."""
        q, k, v = rearrange(
            self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.n_heads
        )  # (B, nh, T, hs) each
        k = apply_rotary(k, cos, sin)  # positions t0 .. t0+T-1
        if last is None:
            q = apply_rotary(q, cos, sin)
        else:
            q = apply_rotary(q[:, :, -last:], cos[-last:], sin[-last:])  # (B, nh, n, hs)
        k = torch.cat((k_cache, k), dim=2)  # (B, nh, t0+T, hs)
        v = torch.cat((v_cache, v), dim=2)  # (B, nh, t0+T, hs)
        y = causal_attention(q, k, v)  # (B, nh, T, hs), or (B, nh, n, hs)
        y = rearrange(y, "b h t d -> b t (h d)")  # (B, T, C), or (B, n, C)
        return self.out_proj(y), k, v

    def forward_into(self, x: Tensor, k_buf: Tensor, v_buf: Tensor, t0: int, cos: Tensor, sin: Tensor) -> Tensor:
        """`forward` with the cache kept in buffers `(B, nh, capacity, hs)` whose first `t0` positions
        hold the past: the new keys and values are written at `t0 .. t0+T-1` (no concatenation)."""
        B, T, C = x.shape
        # (views, not einops: this runs once per token when streaming, where every op's overhead counts)
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        k_buf[:, :, t0 : t0 + T] = apply_rotary(k, cos, sin)
        v_buf[:, :, t0 : t0 + T] = v
        y = causal_attention(apply_rotary(q, cos, sin), k_buf[:, :, : t0 + T], v_buf[:, :, : t0 + T])
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))  # (B, nh, T, hs) -> (B, T, C)


class _MLP(nn.Module):
    """Position-wise feed-forward: `Linear(C, r C) -> GELU -> Linear(r C, C)`."""

    def __init__(self, d_model: int, mlp_ratio: int, bias: bool) -> None:
        super().__init__()
        self.fc_in = nn.Linear(d_model, mlp_ratio * d_model, bias=bias)
        self.act = nn.GELU()
        self.fc_out = nn.Linear(mlp_ratio * d_model, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class _Block(nn.Module):
    """Pre-norm decoder block (Xiong et al. 2020): `x + Attn(LN(x))`, then `x + MLP(LN(x))`."""

    def __init__(self, d_model: int, n_heads: int, mlp_ratio: int, bias: bool) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model, bias=bias)
        self.attn = _CausalSelfAttention(d_model, n_heads, bias)
        self.norm_mlp = nn.LayerNorm(d_model, bias=bias)
        self.mlp = _MLP(d_model, mlp_ratio, bias)

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, cos: Tensor, sin: Tensor, last: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        a, k, v = self.attn(self.norm_attn(x), k_cache, v_cache, cos, sin, last)
        x = x + a if last is None else x[:, -last:] + a  # (B, T, C), or (B, n, C)
        x = x + self.mlp(self.norm_mlp(x))  # (B, T, C)
        return x, k, v

    def forward_into(self, x: Tensor, k_buf: Tensor, v_buf: Tensor, t0: int, cos: Tensor, sin: Tensor) -> Tensor:
        """`forward` over cache buffers (see `_CausalSelfAttention.forward_into`)."""
        x = x + self.attn.forward_into(self.norm_attn(x), k_buf, v_buf, t0, cos, sin)  # (B, T, C)
        return x + self.mlp(self.norm_mlp(x))  # (B, T, C)


class CausalTransformer(SequenceModule):
    r"""A small decoder-only transformer: causal attention as a sequence memory, with a KV cache.

    Each of the `n_layers` pre-norm blocks (Xiong et al. 2020) computes
    $x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))$, then $x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))$,
    with $\mathrm{Attn}$ the multi-head causal attention
    $\mathrm{softmax}(Q K^\top / \sqrt{d_h} + M) V$ (Vaswani et al. 2017, eq. 1; $M$ hides future keys)
    and $\mathrm{MLP}$ = `Linear(d_model, mlp_ratio * d_model)` -> GELU -> `Linear(mlp_ratio * d_model,
    d_model)`; a final LayerNorm closes the stack. Positions enter through rotary embeddings (Su et al.
    2021, eq. 34), computed on the fly for the absolute positions $t_0, \dots, t_0 + T - 1$, where $t_0$
    is the length of the cache: there is no maximum length to fix at build time. A query at position $m$
    and a key at position $n$ score $\langle R_m q, R_n k \rangle = \langle q, R_{n-m} k \rangle$, which
    depends only on their offset.

    Unlike the recurrences, nothing is compressed: every step reads all past keys and values. The
    parallel form (`forward`) costs $O(T^2)$ time in the sequence length; the streaming form (`step`)
    costs $O(t)$ per step, and its state, the `KVCache`, grows by one position per step:
    `seqmem.state_nbytes(cache)` is `2 * n_layers * batch * d_model * t * itemsize` bytes, linear in
    $t$ where the RNN, LSTM, GRU and SSM states stay constant. Chunked calls are exact:
    `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`, and a `step` loop equals `forward`,
    also for non-finite inputs: a NaN or an infinity at step $t$ makes the outputs from $t$ on NaN and
    leaves the earlier ones as they were (see `seqmem.transformer.reference.causal_attention`).

    Deterministic (no dropout). Initialisation as GPT-2: linear weights from $\mathcal{N}(0, 0.02^2)$,
    biases zero, LayerNorms at weight 1 and bias 0, and the projections that write into the residual
    stream (`attn.out_proj`, `mlp.fc_out`) scaled down by $1/\sqrt{2\,n_{\text{layers}}}$ so the
    residual's variance does not grow with depth.

    Args:
        d_model: width of the residual stream $C$ (input and output size).
        n_heads: number of attention heads $h$; must divide `d_model`.
        n_layers: number of decoder blocks $L$.
        mlp_ratio: hidden width of the MLP, as a multiple of `d_model`.
        bias: learn biases in the linear layers and LayerNorms.
        rope_base: base of the rotary frequencies, $\theta_i = \text{rope\_base}^{-2(i-1)/d_h}$.
        backend: `"torch"`, the only one (attention has no recurrence for a Numba scan to speed up).

    Attributes:
        head_dim: size of one head, $d_h = $ `d_model // n_heads` (even, for the rotary pairs).
        blocks: the `n_layers` decoder blocks; block `l` holds `norm_attn`, `attn.qkv`
            (`(3 * d_model, d_model)`, rows `q, k, v`), `attn.out_proj` (`(d_model, d_model)`),
            `norm_mlp`, `mlp.fc_in` (`(mlp_ratio * d_model, d_model)`) and `mlp.fc_out`
            (`(d_model, mlp_ratio * d_model)`).
        norm_out: the final LayerNorm over `d_model`.

    Raises:
        TypeError: if `rope_base` is not a real number or `bias` not a bool.
        ValueError: for a non-positive size, `d_model` not divisible by `n_heads`, an odd head size
            `d_model // n_heads`, a `rope_base` that is not positive and finite, or an unknown backend.

    References:
        Vaswani, A. et al. (2017). Attention is all you need. NeurIPS (eq. 1).
        Su, J. et al. (2021). RoFormer: enhanced transformer with rotary position embedding.
        arXiv:2104.09864 (eq. 34).
        Xiong, R. et al. (2020). On layer normalization in the transformer architecture. ICML.
        Radford, A. et al. (2019). Language models are unsupervised multitask learners (GPT-2; the
        scaled initialisation of residual projections).

    Example:
        >>> import torch, seqmem
        >>> model = seqmem.CausalTransformer(d_model=16, n_heads=4, n_layers=2)
        >>> y, cache = model(torch.randn(2, 5, 16))
        >>> y.shape, cache.k.shape  # cache: (n_layers, batch, n_heads, t, head_dim)
        (torch.Size([2, 5, 16]), torch.Size([2, 2, 4, 5, 4]))
        >>> y_t, cache = model.step(torch.randn(2, 16), cache)
        >>> y_t.shape, cache.seq_len
        (torch.Size([2, 16]), 6)
        >>> seqmem.state_nbytes(cache)  # 2 * n_layers * batch * d_model * t * 4 bytes
        3072
    """

    state_type = KVCache
    backends = ("torch",)
    _free_state_dims = {"k": (3,), "v": (3,)}  # the cache's time axis grows

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        n_layers: int = 2,
        mlp_ratio: int = 4,
        bias: bool = True,
        rope_base: float = 10000.0,
        backend: str = "torch",
    ) -> None:
        name = type(self).__name__
        _check_positive_int(name, d_model=d_model, n_heads=n_heads, n_layers=n_layers, mlp_ratio=mlp_ratio)
        if d_model % n_heads:
            raise ValueError(
                f"{name}: d_model must be divisible by n_heads, got d_model={d_model}, n_heads={n_heads}"
            )
        head_dim = d_model // n_heads
        if head_dim % 2:
            raise ValueError(
                f"{name}: the head size d_model // n_heads must be even for rotary embeddings, got "
                f"d_model={d_model}, n_heads={n_heads} -> head_dim={head_dim}"
            )
        rope_base = _check_real(name, "rope_base", rope_base, low=0.0, above=True)
        _check_flag(name, bias=bias)
        super().__init__(backend)
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.mlp_ratio = mlp_ratio
        self.bias = bool(bias)
        self.rope_base = rope_base
        self.head_dim = head_dim
        self.input_size = d_model
        self.output_size = d_model
        self.blocks = nn.ModuleList(_Block(d_model, n_heads, mlp_ratio, self.bias) for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(d_model, bias=self.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""GPT-2 initialisation: weights $\mathcal{N}(0, 0.02^2)$, residual projections scaled by
        $1/\sqrt{2 L}$, biases 0, LayerNorm weights 1 and biases 0."""
        std = 0.02
        residual_std = std / math.sqrt(2 * self.n_layers)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.fc_out.weight, mean=0.0, std=residual_std)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, n_layers={self.n_layers}, "
            f"mlp_ratio={self.mlp_ratio}, bias={self.bias}, rope_base={self.rope_base}, "
            f"backend={self.backend_choice!r}"
        )

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty cache: the state before the first step.

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            `KVCache(k, v)`, each `(n_layers, batch_size, n_heads, 0, head_dim)`.

        Raises:
            ValueError: if `batch_size` is not a positive int.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        ref = self.norm_out.weight
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        shape = (self.n_layers, batch_size, self.n_heads, 0, self.head_dim)
        return KVCache(
            torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype)
        )

    def _check_state(self, state: KVCache | None, x: Tensor) -> KVCache:
        state = super()._check_state(state, x)
        if state.k.shape[3] != state.v.shape[3]:
            raise ValueError(
                f"{type(self).__name__}: the cache's keys hold {state.k.shape[3]} positions but its values "
                f"{state.v.shape[3]} (shapes k {tuple(state.k.shape)}, v {tuple(state.v.shape)})"
            )
        return state

    def _forward(self, x: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        return self._forward_last(x, state, None)

    def _forward_last(self, x: Tensor, state: KVCache, last: int | None) -> tuple[Tensor, KVCache]:
        # The last block's output at a position depends on every key and value of the block below it,
        # but on its own query alone: so the earlier blocks run over all T positions and the last
        # block computes keys and values for all of them, its queries, attention and MLP for the
        # last `n` only (the attention of a read-at-the-end task costs one block instead of all).
        B, T, C = x.size()
        t0 = state.k.shape[3]  # absolute position of x[:, 0]
        positions = torch.arange(t0, t0 + T, device=x.device)  # (T,)
        cos, sin = rotary_cos_sin(positions, self.head_dim, self.rope_base, dtype=x.dtype)  # (T, hs/2)
        ks, vs = [], []
        h = x  # (B, T, C)
        final = len(self.blocks) - 1
        for layer, block in enumerate(self.blocks):
            # k, v: (B, nh, t0+T, hs); h: (B, T, C), after the last block (B, n, C) with `last=n`
            h, k, v = block(h, state.k[layer], state.v[layer], cos, sin, last if layer == final else None)
            ks.append(k)
            vs.append(v)
        y = self.norm_out(h)  # (B, T, C) or (B, n, C)
        return y, KVCache(torch.stack(ks), torch.stack(vs))  # (L, B, nh, t0+T, hs)

    def _forward_into(
        self, x: Tensor, k_buf: Tensor, v_buf: Tensor, t0: int, rotary: tuple[Tensor, Tensor] | None = None
    ) -> Tensor:
        """The stack over `x (B, T, C)` at positions `t0 ..`, the cache in buffers
        `(n_layers, B, nh, capacity, hs)` (the first `t0` positions filled; `T` more are written).
        `rotary`: the `(cos, sin)` of these positions, `(T, hs/2)` each, if the caller has them."""
        if rotary is None:
            positions = torch.arange(t0, t0 + x.shape[1], device=x.device)  # (T,)
            rotary = rotary_cos_sin(positions, self.head_dim, self.rope_base, dtype=x.dtype)  # (T, hs/2)
        cos, sin = rotary
        h = x
        for layer, block in enumerate(self.blocks):
            h = block.forward_into(h, k_buf[layer], v_buf[layer], t0, cos, sin)  # (B, T, C)
        return self.norm_out(h)

    def _activation_elements(self, train: bool, batch_size: int, seq_len: int, cached: int = 0) -> ActivationElements:
        # per position (for seqmem._memory; from the code, checked with torch.profiler). Training, per block:
        # LN, qkv (3C), rotated q and k, k and v joined to the cache, the attention output, out_proj,
        # LN, fc_in and GELU (4C each), fc_out and two residuals: about 20C. A forward keeps the new cache
        # (k and v of every layer, with the cached positions) and, while a block runs, its MLP and qkv.
        # The fused attention kernels (CPU and CUDA) never hold the (T, S) score matrix.
        C, L, past = self.d_model, self.n_layers, cached / seq_len
        if train:
            return ActivationElements(C * L * (19.5 + 5 * past), C)
        return ActivationElements(C * L * (2.5 + 3 * past), 11.5 * C)

    def _step(self, x_t: Tensor, state: KVCache) -> tuple[Tensor, KVCache]:
        # one new cache of t + 1 positions, the old one copied in once (no per-layer cat and stack)
        L, B, nh, t, hs = state.k.shape
        k = state.k.new_empty(L, B, nh, t + 1, hs)
        v = state.v.new_empty(L, B, nh, t + 1, hs)
        k[:, :, :, :t] = state.k
        v[:, :, :, :t] = state.v
        y = self._forward_into(x_t[:, None, :], k, v, t)  # (B, 1, C)
        return y[:, 0], KVCache(k, v)

    def _stream_fallback(self, batch_size: int) -> Any:
        from .stream import KVStream

        return KVStream(self, batch_size)
