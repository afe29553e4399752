"""The transformer's stream: the KV cache in buffers that double when full.

`CausalTransformer.step` must return a new `KVCache` of `t + 1` positions at every token (the
caller may keep the old one), so it copies the cache once per token: O(t) memory traffic per token
on top of attention's O(t) reads. A stream owns its cache, so it keeps keys and values in buffers
of a capacity that doubles when full: each token writes its key and value in place, and the copies
add up to O(T) over T tokens (amortised O(1) per token). `state` returns a `KVCache` of exactly the
positions held, so `state_nbytes` counts them, not the spare capacity.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..protocol import KVCache
from ..stream import Stream, _adopt_state
from .reference import rotary_cos_sin

__all__ = ["KVStream"]


class KVStream(Stream):
    """A stream through a `CausalTransformer` with a capacity-doubling KV cache (see the module).

    Args:
        model: the `CausalTransformer`.
        batch_size: number of sequences streamed side by side.
        capacity: initial number of positions the buffers hold (doubled when full).
    """

    def __init__(self, model: Any, batch_size: int, capacity: int = 64) -> None:
        super().__init__(batch_size)
        self._model = model
        self._capacity0 = max(1, int(capacity))
        self.reset()

    @property
    def capacity(self) -> int:
        """Positions the cache buffers hold before they grow."""
        return self._k.shape[3]

    def _alloc(self, capacity: int) -> tuple[Tensor, Tensor]:
        m = self._model
        ref = m.norm_out.weight
        shape = (m.n_layers, self.batch_size, m.n_heads, capacity, m.head_dim)
        return ref.new_empty(shape), ref.new_empty(shape)

    def _ensure(self, n: int) -> None:
        """Room for `n` positions, growing the buffers by doubling (the filled positions copied)."""
        cap = self.capacity
        if n <= cap and self._k.dtype == self._model.norm_out.weight.dtype:
            return
        while cap < n:
            cap *= 2
        t = self.position
        k, v = self._alloc(cap)
        k[:, :, :, :t] = self._k[:, :, :, :t]
        v[:, :, :, :t] = self._v[:, :, :, :t]
        self._k, self._v = k, v
        self._rotary = self._angles(cap)

    def _angles(self, capacity: int) -> tuple[Tensor, Tensor]:
        """The rotary `(cos, sin)` of positions `0 .. capacity - 1`, `(capacity, hs/2)` each (computed
        once per growth of the buffers, not per token)."""
        m, ref = self._model, self._model.norm_out.weight
        positions = torch.arange(capacity, device=ref.device)
        return rotary_cos_sin(positions, m.head_dim, m.rope_base, dtype=ref.dtype)

    def _advance(self, x: Tensor) -> Tensor:
        """`x (B, T, C)` through the stack; returns `(B, T, C)`."""
        if x.shape[0] != self.batch_size:
            raise ValueError(
                f"stream.push: the stream has batch {self.batch_size}, got an input of shape {tuple(x.shape)}"
            )
        t0, T = self.position, x.shape[1]
        self._ensure(t0 + T)
        cos, sin = self._rotary
        with torch.no_grad():
            y = self._model._forward_into(x, self._k, self._v, t0, (cos[t0 : t0 + T], sin[t0 : t0 + T]))
        self.position = t0 + T
        return y

    def push(self, x_t: Tensor) -> Tensor:
        self._model._check_input(x_t, rank=2)
        return self._advance(x_t[:, None, :])[:, 0]

    def push_many(self, x: Tensor) -> Tensor:
        self._model._check_input(x, rank=3)
        return self._advance(x)

    @property
    def state(self) -> KVCache:
        t = self.position
        return KVCache(self._k[:, :, :, :t].clone(), self._v[:, :, :, :t].clone())

    def reset(self, state: KVCache | None = None) -> None:
        self._k, self._v = self._alloc(self._capacity0)
        self._rotary = self._angles(self._capacity0)
        self.position = 0
        if state is None:
            return
        state = _adopt_state(self._model, state, self.batch_size)
        want = tuple(self._k.shape)
        for name, t in zip(state._fields, state, strict=True):
            if t.dim() != 5 or tuple(t.shape[:3]) + (t.shape[4],) != want[:3] + want[4:]:
                raise ValueError(
                    f"stream.reset: state.{name} must have shape {want[:3] + ('t',) + want[4:]}, got {tuple(t.shape)}"
                )
        if state.k.shape[3] != state.v.shape[3]:
            raise ValueError(
                f"stream.reset: the cache's keys hold {state.k.shape[3]} positions but its values {state.v.shape[3]}"
            )
        t = state.k.shape[3]
        self._ensure(t)
        self._k[:, :, :, :t] = state.k
        self._v[:, :, :, :t] = state.v
        self.position = t
