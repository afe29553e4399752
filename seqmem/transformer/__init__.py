"""The causal attention family: a small pre-norm decoder-only transformer with a KV cache."""

from .module import CausalTransformer

__all__ = ["CausalTransformer"]
