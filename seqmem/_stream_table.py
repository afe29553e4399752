"""The table a fused streaming kernel reads: one `int64` array of sizes and data addresses.

A fused kernel (`seqmem/<family>/numba_stream.py`) runs a whole stack for one token: the input
stage (an embedding row, a linear map, or a copy of the features), every layer (optionally
pre-normed and residual), the output stage (an optional LayerNorm and linear head). Passing each of
its tensors as an array argument would cost a Numba dispatch of about 0.2 us per array, so the
kernel gets one `int64` table instead, with the sizes and the data addresses of every tensor, and
views the memory in place (`seqmem._stream_kernels.view`). The parameters are read where they live
(nothing is copied or transposed), so every write to them is seen by the next token.

This module is plain Python (no numba import): `seqmem.stream` builds tables with it, and the
kernels read them with the same constants.

Layout (`T_*` are header slots; a layer record starts at `tab[T_LAYERS + l]`):

| slot | meaning |
| --- | --- |
| `T_B` | batch size `B` |
| `T_L` | number of layers |
| `T_IN_KIND` | input stage: `IN_FEATURES` (copy `x`), `IN_TOKENS` (embedding row), `IN_LINEAR` (`W x + b`) |
| `T_IN_SIZE` | features per input row, or the vocabulary size |
| `T_IN_W`, `T_IN_B` | the embedding or input-linear weight and bias (0: none) |
| `T_X_SB`, `T_X_ST` | element strides of the input over batch and time |
| `T_NORM`, `T_NORM_W`, `T_NORM_B`, `T_NORM_EPS` | final LayerNorm: flag, weight, bias, eps (float64 bits) |
| `T_HEAD`, `T_HEAD_W`, `T_HEAD_B` | linear head: flag, weight `(O, W)`, bias |
| `T_OUT` | output size `O` |
| `T_Y_SB`, `T_Y_ST` | element strides of the output over batch and time |
| `T_ACT0`, `T_ACT1`, `T_ACT2` | three activation buffers of `B * T_WIDTH` numbers |
| `T_WIDTH` | the widest activation |
| `T_SCRATCH` | scratch the layers share |
| `T_IN_OUT` | width after the input stage |

A layer record: `[prenorm, norm weight, norm bias, norm eps bits, residual, in size, out size,
*family fields]`; `R_FIELDS` is where the family's own fields start (its sizes, then parameter
addresses, then the addresses of the state it reads and of the state it writes).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from torch import Tensor

T_B, T_L = 0, 1
T_IN_KIND, T_IN_SIZE, T_IN_W, T_IN_B, T_X_SB, T_X_ST = 2, 3, 4, 5, 6, 7
T_NORM, T_NORM_W, T_NORM_B, T_NORM_EPS = 8, 9, 10, 11
T_HEAD, T_HEAD_W, T_HEAD_B, T_OUT, T_Y_SB, T_Y_ST = 12, 13, 14, 15, 16, 17
T_ACT0, T_ACT1, T_ACT2, T_WIDTH, T_SCRATCH, T_IN_OUT = 18, 19, 20, 21, 22, 23
T_LAYERS = 24

IN_FEATURES, IN_TOKENS, IN_LINEAR = 0, 1, 2

R_PRENORM, R_NORM_W, R_NORM_B, R_NORM_EPS, R_RESIDUAL, R_IN, R_OUT = 0, 1, 2, 3, 4, 5, 6
R_FIELDS = 7

BAD_TOKEN = 1
"""Status a kernel returns when a token id is outside `[0, vocab_size)` (nothing is updated then)."""


def float_bits(value: float) -> int:
    """The IEEE-754 bits of a float64 as a signed int64 (how a LayerNorm's eps rides in the table)."""
    return struct.unpack("<q", struct.pack("<d", float(value)))[0]


def address(t: Tensor | None) -> int:
    """The data address of a tensor, 0 for `None`."""
    return 0 if t is None else t.data_ptr()


class LayerKernel(NamedTuple):
    """What a model family tells the streaming runtime about one layer that has a fused kernel.

    A family's module returns one from `_stream_layer()` when it can run on the kernel (numba
    backend, contiguous CPU float32/float64 parameters), else `None`. A `NamedTuple`: `step` builds
    one per call, and a tuple costs a fraction of a dataclass.

    Attributes:
        family: the kernel family; layers of one stack share it (e.g. `"lstm"`).
        kernel: the family's compiled stack kernel, `kernel(tab, act, x_addr, T, y_addr) -> status`.
        params: the parameters, live, in the order of the record's address fields (`None`: absent).
        sizes: the integers of the record before the addresses (sizes and flags).
        in_size: features the layer reads per sequence.
        out_size: features the layer writes per sequence.
        state_shapes: the shape of each state field for one sequence (the state has `batch` first).
        make_state: builds the family's state type from its field tensors.
        scratch: numbers of scratch per sequence; a batch of `B` needs `B * scratch + scratch_fixed`.
        scratch_fixed: numbers of scratch whatever the batch.
        output_is_state: the layer's output is its first state field (`h` of the recurrences).
    """

    family: str
    kernel: Callable[..., int]
    params: tuple[Tensor | None, ...]
    sizes: tuple[int, ...]
    in_size: int
    out_size: int
    state_shapes: tuple[tuple[int, ...], ...]
    make_state: Callable[..., Any]
    scratch: int
    scratch_fixed: int = 0
    output_is_state: bool = False

    def record(
        self,
        state_in: Sequence[Tensor],
        state_out: Sequence[Tensor],
        prenorm: Any = None,
        residual: bool = False,
    ) -> list[int]:
        """The layer's record: the common header, then sizes, parameter and state addresses.

        Args:
            state_in: the state fields the layer reads, each `(B, *shape)` contiguous.
            state_out: where it writes the new state (the same tensors to update in place).
            prenorm: an `nn.LayerNorm` applied to the layer's input, or `None`.
            residual: add the layer's input to its output.
        """
        if prenorm is None:
            head = [0, 0, 0, 0]
        else:
            head = [1, address(prenorm.weight), address(prenorm.bias), float_bits(prenorm.eps)]
        return [
            *head, int(residual), self.in_size, self.out_size,
            *self.sizes, *(address(p) for p in self.params),
            *(t.data_ptr() for t in state_in), *(t.data_ptr() for t in state_out),
        ]  # fmt: skip
