"""Hypothesis strategies: inputs, seeds, seqmem's model configurations, and seeded models of your own.

Tensors and models are built from a seed that hypothesis draws (hypothesis does not manage torch's
random state), so a failing example shrinks with its recipe and replays exactly: the recipe is
printed with the failure (hypothesis' `note`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from torch import Tensor, nn

from ..registry import build, model_names, model_spec
from .fixtures import callable_name, random_sequence, seeded

__all__ = ["ModelConfig", "builds", "model_configs", "seeds", "sequences"]


class ModelConfig(Mapping[str, Any]):
    """Constructor arguments of one of seqmem's models, as `model_configs` draws them.

    A read-only mapping of keyword arguments, so `seqmem.build(config.family, **config)` works;
    `config.build(...)` does the same with a seed, a dtype and a backend. Its `repr` is the Python
    that rebuilds it, so a failing example can be pasted into a test.

    Args:
        family: one of `seqmem.model_names()`.
        **kwargs: keyword arguments of the family's constructor.

    Raises:
        ValueError: for an unknown family.

    Example:
        >>> import seqmem
        >>> from seqmem.testing import ModelConfig
        >>> config = ModelConfig("lstm", input_size=3, hidden_size=5, peephole=True)
        >>> config
        ModelConfig('lstm', input_size=3, hidden_size=5, peephole=True)
        >>> seqmem.build(config.family, **config).output_size, config.input_size
        (5, 3)
    """

    def __init__(self, family: str, **kwargs: Any) -> None:
        if family not in model_names():
            raise ValueError(f"ModelConfig: unknown model family {family!r}; expected one of {model_names()}")
        self.family = family
        self._kwargs = dict(kwargs)

    def __getitem__(self, key: str) -> Any:
        return self._kwargs[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._kwargs)

    def __len__(self) -> int:
        return len(self._kwargs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ModelConfig):
            return NotImplemented
        return self.family == other.family and self._kwargs == other._kwargs

    def __hash__(self) -> int:
        return hash((self.family, tuple(sorted(self._kwargs.items()))))

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self._kwargs.items())
        return f"ModelConfig({self.family!r}{args})"

    @property
    def input_size(self) -> int:
        """Number of input features of the model it builds (its spec's input argument, else its width)."""
        spec = model_spec(self.family)
        return int(self._kwargs[spec.input_arg or spec.width_arg])

    def build(
        self,
        *,
        seed: int | None = 0,
        dtype: torch.dtype | None = None,
        backend: str | None = None,
        **overrides: Any,
    ) -> nn.Module:
        """Build the model.

        Args:
            seed: seeds torch's generator for the parameter initialisation, inside
                [`seeded`][seqmem.testing.seeded] (the global random state is restored); `None` uses
                it as is.
            dtype: cast the parameters to this dtype.
            backend: the backend, if not the default.
            **overrides: constructor arguments replacing the drawn ones.

        Returns:
            The model, a `SequenceModel` `nn.Module`.
        """
        kwargs = {**self._kwargs, **overrides}
        if backend is not None:
            kwargs["backend"] = backend
        if seed is None:
            model = build(self.family, **kwargs)
        else:
            with seeded(seed):
                model = build(self.family, **kwargs)
        return model.to(dtype) if dtype is not None else model


def seeds() -> st.SearchStrategy[int]:
    """Seeds for `torch.Generator().manual_seed`: integers in `[0, 2**32)` (shrinking towards 0).

    Returns:
        A strategy of ints.
    """
    return st.integers(0, 2**32 - 1)


def builds(factory: Callable[..., Any], /, *args: Any, **kwargs: Any) -> st.SearchStrategy[Any]:
    """A model (or anything) built by `factory` from drawn arguments, with torch seeded by hypothesis.

    Like `hypothesis.strategies.builds`, but the call runs under [`seeded`][seqmem.testing.seeded]
    with a seed that hypothesis draws too: the initial weights a third-party model draws from
    torch's global generator are a function of the example, so a failure replays, and shrinks (the
    seed shrinks towards 0 with the other arguments). Torch's global random state is restored
    afterwards. The recipe is printed with a failing example.

    Args:
        factory: called as `factory(*args, **kwargs)` with the drawn values (a class, a function).
        *args: strategies (or plain values) for the positional arguments.
        **kwargs: strategies (or plain values) for the keyword arguments.

    Returns:
        A strategy of `factory`'s results.

    Raises:
        TypeError: if `factory` is not callable.

    Example:
        >>> import torch
        >>> from hypothesis import given, settings, strategies as st
        >>> from seqmem.testing import builds
        >>> @settings(max_examples=5, deadline=None)
        ... @given(gru=builds(torch.nn.GRU, input_size=st.integers(1, 4), hidden_size=3, batch_first=True))
        ... def test_gru_sizes(gru):
        ...     assert gru.hidden_size == 3
        >>> test_gru_sizes()
    """
    if not callable(factory):
        raise TypeError(f"builds: factory must be callable, got {type(factory).__name__}")

    def strategy(value: Any) -> st.SearchStrategy[Any]:
        return value if isinstance(value, st.SearchStrategy) else st.just(value)

    arg_strategies = [strategy(a) for a in args]
    kwarg_strategies = {k: strategy(v) for k, v in kwargs.items()}

    @st.composite
    def draw(draw_: Callable[[st.SearchStrategy[Any]], Any]) -> Any:
        drawn_args = [draw_(s) for s in arg_strategies]
        drawn_kwargs = {k: draw_(s) for k, s in kwarg_strategies.items()}
        seed = draw_(seeds())
        call = ", ".join([*(repr(a) for a in drawn_args), *(f"{k}={v!r}" for k, v in drawn_kwargs.items())])
        _note(f"with seqmem.testing.seeded({seed}): model = {callable_name(factory)}({call})")
        with seeded(seed):
            return factory(*drawn_args, **drawn_kwargs)

    return draw()


def _int_range(value: int | tuple[int, int], what: str) -> st.SearchStrategy[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        lo = hi = value
    else:
        lo, hi = value
    if not (1 <= lo <= hi):
        raise ValueError(
            f"sequences: {what} must be an int >= 1 or a range (lo, hi) with 1 <= lo <= hi, got {value!r}"
        )
    return st.integers(lo, hi)


def _note(text: str) -> None:
    try:
        note(text)
    except InvalidArgument:  # outside a hypothesis test (e.g. `strategy.example()`)
        pass


def sequences(
    input_size: int,
    *,
    batch: int | tuple[int, int] = (1, 4),
    seq_len: int | tuple[int, int] = (1, 64),
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.float64),
    scale: float | tuple[float, float] = 1.0,
    device: torch.device | str | None = None,
) -> st.SearchStrategy[Tensor]:
    """Input sequences `(batch, seq_len, input_size)`, drawn as shapes, dtype, scale and a seed.

    The tensor comes from [`random_sequence`][seqmem.testing.random_sequence] with the drawn seed, so
    it shrinks with its recipe (towards batch and length at their minimum, the first dtype, seed 0)
    and replays exactly. The recipe is printed with a failing example (hypothesis' `note`).

    Args:
        input_size: number of features `I`.
        batch: the batch size, or a range `(lo, hi)` to draw it from.
        seq_len: the length, or a range `(lo, hi)` to draw it from.
        dtypes: the dtypes to draw from (shrinks towards the first).
        scale: standard deviation of the entries, or a range `(lo, hi)` to draw it from.
        device: where the tensors go.

    Returns:
        A strategy of `(batch, seq_len, input_size)` floating tensors.

    Raises:
        ValueError: for an empty range, a size below 1 or no dtypes.

    Example:
        >>> import torch
        >>> from hypothesis import given, settings
        >>> from seqmem.testing import sequences
        >>> @settings(max_examples=5, deadline=None)
        ... @given(x=sequences(3, batch=2, seq_len=(1, 8), dtypes=(torch.float64,)))
        ... def test_shape(x):
        ...     assert x.shape[0] == 2 and 1 <= x.shape[1] <= 8 and x.shape[2] == 3
        >>> test_shape()
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 1:
        raise ValueError(f"sequences: input_size must be a positive int, got {input_size!r}")
    batches, lengths = _int_range(batch, "batch"), _int_range(seq_len, "seq_len")
    if not dtypes:
        raise ValueError("sequences: dtypes must name at least one dtype")
    if isinstance(scale, (int, float)):
        scales: st.SearchStrategy[float] = st.just(float(scale))
    else:
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi:
            raise ValueError(
                f"sequences: scale must be positive, or a range (lo, hi) with 0 < lo <= hi, got {scale!r}"
            )
        scales = st.floats(lo, hi)

    @st.composite
    def draw(draw_: Callable[[st.SearchStrategy[Any]], Any]) -> Tensor:
        B, T = draw_(batches), draw_(lengths)
        dtype = draw_(st.sampled_from(tuple(dtypes)))
        s = draw_(scales)
        seed = draw_(seeds())
        _note(
            f"x = seqmem.testing.random_sequence({B}, {T}, {input_size}, dtype={dtype}, "
            f"seed={seed}, scale={s!r})"
        )
        return random_sequence(B, T, input_size, dtype=dtype, seed=seed, scale=s, device=device)

    return draw()


def _sizes(max_size: int) -> st.SearchStrategy[int]:
    return st.integers(1, max_size)


def model_configs(family: str | None = None, *, max_size: int = 8) -> st.SearchStrategy[ModelConfig]:
    """Constructor arguments of seqmem's models: small sizes and every variant flag.

    What is drawn comes from the family's `ModelSpec.configs` (its folder's `spec.py`):

    | family | drawn |
    | --- | --- |
    | `rnn` | `input_size`, `hidden_size`, `nonlinearity` (tanh, relu), `bias` |
    | `lstm` | `input_size`, `hidden_size`, `bias`, `forget_bias`, `peephole`, `forget_init` (+ `chrono_t_max`) |
    | `gru` | `input_size`, `hidden_size`, `bias`, `reset_after`, `update_init` (+ `chrono_t_max`) |
    | `transformer` | `n_heads`, `d_model` (even head size), `n_layers`, `mlp_ratio`, `bias`, `rope_base` |
    | `mamba`, `s4d` | `d_model`, `d_state`, `d_conv` (1-4), `expand` (1-2), `dt_rank`, `bias`, `conv_bias` |
    | a registered model without `configs` | its width (on its grid) and input size |

    Sizes shrink towards 1 and flags towards `False`, so a failure shrinks to the smallest model
    that shows it.

    Args:
        family: one of `seqmem.model_names()` (any registered model), or `None` to draw the family too.
        max_size: the largest size drawn (`input_size`, `hidden_size`, `d_model`, `d_state`).

    Returns:
        A strategy of [`ModelConfig`][seqmem.testing.ModelConfig]: `config.build(dtype=...)` or
        `seqmem.build(config.family, **config)`.

    Raises:
        ValueError: for an unknown family, or `max_size < 2` (the transformer needs an even head size).

    Example:
        >>> import torch
        >>> from hypothesis import given, settings
        >>> from seqmem.testing import check_step_equals_forward, model_configs, random_sequence
        >>> @settings(max_examples=5, deadline=None)
        ... @given(config=model_configs("gru"))
        ... def test_gru(config):
        ...     model = config.build(dtype=torch.float64)
        ...     x = random_sequence(2, 5, config.input_size, dtype=torch.float64)
        ...     check_step_equals_forward(model, x)
        >>> test_gru()
    """
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 2:
        raise ValueError(f"model_configs: max_size must be an int >= 2, got {max_size!r}")
    if family is None:
        return st.sampled_from(model_names()).flatmap(lambda f: model_configs(f, max_size=max_size))
    if family not in model_names():
        raise ValueError(f"model_configs: unknown model family {family!r}; expected one of {model_names()}")
    spec = model_spec(family)
    if spec.configs is not None:
        kwargs = spec.configs(max_size)
    else:  # sizes only: the width on its grid, and the input size where the model takes one
        step = spec.step()
        fields = {spec.width_arg: st.integers(1, max(1, max_size // step)).map(lambda k: k * step)}
        if spec.input_arg is not None:
            fields[spec.input_arg] = _sizes(max_size)
        kwargs = st.fixed_dictionaries(fields)
    return kwargs.map(lambda kw: ModelConfig(family, **kw))
