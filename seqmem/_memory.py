"""Memory estimates before work: will a forward pass or a training step of this size fit?

A sweep or a benchmark that asks for `seq_len=1_000_000` should hear at once that the run needs
44 GB, not find out inside the run. These functions estimate the peak bytes of one pass from the
sizes alone, and `check_fits` compares an estimate with the memory the machine has free.

An estimate adds up

- the parameters (and, for a training step, their gradients and the optimiser's state: 2 per
  parameter for Adam/AdamW),
- the inputs, `batch x seq_len` tokens or feature vectors,
- the activations: `itemsize x batch x positions x` the numbers held per position (and one copy of
  the weights, which kernels concatenate or transpose for a call). Each model says
  what it holds (`SequenceModule._activation_elements`: what its code keeps for the backward pass,
  and the most its own temporaries take), so layers add up what they keep and the largest
  temporary counts once; for a forward without gradient only the largest layer counts. The rest of
  a network (embedding, norms, head) holds its layers' outputs, and a training step's loss two more
  copies of the logits.

The numbers per position were derived from the code and checked against peaks measured with
`torch.profiler` (plus NumPy's allocations, traced with `tracemalloc`, for the Numba kernels'
buffers) for every model and backend, forward and training, at several batch sizes, lengths,
widths and depths. The peak a pass allocates lies between 0.63 and 1.00 times the estimate's
activations and gradients at batch 4-32, seq_len 256-1024, width 32-128 (every model and backend,
forward and training), and between 0.57 and 1.06 at the tiny sizes of `tests/test_memory.py`,
which checks 0.5-1.25.

A model name or a factory `make(width)` is estimated without allocating the network at its full
width: above width 256 it is built on PyTorch's meta device (shapes, no data), which is exact; a
constructor that cannot run there (one that reads its parameters' values) is built at three small
widths instead, and the parameter count and the activations, polynomials of degree at most 2 in the
width, are extrapolated (exactly, unless a size is rounded from the width). A built module is
measured directly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._module import SequenceModule

__all__ = [
    "MemoryEstimate",
    "available_memory_bytes",
    "check_fits",
    "estimate_forward_bytes",
    "estimate_train_bytes",
]

# torch.nn's fused recurrences (the bench baselines), per position and hidden unit: (forward, training),
# measured with torch.profiler (oneDNN keeps its gate workspace for the backward).
_TORCH_RECURRENCES = {"RNN_TANH": (1.0, 4.0), "RNN_RELU": (1.0, 4.0), "LSTM": (1.0, 18.5), "GRU": (1.0, 10.0)}

_DIRECT_WIDTH = 256
"""Widths up to this are estimated on the network itself; wider ones on the meta device (or extrapolated)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """The estimated peak bytes of one pass, by part.

    Attributes:
        what: the pass, in words (e.g. `"training step of lstm, batch 32, seq_len 1024, width 64"`).
        parameters: bytes of the parameters.
        gradients: bytes of their gradients (0 for a forward pass).
        optimizer: bytes of the optimiser's state (0 for a forward pass).
        inputs: bytes of the input batch.
        activations: bytes of what the pass holds at its peak.
    """

    what: str
    parameters: int
    gradients: int
    optimizer: int
    inputs: int
    activations: int

    @property
    def total(self) -> int:
        """All parts together: the bytes the pass needs."""
        return self.parameters + self.gradients + self.optimizer + self.inputs + self.activations

    def __str__(self) -> str:
        return f"{self.what}: {self.amount()}"

    def amount(self) -> str:
        """The total and its parts, in words: `"about 12.3 GiB (activations 12.1 GiB, ...)"`."""
        parts = ", ".join(
            f"{name} {format_bytes(getattr(self, name))}"
            for name in ("activations", "parameters", "gradients", "optimizer", "inputs")
            if getattr(self, name)
        )
        return f"about {format_bytes(self.total)} ({parts})"


def format_bytes(n: int | None) -> str:
    """`1536` -> `"1.5 KiB"`; `None` -> `"-"`."""
    if n is None:
        return "-"
    if n == 0:
        return "0 B"
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    k = min(int(math.log(max(n, 1), 1024)), len(units) - 1)
    return f"{n / 1024**k:.3g} {units[k]}"


