r"""`seqmem.MLSTM`: the mLSTM block of xLSTM (Beck et al. 2024), compact: matrix memory, exponential gating."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from .._module import ActivationElements, SequenceModule, _check_flag, _check_positive_int, check_choice
from ..protocol import _state_type
from .parallel import mlstm_chunkwise
from .reference import FORGET_GATES, mlstm_step

__all__ = ["MLSTM", "MLSTMState"]

NORM_EPS = 1e-5
"""The epsilon of the per-head output norm."""


@_state_type
class MLSTMState(NamedTuple):
    r"""State of `MLSTM`: the matrix memory, its normaliser and stabiliser, and the convolution's inputs.

    Attributes:
        C: `(batch, n_heads, head_dim, head_dim)` the matrix memory $C_t$ (eq. 19), times $e^{-m_t}$.
        n: `(batch, n_heads, head_dim)` the normaliser $n_t$ (eq. 20), times $e^{-m_t}$.
        m: `(batch, n_heads)` the stabiliser $m_t$ (eq. 15): $C_t, n_t$ are stored divided by $e^{m_t}$.
        conv: `(batch, d_inner, d_conv - 1)` the last `d_conv - 1` inputs of the causal convolution.
    """

    C: Tensor
    n: Tensor
    m: Tensor
    conv: Tensor

    @property
    def batch_size(self) -> int:
        """Number of sequences in the batch."""
        return self.C.shape[0]


class _HeadwiseLinear(nn.Module):
    """A block-diagonal linear map: `d // block_size` independent `(block_size, block_size)` blocks (xLSTM's
    headwise q, k, v projections), `d * block_size` weights instead of `d**2`."""

    def __init__(self, d: int, block_size: int, bias: bool) -> None:
        super().__init__()
        self.block_size = block_size
        self.weight = nn.Parameter(torch.empty(d // block_size, block_size, block_size))  # (blocks, out, in)
        self.bias = nn.Parameter(torch.zeros(d)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        """`(..., d)` -> `(..., d)`."""
        blocks = rearrange(x, "... (n i) -> ... n i", i=self.block_size)  # (..., blocks, in)
        y = rearrange(torch.einsum("...ni,noi->...no", blocks, self.weight), "... n o -> ... (n o)")
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        n, b, _ = self.weight.shape
        return f"{n * b}, block_size={b}, bias={self.bias is not None}"


class MLSTM(SequenceModule):
    r"""The mLSTM block of xLSTM: a matrix memory with exponential gating, inside a gated up-projection.

    The block (Beck et al. 2024, sec. 2.4 and Fig. 10, "pre up-projection"), for an input $x_t$ of
    width `d_model` (in `SequenceNetwork` it sits in a pre-norm residual block, as in xLSTM):

    1. up-projection to two branches of width $d_{\text{inner}} = $ `expand * d_model`:
       $[x^{m}_t; z_t] = \mathrm{proj\_up}(x_t)$;
    2. a causal depthwise convolution of width `d_conv` on the mLSTM branch, then swish:
       $u_t = \mathrm{swish}(\mathrm{conv}(x^{m})_t)$;
    3. queries and keys from $u_t$, values from $x^{m}_t$ (before the convolution), by block-diagonal
       ("headwise") maps of blocks of `qkv_block_size`; keys scaled by $1/\sqrt{d_h}$ (eq. 22-24);
    4. input and forget gate pre-activations per head, $\tilde\imath_t, \tilde f_t$, from $[q_t; k_t; v_t]$
       (eqs. 25-26; exponential input gate, sigmoid or exponential forget gate);
    5. the mLSTM cell per head (`n_heads` heads of size $d_h = d_{\text{inner}} / $ `n_heads`):
       $C_t = f_t C_{t-1} + i_t v_t k_t^\top$, $n_t = f_t n_{t-1} + i_t k_t$,
       $\tilde h_t = C_t q_t / \max\{|n_t^\top q_t|, 1\}$ (eqs. 19-21), stabilised by $m_t$ (eqs. 15-17);
    6. a LayerNorm of each head's output (xLSTM's group norm), plus a learnable skip from $u_t$;
    7. the output gate $\mathrm{swish}(z_t)$ (the block's form of $o_t$ in eq. 21) and the down-projection:
       $y_t = \mathrm{proj\_down}\big((\mathrm{GN}(\tilde h_t) + s \odot u_t) \odot \mathrm{swish}(z_t)\big)$.

    Kept from the paper's block: all of the above. Left out: dropout and the block's own pre-LayerNorm
    (`SequenceNetwork`'s residual blocks bring it). The cell, `seqmem.mlstm.reference`, is eqs. 19-21 with
    the stabiliser; its parallel form (`seqmem.mlstm.parallel`, the appendix's stabilised $D$ matrix)
    equals the recurrence in outputs and states, and `forward` runs it on chunks of `chunk_size` positions,
    carrying $(C, n, m)$ across, so memory stays $O(T \cdot$ `chunk_size`$)$. The state, an
    `MLSTMState(C, n, m, conv)`, is `d_inner * (d_h + 1) + n_heads + d_inner * (d_conv - 1)` numbers per
    sequence whatever the length; `forward(x2, forward(x1)[1])` equals `forward(cat([x1, x2], 1))`.

    Initialisation as xLSTM's: forget gate biases $\tilde f$ spread over $[3, 6]$ across heads
    ($f \approx 0.95$ to $0.998$; for `forget_gate="exp"` the biases are $\log\sigma$ of those, the same
    initial $f$), input gate biases $\mathcal{N}(0, 0.1^2)$, gate weights 0, projections
    $\mathcal{N}(0, 2 / (5 d))$ ("small init", $d$ their input width), norm weights and skip 1, the
    convolution as `torch.nn.Conv1d`.

    Args:
        d_model: width of the block's input and output.
        n_heads: number of mLSTM heads; must divide `d_inner`.
        expand: up-projection factor (the paper's PF = 2): `d_inner = expand * d_model`.
        d_conv: width of the causal convolution before q and k.
        qkv_block_size: size of the blocks of the headwise q, k, v maps; must divide `d_inner`.
        forget_gate: `"sigmoid"` (as xLSTM's mLSTM) or `"exp"`, one of `FORGET_GATES` (eq. 26).
        bias: learn biases in the projections and the output norm (the gates and the convolution
            always have them).
        chunk_size: positions per chunk of the parallel form in `forward`.
        backend: `"torch"`, the only one.

    Attributes:
        d_inner: width of the up-projected branches.
        head_dim: $d_h$ = `d_inner // n_heads`.
        proj_up: `Linear(d_model, 2 * d_inner)`, the branches $x^m$ and $z$.
        conv1d: depthwise `Conv1d(d_inner, d_inner, d_conv, groups=d_inner)`.
        q_proj, k_proj, v_proj: headwise maps, weight `(d_inner // qkv_block_size, qkv_block_size,
            qkv_block_size)`.
        igate, fgate: `Linear(3 * d_inner, n_heads)`, the gate pre-activations.
        outnorm_weight: `(d_inner,)` scale of the per-head norm (`outnorm_bias` with `bias=True`).
        learnable_skip: `(d_inner,)` weight of the skip from $u_t$.
        proj_down: `Linear(d_inner, d_model)`.

    Raises:
        TypeError: if `bias` is not a bool.
        ValueError: for a non-positive size, `n_heads` or `qkv_block_size` not dividing `d_inner`, an
            unknown forget gate or backend.

    References:
        Beck, M. et al. (2024). xLSTM: extended long short-term memory. arXiv:2405.04517, sec. 2.2
        (eqs. 15-17), 2.3 (eqs. 19-27), 2.4 and Fig. 10 (the mLSTM block), and the appendix (parallel
        form).
        Nguyen, T. Q. & Salazar, J. (2019). Transformers without tears (the "small init" of the
        projections).

    Example:
        >>> import torch, seqmem
        >>> block = seqmem.MLSTM(d_model=8, n_heads=2)  # d_inner = 16, heads of 8
        >>> y, state = block(torch.randn(2, 5, 8))
        >>> y.shape, state.C.shape, state.m.shape
        (torch.Size([2, 5, 8]), torch.Size([2, 2, 8, 8]), torch.Size([2, 2]))
        >>> y_t, state = block.step(torch.randn(2, 8), state)  # the same block, one step at a time
    """

    state_type = MLSTMState
    backends = ("torch",)

    def __init__(
        self,
        d_model: int,
        n_heads: int = 4,
        expand: int = 2,
        d_conv: int = 4,
        qkv_block_size: int = 4,
        forget_gate: str = "sigmoid",
        bias: bool = False,
        chunk_size: int = 64,
        backend: str = "torch",
    ) -> None:
        where = type(self).__name__
        _check_positive_int(where, d_model=d_model, n_heads=n_heads, expand=expand, d_conv=d_conv,
                            qkv_block_size=qkv_block_size, chunk_size=chunk_size)
        d_inner = expand * d_model
        for name, value in (("n_heads", n_heads), ("qkv_block_size", qkv_block_size)):
            if d_inner % value:
                raise ValueError(
                    f"{where}: {name} must divide d_inner = expand * d_model = {expand} * {d_model} = {d_inner}, "
                    f"got {name}={value}"
                )
        check_choice("forget_gate", forget_gate, FORGET_GATES, where)
        _check_flag(where, bias=bias)
        super().__init__(backend)
        self.d_model = d_model
        self.n_heads = n_heads
        self.expand = expand  # the paper's projection factor PF
        self.d_conv = d_conv
        self.qkv_block_size = qkv_block_size
        self.forget_gate = forget_gate
        self.bias = bool(bias)
        self.chunk_size = chunk_size
        self.d_inner = d_inner
        self.head_dim = d_inner // n_heads
        self.input_size = self.output_size = d_model

        self.proj_up = nn.Linear(d_model, 2 * d_inner, bias=self.bias)
        self.conv1d = nn.Conv1d(d_inner, d_inner, kernel_size=d_conv, groups=d_inner, padding=d_conv - 1)
        self.q_proj = _HeadwiseLinear(d_inner, qkv_block_size, self.bias)
        self.k_proj = _HeadwiseLinear(d_inner, qkv_block_size, self.bias)
        self.v_proj = _HeadwiseLinear(d_inner, qkv_block_size, self.bias)
        self.igate = nn.Linear(3 * d_inner, n_heads)
        self.fgate = nn.Linear(3 * d_inner, n_heads)
        self.outnorm_weight = nn.Parameter(torch.ones(d_inner))
        self.outnorm_bias = nn.Parameter(torch.zeros(d_inner)) if self.bias else None
        self.learnable_skip = nn.Parameter(torch.ones(d_inner))
        self.proj_down = nn.Linear(d_inner, d_model, bias=self.bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""xLSTM's initialisation: forget biases over $[3, 6]$ (sigmoid units), input biases
        $\mathcal{N}(0, 0.1^2)$, gate weights 0, projections $\mathcal{N}(0, 2/(5d))$, norm and skip 1."""
        with torch.no_grad():
            for proj, width in ((self.proj_up, self.d_model), (self.proj_down, self.d_inner)):
                nn.init.normal_(proj.weight, std=math.sqrt(2 / (5 * width)))
                if proj.bias is not None:
                    proj.bias.zero_()
            for proj in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.normal_(proj.weight, std=math.sqrt(2 / (5 * self.d_inner)))
                if proj.bias is not None:
                    proj.bias.zero_()
            self.conv1d.reset_parameters()
            for gate in (self.igate, self.fgate):
                gate.weight.zero_()
            nn.init.normal_(self.igate.bias, std=0.1)
            f_bias = torch.linspace(3.0, 6.0, self.n_heads, dtype=torch.float64)
            if self.forget_gate == "exp":
                f_bias = F.logsigmoid(f_bias)  # the same initial f = sigmoid(3..6)
            self.fgate.bias.copy_(f_bias)
            self.outnorm_weight.fill_(1.0)
            if self.outnorm_bias is not None:
                self.outnorm_bias.zero_()
            self.learnable_skip.fill_(1.0)

    def extra_repr(self) -> str:
        return (
            f"{self.d_model}, n_heads={self.n_heads}, expand={self.expand}, d_conv={self.d_conv}, "
            f"qkv_block_size={self.qkv_block_size}, forget_gate={self.forget_gate!r}, bias={self.bias}, "
            f"chunk_size={self.chunk_size}, backend={self.backend_choice!r}"
        )

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MLSTMState:
        """The empty memory: zeros (and a stabiliser of 0).

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            `MLSTMState(C, n, m, conv)`: `C` `(batch_size, n_heads, head_dim, head_dim)`, `n`
            `(batch_size, n_heads, head_dim)`, `m` `(batch_size, n_heads)`, `conv`
            `(batch_size, d_inner, d_conv - 1)`; zeros.

        Raises:
            ValueError: if `batch_size` is not a positive int.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        ref = self.learnable_skip
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        B, H, d = batch_size, self.n_heads, self.head_dim

        def zeros(*shape: int) -> Tensor:
            return torch.zeros(*shape, device=device, dtype=dtype)

        return MLSTMState(zeros(B, H, d, d), zeros(B, H, d), zeros(B, H), zeros(B, self.d_inner, self.d_conv - 1))

    # ------------------------------------------------------------------ the block
    def _cell_inputs(self, x_m: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """`x_m`, `u` `(..., Din)` -> `q, k, v` `(..., H, dh)` (k scaled, eq. 23) and `i_pre, f_pre` `(..., H)`."""
        q, k, v = self.q_proj(u), self.k_proj(u), self.v_proj(x_m)  # (..., Din) each, eqs. 22-24
        qkv = torch.cat([q, k, v], dim=-1)  # (..., 3 Din)
        i_pre, f_pre = self.igate(qkv), self.fgate(qkv)  # (..., H) each, eqs. 25-26 (pre-activations)
        q, k, v = (rearrange(t, "... (h d) -> ... h d", h=self.n_heads) for t in (q, k, v))
        return q, k * self.head_dim**-0.5, v, i_pre, f_pre

    def _output(self, h: Tensor, u: Tensor, z: Tensor) -> Tensor:
        """`h` `(..., H, dh)` -> per-head norm, learnable skip from `u`, swish(z) gate, down-projection."""
        h = rearrange(F.layer_norm(h, (self.head_dim,), eps=NORM_EPS), "... h d -> ... (h d)")  # (..., Din)
        h = h * self.outnorm_weight if self.outnorm_bias is None else torch.addcmul(
            self.outnorm_bias, h, self.outnorm_weight
        )
        return self.proj_down((h + self.learnable_skip * u) * F.silu(z))

    def _activation_elements(self, train: bool, batch_size: int, seq_len: int, cached: int = 0) -> ActivationElements:
        # per position, for seqmem._memory: measured with torch.profiler at the default sizes (expand 2) and
        # raised to cover the tests' small sizes (inference peaked at 1.5x the first fit there). The
        # chunkwise parallel form holds, per head, a chunk's (C, C) gate and score matrices; training keeps the
        # up-projection, convolution, q/k/v, gates and those matrices for the backward.
        D, scores = self.d_model, self.n_heads * min(self.chunk_size, seq_len)
        if train:
            return ActivationElements(61.0 * D + 3.9 * scores, 0.0)
        return ActivationElements(D, 26.0 * D + 3.0 * scores)

    def _forward(self, x: Tensor, state: MLSTMState) -> tuple[Tensor, MLSTMState]:
        # x: (B, T, d_model)
        K = self.d_conv
        x_m, z = self.proj_up(x).chunk(2, dim=-1)  # (B, T, Din) each
        # the state holds the K-1 inputs before this chunk, so a convolution without padding is exact
        xc = torch.cat([state.conv, rearrange(x_m, "b t d -> b d t")], dim=-1)  # (B, Din, K-1+T)
        conv = xc[..., xc.shape[-1] - (K - 1):].clone()  # (B, Din, K-1), also when T < K-1
        u = F.silu(rearrange(F.conv1d(xc, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner),
                             "b d t -> b t d"))  # (B, T, Din)
        q, k, v, i_pre, f_pre = (rearrange(t, "b t h ... -> b h t ...") for t in self._cell_inputs(x_m, u))
        h, (C, n, m) = mlstm_chunkwise(q, k, v, i_pre, f_pre, chunk_size=self.chunk_size,
                                       forget_gate=self.forget_gate, initial_state=(state.C, state.n, state.m))
        return self._output(rearrange(h, "b h t d -> b t h d"), u, z), MLSTMState(C, n, m, conv)

    def _step(self, x_t: Tensor, state: MLSTMState) -> tuple[Tensor, MLSTMState]:
        # x_t: (B, d_model)
        x_m, z = self.proj_up(x_t).chunk(2, dim=-1)  # (B, Din) each
        window = torch.cat([state.conv, x_m.unsqueeze(-1)], dim=-1)  # (B, Din, K): the state rolled by one
        u = F.silu(torch.einsum("bdk,dk->bd", window, self.conv1d.weight[:, 0]) + self.conv1d.bias)  # (B, Din)
        q, k, v, i_pre, f_pre = self._cell_inputs(x_m, u)  # (B, H, dh) x3, (B, H) x2
        h, (C, n, m) = mlstm_step(q, k, v, i_pre, f_pre, (state.C, state.n, state.m), forget_gate=self.forget_gate)
        return self._output(h, u, z), MLSTMState(C, n, m, window[..., 1:].clone())
