"""`SequenceNetwork`: embedding -> sequence model(s) -> head, and sizing it to a parameter budget.

The same wrapper puts every model of the registry on a task, so a comparison differs in the
sequence model only:

    tokens (B, T) or features (B, T, I)
      -> embedding: nn.Embedding(vocab_size, width) or nn.Linear(input_size, width)   (B, T, W)
      -> body, as the model's `ModelSpec.stacking` says:
           "layers"    n_layers stacked layers spec.build(W, W)        (rnn, lstm, gru; default 1)
           "block"     one module spec.build(W, W, n_layers=n_layers)  (transformer; default 2)
           "residual"  n_layers pre-norm residual blocks x + model(LN(x))  (mamba, s4d; default 2)
      -> LayerNorm(W) (a "block" ends with its own) -> nn.Linear(W, output_size)      (B, T, O)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from ._module import SequenceModule, _check_last
from .protocol import state_nbytes
from .registry import ModelSpec, resolve_model
from .tasks.base import Task
from .transformer.spec import auto_heads

__all__ = ["SequenceNetwork", "Sizing", "auto_heads", "default_layers", "size_for_budget", "width_multiple"]

ModelRef = str | ModelSpec | Callable[..., nn.Module]
"""A model as commands and `SequenceNetwork` take it: a registered name, an import path `module:attr`,
a `ModelSpec`, or a class/factory (see `seqmem.registry.resolve_model`)."""


def default_layers(model: ModelRef) -> int:
    """The default depth of a network body (`ModelSpec.default_layers`): 1 for rnn/lstm/gru, 2 for
    transformer/mamba/s4d.

    Args:
        model: a model name, import path, spec or class.

    Returns:
        The number of layers (recurrent layers, transformer blocks or SSM blocks).

    Raises:
        ValueError: for an unknown model name.
    """
    return resolve_model(model, check=False).default_layers


def width_multiple(model: ModelRef, n_heads: int | None = None) -> int:
    """The widths a model allows are the multiples of this number (`ModelSpec.width_multiple`).

    The transformer needs `width % n_heads == 0` and an even head size (rotary position
    embeddings rotate pairs of features): its widths are multiples of `2 * n_heads`, or any even
    width when `n_heads` is `None` (heads then chosen by `auto_heads`). The other models take any
    positive width.

    Args:
        model: a model name, import path, spec or class.
        n_heads: attention heads (transformer only), or `None` for `auto_heads`.

    Returns:
        The step of the width grid.

    Raises:
        ValueError: for an unknown model name.
    """
    return resolve_model(model, check=False).step({} if n_heads is None else {"n_heads": n_heads})


def _takes_last(layer: nn.Module) -> bool:
    """Whether `layer(x, state, last=n)` is understood: seqmem's own models, and subclasses that keep
    `SequenceModule.forward` (one that overrides `forward` without `last` gets a full pass, sliced)."""
    return _class_takes_last(type(layer))


@functools.cache
def _class_takes_last(kind: type) -> bool:
    return issubclass(kind, SequenceModule) and "last" in inspect.signature(kind.forward).parameters


class _PreNormResidual(nn.Module):
    """`x + mixer(LayerNorm(x))`: the block wrapper Mamba uses around its mixer (pre-norm)."""

    def __init__(self, mixer: nn.Module, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.mixer = mixer

    def initial_state(self, batch_size: int, **kwargs: Any) -> Any:
        return self.mixer.initial_state(batch_size, **kwargs)

    def forward(self, x: Tensor, state: Any | None = None) -> tuple[Tensor, Any]:
        y, state = self.mixer(self.norm(x), state)
        return x + y, state

    def step(self, x_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        y_t, state = self.mixer.step(self.norm(x_t), state)
        return x_t + y_t, state


def _not_a_tensor(x: Any, tokens: bool, rank: int) -> None:
    """Raise the `TypeError` for an input that is not a tensor (a NumPy array, a list)."""
    if tokens:
        want = "an integer torch.Tensor of shape " + ("(batch, seq_len)" if rank == 2 else "(batch,)")
    else:
        shape = "(batch, seq_len, input_size)" if rank == 2 else "(batch, input_size)"
        want = f"a float torch.Tensor of shape {shape}"
    kind = type(x)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    hint = "; convert it with torch.from_numpy(x)" if kind.__module__ == "numpy" else ""
    raise TypeError(f"SequenceNetwork: inputs must be {want}, got {name}{hint}")


def _check_token_ids(x: Tensor, vocab_size: int) -> None:
    """Raise a `ValueError` naming the first token id outside `[0, vocab_size)` and where it is."""
    if x.numel() == 0:
        return  # the sequence model says what is wrong with an empty input
    low, high = torch.aminmax(x)
    if int(low) >= 0 and int(high) < vocab_size:
        return
    outside = (x < 0) | (x >= vocab_size)
    where = tuple(int(i) for i in outside.nonzero()[0])
    raise ValueError(
        f"SequenceNetwork: token ids must be in [0, {vocab_size}) (vocab_size={vocab_size}), got {int(x[where])} "
        f"at index {where}; {int(outside.sum())} of {x.numel()} ids are outside (min {int(low)}, max {int(high)})"
    )


class SequenceNetwork(nn.Module):
    """A complete network around one of seqmem's sequence models: embedding, body, head.

    Exactly one of `vocab_size` (token inputs, `nn.Embedding`) and `input_size` (real-valued
    inputs, `nn.Linear`) is given. The body is built from the model's `ModelSpec` (stacked as its
    `stacking` says); the head is a `LayerNorm` (except after a `"block"` such as the transformer,
    which ends with one) and a linear map to
    `output_size`, applied at every position (a task that scores only the last position reads
    `logits[:, -1]`).

    Args:
        model: a registered name (`seqmem.model_names()`: `rnn, lstm, gru, transformer, mamba,
            s4d`, ...), an import path `module:attr`, a `ModelSpec` or a model class
            (`seqmem.registry.resolve_model`).
        width: the model dimension `W` (`hidden_size` of a recurrence, `d_model` otherwise).
        output_size: number of outputs per position (classes, or regression targets).
        vocab_size: number of input tokens, for token inputs.
        input_size: number of input features, for real-valued inputs.
        n_layers: depth of the body: stacked recurrent layers (default 1), transformer blocks
            (default 2), or pre-norm residual SSM blocks (default 2).
        n_heads: attention heads (transformer only); `width` must be a multiple of `2 * n_heads`.
            `None` (default) picks 4 heads, or fewer if `width` needs it (`auto_heads`).
        **model_kwargs: further constructor arguments of the model (e.g. `d_state=8`,
            `forget_bias=2.0`, `backend="numba"`). Without `backend`, a model with kernels runs on
            `backend="auto"` (its numba kernels on the CPU, torch elsewhere).

    Attributes:
        spec: the model's `ModelSpec`.
        model: its name (part of `config()`).
        model_kwargs: the model constructor arguments given (part of `config()`).
        embed: `nn.Embedding(vocab_size, W)` or `nn.Linear(input_size, W)`.
        layers: `nn.ModuleList` of the body's layers (one `CausalTransformer` for `transformer`).
        norm: `nn.LayerNorm(W)` (`nn.Identity` for the transformer, which ends with its own).
        head: `nn.Linear(W, output_size)`.

    Raises:
        ValueError: for an unknown model, a non-positive size, both or neither of
            `vocab_size`/`input_size`, or a width off the model's grid (a transformer width that is
            odd or not a multiple of `2 * n_heads`).

    References:
        Gu, A. & Dao, T. (2023). Mamba: linear-time sequence modeling with selective state spaces,
        section 3.4 (the block, wrapped with a residual connection and normalisation).

    Example:
        >>> import torch
        >>> from seqmem.network import SequenceNetwork
        >>> net = SequenceNetwork("lstm", width=16, vocab_size=4, output_size=2)
        >>> logits, state = net(torch.randint(0, 4, (3, 7)))
        >>> logits.shape
        torch.Size([3, 7, 2])
    """

    def __init__(
        self,
        model: ModelRef,
        width: int,
        *,
        output_size: int,
        vocab_size: int | None = None,
        input_size: int | None = None,
        n_layers: int | None = None,
        n_heads: int | None = None,
        **model_kwargs: Any,
    ) -> None:
        super().__init__()
        spec = resolve_model(model, check=False)
        n_layers = spec.default_layers if n_layers is None else n_layers
        sizes = {"width": width, "output_size": output_size, "n_layers": n_layers}
        if n_heads is not None:
            sizes["n_heads"] = n_heads
        for key, value in sizes.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SequenceNetwork: {key} must be a positive int, got {value!r}")
        if (vocab_size is None) == (input_size is None):
            raise ValueError(
                "SequenceNetwork: give exactly one of vocab_size (token inputs) and input_size "
                f"(real-valued inputs), got vocab_size={vocab_size!r}, input_size={input_size!r}"
            )
        for key, value in (("vocab_size", vocab_size), ("input_size", input_size)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"SequenceNetwork: {key} must be a positive int, got {value!r}")
        given = dict(model_kwargs)
        if n_heads is not None:
            given["n_heads"] = n_heads
        if "backend" not in given and len(spec.backends) > 1:
            given["backend"] = "auto"  # numba kernels on the CPU where the model has them
        try:
            kwargs = spec.model_kwargs(width, given)  # checks the width against the grid (transformer heads)
        except ValueError as e:
            raise ValueError(f"SequenceNetwork: {e}") from None
        self.spec = spec
        self.model = spec.name
        self.n_heads = kwargs.get("n_heads")
        self.width = width
        self.n_layers = n_layers
        self.vocab_size = vocab_size
        self.input_size = input_size
        self.output_size = output_size
        self.model_kwargs = dict(model_kwargs)
        self.tokens = vocab_size is not None
        self.embed: nn.Module = nn.Embedding(vocab_size, width) if vocab_size is not None else nn.Linear(
            input_size, width  # type: ignore[arg-type]
        )
        if spec.stacking == "layers":
            layers: list[nn.Module] = [spec.build(width, width, **given) for _ in range(n_layers)]
        elif spec.stacking == "block":
            layers = [spec.build(width, width, n_layers=n_layers, **given)]
        else:  # "residual"
            layers = [_PreNormResidual(spec.build(width, width, **given), width) for _ in range(n_layers)]
        self.layers = nn.ModuleList(layers)
        # a "block" (the transformer) closes its stack with a LayerNorm of its own
        self.norm: nn.Module = nn.Identity() if spec.stacking == "block" else nn.LayerNorm(width)
        self.head = nn.Linear(width, output_size)

    @classmethod
    def for_task(cls, model: ModelRef, task: Task, width: int, **kwargs: Any) -> SequenceNetwork:
        """A network whose input and output sizes fit `task`.

        Args:
            model: a model name, import path, `ModelSpec` or class (as the constructor).
            task: the task (its `vocab_size` or `input_size`, and `output_size`, are used).
            width: the model dimension.
            **kwargs: `n_layers`, `n_heads` and model constructor arguments.

        Returns:
            The network.

        Raises:
            ValueError: as the constructor.
        """
        tokens = task.input_kind == "tokens"
        io: dict[str, Any] = {"vocab_size": task.vocab_size} if tokens else {"input_size": task.input_size}
        return cls(model, width, output_size=task.output_size, **io, **kwargs)

    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this network (without its weights).

        `SequenceNetwork(**net.config())` has the same architecture and parameter names;
        `seqmem.io.save` stores this dict beside the weights and `seqmem.load` reads it back.

        Returns:
            A JSON-serialisable dict: `model`, `width`, `output_size`, `vocab_size`, `input_size`,
            `n_layers`, `n_heads`, and the model's own constructor arguments (e.g. `backend`).
        """
        return {
            "model": self.model,
            "width": self.width,
            "output_size": self.output_size,
            "vocab_size": self.vocab_size,
            "input_size": self.input_size,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            **self.model_kwargs,
        }

    def extra_repr(self) -> str:
        heads = f", n_heads={self.n_heads}" if self.n_heads else ""
        return (
            f"model={self.model!r}, width={self.width}, n_layers={self.n_layers}{heads}, "
            f"params={self.num_parameters()}"
        )

    def num_parameters(self) -> int:
        """The number of trainable parameters (embedding and head included)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def initial_state(
        self, batch_size: int, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> tuple[Any, ...]:
        """The state before the first step: one state per body layer.

        Args:
            batch_size: number of sequences.
            device: defaults to the parameters' device.
            dtype: defaults to the parameters' dtype.

        Returns:
            A tuple with the initial state of each layer of `layers`.
        """
        ref = self.head.weight
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        return tuple(layer.initial_state(batch_size, device=device, dtype=dtype) for layer in self.layers)

    def _embed(self, x: Tensor, rank: int) -> Tensor:
        if not isinstance(x, Tensor):
            _not_a_tensor(x, self.tokens, rank)
        if self.tokens:
            if x.dim() != rank or x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
                want = "(batch, seq_len)" if rank == 2 else "(batch,)"
                raise ValueError(
                    f"SequenceNetwork: token inputs must be an integer tensor of shape {want}, "
                    f"got {x.dtype} of shape {tuple(x.shape)}"
                )
            _check_token_ids(x, self.vocab_size)  # type: ignore[arg-type]
            return self.embed(x.long())
        want_shape = "(batch, seq_len, input_size)" if rank == 2 else "(batch, input_size)"
        if x.dim() != rank + 1 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"SequenceNetwork: inputs must have shape {want_shape} with input_size={self.input_size}, "
                f"got {tuple(x.shape)}"
            )
        return self.embed(x.to(self.head.weight.dtype))

    def _check_state(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) != len(self.layers):
            raise TypeError(
                f"SequenceNetwork: state must be a tuple of {len(self.layers)} layer states (as returned "
                f"by initial_state, forward or step), got {type(state).__name__}"
            )

    def forward(
        self, x: Tensor, state: tuple[Any, ...] | None = None, *, last: int | None = None
    ) -> tuple[Tensor, tuple[Any, ...]]:
        """Run over whole sequences.

        Args:
            x: `(batch, seq_len)` int tokens, or `(batch, seq_len, input_size)` floats.
            state: the state a previous call returned (to continue a stream), or `None`.
            last: if given, the logits of the last `last` positions only: `forward(x, state)[0][:,
                -last:]`, with the same state. For a loss read at the end (a `target="last"` task,
                as `seqmem.train` uses it): the last layer skips what no returned position needs
                where it can (the transformer's last block: queries, attention and MLP at those
                positions only), and the head runs at those positions only.

        Returns:
            `(logits, state)`: `logits` of shape `(batch, seq_len, output_size)` (`(batch, last,
            output_size)` with `last`) and the state of every layer after the last step.

        Raises:
            ValueError: for inputs of the wrong shape or dtype, a token id outside `[0, vocab_size)`
                (the message names it and its index), a `last` that is not an int in `[1, seq_len]`,
                and the models' own checks.
            TypeError: for an input that is not a torch tensor (e.g. a NumPy array), or a state that is
                not a tuple of one state per layer.
        """
        if last is not None and isinstance(x, Tensor) and x.dim() >= 2:  # (else _embed says what x should be)
            _check_last("SequenceNetwork", last, x.shape[1])
        h = self._embed(x, rank=2)  # (B, T, W)
        if state is None:
            state = (None,) * len(self.layers)
        self._check_state(state)
        new_state = []
        final = len(self.layers) - 1
        for i, (layer, s) in enumerate(zip(self.layers, state, strict=True)):
            if last is not None and i == final and _takes_last(layer):
                h, s = layer(h, s, last=last)  # (B, last, W)
            else:
                h, s = layer(h, s)  # (B, T, W)
            new_state.append(s)
        if last is not None:
            h = h[:, -last:]  # (B, last, W): a no-op where the last layer returned these alone
        return self.head(self.norm(h)), tuple(new_state)  # (B, T, O) or (B, last, O)

    def step(self, x_t: Tensor, state: tuple[Any, ...] | None = None) -> tuple[Tensor, tuple[Any, ...]]:
        """Advance by one position (streaming: e.g. show a prediction after every token).

        Args:
            x_t: `(batch,)` int tokens, or `(batch, input_size)` floats.
            state: the state after the previous step, or `None` for `initial_state(batch)`.

        Returns:
            `(logits_t, state)`: `logits_t` of shape `(batch, output_size)` and the next state.

        Raises:
            ValueError: for inputs of the wrong shape or dtype, a token id outside `[0, vocab_size)`
                (the message names it and its index), and the models' own checks.
            TypeError: for an input that is not a torch tensor (e.g. a NumPy array), or a state that is
                not a tuple of one state per layer.
        """
        h = self._embed(x_t, rank=1)  # (B, W)
        if state is None:
            state = self.initial_state(h.shape[0], device=h.device, dtype=h.dtype)
        self._check_state(state)
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            h, s = layer.step(h, s)  # (B, W)
            new_state.append(s)
        return self.head(self.norm(h)), tuple(new_state)  # (B, O)

    def stream(self, batch_size: int = 1) -> Any:
        """Open a stream through the whole network: one token in, its logits out (inference only).

        When every layer has a fused kernel (the `"numba"` backend of rnn, lstm, gru, mamba and
        s4d), each `push` is one compiled call for the embedding row, every layer (with its
        pre-norm and residual), the final LayerNorm and the head, over buffers the stream owns;
        otherwise torch runs around the layers' own streams. The outputs equal `step`'s; weight
        updates are seen at the next push. Give each thread its own stream. See
        `seqmem.stream.Stream`.

        Args:
            batch_size: number of sequences streamed side by side.

        Returns:
            A `seqmem.stream.Stream`: `push(x_t)` with `x_t` `(batch_size,)` int tokens or
            `(batch_size, input_size)` features returns `(batch_size, output_size)` logits;
            `push_many(x)` takes `(batch_size, seq_len)` or `(batch_size, seq_len, input_size)`;
            `state` is a tuple with one state per layer, as `step` returns.

        Raises:
            ValueError: if `batch_size` is not a positive int.

        Example:
            >>> import torch
            >>> from seqmem.network import SequenceNetwork
            >>> net = SequenceNetwork("lstm", width=16, vocab_size=5, output_size=5, backend="numba")
            >>> stream = net.stream()
            >>> logits = stream.push(torch.tensor([3]))
            >>> logits.shape, stream.fused
            (torch.Size([1, 5]), True)
        """
        from .stream import open_network_stream

        return open_network_stream(self, batch_size)

    def state_bytes(self, x: Tensor) -> int:
        """Bytes of state the network carries per sequence after reading `x` (KV caches grow with it).

        Args:
            x: `(batch, seq_len)` tokens or `(batch, seq_len, input_size)` features; only the first
                sequence is run.

        Returns:
            `seqmem.state_nbytes` of the state after the last position, for one sequence.
        """
        with torch.no_grad():
            _, state = self(x[:1])
        return state_nbytes(state)


class Sizing(NamedTuple):
    """The width `size_for_budget` chose and the parameter count it gives.

    Attributes:
        width: the model dimension.
        params: the network's trainable parameters at that width.
    """

    width: int
    params: int


def _count(model: ModelSpec, task: Task, width: int, kwargs: dict[str, Any]) -> int:
    # built for real (the meta device would import torch._dynamo, seconds), with the caller's RNG kept
    with torch.random.fork_rng(devices=[]):
        return SequenceNetwork.for_task(model, task, width, **kwargs).num_parameters()


def size_for_budget(
    model: ModelRef, params: int, task: Task, *, tolerance: float = 0.1, max_width: int = 8192, **kwargs: Any
) -> Sizing:
    """Choose the width that brings a network's parameter count closest to a budget.

    The count (embedding and head included) grows with the width, so doubling and then bisecting
    over the allowed widths (multiples of the spec's `width_multiple`) finds the two widths around the
    budget; the closer one is returned if it is within `tolerance` of the budget. The candidate
    networks are built and counted (torch's global random state is left as it was).

    Args:
        model: a model name, import path, `ModelSpec` or class (as `SequenceNetwork`).
        params: the parameter budget, a positive int.
        task: the task the network is for (its input and output sizes count).
        tolerance: the largest relative distance `|count - params| / params` accepted.
        max_width: the largest width tried.
        **kwargs: `n_layers`, `n_heads` and model constructor arguments, as `SequenceNetwork`.

    Returns:
        `Sizing(width, params)`, `params` being the actual count.

    Raises:
        ValueError: for an unknown model, a non-positive budget, or a budget no width reaches
            within `tolerance` (too small for the smallest network, or between two grid widths).

    Example:
        >>> from seqmem.network import size_for_budget
        >>> from seqmem.tasks import get_task
        >>> size_for_budget("lstm", 20_000, get_task("xor-echo", seq_len=10))
        Sizing(width=49, params=19994)
    """
    spec = resolve_model(model, check=False)
    if isinstance(params, bool) or not isinstance(params, int) or params < 1:
        raise ValueError(f"size_for_budget: params must be a positive int, got {params!r}")
    n_heads = kwargs.get("n_heads")
    if n_heads is not None and (isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1):
        raise ValueError(f"size_for_budget: n_heads must be a positive int or None, got {n_heads!r}")
    step = spec.step(kwargs)
    limit = max(1, max_width // step)  # widths are k * step, k in 1 .. limit
    counts: dict[int, int] = {}

    def count(k: int) -> int:
        if k not in counts:
            counts[k] = _count(spec, task, k * step, kwargs)
        return counts[k]

    lo = hi = 1
    while count(hi) < params and hi < limit:  # double until the budget is passed
        lo, hi = hi, min(2 * hi, limit)
    if count(hi) < params:
        lo = hi
    elif count(lo) >= params:
        hi = lo
    else:  # count(lo) < params <= count(hi)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if count(mid) >= params:
                hi = mid
            else:
                lo = mid
    best = min({lo, hi}, key=lambda k: abs(count(k) - params))
    width, got = best * step, count(best)
    if abs(got - params) > tolerance * params:
        near = ", ".join(f"width {k * step}: {count(k)}" for k in sorted({lo, hi}))
        hint = " (the budget is too small for this task)" if best == 1 and got > params else ""
        raise ValueError(
            f"size_for_budget: no {spec.name} network for task {task.name!r} has {params} parameters within "
            f"{tolerance:.0%}{hint}; closest: {near}"
        )
    return Sizing(width, got)
