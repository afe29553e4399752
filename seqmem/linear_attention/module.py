r"""`seqmem.LinearAttention`: a pre-norm transformer whose attention is linear (Katharopoulos et al. 2020),
with an optional per-head decay that makes it retention (RetNet, Sun et al. 2023)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._module import ActivationElements, SequenceModule, _check_flag, _check_positive_int, check_choice
from ..protocol import _state_type
from ..transformer.module import _MLP
from .chunk import linear_attention_chunk
from .reference import LinearAttentionCarry, elu_feature_map, linear_attention_step

__all__ = ["FEATURE_MAPS", "RETENTION", "LinearAttention", "LinearAttentionState", "multiscale_decay"]

FEATURE_MAPS = ("elu+1", "identity")
"""The feature maps $\\phi$ applied to queries and keys: `"elu+1"` (Katharopoulos et al. 2020, eq. 7) or
`"identity"` (retention)."""

RETENTION = {"decay": "multiscale", "feature_map": "identity", "normalize": False, "gate": True, "group_norm": True}
"""The constructor arguments that make `LinearAttention` the multi-scale retention of RetNet (Sun et al. 2023,
sec. 2.2): per-head decays $\\gamma_h = 1 - 2^{-5-h}$, no feature map and no normaliser, a group norm over
each head's output and a swish gate. The `retention` entry of the registry fixes them."""

GROUP_NORM_EPS = 1e-5
"""The epsilon of the per-head group norm (`torch.nn.GroupNorm`'s default)."""


def multiscale_decay(n_heads: int) -> Tensor:
    r"""RetNet's per-head decays $\gamma_h = 1 - 2^{-5-h}$, $h = 0 .. n_{\text{heads}} - 1$ (Sun et al. 2023,
    sec. 2.2): memories of about $2^{5+h}$ positions, 32 for the first head, twice as long for each next one.

    Args:
        n_heads: the number of heads, a positive int.

    Returns:
        `(n_heads,)` float64 decays in `(0, 1)`.

    Raises:
        ValueError: if `n_heads` is not a positive int.

    Example:
        >>> from seqmem.linear_attention import multiscale_decay
        >>> multiscale_decay(3).tolist()
        [0.96875, 0.984375, 0.9921875]
    """
    _check_positive_int("multiscale_decay", n_heads=n_heads)
    return 1.0 - 2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64))


def _parse_decay(decay: Any, n_heads: int, where: str) -> tuple[float, ...] | None:
    """`None`, `"multiscale"`, one float, or one float per head -> a tuple of `n_heads` decays in (0, 1]."""
    if decay is None:
        return None
    if isinstance(decay, str):
        check_choice("decay", decay, ("multiscale",), where)
        return tuple(multiscale_decay(n_heads).tolist())
    if isinstance(decay, (int, float)) and not isinstance(decay, bool):
        values = [float(decay)] * n_heads
    elif isinstance(decay, Sequence) and all(isinstance(g, (int, float)) and not isinstance(g, bool) for g in decay):
        values = [float(g) for g in decay]
        if len(values) != n_heads:
            raise ValueError(f"{where}: decay must hold one value per head ({n_heads}), got {len(values)}: {decay!r}")
    else:
        raise TypeError(
            f"{where}: decay must be None, 'multiscale', a float in (0, 1] or a sequence of {n_heads} of them, "
            f"got {decay!r}"
        )
    bad = [g for g in values if not (0.0 < g <= 1.0)]
    if bad:
        raise ValueError(f"{where}: every decay must lie in (0, 1], got {decay!r}")
    return tuple(values)


@_state_type
class LinearAttentionState(NamedTuple):
    r"""State of `LinearAttention`: one matrix memory (and normaliser) per layer and head, whatever the length.

    Attributes:
        S: `(n_layers, batch, n_heads, d_k, d_v)` the memory $S_t = \gamma S_{t-1} + \phi(k_t) v_t^\top$
            (Katharopoulos et al. 2020, sec. 3.4; Sun et al. 2023, eq. 6).
        z: `(n_layers, batch, n_heads, d_k)` the normaliser $z_t = \gamma z_{t-1} + \phi(k_t)$, or
            `(n_layers, batch, n_heads, 0)` (empty) when the model has no normaliser (retention).
    """

    S: Tensor
    z: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.S.shape[1]


