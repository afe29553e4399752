r"""Gradient flow through time, measured: the classic claims about memory as numbers you can plot.

Backpropagation through time multiplies one Jacobian per step. For the Elman RNN each factor is
$\partial h_{s}/\partial h_{s-1} = \mathrm{diag}(\phi'(a_s))\, W_{hh}$, so that

$$\Big\|\frac{\partial h_{T}}{\partial h_t}\Big\|_2
\le \prod_{s=t+1}^{T} \|\mathrm{diag}(\phi'(a_s))\|_2\,\|W_{hh}\|_2
\le \big(\gamma\, \|W_{hh}\|_2\big)^{T-t}, \qquad \gamma = \max|\phi'| ,$$

which vanishes geometrically once $\gamma \|W_{hh}\|_2 < 1$ (Bengio et al. 1994; Pascanu et al. 2013,
eq. 5-7). The LSTM's cell path is additive, $c_s = f_s \odot c_{s-1} + i_s \odot g_s$, so along it the
Jacobian is the diagonal $\prod_s \mathrm{diag}(f_s)$: the error carousel of Hochreiter & Schmidhuber
(1997), whose decay the forget gate controls (Gers et al. 2000). Causal attention reads every past
position directly, so its gradient need not shrink with distance at all.

Conventions shared by every function here:

- **Time index.** Index `t` of a `(batch, seq_len)` result refers to the state *after* step `t`, the
  one `y[:, t]` is read from (0-based, as in `forward`'s output). Its distance to the last step is
  `seq_len - 1 - t`; `distances(seq_len)` lists them. Distance 0 is the last step itself (a Jacobian
  of a state with respect to itself is the identity).
- **Batch.** Sequences are independent (part of the `SequenceModel` contract), so one backward pass
  over the summed batch yields every sequence's own gradient. `reduction="none"` returns
  `(batch, seq_len)`; `"mean"` and `"max"` reduce over the batch to `(seq_len,)`.
- **Backend.** Measurements run on the `"torch"` backend (the reference, differentiable step by step),
  whatever `model.backend` says; the backend is restored afterwards.
- **No side effects.** Gradients are taken with `torch.autograd.grad` with respect to the states or
  inputs only: the parameters' `.grad` are left untouched. Results are detached tensors or plain Python
  numbers, and `gradflow_report` returns a JSON-ready `dict`.

References:
    Bengio, Y., Simard, P. & Frasconi, P. (1994). Learning long-term dependencies with gradient
    descent is difficult. IEEE Trans. Neural Networks 5(2).
    Pascanu, R., Mikolov, T. & Bengio, Y. (2013). On the difficulty of training recurrent neural
    networks. ICML (sec. 2.1, eq. 5-7; gradient clipping, sec. 3.2, Algorithm 1).
    Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8)
    (the constant error carousel, sec. 3.2 and 4).
    Gers, F. A., Schmidhuber, J. & Cummins, F. (2000). Learning to forget: continual prediction with
    LSTM. Neural Computation 12(10).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any, overload

import torch
from torch import Tensor, nn

from .gru import GRU
from .lstm import LSTM
from .protocol import SequenceModel
from .rnn import RNN
from .transformer import CausalTransformer

__all__ = [
    "attention_grad_by_distance",
    "cell_path_jacobian",
    "distances",
    "forget_gate_products",
    "global_grad_norm",
    "gradflow_report",
    "hidden_grad_norms",
    "input_jacobian_norms",
    "jacobian_norms",
    "rnn_jacobian_bound",
    "spectral_norm",
    "spectral_radius",
    "update_gate_products",
]

LossFn = Callable[[Tensor], Tensor]
Ord = int | str  # 2 or "fro"

_ORDS = (2, "fro")
_REDUCTIONS = ("none", "mean", "max")
# names of the square blocks W_hk stacked in `weight_hh`, in torch.nn order
# ---------------------------------------------------------------------------------------------- helpers
def _name(fn: str, model: Any) -> str:
    return f"{fn}({type(model).__name__})"


def _check_model(fn: str, model: Any) -> None:
    if not isinstance(model, SequenceModel):
        raise TypeError(
            f"{fn}: model must satisfy seqmem.SequenceModel (input_size, output_size, initial_state, "
            f"forward, step), got {type(model).__name__}"
        )


def _check_x(fn: str, model: Any, x: Any) -> None:
    want = f"(batch, seq_len, {model.input_size})"
    if not isinstance(x, Tensor):
        raise TypeError(f"{fn}: x must be a torch.Tensor of shape {want}, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[-1] != model.input_size:
        raise ValueError(f"{fn}: x must have shape {want}, got {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(
            f"{fn}: x must hold at least one sequence of at least one step, got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{fn}: x must be a floating-point tensor, got dtype {x.dtype}")


def _check_ord(fn: str, ord: Any) -> None:
    if isinstance(ord, bool) or ord not in _ORDS:
        raise ValueError(f"{fn}: ord must be 2 (spectral norm) or 'fro' (Frobenius), got {ord!r}")


def _reduce(fn: str, norms: Tensor, reduction: str) -> Tensor:
    """`(batch, seq_len)` -> itself, or its mean or max over the batch, `(seq_len,)`."""
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    if reduction == "mean":
        return norms.mean(dim=0)
    if reduction == "max":
        return norms.amax(dim=0)
    return norms


@contextlib.contextmanager
def _torch_backend(model: Any) -> Iterator[None]:
    """Run the model on its `"torch"` backend for the duration of the block, then restore it."""
    backend = getattr(model, "backend", "torch")
    if backend == "torch" or "torch" not in getattr(model, "backends", ()):
        yield
        return
    model.backend = "torch"
    try:
        yield
    finally:
        model.backend = backend


def _field_indices(fn: str, state: Any, field: str | None) -> list[int]:
    """Positions of the selected fields in a state tuple (all of them when `field` is None)."""
    if isinstance(state, Tensor):
        if field is not None:
            raise ValueError(f"{fn}: the state is a single tensor, it has no field {field!r}")
        return [0]
    if not isinstance(state, tuple):
        raise TypeError(f"{fn}: a state must be a (named) tuple of tensors, got {type(state).__name__}")
    if field is None:
        return list(range(len(state)))
    names = getattr(state, "_fields", ())
    if field not in names:
        raise ValueError(
            f"{fn}: unknown state field {field!r}; {type(state).__name__} has fields {list(names)}"
        )
    return [names.index(field)]


def _fields(state: Any) -> list[Tensor]:
    return [state] if isinstance(state, Tensor) else list(state)


def _rebuild(state: Any, tensors: list[Tensor]) -> Any:
    if isinstance(state, Tensor):
        return tensors[0]
    return type(state)(*tensors) if hasattr(state, "_fields") else type(state)(tensors)


def _flat(tensors: list[Tensor], batch: int) -> Tensor:
    """Concatenate tensors whose first axis is the batch into `(batch, D)`."""
    return torch.cat([t.reshape(batch, -1) for t in tensors], dim=-1)


def _readout(size: int, like: Tensor) -> Tensor:
    """The fixed unit direction of the default loss: N(0, I) drawn from seed 0, normalised."""
    v = torch.randn(size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (v / torch.linalg.vector_norm(v)).to(dtype=like.dtype, device=like.device)


def _default_loss(y: Tensor) -> Tensor:
    """`L = sum_b <v, y[b, T-1]>`: the last output read out along the fixed direction `v`."""
    return (y[:, -1] * _readout(y.shape[-1], y)).sum()


def _jacobian_rows(out: Tensor, inputs: list[Tensor]) -> list[Tensor]:
    """Per-sample Jacobians of `out (B, D_out)` with respect to each of `inputs` (each `(B, ...)`).

    One backward pass per output coordinate; rows of different samples come from the same pass
    because the samples are independent. Returns one `(B, D_out, D_in_k)` tensor per input.
    """
    B, D = out.shape
    jac = [out.new_zeros(B, D, z[0].numel()) for z in inputs]
    live = [k for k, z in enumerate(inputs) if z.requires_grad]
    for j in range(D):
        if not out.requires_grad:
            break
        grads = torch.autograd.grad(
            out[:, j].sum(), [inputs[k] for k in live], retain_graph=True, allow_unused=True
        )
        for k, g in zip(live, grads, strict=True):
            if g is not None:
                jac[k][:, j] = g.reshape(B, -1)
    return jac


def distances(seq_len: int) -> Tensor:
    """The distance to the last step of every time index: `seq_len - 1 - t` for `t = 0 .. seq_len - 1`.

    Args:
        seq_len: number of time steps `T`, positive.

    Returns:
        `(seq_len,)` int64 tensor `[T - 1, T - 2, ..., 0]`, aligned with the time axis of every
        `(batch, seq_len)` result of this module.

    Raises:
        ValueError: if `seq_len` is not a positive int.
    """
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ValueError(f"distances: seq_len must be a positive int, got {seq_len!r}")
    return torch.arange(seq_len - 1, -1, -1)


# ------------------------------------------------------------------------------------- gradient norms
def hidden_grad_norms(
    model: SequenceModel,
    x: Tensor,
    loss_fn: LossFn | None = None,
    state: Any | None = None,
    *,
    field: str | None = None,
    layer: int = 0,
    reduction: str = "none",
) -> Tensor:
    r"""The gradient norm $\|\partial L / \partial h_t\|_2$ of a loss with respect to every hidden state.

    This is the "error flow" of Hochreiter & Schmidhuber (1997, sec. 3): the backpropagated signal
    $\delta_t$ that reaches step `t`, the total derivative along every path from $h_t$ to the loss.
    What $h_t$ is depends on the family:

    - **Recurrent models** (RNN, LSTM, GRU, SSM, and any `SequenceModel` with a fixed-size state): the
      state returned by `step` at step `t`, with the model run step by step so every state is a node of
      the graph. `field` picks one field of the state (`"h"` or `"c"` for the LSTM, `"conv"` or `"ssm"`
      for the SSM); by default all fields are concatenated, so for the LSTM the norm is
      $\sqrt{\|\delta h_t\|^2 + \|\delta c_t\|^2}$, with $\delta c_t$ the total derivative (including
      the path through $h_t = o_t \odot \tanh(c_t)$), as in BPTT.
    - **CausalTransformer**: the residual stream at position `t` entering block `layer` (`layer=0`: the
      input $x_t$ itself; `layer=n_layers`: the output of the last block, before the final LayerNorm),
      from one parallel `forward`.

    Args:
        model: any `SequenceModel`.
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        loss_fn: maps the outputs `y` `(batch, seq_len, output_size)` to a scalar loss. Default: the
            last output read out along a fixed random unit direction $v$ (drawn once from seed 0, the
            same on every call), $L = \sum_b \langle v, y_{b,T-1} \rangle$; not the plain sum
            `y[:, -1].sum()`, which a final LayerNorm makes constant (its outputs sum to a fixed
            value), so its gradient would vanish. A loss that sums over the batch keeps each
            sequence's norm its own; a mean over the batch scales them by `1 / batch`.
        state: the state to start from, or `None` for `model.initial_state(batch)`.
        field: for recurrent models, the name of one state field to measure; `None` for all.
        layer: for the transformer, which residual stream to measure, `0 .. n_layers`.
        reduction: `"none"`, or `"mean"` / `"max"` over the batch.

    Returns:
        `(batch, seq_len)` (or `(seq_len,)` once reduced) detached tensor: entry `[b, t]` is
        $\|\partial L / \partial h_t\|_2$ for sequence `b`, in units of the loss per unit of state.

    Raises:
        TypeError: if `model` is not a `SequenceModel`, `x` is not a floating tensor, or `loss_fn`
            does not return a scalar tensor.
        ValueError: for a badly shaped `x`, an unknown `field` or `reduction`, or `layer` out of range.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Long short-term memory. Neural Computation 9(8),
        sec. 3 (error flow). Pascanu, R., Mikolov, T. & Bengio, Y. (2013). On the difficulty of
        training recurrent neural networks. ICML, eq. 5.

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import hidden_grad_norms
        >>> rnn = seqmem.RNN(3, 8)
        >>> hidden_grad_norms(rnn, torch.randn(2, 10, 3)).shape
        torch.Size([2, 10])
    """
    fn = "hidden_grad_norms"
    _check_model(fn, model)
    _check_x(fn, model, x)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    loss_fn = _default_loss if loss_fn is None else loss_fn
    B, T, _ = x.shape
    x = x.detach().requires_grad_(True)
    with _torch_backend(model):
        if isinstance(model, CausalTransformer):
            if field is not None:
                raise ValueError(f"{fn}: the transformer has no state fields to pick; use layer=, not field=")
            norms = _transformer_stream_grad_norms(model, x, loss_fn, state, layer)
        else:
            norms = _step_state_grad_norms(model, x, loss_fn, state, field)
    return _reduce(fn, norms, reduction)


def _scalar_loss(fn: str, loss: Any) -> Tensor:
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TypeError(f"{fn}: loss_fn must return a scalar tensor, got {shape}")
    return loss.reshape(())


def _step_state_grad_norms(model: Any, x: Tensor, loss_fn: LossFn, state: Any, field: str | None) -> Tensor:
    fn = "hidden_grad_norms"
    B, T, _ = x.shape
    if state is None:
        state = model.initial_state(B, device=x.device, dtype=x.dtype)
    idx = _field_indices(fn, state, field)
    ys, nodes = [], []
    for t in range(T):
        y_t, state = model.step(x[:, t], state)
        ys.append(y_t)
        nodes.append([_fields(state)[k] for k in idx])
    loss = _scalar_loss(fn, loss_fn(torch.stack(ys, dim=1)))  # y: (B, T, O)
    flat = [z for step in nodes for z in step]
    wanted = [k for k, z in enumerate(flat) if z.requires_grad]
    grads: list[Tensor | None] = [None] * len(flat)
    if loss.requires_grad and wanted:
        got = torch.autograd.grad(loss, [flat[k] for k in wanted], allow_unused=True)
        for k, g in zip(wanted, got, strict=True):
            grads[k] = g
    per_step = len(idx)
    norms = x.new_zeros(B, T)
    for t in range(T):
        here = slice(t * per_step, (t + 1) * per_step)
        parts = [
            (g if g is not None else torch.zeros_like(z)).reshape(B, -1)
            for z, g in zip(flat[here], grads[here], strict=True)
        ]
        norms[:, t] = torch.linalg.vector_norm(torch.cat(parts, dim=-1), dim=-1)
    return norms.detach()


def _transformer_stream_grad_norms(
    model: CausalTransformer, x: Tensor, loss_fn: LossFn, state: Any, layer: int
) -> Tensor:
    fn = "hidden_grad_norms"
    L = model.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= L:
        raise ValueError(f"{fn}: layer must be an int in 0 .. n_layers={L}, got {layer!r}")
    target = model.blocks[layer] if layer < L else model.norm_out
    captured: list[Tensor] = []
    handle = target.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        y, _ = model(x, state)
    finally:
        handle.remove()
    stream = captured[0]  # (B, T, C)
    loss = _scalar_loss(fn, loss_fn(y))
    if not loss.requires_grad:
        return x.new_zeros(x.shape[:2])
    (g,) = torch.autograd.grad(loss, stream, allow_unused=True)
    if g is None:
        return x.new_zeros(x.shape[:2])
    return torch.linalg.vector_norm(g, dim=-1).detach()  # (B, T)


def jacobian_norms(
    model: SequenceModel,
    x: Tensor,
    state: Any | None = None,
    ord: Ord = 2,
    *,
    field: str | None = None,
    reduction: str = "none",
) -> Tensor:
    r"""The norm of the state-to-state Jacobian $\|\partial h_{T-1} / \partial h_t\|$ for every step `t`.

    The factor by which BPTT scales a perturbation of the state at step `t` by the time it reaches
    the last state (Pascanu et al. 2013, eq. 5-7): for the Elman RNN it is the product
    $\prod_{s=t+1}^{T-1} \mathrm{diag}(\phi'(a_s)) W_{hh}$, bounded by
    $(\gamma \|W_{hh}\|_2)^{T-1-t}$ (see `rnn_jacobian_bound`). Computed exactly by autograd through
    the step form: the model runs `step` by step, a zero perturbation $z_t$ is added to the selected
    state fields after every step, and one backward pass per coordinate of the last state gives the
    rows of every $\partial h_{T-1} / \partial z_t$ at once. Cost: $D$ backward passes through the
    `seq_len`-step graph, $D$ the size of the measured state per sequence.

    Which state is measured, with `field`:

    - RNN, GRU: `h` (the only field).
    - LSTM: `None` (default) the whole state $(h, c)$, a $2H \times 2H$ Jacobian; `"h"` the block
      $\partial h_{T-1}/\partial h_t$ (with $c_t$ held fixed); `"c"` the block
      $\partial c_{T-1}/\partial c_t$ through the full dynamics (gates depending on $h$ included;
      `cell_path_jacobian` cuts those and keeps the cell path alone).
    - Any model whose state keeps a fixed shape (the SSM too, though its state is large).

    Args:
        model: a `SequenceModel` with a fixed-size state (not the transformer's growing KV cache).
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        state: the state to start from, or `None` for `model.initial_state(batch)`.
        ord: `2` for the spectral norm (largest singular value), `"fro"` for the Frobenius norm.
        field: the state field to measure (in and out), or `None` for all of them.
        reduction: `"none"`, or `"mean"` / `"max"` over the batch.

    Returns:
        `(batch, seq_len)` (or `(seq_len,)` once reduced) detached tensor: entry `[b, t]` is the norm
        for sequence `b` at distance `seq_len - 1 - t`; the last entry (distance 0) is the norm of the
        identity (1 for `ord=2`, $\sqrt{D}$ for `"fro"`). Dimensionless.

    Raises:
        TypeError: if `model` is not a `SequenceModel` or `x` is not a floating tensor.
        ValueError: for a badly shaped `x`, an unknown `ord`, `field` or `reduction`, or a model whose
            state changes shape from step to step (the transformer: use `attention_grad_by_distance`).

    References:
        Pascanu, R., Mikolov, T. & Bengio, Y. (2013). On the difficulty of training recurrent neural
        networks. ICML, sec. 2.1, eq. 5-7. Bengio, Y., Simard, P. & Frasconi, P. (1994). IEEE Trans.
        Neural Networks 5(2).

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import jacobian_norms
        >>> lstm = seqmem.LSTM(3, 4)
        >>> jacobian_norms(lstm, torch.randn(2, 6, 3), field="c").shape
        torch.Size([2, 6])
    """
    fn = "jacobian_norms"
    _check_model(fn, model)
    _check_x(fn, model, x)
    _check_ord(fn, ord)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    if isinstance(model, CausalTransformer):
        raise ValueError(
            f"{fn}: the CausalTransformer's state (its KV cache) grows with every step, so there is no "
            f"state-to-state Jacobian; use attention_grad_by_distance(model, x) instead"
        )
    B, T, _ = x.shape
    x = x.detach()
    with _torch_backend(model):
        if state is None:
            state = model.initial_state(B, device=x.device, dtype=x.dtype)
        idx = _field_indices(fn, state, field)
        shapes = [t.shape for t in _fields(state)]
        probes: list[list[Tensor]] = []
        for t in range(T):
            _, state = model.step(x[:, t], state)
            tensors = _fields(state)
            if [s.shape for s in tensors] != shapes:
                raise ValueError(
                    f"{_name(fn, model)}: the state changed shape at step {t} (from "
                    f"{[tuple(s) for s in shapes]} to {[tuple(s.shape) for s in tensors]}); "
                    f"a state-to-state Jacobian needs a fixed-size state"
                )
            zs = [torch.zeros_like(tensors[k], requires_grad=True) for k in idx]
            for k, z in zip(idx, zs, strict=True):
                tensors[k] = tensors[k] + z  # h_t + z_t: d(anything)/dz_t = d(anything)/dh_t
            state = _rebuild(state, tensors)
            probes.append(zs)
        out = _flat([_fields(state)[k] for k in idx], B)  # (B, D): the last state
        rows = _jacobian_rows(out, [z for zs in probes for z in zs])  # per probe (B, D, D_k)
    F = len(idx)
    norms = x.new_zeros(B, T)
    for t in range(T):
        J = torch.cat(rows[t * F : (t + 1) * F], dim=-1)  # (B, D, D)
        norms[:, t] = torch.linalg.matrix_norm(J, ord=ord)
    return _reduce(fn, norms.detach(), reduction)


def input_jacobian_norms(
    model: SequenceModel,
    x: Tensor,
    state: Any | None = None,
    ord: Ord = 2,
    *,
    reduction: str = "none",
) -> Tensor:
    r"""The norm of $\partial y_{T-1} / \partial x_t$: how strongly the last output depends on each input.

    Works on every family alike (one parallel `forward`, one backward pass per output coordinate), which
    makes it the common yardstick for the memory contrast: for a contracting Elman RNN it decays
    geometrically with the distance `seq_len - 1 - t`, for causal attention it need not decay at all
    (see `attention_grad_by_distance`).

    Args:
        model: any `SequenceModel`.
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        state: the state to start from, or `None` for `model.initial_state(batch)`.
        ord: `2` (spectral norm) or `"fro"` (Frobenius) of the `(output_size, input_size)` Jacobian.
        reduction: `"none"`, or `"mean"` / `"max"` over the batch.

    Returns:
        `(batch, seq_len)` (or `(seq_len,)` once reduced) detached tensor; entry `[b, t]` is at
        distance `seq_len - 1 - t`. In units of output per unit of input.

    Raises:
        TypeError: if `model` is not a `SequenceModel` or `x` is not a floating tensor.
        ValueError: for a badly shaped `x`, or an unknown `ord` or `reduction`.

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import input_jacobian_norms
        >>> input_jacobian_norms(seqmem.GRU(3, 5), torch.randn(2, 7, 3), reduction="mean").shape
        torch.Size([7])
    """
    fn = "input_jacobian_norms"
    _check_model(fn, model)
    _check_x(fn, model, x)
    _check_ord(fn, ord)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    return _reduce(fn, _input_jacobian_norms(model, x, state, ord), reduction)


def _input_jacobian_norms(model: Any, x: Tensor, state: Any, ord: Ord) -> Tensor:
    B, T, I = x.shape
    x = x.detach().requires_grad_(True)
    with _torch_backend(model):
        y, _ = model(x, state)  # (B, T, O)
        (J,) = _jacobian_rows(y[:, -1], [x])  # (B, O, T * I)
    J = J.reshape(B, -1, T, I).transpose(1, 2)  # (B, T, O, I)
    return torch.linalg.matrix_norm(J, ord=ord).detach()  # (B, T)


def attention_grad_by_distance(
    transformer: CausalTransformer,
    x: Tensor,
    state: Any | None = None,
    ord: Ord = 2,
    *,
    reduction: str = "none",
) -> Tensor:
    r"""How much gradient reaches each position of a causal transformer from its last output.

    $\|\partial y_{T-1} / \partial x_t\|$ for every `t`, computed as `input_jacobian_norms`. Attention
    connects the last query to every key directly, through one softmax per layer, so no product of
    per-step Jacobians stands between position `t` and the output: the norm need not shrink with the
    distance, where an Elman RNN with $\gamma \|W_{hh}\|_2 < 1$ loses a factor at every step. (The
    price is the $O(t)$ state, see `seqmem.KVCache`.)

    Args:
        transformer: a `seqmem.CausalTransformer`.
        x: `(batch, seq_len, d_model)` input, of the model's dtype and device.
        state: a `KVCache` to continue from, or `None` for an empty one.
        ord: `2` (spectral norm) or `"fro"` (Frobenius) of the `(d_model, d_model)` Jacobian.
        reduction: `"none"`, or `"mean"` / `"max"` over the batch.

    Returns:
        `(batch, seq_len)` (or `(seq_len,)` once reduced) detached tensor; entry `[b, t]` is at
        distance `seq_len - 1 - t` (distance 0 includes the residual path of the last position itself).

    Raises:
        TypeError: if `transformer` is not a `CausalTransformer` or `x` is not a floating tensor.
        ValueError: for a badly shaped `x`, or an unknown `ord` or `reduction`.

    References:
        Vaswani, A. et al. (2017). Attention is all you need. NeurIPS (sec. 4, path length between
        positions: $O(1)$ for self-attention, $O(n)$ for recurrence).

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import attention_grad_by_distance
        >>> model = seqmem.CausalTransformer(d_model=8, n_heads=2, n_layers=1)
        >>> attention_grad_by_distance(model, torch.randn(1, 12, 8)).shape
        torch.Size([1, 12])
    """
    fn = "attention_grad_by_distance"
    if not isinstance(transformer, CausalTransformer):
        raise TypeError(
            f"{fn}: expects a seqmem.CausalTransformer, got {type(transformer).__name__}; "
            f"input_jacobian_norms measures the same quantity on any model"
        )
    _check_x(fn, transformer, x)
    _check_ord(fn, ord)
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {list(_REDUCTIONS)}, got {reduction!r}")
    return _reduce(fn, _input_jacobian_norms(transformer, x, state, ord), reduction)


# ------------------------------------------------------------------------------- the recurrent matrix
def _square(fn: str, matrix: Tensor) -> Tensor:
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{fn}: expected a non-empty square matrix (n, n), got shape {tuple(matrix.shape)}")
    return matrix.detach().to(device="cpu", dtype=torch.float64)


def _gate_blocks(fn: str, model: Any) -> dict[str, Tensor]:
    names = getattr(model, "gate_names", None)  # RNN ("h",), LSTM ("i", "f", "g", "o"), GRU ("r", "z", "n")
    if names is None or not isinstance(getattr(model, "weight_hh", None), Tensor):
        raise TypeError(
            f"{fn}: expects a square matrix or a seqmem RNN, LSTM or GRU (a model with a recurrent matrix "
            f"weight_hh), got {type(model).__name__}"
        )
    blocks = model.weight_hh.chunk(len(names), dim=0)  # each (H, H)
    return dict(zip(names, blocks, strict=True))


@overload
def spectral_radius(matrix_or_model: Tensor) -> float: ...
@overload
def spectral_radius(matrix_or_model: nn.Module) -> dict[str, float]: ...
def spectral_radius(matrix_or_model: Tensor | nn.Module) -> float | dict[str, float]:
    r"""The spectral radius $\rho(W) = \max_k |\lambda_k(W)|$ of a square matrix, or of a model's
    recurrent blocks.

    With $\rho(W_{hh}) < 1/\gamma$ ($\gamma = \max|\phi'|$, 1 for tanh) the Elman RNN's gradient
    vanishes for long sequences; $\rho > 1/\gamma$ is necessary (not sufficient) for it to explode
    (Pascanu et al. 2013, sec. 2.1). $\rho(W) \le \|W\|_2$ always (`spectral_norm`); they are equal
    for normal matrices (symmetric, orthogonal).

    For a gated model `weight_hh` stacks one $H \times H$ block per gate, $W_{hk}$ in `torch.nn`
    order; each block has its own radius, returned by gate name: `"h"` for the RNN ($W_{hh}$),
    `"i", "f", "g", "o"` for the LSTM, `"r", "z", "n"` for the GRU.

    Args:
        matrix_or_model: a square `(n, n)` tensor, or a `seqmem.RNN`, `LSTM` or `GRU`.

    Returns:
        A `float` for a matrix; for a model a `dict` from gate name to `float`. Computed on the CPU in float64.

    Raises:
        ValueError: if the matrix is not square, or not 2-D.
        TypeError: if the model has no recurrent matrix (transformer, SSM) or the argument is neither.

    References:
        Bengio, Y., Simard, P. & Frasconi, P. (1994). IEEE Trans. Neural Networks 5(2).
        Pascanu, R., Mikolov, T. & Bengio, Y. (2013). ICML, sec. 2.1.

    Example:
        >>> import torch
        >>> from seqmem.diagnostics import spectral_radius
        >>> spectral_radius(torch.tensor([[0.0, 2.0], [0.0, 0.5]]))
        0.5
    """
    fn = "spectral_radius"
    if isinstance(matrix_or_model, Tensor):
        return float(torch.linalg.eigvals(_square(fn, matrix_or_model)).abs().max())
    return {k: spectral_radius(w) for k, w in _gate_blocks(fn, matrix_or_model).items()}


@overload
def spectral_norm(matrix_or_model: Tensor) -> float: ...
@overload
def spectral_norm(matrix_or_model: nn.Module) -> dict[str, float]: ...
def spectral_norm(matrix_or_model: Tensor | nn.Module) -> float | dict[str, float]:
    r"""The spectral norm $\|W\|_2 = \sigma_{\max}(W)$ of a square matrix, or of a model's recurrent blocks.

    The norm, not the radius, enters the Jacobian bound $(\gamma \|W_{hh}\|_2)^{T-t}$
    (Pascanu et al. 2013, eq. 7 and after): $\|W\|_2 < 1/\gamma$ is sufficient for vanishing gradients.

    Args:
        matrix_or_model: a square `(n, n)` tensor, or a `seqmem.RNN`, `LSTM` or `GRU`.

    Returns:
        A `float` for a matrix; for a model a `dict` from gate name to `float`, keyed as in
        `spectral_radius`. Computed on the CPU in float64.

    Raises:
        ValueError: if the matrix is not square, or not 2-D.
        TypeError: if the model has no recurrent matrix (transformer, SSM) or the argument is neither.

    Example:
        >>> import torch
        >>> from seqmem.diagnostics import spectral_norm
        >>> spectral_norm(torch.tensor([[0.0, 2.0], [0.0, 0.5]]))  # radius 0.5, norm > 2
        2.0615528128088303
    """
    fn = "spectral_norm"
    if isinstance(matrix_or_model, Tensor):
        return float(torch.linalg.matrix_norm(_square(fn, matrix_or_model), ord=2))
    return {k: spectral_norm(w) for k, w in _gate_blocks(fn, matrix_or_model).items()}


def rnn_jacobian_bound(rnn: RNN, seq_len: int, gamma: float = 1.0) -> Tensor:
    r"""The bound $(\gamma \|W_{hh}\|_2)^{T-1-t}$ on the Elman RNN's $\|\partial h_{T-1}/\partial h_t\|_2$.

    Each step contributes the factor $\mathrm{diag}(\phi'(a_s)) W_{hh}$, whose spectral norm is at most
    $\gamma \|W_{hh}\|_2$ with $\gamma \ge \max|\phi'|$: 1 for tanh and ReLU, or the largest
    $\phi'$ actually observed along a run for a tighter bound. Aligned with `jacobian_norms`.

    Args:
        rnn: a `seqmem.RNN`.
        seq_len: number of steps `T`, positive.
        gamma: a bound on $|\phi'|$, non-negative.

    Returns:
        `(seq_len,)` float64 tensor; entry `t` is the bound at distance `seq_len - 1 - t`.

    Raises:
        TypeError: if `rnn` is not a `seqmem.RNN`.
        ValueError: if `seq_len` is not a positive int or `gamma` is negative.

    References:
        Pascanu, R., Mikolov, T. & Bengio, Y. (2013). ICML, sec. 2.1, eq. 5-7.
    """
    fn = "rnn_jacobian_bound"
    if not isinstance(rnn, RNN):
        raise TypeError(f"{fn}: expects a seqmem.RNN, got {type(rnn).__name__}")
    if not (isinstance(gamma, (int, float)) and gamma >= 0 and math.isfinite(gamma)):
        raise ValueError(f"{fn}: gamma must be a finite non-negative number, got {gamma!r}")
    d = distances(seq_len).to(torch.float64)
    return torch.as_tensor(gamma * spectral_norm(rnn.weight_hh), dtype=torch.float64) ** d


# -------------------------------------------------------------------------------- the LSTM cell path
def _check_lstm(fn: str, lstm: Any) -> None:
    if not isinstance(lstm, LSTM):
        raise TypeError(f"{fn}: expects a seqmem.LSTM, got {type(lstm).__name__}")


def _reverse_products(gate: Tensor) -> Tensor:
    """`(B, T, H)` gate -> entry t = gate_{t+1} * ... * gate_{T-1} (an empty product, 1, at the last step)."""
    later = torch.cat([gate[:, 1:], torch.ones_like(gate[:, :1])], dim=1)  # gate_{t+1}, with gate_T := 1
    return torch.flip(torch.cumprod(torch.flip(later, dims=[1]), dim=1), dims=[1])


def forget_gate_products(lstm: LSTM, x: Tensor, state: Any | None = None) -> Tensor:
    r"""The running products of the forget gates, $\prod_{s=t+1}^{T-1} f_s$: the cell path's gain.

    Along the additive cell path $c_s = f_s \odot c_{s-1} + i_s \odot g_s$ the Jacobian of one step is
    $\mathrm{diag}(f_s)$ (gates held fixed), so an error on $c_{T-1}$ reaches $c_t$ scaled unit by unit
    by this product: the constant error carousel of Hochreiter & Schmidhuber (1997) has $f \equiv 1$;
    the forget gate of Gers et al. (2000) lets the cell decay on purpose. Gates from `LSTM.gates`.

    Args:
        lstm: a `seqmem.LSTM` (with or without peepholes).
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        state: the `LSTMState` to start from, or `None` for zeros.

    Returns:
        `(batch, seq_len, hidden_size)` detached tensor in $[0, 1]$; entry `[b, t, j]` is
        $\prod_{s=t+1}^{T-1} f_{s,j}$ (an empty product, 1, at `t = seq_len - 1`), i.e. the diagonal of
        `cell_path_jacobian(lstm, x)[b, t]`.

    Raises:
        TypeError: if `lstm` is not a `seqmem.LSTM`, or as `LSTM.forward`.
        ValueError: as `LSTM.forward`.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Neural Computation 9(8), sec. 3.2 (constant error
        carousel). Gers, F. A., Schmidhuber, J. & Cummins, F. (2000). Neural Computation 12(10).

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import forget_gate_products
        >>> p = forget_gate_products(seqmem.LSTM(3, 4), torch.randn(2, 6, 3))
        >>> p.shape, bool((p[:, -1] == 1).all())
        (torch.Size([2, 6, 4]), True)
    """
    fn = "forget_gate_products"
    _check_lstm(fn, lstm)
    with torch.no_grad():
        return _reverse_products(lstm.gates(x, state).f)  # (B, T, H)


def update_gate_products(gru: GRU, x: Tensor, state: Any | None = None) -> Tensor:
    r"""The running products of a GRU's update gates, $\prod_{s=t+1}^{T-1} z_s$: its direct path's gain.

    In `torch.nn.GRU`'s convention $h_s = (1 - z_s) \odot n_s + z_s \odot h_{s-1}$, so with the gates
    and the candidate held fixed the step Jacobian is $\mathrm{diag}(z_s)$: $z$ is the keep gate and
    plays the LSTM forget gate's part (`forget_gate_products`); the full
    $\partial h_s / \partial h_{s-1}$ adds the paths through $r_s$, $z_s$ and $n_s$. Chrono
    initialisation (`GRU(update_init="chrono")`) starts this product near 1 over up to
    `chrono_t_max` steps. Gates from `GRU.gates`.

    Args:
        gru: a `seqmem.GRU` (either reset convention).
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        state: the `GRUState` to start from, or `None` for zeros.

    Returns:
        `(batch, seq_len, hidden_size)` detached tensor in $[0, 1]$; entry `[b, t, j]` is
        $\prod_{s=t+1}^{T-1} z_{s,j}$ (1 at `t = seq_len - 1`).

    Raises:
        TypeError: if `gru` is not a `seqmem.GRU`, or as `GRU.forward`.
        ValueError: as `GRU.forward`.

    References:
        Tallec, C. & Ollivier, Y. (2018). Can recurrent neural networks warp time? ICLR, sec. 4.

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import update_gate_products
        >>> p = update_gate_products(seqmem.GRU(3, 4), torch.randn(2, 6, 3))
        >>> p.shape, bool((p[:, -1] == 1).all())
        (torch.Size([2, 6, 4]), True)
    """
    if not isinstance(gru, GRU):
        raise TypeError(f"update_gate_products: expects a seqmem.GRU, got {type(gru).__name__}")
    with torch.no_grad():
        return _reverse_products(gru.gates(x, state).z)  # (B, T, H)


def cell_path_jacobian(lstm: LSTM, x: Tensor, state: Any | None = None) -> Tensor:
    r"""The LSTM's cell-path Jacobian $\partial c_{T-1} / \partial c_t$ with the gates held fixed.

    Recomputes the cell recurrence $c_s = f_s \odot c_{s-1} + i_s \odot g_s$ from the model's own gate
    activations (`LSTM.gates`), detached: their dependence on $h$ (and on $c$, for peepholes) is cut,
    leaving the additive path alone. The Jacobian is then taken by autograd, one backward pass per
    unit, without assuming its form; it equals $\mathrm{diag}(\prod_{s=t+1}^{T-1} f_s)$, the diagonal
    `forget_gate_products` returns. The full $\partial c_{T-1}/\partial c_t$ through the whole
    dynamics is `jacobian_norms(lstm, x, field="c")`.

    Args:
        lstm: a `seqmem.LSTM` (with or without peepholes).
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        state: the `LSTMState` to start from, or `None` for zeros.

    Returns:
        `(batch, seq_len, hidden_size, hidden_size)` detached tensor; `[b, t]` is the Jacobian of
        $c_{T-1}$ (rows) with respect to $c_t$ (columns) for sequence `b`, at distance `seq_len - 1 - t`.

    Raises:
        TypeError: if `lstm` is not a `seqmem.LSTM`, or as `LSTM.forward`.
        ValueError: as `LSTM.forward`.

    References:
        Hochreiter, S. & Schmidhuber, J. (1997). Neural Computation 9(8), sec. 3.2 and 4.
        Gers, F. A., Schmidhuber, J. & Cummins, F. (2000). Neural Computation 12(10).

    Example:
        >>> import torch, seqmem
        >>> from seqmem.diagnostics import cell_path_jacobian
        >>> cell_path_jacobian(seqmem.LSTM(3, 4), torch.randn(2, 6, 3)).shape
        torch.Size([2, 6, 4, 4])
    """
    fn = "cell_path_jacobian"
    _check_lstm(fn, lstm)
    gates = lstm.gates(x, state)  # validates x and state
    i, f, g = gates.i.detach(), gates.f.detach(), gates.g.detach()  # (B, T, H) each
    B, T, H = f.shape
    c = (state.c if state is not None else f.new_zeros(B, H)).detach()
    probes = []
    for t in range(T):
        c = f[:, t] * c + i[:, t] * g[:, t]
        z = torch.zeros_like(c, requires_grad=True)
        c = c + z  # d c_{T-1} / d z_t = d c_{T-1} / d c_t
        probes.append(z)
    rows = _jacobian_rows(c, probes)  # T tensors (B, H, H)
    return torch.stack(rows, dim=1).detach()  # (B, T, H, H)


# ------------------------------------------------------------------------------------------ clipping
def global_grad_norm(parameters: Tensor | Iterable[Tensor], norm_type: float = 2.0) -> float:
    r"""The global norm of the gradients, $\|(\nabla_{\theta_1}, \nabla_{\theta_2}, \dots)\|$, as one vector.

    The quantity `torch.nn.utils.clip_grad_norm_` measures and bounds: gradient norm clipping
    (Pascanu et al. 2013, Algorithm 1) rescales every gradient by $\min(1, \tau / \|g\|)$, so after it
    this norm is at most $\tau$, and a plain SGD step with learning rate $\eta$ moves the parameters
    by at most $\eta \tau$. (Adam's step is invariant to the gradient's scale, so clipping does not
    bound it the same way.) Parameters without a gradient are skipped.

    Args:
        parameters: a tensor or an iterable of tensors (e.g. `model.parameters()`) whose `.grad` to
            measure.
        norm_type: the $p$ of the $p$-norm, positive, or `inf`.

    Returns:
        The norm as a `float` (0.0 when no parameter has a gradient).

    Raises:
        ValueError: if `norm_type` is not positive.

    References:
        Pascanu, R., Mikolov, T. & Bengio, Y. (2013). ICML, sec. 3.2, Algorithm 1.

    Example:
        >>> import torch
        >>> from seqmem.diagnostics import global_grad_norm
        >>> w = torch.nn.Parameter(torch.zeros(2)); w.grad = torch.tensor([3.0, 4.0])
        >>> global_grad_norm([w])
        5.0
    """
    if not (float(norm_type) > 0):
        raise ValueError(f"global_grad_norm: norm_type must be positive, got {norm_type!r}")
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    grads = [p.grad.detach().reshape(-1) for p in params if p.grad is not None]
    if not grads:
        return 0.0
    return float(torch.linalg.vector_norm(torch.cat([g.to(torch.float64) for g in grads]), ord=norm_type))


# ------------------------------------------------------------------------------------------- report
def _curve(t: Tensor) -> list[float]:
    return [float(v) for v in t.reshape(-1)]


def gradflow_report(
    model: SequenceModel, x: Tensor, state: Any | None = None, *, ord: Ord = 2
) -> dict[str, Any]:
    r"""Every applicable measurement of this module for one model and one batch, as a JSON-ready dict.

    The curves are means over the batch, aligned with `distance` (`seq_len - 1 - t`). Which keys are
    present depends on the family:

    | key | models | what |
    | --- | --- | --- |
    | `model`, `seq_len`, `batch_size`, `distance` | all | identification, and the distance of each entry |
    | `hidden_grad_norm` | all | `hidden_grad_norms` of the default loss (last output, read out) |
    | `input_jacobian_norm` | all | `input_jacobian_norms` |
    | `param_grad_norm` | all | `global_grad_norm` of the same loss over the parameters |
    | `jacobian_norm` | RNN, LSTM, GRU | `jacobian_norms` over the whole state |
    | `spectral_radius`, `spectral_norm` | RNN, LSTM, GRU | per gate block of `weight_hh` |
    | `jacobian_bound` | RNN | `rnn_jacobian_bound` with $\gamma = 1$ |
    | `cell_jacobian_norm` | LSTM | `jacobian_norms(field="c")`, $\partial c_{T-1}/\partial c_t$ in full |
    | `forget_gate_product` | LSTM | `forget_gate_products`, averaged over units too |
    | `update_gate_product` | GRU | `update_gate_products`, averaged over units too |

    Args:
        model: any `SequenceModel`.
        x: `(batch, seq_len, input_size)` input, of the model's dtype and device.
        state: the state to start from, or `None` for `model.initial_state(batch)`.
        ord: the matrix norm of the Jacobians, `2` or `"fro"`.

    Returns:
        A `dict` of strings, ints, floats, lists of floats and dicts of floats (`json.dumps` accepts it).

    Raises:
        TypeError, ValueError: as the measurements it runs.

    Example:
        >>> import json, torch, seqmem
        >>> from seqmem.diagnostics import gradflow_report
        >>> report = gradflow_report(seqmem.RNN(3, 8), torch.randn(4, 20, 3))
        >>> sorted(report)[:4], len(report["jacobian_norm"])
        (['batch_size', 'distance', 'hidden_grad_norm', 'input_jacobian_norm'], 20)
        >>> _ = json.dumps(report)
    """
    fn = "gradflow_report"
    _check_model(fn, model)
    _check_x(fn, model, x)
    _check_ord(fn, ord)
    B, T, _ = x.shape
    report: dict[str, Any] = {
        "model": type(model).__name__,
        "seq_len": T,
        "batch_size": B,
        "distance": [int(d) for d in distances(T)],
        "hidden_grad_norm": _curve(hidden_grad_norms(model, x, state=state, reduction="mean")),
        "input_jacobian_norm": _curve(input_jacobian_norms(model, x, state, ord, reduction="mean")),
    }
    params = [p for p in model.parameters() if p.requires_grad] if isinstance(model, nn.Module) else []
    with _torch_backend(model):
        loss = _default_loss(model(x.detach(), state)[0])
        grads = torch.autograd.grad(loss, params, allow_unused=True) if params and loss.requires_grad else []
    flat = [g.detach().reshape(-1).to(torch.float64) for g in grads if g is not None]
    report["param_grad_norm"] = float(torch.linalg.vector_norm(torch.cat(flat))) if flat else 0.0
    if hasattr(model, "gate_names"):  # a recurrent matrix weight_hh: RNN, LSTM, GRU
        report["jacobian_norm"] = _curve(jacobian_norms(model, x, state, ord, reduction="mean"))
        report["spectral_radius"] = spectral_radius(model)
        report["spectral_norm"] = spectral_norm(model)
    if isinstance(model, RNN):
        report["jacobian_bound"] = _curve(rnn_jacobian_bound(model, T))
    if isinstance(model, LSTM):
        cell = jacobian_norms(model, x, state, ord, field="c", reduction="mean")
        report["cell_jacobian_norm"] = _curve(cell)
        report["forget_gate_product"] = _curve(forget_gate_products(model, x, state).mean(dim=(0, 2)))
    if isinstance(model, GRU):
        report["update_gate_product"] = _curve(update_gate_products(model, x, state).mean(dim=(0, 2)))
    return report
