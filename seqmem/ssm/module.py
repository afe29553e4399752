"""`seqmem.SelectiveSSM`: the Mamba block (selective SSM) and its linear-time-invariant ablation."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from .._module import ActivationElements, SequenceModule, _check_flag, _check_positive_int, _check_real, fused_kernels
from .._stream_table import LayerKernel
from ..protocol import SSMState
from ..stream import kernel_step
from .reference import selective_scan, selective_scan_step

__all__ = ["ScanInputs", "SelectiveSSM"]


class ScanInputs(NamedTuple):
    r"""What the scan of a `SelectiveSSM` sees over a sequence, in the argument order of `selective_scan`.

    `selective_scan(*inputs, initial_state=state.ssm)` gives the scan output $y$ before the gate
    $\mathrm{SiLU}(z)$ and `out_proj`.

    Attributes:
        u: `(batch, seq_len, d_inner)` input of the scan (in-projected, convolved, SiLU).
        delta: `(batch, seq_len, d_inner)` positive step sizes $\Delta_t$ (softplus applied).
        A: `(d_inner, d_state)` state matrix, $A = -\exp(A_{\log})$.
        B: `(batch, seq_len, d_state)` when selective, `(d_inner, d_state)` in the LTI ablation.
        C: `(batch, seq_len, d_state)` when selective, `(d_inner, d_state)` in the LTI ablation.
        D: `(d_inner,)` skip connection.
    """

    u: Tensor
    delta: Tensor
    A: Tensor
    B: Tensor
    C: Tensor
    D: Tensor


def _inverse_softplus(y: Tensor) -> Tensor:
    r"""$x$ with $\mathrm{softplus}(x) = y$ for $y > 0$: $x = y + \log(1 - e^{-y})$, stable for small y."""
    return y + torch.log(-torch.expm1(-y))


class SelectiveSSM(SequenceModule):
    r"""The Mamba block: a gated, convolved, selective state-space model (Gu & Dao 2023, Fig. 3).

    With $x, z = \mathrm{in\_proj}(x_t)$ split along features and $u$ the output of the causal
    depthwise convolution of $x$ (width `d_conv`) followed by SiLU, each of the `d_inner` channels
    runs the diagonal SSM of eq. (2), discretised by zero-order hold for $A$ and Euler for $B$:

    $$h_t = \exp(\Delta_t A) \odot h_{t-1} + \Delta_t B_t\, u_t, \qquad
    y_t = C_t \cdot h_t + D\, u_t,$$

    and the block returns $\mathrm{out\_proj}(y_t \odot \mathrm{SiLU}(z_t))$.

    *Selective* (`selective=True`, S6, Algorithm 2): $\Delta_t, B_t, C_t$ are functions of the
    input, $[\,\delta_t; B_t; C_t\,] = \mathrm{x\_proj}(u_t)$ and
    $\Delta_t = \mathrm{softplus}(\mathrm{dt\_proj}(\delta_t))$, so the model can choose, token by
    token, what to write into its state and what to forget.
    *LTI ablation* (`selective=False`, S4D-like inside the same block): $\Delta$, $B$, $C$ are
    parameters that do not depend on the input, so the scan is linear and time-invariant and equals a
    causal convolution with the kernel $K_k = \sum_n C_n \bar A_n^k \Delta B_n$ (eq. 3). Convolution,
    gate and projections are unchanged: the ablation removes selection only (Sec. 4.1, Table 1).

    The state is `SSMState(conv, ssm)`: the last `d_conv - 1` inputs of the convolution and the SSM
    state, `d_inner * (d_conv - 1 + d_state)` numbers per sequence whatever the sequence length.
    `forward` prepends the convolution state to the sequence, so chunked streaming is exact.

    Parameter names and shapes are those of mamba_ssm's `Mamba` block, so its `state_dict` loads by
    name (with `selective=True`).

    Args:
        d_model: model width `D` (input and output size).
        d_state: SSM state size per channel, `N` in the paper.
        d_conv: width of the causal depthwise convolution.
        expand: expansion factor `E`: the block works on `d_inner = expand * d_model` channels.
        dt_rank: rank `R` of the $\Delta$ projection; `"auto"` for `ceil(d_model / 16)`.
            Unused when `selective=False`.
        dt_min: smallest initial step size $\Delta$.
        dt_max: largest initial step size $\Delta$; initial steps are drawn log-uniformly in
            `[dt_min, dt_max]`.
        dt_init_floor: lower clamp of the initial step sizes.
        selective: make $\Delta, B, C$ functions of the input (Mamba, S6); `False` for the LTI
            ablation.
        bias: learn biases in `in_proj` and `out_proj`.
        conv_bias: learn a bias in `conv1d`.
        backend: `"torch"` (the reference scan), or another name in `SelectiveSSM.backends`.

    Attributes:
        d_inner: number of channels `E * D` the SSM runs on.
        in_proj: `Linear(d_model, 2 * d_inner)`, the branches $x$ and $z$.
        conv1d: depthwise `Conv1d(d_inner, d_inner, d_conv, groups=d_inner)`, weight
            `(d_inner, 1, d_conv)`.
        x_proj: `Linear(d_inner, dt_rank + 2 * d_state, bias=False)` giving $\delta_t, B_t, C_t$;
            `None` when `selective=False`.
        dt_proj: `Linear(dt_rank, d_inner)` giving $\Delta_t$ before the softplus; `None` when
            `selective=False`.
        dt_bias: `(d_inner,)`, $\Delta = \mathrm{softplus}(\mathrm{dt\_bias})$, only when
            `selective=False`.
        B: `(d_inner, d_state)` input matrix, only when `selective=False`.
        C: `(d_inner, d_state)` output matrix, only when `selective=False`.
        A_log: `(d_inner, d_state)`, $A = -\exp(A_{\log})$, initialised to S4D-Real,
            $A_n = -n$ for $n = 1..N$.
        D: `(d_inner,)` skip connection, initialised to ones.
        out_proj: `Linear(d_inner, d_model)`.

    Raises:
        TypeError: if a step-size bound is not a real number, or `selective`, `bias` or `conv_bias`
            not a bool.
        ValueError: for a non-positive size, a `dt_rank` that is neither `"auto"` nor a positive int,
            step-size bounds that are not finite with `0 < dt_min < dt_max`, a negative
            `dt_init_floor`, or an unknown backend.

    References:
        Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces.
        arXiv:2312.00752, eq. (2)-(4), Algorithm 2, Fig. 3, Sec. 4.1 and Table 1.
        Gu, A., Gupta, A., Goel, K. & Ré, C. (2022). On the parameterization and initialization of
        diagonal state space models (S4D). NeurIPS.

    Example:
        >>> import torch, seqmem
        >>> ssm = seqmem.SelectiveSSM(d_model=8, d_state=4)  # d_inner = 16, d_conv = 4
        >>> y, state = ssm(torch.randn(2, 10, 8))
        >>> y.shape, state.conv.shape, state.ssm.shape
        (torch.Size([2, 10, 8]), torch.Size([2, 16, 3]), torch.Size([2, 16, 4]))
        >>> seqmem.state_nbytes(state)  # 2 x 16 x (3 + 4) float32, whatever the sequence length
        896
    """

    state_type = SSMState
    backends = ("torch", "numba")

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        selective: bool = True,
        bias: bool = False,
        conv_bias: bool = True,
        backend: str = "torch",
    ) -> None:
        where = type(self).__name__
        _check_positive_int(where, d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand)
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        elif isinstance(dt_rank, str):
            raise ValueError(f"{where}: dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        _check_positive_int(where, dt_rank=dt_rank)
        dt_min, dt_max = _check_real(where, "dt_min", dt_min), _check_real(where, "dt_max", dt_max)
        if not 0.0 < dt_min < dt_max:
            raise ValueError(f"{where}: expected 0 < dt_min < dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        dt_init_floor = _check_real(where, "dt_init_floor", dt_init_floor, low=0.0)
        _check_flag(where, selective=selective, bias=bias, conv_bias=conv_bias)
        super().__init__(backend)

        self.d_model = d_model  # D in the paper
        self.d_state = d_state  # N in the paper
        self.d_conv = d_conv  # width of the short causal convolution
        self.expand = expand  # E in the paper
        self.d_inner = expand * d_model  # E * D channels the SSM runs on
        self.dt_rank = dt_rank  # R in the paper: rank of the Delta projection
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.selective = bool(selective)
        self.bias = bool(bias)
        self.conv_bias = bool(conv_bias)
        self.input_size = self.output_size = d_model

        Din, N = self.d_inner, d_state
        self.in_proj = nn.Linear(d_model, 2 * Din, bias=self.bias)
        self.conv1d = nn.Conv1d(
            Din, Din, kernel_size=d_conv, groups=Din, padding=d_conv - 1, bias=self.conv_bias
        )
        if self.selective:
            self.x_proj = nn.Linear(Din, dt_rank + 2 * N, bias=False)  # u_t -> (delta_t, B_t, C_t)
            self.dt_proj = nn.Linear(dt_rank, Din, bias=True)  # delta_t -> Delta_t (pre-softplus)
        else:
            self.register_module("x_proj", None)
            self.register_module("dt_proj", None)
            self.dt_bias = nn.Parameter(torch.empty(Din))  # Delta = softplus(dt_bias)
            self.B = nn.Parameter(torch.empty(Din, N))
            self.C = nn.Parameter(torch.empty(Din, N))
        self.A_log = nn.Parameter(torch.empty(Din, N))  # A = -exp(A_log)
        self.D = nn.Parameter(torch.empty(Din))
        self.out_proj = nn.Linear(Din, d_model, bias=self.bias)
        # optimisers that honour these flags (as Mamba's training code does) skip weight decay
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        r"""Initialise as the Mamba block does; the LTI parameters as S4D does.

        - `in_proj`, `conv1d`, `x_proj`, `out_proj`: the `torch.nn` defaults.
        - `dt_proj.weight`: uniform in $\pm R^{-1/2}$; `dt_proj.bias` (or `dt_bias`): the inverse
          softplus of $\Delta$ drawn log-uniformly in `[dt_min, dt_max]`, clamped below at
          `dt_init_floor`, so that $\mathrm{softplus}(\text{bias}) = \Delta$.
        - `A_log`: $\log n$ for $n = 1..N$ in every channel (S4D-Real, $A_n = -n$); `D`: ones.
        - LTI only: `B` ones and `C` standard normal, S4D's choice. For a diagonal system only the
          product $C_n B_n$ enters the kernel, so $B$ starts at one and $C$ carries the randomness;
          with $A_n = -n$ and a small $\Delta$ the state of a constant unit input settles near
          $h_n = 1/n$, so $\sum_n C_n h_n$ has variance about $\sum_n 1/n^2 < \pi^2/6$ whatever $N$,
          and no $1/\sqrt{N}$ scaling is needed.
        """
        self.in_proj.reset_parameters()
        self.conv1d.reset_parameters()
        self.out_proj.reset_parameters()
        with torch.no_grad():
            dt = torch.exp(
                torch.rand(self.d_inner) * (math.log(self.dt_max) - math.log(self.dt_min))
                + math.log(self.dt_min)
            ).clamp(min=self.dt_init_floor)  # (Din,) log-uniform in [dt_min, dt_max]
            inv_dt = _inverse_softplus(dt)
            if not torch.isfinite(inv_dt).all():  # e.g. dt_min below the dtype's smallest number, no floor
                raise ValueError(
                    f"{type(self).__name__}: dt_min={self.dt_min}, dt_max={self.dt_max} and dt_init_floor="
                    f"{self.dt_init_floor} give step sizes whose inverse softplus is not finite in {dt.dtype} "
                    f"(smallest step {dt.min().item():.3g}); raise dt_min or dt_init_floor"
                )
            if self.selective:
                self.x_proj.reset_parameters()
                std = self.dt_rank**-0.5
                nn.init.uniform_(self.dt_proj.weight, -std, std)
                self.dt_proj.bias.copy_(inv_dt)
            else:
                self.dt_bias.copy_(inv_dt)
                self.B.fill_(1.0)
                nn.init.normal_(self.C, mean=0.0, std=1.0)
            n = torch.arange(1, self.d_state + 1, dtype=torch.float64)  # (N,)
            self.A_log.copy_(repeat(torch.log(n), "n -> d n", d=self.d_inner))  # (Din, N)
            self.D.fill_(1.0)

    def extra_repr(self) -> str:
        return (
            f"{self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand}, "
            f"dt_rank={self.dt_rank}, selective={self.selective}, backend={self.backend_choice!r}"
        )

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> SSMState:
        """Zeros: the state before the first step.

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            `SSMState(conv, ssm)`: `conv` `(batch_size, d_inner, d_conv - 1)` and `ssm`
            `(batch_size, d_inner, d_state)`, zeros.

        Raises:
            ValueError: if `batch_size` is not a positive int.
        """
        _check_positive_int(type(self).__name__, batch_size=batch_size)
        device = self.A_log.device if device is None else device
        dtype = self.A_log.dtype if dtype is None else dtype
        conv = torch.zeros(batch_size, self.d_inner, self.d_conv - 1, device=device, dtype=dtype)
        ssm = torch.zeros(batch_size, self.d_inner, self.d_state, device=device, dtype=dtype)
        return SSMState(conv, ssm)

    # ------------------------------------------------------------------ the block
    def _selection(self, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """`u` `(..., Din)` -> `(delta (..., Din), B, C)`: `(..., N)` each if selective, else `(Din, N)`."""
        if self.selective:
            dbc = self.x_proj(u)  # (..., R + 2N)
            dt, B, C = torch.split(dbc, [self.dt_rank, self.d_state, self.d_state], dim=-1)
            delta = F.softplus(self.dt_proj(dt))  # (..., Din), dt_proj's bias included
            return delta, B, C
        delta = F.softplus(self.dt_bias).expand(u.shape)  # (..., Din), the same at every step
        return delta, self.B, self.C

    def _conv_forward(self, x: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """In-projection and causal convolution of a sequence.

        `x` `(B, T, d_model)`, `conv_state` `(B, Din, K-1)` -> `u` `(B, T, Din)`, `z` `(B, T, Din)` and
        the new convolution state `(B, Din, K-1)`.
        """
        K = self.d_conv
        xz = self.in_proj(x)  # (B, T, 2 Din)
        x_in, z = xz.chunk(2, dim=-1)  # (B, T, Din) each
        # the state holds the K-1 inputs before this chunk, so a convolution without padding is exact
        xc = torch.cat([conv_state, rearrange(x_in, "b t d -> b d t")], dim=-1)  # (B, Din, K-1+T)
        new_conv = xc[..., xc.shape[-1] - (K - 1) :].clone()  # (B, Din, K-1), also when T < K-1
        u = F.conv1d(xc, self.conv1d.weight, self.conv1d.bias, groups=self.d_inner)  # (B, Din, T)
        u = F.silu(rearrange(u, "b d t -> b t d"))  # (B, T, Din)
        return u, z, new_conv

    def _scan_fns(self) -> tuple[Callable[..., tuple[Tensor, Tensor]], Callable[..., tuple[Tensor, Tensor]]]:
        """The scan and its one-step form on this model's backend (both with `reference.py`'s signatures)."""
        if self.backend == "numba":
            from .numba_scan import selective_scan_numba as scan
            from .numba_scan import selective_scan_step_numba as scan_step
        else:
            scan, scan_step = selective_scan, selective_scan_step
        return scan, scan_step

    def _forward(self, x: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        # x: (B, T, d_model)
        u, z, conv = self._conv_forward(x, state.conv)  # (B, T, Din) x2, (B, Din, K-1)
        delta, B, C = self._selection(u)  # (B, T, Din), (B, T, N) or (Din, N)
        A = -torch.exp(self.A_log)  # (Din, N)
        scan, _ = self._scan_fns()
        y, h = scan(u, delta, A, B, C, self.D, initial_state=state.ssm)  # (B, T, Din), (B, Din, N)
        y = y * F.silu(z)  # (B, T, Din)
        return self.out_proj(y), SSMState(conv, h)

    def _stream_layer(self) -> LayerKernel | None:
        if self._backend != "numba":
            return None
        return fused_kernels(__package__).ssm_layer_kernel(self)

    def _step(self, x_t: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        # x_t: (B, d_model)
        if self._backend == "numba" and not (
            torch.is_grad_enabled() and any(t.requires_grad for t in (x_t, *state, *self.parameters()))
        ):  # the fused streaming kernel: the whole block in one call, parameters read in place
            with torch.no_grad():
                out = kernel_step(self._stream_layer(), x_t, state)
            if out is not None:
                return out
        xz = self.in_proj(x_t)  # (B, 2 Din)
        x_in, z = xz.chunk(2, dim=-1)  # (B, Din) each
        window = torch.cat([state.conv, x_in.unsqueeze(-1)], dim=-1)  # (B, Din, K): the state rolled by one
        u = torch.einsum("bdk,dk->bd", window, self.conv1d.weight[:, 0])  # (B, Din)
        if self.conv1d.bias is not None:
            u = u + self.conv1d.bias
        u = F.silu(u)
        delta, B, C = self._selection(u)  # (B, Din), (B, N) or (Din, N)
        if self.selective:
            B, C = B.unsqueeze(1), C.unsqueeze(1)  # (B, 1, N), broadcast over channels
        A = -torch.exp(self.A_log)  # (Din, N)
        _, scan_step = self._scan_fns()
        y, h = scan_step(u, delta, A, B, C, self.D, state.ssm)  # (B, Din), (B, Din, N)
        y = y * F.silu(z)
        return self.out_proj(y), SSMState(window[..., 1:].clone(), h)

    def _activation_elements(self, train: bool, batch_size: int, seq_len: int, cached: int = 0) -> ActivationElements:
        # per position (for seqmem._memory; from the code, checked with torch.profiler and tracemalloc).
        # The torch scan keeps, with gradient, three (d_inner, d_state) tensors per step (exp(delta A), delta B
        # and h_t); in_proj (2 d_inner), the convolution, SiLU, delta, y and the gate add about 12 d_inner.
        # The numba scan keeps checkpoints every sqrt(T) steps; its backward holds du, d_delta and their
        # copies (5 d_inner) and, selective, dB and dC per block of 16 channels.
        Din, N, D = self.d_inner, self.d_state, self.d_model
        xdbc = self.dt_rank + 2 * N if self.selective else 0  # x_proj's (delta, B, C) per position
        if self.backend != "numba":
            if not train:
                return ActivationElements(D, (7.0 if self.selective else 6.0) * Din + xdbc)
            return ActivationElements(3 * Din * N + (12.0 if self.selective else 8.5) * Din + 1.5 * xdbc, 0.5 * Din)
        padded = -(-Din // 16) * 16  # channels padded to the kernels' lanes of 16
        checkpoints = N * padded / math.sqrt(seq_len)
        if not train:
            return ActivationElements(D, (7.5 if self.selective else 6.0) * Din + xdbc)
        coefficients = 2 * N * -(-padded // 16) if self.selective else 0
        kept = (13.0 if self.selective else 9.5) * Din + xdbc + checkpoints
        return ActivationElements(kept, 5 * Din + 2 * checkpoints + coefficients)

    def scan_inputs(self, x: Tensor, state: SSMState | None = None) -> ScanInputs:
        """The inputs of the scan over a sequence: what the SSM sees, for diagnostics and tests.

        Always computed by the `"torch"` code. With `selective=True`, `delta`, `B` and `C` change with
        the input; with `selective=False` they do not, and the map from `u` to the scan output is the
        causal convolution of `seqmem.ssm.reference.lti_kernel`.

        Args:
            x: `(batch, seq_len, d_model)` input sequence.
            state: the state to start from (its `conv` part sets the first `d_conv - 1` convolution
                inputs), or `None` for zeros.

        Returns:
            `ScanInputs(u, delta, A, B, C, D)`: `u`, `delta` `(batch, seq_len, d_inner)`, `A`
            `(d_inner, d_state)`, `B`, `C` `(batch, seq_len, d_state)` if selective else
            `(d_inner, d_state)`, `D` `(d_inner,)`. `selective_scan(*inputs, initial_state=state.ssm)`
            is the scan output before the gate.

        Raises:
            TypeError, ValueError: as `forward`.
        """
        self._check_input(x, rank=3)
        state = self._check_state(state, x)
        u, _, _ = self._conv_forward(x, state.conv)
        delta, B, C = self._selection(u)
        return ScanInputs(u, delta, -torch.exp(self.A_log), B, C, self.D)