# ---------------------------------------------------------------------------- one built module
def _leaf_outputs(module: nn.Module, inside: set[int]) -> tuple[float, float]:
    """Numbers per position output by the layers outside sequence models, and by the last of them."""
    total = last = 0.0
    for m in module.modules():
        if id(m) in inside or next(m.children(), None) is not None:
            continue
        if isinstance(m, nn.Linear):
            last = float(m.out_features)
        elif isinstance(m, nn.Embedding):
            last = float(m.embedding_dim)
        elif isinstance(m, nn.LayerNorm):
            last = float(math.prod(m.normalized_shape))
        else:
            continue
        total += last
    return total, last


def _layer_elements(m: nn.Module, train: bool, batch_size: int, seq_len: int, cached: int) -> tuple[float, float]:
    """`(kept, transient)` numbers per position of one sequence model (or torch.nn recurrence)."""
    if isinstance(m, nn.RNNBase):
        forward, training = _TORCH_RECURRENCES.get(m.mode, (1.0, 18.5))
        return (training if train else forward) * m.hidden_size, 0.0
    elements = m._activation_elements(train, batch_size, seq_len, cached)
    if elements is None:  # a model that does not say: all its layers' outputs, kept
        return _leaf_outputs(m, set())[0] * (2.0 if train else 1.0), 0.0
    return elements.kept, elements.transient


def _sequence_layers(module: nn.Module) -> list[nn.Module]:
    """The sequence models in `module` (seqmem's and torch.nn's recurrences), outermost only."""
    layers: list[nn.Module] = []
    inside: set[int] = set()
    for m in module.modules():  # parents come before their children
        if id(m) not in inside and isinstance(m, (SequenceModule, nn.RNNBase)):
            layers.append(m)
            inside.update(id(sub) for sub in m.modules())
    return layers


def _activations_per_position(module: nn.Module, train: bool, batch_size: int, seq_len: int, cached: int) -> float:
    """Numbers held at the peak of a pass, per (sequence, position)."""
    layers = _sequence_layers(module)
    outside, logits = _leaf_outputs(module, {id(sub) for m in layers for sub in m.modules()})
    sizes = [_layer_elements(m, train, batch_size, seq_len, cached) for m in layers]
    if train:  # layers keep their activations for the backward; the largest temporary counts once
        body = sum(k for k, _ in sizes) + max((t for _, t in sizes), default=0.0)
        return body + outside + 2 * logits  # the loss: log-softmax and the logits' gradient
    widest = max((k + t for k, t in sizes), default=0.0)
    return widest + outside


def _input_bytes(module: nn.Module, batch_size: int, seq_len: int, itemsize: int) -> int:
    embed = getattr(module, "embed", None)
    if isinstance(embed, nn.Embedding):
        return 2 * batch_size * seq_len * 8  # int64 tokens and targets
    size = getattr(module, "input_size", None)
    if not isinstance(size, int):
        first = next((m for m in module.modules() if isinstance(m, nn.Linear)), None)
        size = first.in_features if first is not None else 0
    return batch_size * seq_len * size * itemsize


def _parts(
    module: nn.Module, train: bool, batch_size: int, seq_len: int, cached: int, dtype: torch.dtype | None
) -> tuple[int, int, int]:
    """`(parameter bytes, input bytes, activation bytes)` of one pass of a built module."""
    ref = next(module.parameters(), None)
    dtype = dtype or (ref.dtype if ref is not None and ref.is_floating_point() else torch.get_default_dtype())
    itemsize = dtype.itemsize
    params = sum(p.numel() for p in module.parameters()) * itemsize
    per_position = _activations_per_position(module, train, batch_size, seq_len, cached)
    # plus one copy of the weights: kernels concatenate or transpose them for a call (the numba LSTM)
    activations = math.ceil(per_position * batch_size * seq_len * itemsize) + params
    return params, _input_bytes(module, batch_size, seq_len + cached, itemsize), activations


# ---------------------------------------------------------------------------- names and factories
def _factory(model: str | Callable[[int], nn.Module], kwargs: dict[str, Any]) -> tuple[Callable[[int], nn.Module], int]:
    """`make(width)` and the step of the widths it accepts."""
    if callable(model):
        return model, 64
    from .network import SequenceNetwork, width_multiple

    if "vocab_size" not in kwargs and "input_size" not in kwargs:
        kwargs = {**kwargs, "input_size": None}

    def make(width: int) -> nn.Module:
        args = dict(kwargs)
        if args.get("input_size", 0) is None:
            args["input_size"] = width
        args.setdefault("output_size", width)
        return SequenceNetwork(model, width, **args)

    return make, math.lcm(16, width_multiple(model, kwargs.get("n_heads")))


