"""The RG-LRU family (De et al. 2024): Hawk (recurrent blocks) and Griffin (recurrent blocks and local attention)."""

from .module import Griffin, GriffinState, Hawk, HawkState

__all__ = ["Griffin", "GriffinState", "Hawk", "HawkState"]