Scan = Callable[..., tuple[Tensor, LinearAttentionCarry]]
"""A sequence form: `(q, k, v, gamma, *, normalize, eps, initial_state) -> (o, (S, z))`."""
Step = Callable[..., tuple[Tensor, LinearAttentionCarry]]
"""A one-step form: `(q_t, k_t, v_t, state, gamma, *, eps) -> (o_t, (S, z))`."""


class _MultiHeadLinearAttention(nn.Module):
    """Multi-head linear attention / retention: q, k, v (and gate) projections, the recurrence, out_proj."""

    def __init__(
        self, d_model: int, n_heads: int, d_k: int, d_v: int, feature_map: str, normalize: bool, gate: bool,
        group_norm: bool, bias: bool, eps: float,
    ) -> None:
        super().__init__()
        self.n_heads, self.d_k, self.d_v = n_heads, d_k, d_v
        self.feature_map, self.normalize, self.eps = feature_map, normalize, eps
        self.q_proj = nn.Linear(d_model, n_heads * d_k, bias=bias)
        self.k_proj = nn.Linear(d_model, n_heads * d_k, bias=bias)
        self.v_proj = nn.Linear(d_model, n_heads * d_v, bias=bias)
        self.g_proj = nn.Linear(d_model, n_heads * d_v, bias=bias) if gate else None
        if group_norm:
            self.norm_weight = nn.Parameter(torch.ones(n_heads * d_v))
            self.norm_bias = nn.Parameter(torch.zeros(n_heads * d_v)) if bias else None
        else:
            self.norm_weight = self.norm_bias = None
        self.out_proj = nn.Linear(n_heads * d_v, d_model, bias=bias)

    def _qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`x (..., d_model)` -> `q, k (..., H, dk)` (feature map applied, k scaled by 1/sqrt(dk)), `v (..., H, dv)`."""
        H = self.n_heads
        q = rearrange(self.q_proj(x), "... (h d) -> ... h d", h=H)
        k = rearrange(self.k_proj(x), "... (h d) -> ... h d", h=H)
        v = rearrange(self.v_proj(x), "... (h d) -> ... h d", h=H)
        if self.feature_map == "elu+1":
            q, k = elu_feature_map(q), elu_feature_map(k)
        return q, k * self.d_k**-0.5, v

    def _output(self, o: Tensor, x: Tensor) -> Tensor:
        """`o (..., H, dv)` -> group norm per head, swish gate from `x`, `out_proj`: `(..., d_model)`."""
        if self.norm_weight is not None:  # GroupNorm with one group per head: a LayerNorm over each head's dv
            o = F.layer_norm(o, (self.d_v,), eps=GROUP_NORM_EPS)
        y = rearrange(o, "... h d -> ... (h d)")  # (..., H dv)
        if self.norm_weight is not None:
            y = y * self.norm_weight if self.norm_bias is None else torch.addcmul(self.norm_bias, y, self.norm_weight)
        if self.g_proj is not None:
            y = F.silu(self.g_proj(x)) * y
        return self.out_proj(y)

    def forward(self, x: Tensor, state: LinearAttentionCarry, gamma: Tensor | None, scan: Scan
                ) -> tuple[Tensor, LinearAttentionCarry]:
        """`x (B, T, d_model)`, state `(S (B, H, dk, dv), z (B, H, dk) or None)` -> `y (B, T, d_model)`, state."""
        q, k, v = (rearrange(t, "b t h d -> b h t d") for t in self._qkv(x))  # (B, H, T, d)
        o, state = scan(q, k, v, gamma, normalize=self.normalize, eps=self.eps, initial_state=state)
        return self._output(rearrange(o, "b h t d -> b t h d"), x), state

    def step(self, x_t: Tensor, state: LinearAttentionCarry, gamma: Tensor | None, step: Step
             ) -> tuple[Tensor, LinearAttentionCarry]:
        """`x_t (B, d_model)` -> `y_t (B, d_model)` and the next state."""
        q, k, v = self._qkv(x_t)  # (B, H, d)
        o, state = step(q, k, v, state, gamma, eps=self.eps)
        return self._output(o, x_t), state


class _Block(nn.Module):
    """Pre-norm block: `x + Attn(LN(x))`, then `x + MLP(LN(x))` (the transformer's, attention made linear)."""

    def __init__(self, d_model: int, mlp_ratio: int, bias: bool, **attn: Any) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(d_model, bias=bias)
        self.attn = _MultiHeadLinearAttention(d_model, bias=bias, **attn)
        self.norm_mlp = nn.LayerNorm(d_model, bias=bias)
        self.mlp = _MLP(d_model, mlp_ratio, bias)

    def forward(self, x: Tensor, state: LinearAttentionCarry, gamma: Tensor | None, scan: Scan
                ) -> tuple[Tensor, LinearAttentionCarry]:
        a, state = self.attn(self.norm_attn(x), state, gamma, scan)
        x = x + a
        return x + self.mlp(self.norm_mlp(x)), state

    def step(self, x_t: Tensor, state: LinearAttentionCarry, gamma: Tensor | None, step: Step
             ) -> tuple[Tensor, LinearAttentionCarry]:
        a, state = self.attn.step(self.norm_attn(x_t), state, gamma, step)
        x_t = x_t + a
        return x_t + self.mlp(self.norm_mlp(x_t)), state


class LinearAttention(SequenceModule):
    r"""A transformer with linear attention: attention without softmax is a recurrence with a matrix state.

    Each of the `n_layers` pre-norm blocks computes $x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))$, then
    $x \leftarrow x + \mathrm{MLP}(\mathrm{LN}(x))$, as `CausalTransformer` does, and a final LayerNorm
    closes the stack; only the attention differs. With $q_t = \phi(W_Q x_t)$, $k_t = \phi(W_K x_t)/\sqrt{d_k}$,
    $v_t = W_V x_t$ per head, softmax attention's $\exp(q^\top k)$ is replaced by the inner product of
    features, so the sums over the past become running sums (Katharopoulos et al. 2020, sec. 3.3-3.4):

    $$S_t = \gamma S_{t-1} + k_t v_t^\top, \qquad z_t = \gamma z_{t-1} + k_t, \qquad
    o_t = \frac{S_t^\top q_t}{q_t^\top z_t + \varepsilon},$$

    and the heads' outputs are concatenated and projected by `out_proj`. $\phi(x) = \mathrm{elu}(x) + 1$
    (eq. 7) keeps the normaliser positive. With `decay=None`, $\gamma = 1$ and this is the linear attention
    of Katharopoulos et al.; a per-head decay $\gamma_h \in (0, 1]$ makes old positions fade as
    $\gamma^{t-s}$, which is retention (Sun et al. 2023, eq. 1 and 6). The arguments in `RETENTION` give
    RetNet's multi-scale retention (sec. 2.2): $\gamma_h = 1 - 2^{-5-h}$, no feature map and no
    normaliser, a group norm over each head's output, and a swish gate,
    $\mathrm{out\_proj}(\mathrm{swish}(W_G x_t) \odot \mathrm{GroupNorm}_h(o_t))$ (eq. 8).

    Three forms compute the same thing (`seqmem.linear_attention.reference`, `.parallel`, `.chunk`):
    the recurrence (`step`, $O(d_k d_v)$ per head and step), the parallel form $(QK^\top \odot D)V$ with
    the decay mask $D_{nm} = \gamma^{n-m}$ ($O(T^2)$), and the chunkwise form (Sun et al. 2023, eq. 7),
    parallel inside chunks of `chunk_size` positions and recurrent across them, which `forward` uses on
    the `"torch"` backend (for `seq_len <= chunk_size` it is the parallel form). The `"numba"` backend
    runs the recurrence as a CPU kernel with a hand-derived backward (`.numba_scan`). The state, a
    `LinearAttentionState(S, z)`, holds `n_layers * n_heads * d_k * (d_v + 1)` numbers per sequence
    (`d_k * d_v` without normaliser), whatever the length: where the KV cache of softmax attention grows
    with every token, this one is constant. Chunked calls are exact: `forward(x2, forward(x1)[1])` equals
    `forward(cat([x1, x2], 1))`.

    No positional encoding: the causal sums and the decay are the only order information, as in the
    papers' models without rotary or xPos embeddings (RetNet's rotation $e^{in\theta}$ of eq. 5 is left out).
    Deterministic (no dropout). Initialisation as `CausalTransformer` (GPT-2): linear weights
    $\mathcal{N}(0, 0.02^2)$, biases 0, norms at weight 1 and bias 0, and the projections that write into
    the residual stream (`attn.out_proj`, `mlp.fc_out`) scaled by $1/\sqrt{2\,n_{\text{layers}}}$.

    Args:
        d_model: width of the residual stream (input and output size).
        n_heads: number of heads $h$.
        n_layers: number of blocks $L$.
        d_k: query/key size per head; `None` for `d_model // n_heads`.
        d_v: value size per head; `None` for `d_model // n_heads`.
        mlp_ratio: hidden width of each block's MLP, as a multiple of `d_model`.
        feature_map: $\phi$ of queries and keys, one of `FEATURE_MAPS`: `"elu+1"` or `"identity"`.
        normalize: divide by the normaliser $q_t^\top z_t + \varepsilon$ (linear attention; needs the
            positive features `"elu+1"`); `False` for retention, whose group norm takes its place.
        decay: `None` (no decay, $\gamma = 1$), `"multiscale"` (RetNet's $\gamma_h = 1 - 2^{-5-h}$), one
            float in `(0, 1]` for every head, or a sequence of `n_heads` of them. Fixed, not learnt.
        gate: multiply the heads' output by $\mathrm{swish}(W_G x_t)$ before `out_proj` (RetNet).
        group_norm: normalise each head's output over its `d_v` features (RetNet's GroupNorm, eps 1e-5).
        bias: learn biases in the linear layers and norms.
        chunk_size: positions per chunk of the chunkwise form that `forward` uses.
        eps: added to the normaliser (`normalize=True` only).
        backend: `"torch"` (the chunkwise form in PyTorch, any device) or `"numba"` (the recurrence as a
            Numba CPU kernel, differentiable through its hand-derived backward).

    Attributes:
        head_dims: `(d_k, d_v)`, the per-head sizes in use.
        blocks: the `n_layers` blocks; block `l` holds `norm_attn`, `attn.q_proj`, `attn.k_proj`
            (`(n_heads * d_k, d_model)`), `attn.v_proj` (`(n_heads * d_v, d_model)`), `attn.g_proj`
            (gate only), `attn.norm_weight`/`attn.norm_bias` (group norm only), `attn.out_proj`,
            `norm_mlp` and `mlp.fc_in`/`mlp.fc_out`.
        norm_out: the final LayerNorm over `d_model`.

    Raises:
        TypeError: if `normalize`, `gate`, `group_norm` or `bias` is not a bool.
        ValueError: for a non-positive size, `d_model` not divisible by `n_heads` when `d_k` or `d_v` is
            left to default, an unknown feature map, `normalize=True` with features that are not positive
            (`"identity"`: $q_t^\top z_t$ could vanish), a decay outside `(0, 1]` or with the wrong number of
            heads, a non-positive `eps` or `chunk_size`, or an unknown backend.
        TypeError: for a `decay` that is not one of the accepted kinds.

    References:
        Katharopoulos, A., Vyas, A., Pappas, N. & Fleuret, F. (2020). Transformers are RNNs: fast
        autoregressive transformers with linear attention. ICML, sec. 3.2 (eq. 7), 3.3 and 3.4.
        Sun, Y. et al. (2023). Retentive network: a successor to transformer for large language models.
        arXiv:2307.08621, sec. 2.1 (eq. 1, 5, 6), 2.2 (eq. 7, 8 and the multi-scale decays).

    Example:
        >>> import torch, seqmem
        >>> model = seqmem.LinearAttention(d_model=16, n_heads=4, n_layers=2)
        >>> y, state = model(torch.randn(2, 5, 16))
        >>> y.shape, state.S.shape  # S: (n_layers, batch, n_heads, d_k, d_v)
        (torch.Size([2, 5, 16]), torch.Size([2, 2, 4, 4, 4]))
        >>> seqmem.state_nbytes(state)  # 2 layers x 2 x 4 heads x 4 x (4 + 1) float32, whatever the length
        1280
        >>> retnet = seqmem.LinearAttention(16, n_heads=4, **seqmem.linear_attention.RETENTION)
        >>> retnet.decays.tolist()
        [0.96875, 0.984375, 0.9921875, 0.99609375]
    """

    state_type = LinearAttentionState
    backends = ("torch", "numba")

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        n_layers: int = 2,
        d_k: int | None = None,
        d_v: int | None = None,
        mlp_ratio: int = 4,
        feature_map: str = "elu+1",
        normalize: bool = True,
        decay: str | float | Sequence[float] | None = None,
        gate: bool = False,
        group_norm: bool = False,
        bias: bool = True,
        chunk_size: int = 64,
        eps: float = 1e-6,
        backend: str = "torch",
    ) -> None:
        where = type(self).__name__
        _check_positive_int(where, d_model=d_model, n_heads=n_heads, n_layers=n_layers, mlp_ratio=mlp_ratio,
                            chunk_size=chunk_size)
        if (d_k is None or d_v is None) and d_model % n_heads:
            raise ValueError(
                f"{where}: d_model must be divisible by n_heads when d_k or d_v is left to default "
                f"(d_model // n_heads), got d_model={d_model}, n_heads={n_heads}"
            )
        d_k = d_model // n_heads if d_k is None else d_k
        d_v = d_model // n_heads if d_v is None else d_v
        _check_positive_int(where, d_k=d_k, d_v=d_v)
        check_choice("feature_map", feature_map, FEATURE_MAPS, where)
        _check_flag(where, normalize=normalize, gate=gate, group_norm=group_norm, bias=bias)
        if normalize and feature_map != "elu+1":
            raise ValueError(
                f"{where}: normalize=True divides by q_t . z_t, which only positive features keep away from 0; "
                f"use feature_map='elu+1', or normalize=False with feature_map={feature_map!r}"
            )
        decays = _parse_decay(decay, n_heads, where)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"{where}: eps must be a positive finite number, got {eps!r}")
        super().__init__(backend)
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.head_dims = (d_k, d_v)
        self.mlp_ratio = mlp_ratio
        self.feature_map = feature_map
        self.normalize = bool(normalize)
        self.decay = decay if decay is None or isinstance(decay, str) else (
            float(decay) if isinstance(decay, (int, float)) else tuple(decays or ())
        )
        self._decays = decays
        self.gate = bool(gate)
        self.group_norm = bool(group_norm)
        self.bias = bool(bias)
        self.chunk_size = chunk_size
        self.eps = float(eps)
        self.input_size = self.output_size = d_model
        attn = {
            "n_heads": n_heads, "d_k": d_k, "d_v": d_v, "feature_map": feature_map, "normalize": self.normalize,
            "gate": self.gate, "group_norm": self.group_norm, "eps": self.eps,
        }
        self.blocks = nn.ModuleList(_Block(d_model, mlp_ratio, self.bias, **attn) for _ in range(n_layers))
        self.norm_out = nn.LayerNorm(d_model, bias=self.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""GPT-2 initialisation, as `CausalTransformer`: weights $\mathcal{N}(0, 0.02^2)$, residual
        projections scaled by $1/\sqrt{2L}$, biases 0, norm weights 1."""
        std = 0.02
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
        for block in self.blocks:
            nn.init.normal_(block.attn.out_proj.weight, mean=0.0, std=std / math.sqrt(2 * self.n_layers))
            nn.init.normal_(block.mlp.fc_out.weight, mean=0.0, std=std / math.sqrt(2 * self.n_layers))
            if block.attn.norm_weight is not None:
                nn.init.ones_(block.attn.norm_weight)
            if block.attn.norm_bias is not None:
                nn.init.zeros_(block.attn.norm_bias)

    @property
    def decays(self) -> Tensor | None:
        r"""`(n_heads,)` the decays $\gamma_h$ in the parameters' dtype and device, or `None` without decay."""
        if self._decays is None:
            return None
        ref = self.norm_out.weight
        return torch.tensor(self._decays, dtype=ref.dtype, device=ref.device)

    def extra_repr(self) -> str:
        d_k, d_v = self.head_dims
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, n_layers={self.n_layers}, d_k={d_k}, d_v={d_v}, "
            f"mlp_ratio={self.mlp_ratio}, feature_map={self.feature_map!r}, normalize={self.normalize}, "
            f"decay={self.decay!r}, gate={self.gate}, group_norm={self.group_norm}, bias={self.bias}, "
            f"chunk_size={self.chunk_size}, backend={self.backend_choice!r}"
        )

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> LinearAttentionState:
        """Zeros: the state before the first step.

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            `LinearAttentionState(S, z)`: `S` `(n_layers, batch_size, n_heads, d_k, d_v)` and `z`
            `(n_layers, batch_size, n_heads, d_k)`, or `(n_layers, batch_size, n_heads, 0)` without
            normaliser; zeros.

        Raises:
            ValueError: if `batch_size` is not a positive int.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        ref = self.norm_out.weight
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        d_k, d_v = self.head_dims
        lead = (self.n_layers, batch_size, self.n_heads)
        S = torch.zeros(*lead, d_k, d_v, device=device, dtype=dtype)
        z = torch.zeros(*lead, d_k if self.normalize else 0, device=device, dtype=dtype)
        return LinearAttentionState(S, z)

    def _forms(self) -> tuple[Scan, Step]:
        """The sequence form `forward` uses and the one-step form `step` uses, on this model's backend:
        the chunkwise form at this model's chunk size and the reference step, or the Numba kernels."""
        if self.backend == "numba":
            from .numba_scan import linear_attention_numba, linear_attention_step_numba

            return linear_attention_numba, linear_attention_step_numba
        return partial(linear_attention_chunk, chunk_size=self.chunk_size), linear_attention_step

    def _layer_state(self, state: LinearAttentionState, layer: int) -> LinearAttentionCarry:
        return state.S[layer], (state.z[layer] if self.normalize else None)

    def _stack(self, states: list[LinearAttentionCarry], like: LinearAttentionState) -> LinearAttentionState:
        S = torch.stack([S for S, _ in states])  # (L, B, H, dk, dv)
        z = torch.stack([z for _, z in states]) if self.normalize else like.z  # (L, B, H, dk) or empty
        return LinearAttentionState(S, z)

    def _activation_elements(self, train: bool, batch_size: int, seq_len: int, cached: int = 0) -> ActivationElements:
        # per position, for seqmem._memory: measured with torch.profiler at the default sizes (mlp_ratio 4, head
        # size d_model / n_heads). The torch chunkwise form holds, per head, a chunk's (C, C) intra-chunk scores;
        # the numba recurrence none. Training keeps each block's projections, features, MLP and those scores.
        D, L = self.d_model, self.n_layers
        scores = self.n_heads * min(self.chunk_size, seq_len)
        if self.backend == "numba":
            return ActivationElements(21.8 * L * D, 5.0 * D) if train else ActivationElements(0.65 * L * D, 11.6 * D)
        if train:
            return ActivationElements(L * (24.0 * D + 1.05 * scores), 2.0 * D)
        return ActivationElements(0.65 * L * D, 4.5 * D + 2.0 * scores)

    def _forward(self, x: Tensor, state: LinearAttentionState) -> tuple[Tensor, LinearAttentionState]:
        # x: (B, T, d_model)
        gamma, (scan, _) = self.decays, self._forms()
        states = []
        h = x
        for layer, block in enumerate(self.blocks):
            h, s = block(h, self._layer_state(state, layer), gamma, scan)  # (B, T, d_model)
            states.append(s)
        return self.norm_out(h), self._stack(states, state)

    def _step(self, x_t: Tensor, state: LinearAttentionState) -> tuple[Tensor, LinearAttentionState]:
        # x_t: (B, d_model)
        gamma, (_, step) = self.decays, self._forms()
        states = []
        h = x_t
        for layer, block in enumerate(self.blocks):
            h, s = block.step(h, self._layer_state(state, layer), gamma, step)  # (B, d_model)
            states.append(s)
        return self.norm_out(h), self._stack(states, state)