def _estimate(
    model: Any, train: bool, batch_size: int, seq_len: int, width: int | None, cached: int,
    dtype: torch.dtype | None, kwargs: dict[str, Any],
) -> tuple[int, int, int]:
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"seqmem memory estimate: {name} must be a positive int, got {value!r}")
    if isinstance(model, nn.Module):
        return _parts(model, train, batch_size, seq_len, cached, dtype)
    if not (isinstance(model, str) or callable(model)):
        raise TypeError(f"seqmem memory estimate: expects a model name, a module or make(width), got {model!r}")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"seqmem memory estimate: width must be a positive int, got {width!r}")
    make, step = _factory(model, kwargs)
    if isinstance(model, str):
        from .network import width_multiple

        multiple = width_multiple(model, kwargs.get("n_heads"))
        if width % multiple:
            raise ValueError(
                f"seqmem memory estimate: a {model} network needs a width divisible by {multiple}, got {width}"
            )
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep the caller's stream
        if width <= _DIRECT_WIDTH:
            return _parts(make(width), train, batch_size, seq_len, cached, dtype)
        try:  # exact, and nothing allocated: the network built at full width on the meta device
            with torch.device("meta"):
                return _parts(make(width), train, batch_size, seq_len, cached, dtype)
        except (NotImplementedError, RuntimeError):  # a constructor that reads its values: extrapolate
            pass
        probes = [k * step for k in (1, 2, 3)]  # every part is a polynomial of degree <= 2 in the width
        values = [_parts(make(w), train, batch_size, seq_len, cached, dtype) for w in probes]
    return tuple(max(0, math.ceil(_quadratic(probes, [v[i] for v in values], width))) for i in range(3))  # type: ignore[return-value]


def _quadratic(xs: list[int], ys: list[int], x: int) -> float:
    """The value at `x` of the parabola through three points (Lagrange's form)."""
    total = 0.0
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        term = float(yi)
        for j, xj in enumerate(xs):
            if j != i:
                term *= (x - xj) / (xi - xj)
        total += term
    return total


def _describe(kind: str, model: Any, batch_size: int, seq_len: int, width: int | None) -> str:
    if isinstance(model, str):
        name = model
    elif isinstance(model, nn.Module):
        name = getattr(model, "model", None) or type(model).__name__
    else:
        name = getattr(model, "__name__", None) or getattr(getattr(model, "func", None), "__name__", "model")
    shown = f", width {width}" if width is not None and not isinstance(model, nn.Module) else ""
    return f"{kind} of {name}, batch {batch_size}, seq_len {seq_len}{shown}"


def estimate_forward_bytes(
    model: str | nn.Module | Callable[[int], nn.Module],
    batch_size: int,
    seq_len: int,
    width: int | None = None,
    *,
    cached: int = 0,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> MemoryEstimate:
    """Estimate the peak bytes of a forward pass without gradient (inference on a batch).

    Args:
        model: a model name (`"lstm"`: a `SequenceNetwork` of that model, built from `width` and
            `kwargs`), a built module (a `SequenceNetwork`, a seqmem model or a `torch.nn` RNN/LSTM/GRU),
            or a factory `make(width) -> nn.Module`.
        batch_size: sequences in the batch.
        seq_len: positions in the pass.
        width: the model dimension, for a name or a factory (ignored for a module).
        cached: positions already in the state (a transformer's KV cache grows by them).
        dtype: the dtype of parameters and activations (default: the module's, or torch's default).
        **kwargs: for a name, the `SequenceNetwork` arguments (`vocab_size` or `input_size`, both
            `width` by default; `output_size`, `width` by default; `n_layers`, `n_heads`, model options).

    Returns:
        The `MemoryEstimate` (no gradients or optimiser state).

    Raises:
        ValueError: for a size that is not a positive int (and the network's own checks).
        TypeError: for a `model` that is neither a name, a module nor a callable.

    Example:
        >>> from seqmem._memory import estimate_forward_bytes
        >>> est = estimate_forward_bytes("lstm", batch_size=32, seq_len=1024, width=64)
        >>> est.activations > 32 * 1024 * 64 * 4
        True
    """
    parts = _estimate(model, False, batch_size, seq_len, width, cached, dtype, kwargs)
    params, inputs, activations = parts
    what = _describe("forward pass", model, batch_size, seq_len, width)
    return MemoryEstimate(what, params, 0, 0, inputs, activations)


def estimate_train_bytes(
    model: str | nn.Module | Callable[[int], nn.Module],
    batch_size: int,
    seq_len: int,
    width: int | None = None,
    *,
    tbptt: int | None = None,
    optimizer_states: int = 0,
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> MemoryEstimate:
    """Estimate the peak bytes of a training step: forward, backward, and the optimiser's state.

    Args:
        model: a model name, a built module or a factory `make(width)`, as `estimate_forward_bytes`.
        batch_size: sequences in the batch.
        seq_len: positions of each sequence.
        width: the model dimension, for a name or a factory (ignored for a module).
        tbptt: truncated backpropagation through chunks of this many positions (`None`: the whole
            sequence); the last chunk, with the longest cache before it, is the peak.
        optimizer_states: tensors of the parameters' size the optimiser keeps (Adam, AdamW: 2;
            SGD with momentum: 1; 0 for none).
        dtype: the dtype of parameters and activations (default: the module's, or torch's default).
        **kwargs: for a name, the `SequenceNetwork` arguments, as `estimate_forward_bytes`.

    Returns:
        The `MemoryEstimate`.

    Raises:
        ValueError: for a size that is not a positive int, a negative `optimizer_states`, or a
            `tbptt` that is not `None` or a positive int.
        TypeError: as `estimate_forward_bytes`.

    Example:
        >>> from seqmem._memory import estimate_train_bytes
        >>> est = estimate_train_bytes("mamba", batch_size=32, seq_len=1_000_000, width=64, optimizer_states=2)
        >>> est.total > 100 * 2**30  # the torch scan keeps three (d_inner, d_state) tensors a step
        True
    """
    if tbptt is not None and (isinstance(tbptt, bool) or not isinstance(tbptt, int) or tbptt < 1):
        raise ValueError(f"seqmem memory estimate: tbptt must be a positive int or None, got {tbptt!r}")
    if isinstance(optimizer_states, bool) or not isinstance(optimizer_states, int) or optimizer_states < 0:
        raise ValueError(f"seqmem memory estimate: optimizer_states must be an int >= 0, got {optimizer_states!r}")
    chunk = seq_len if tbptt is None or not isinstance(seq_len, int) else min(tbptt, seq_len)
    cached = seq_len - chunk if isinstance(seq_len, int) else 0
    params, inputs, activations = _estimate(model, True, batch_size, chunk, width, cached, dtype, kwargs)
    what = _describe("training step", model, batch_size, seq_len, width)
    return MemoryEstimate(what, params, params, optimizer_states * params, inputs, activations)


# ---------------------------------------------------------------------------- the machine
def available_memory_bytes() -> int | None:
    """The memory this process can still take: `MemAvailable`, within a cgroup's limit if one is set.

    Returns:
        Bytes, or `None` where the platform does not say.
    """
    found = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    found = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            return None
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),  # cgroup v2
        ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),  # v1
    ):
        try:
            with open(limit_file) as f, open(usage_file) as g:
                limit, usage = f.read().strip(), int(g.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:  # "max" or a huge number: no limit
            found = min(found, max(0, int(limit) - usage))
    return found


def check_fits(
    estimate: MemoryEstimate | int,
    *,
    what: str | None = None,
    force: bool = False,
    available: int | None = None,
    force_hint: str = "force it",
) -> None:
    """Raise a `ValueError` if an estimate exceeds the memory available, unless `force`.

    Args:
        estimate: a `MemoryEstimate`, or bytes.
        what: what needs the memory, for the message (default: the estimate's own `what`).
        force: do not raise (try anyway: the estimate errs on the side of too much).
        available: bytes available (default: `available_memory_bytes()`; if that is unknown, nothing
            is checked).
        force_hint: how the caller forces it, for the message (e.g. `"pass --force"`).

    Raises:
        ValueError: naming the estimate (by part) and the memory available, if it does not fit.
    """
    need = estimate.total if isinstance(estimate, MemoryEstimate) else int(estimate)
    if force:
        return
    available = available_memory_bytes() if available is None else available
    if available is None or need <= available:
        return
    if isinstance(estimate, MemoryEstimate):
        described = f"{what or estimate.what} needs {estimate.amount()}"
    else:
        described = f"{what or 'this'} needs about {format_bytes(need)}"
    raise ValueError(
        f"{described}; this machine has {format_bytes(available)} available. Use a smaller batch, "
        f"seq_len or width (or {force_hint} if the estimate is too cautious)"
    )
