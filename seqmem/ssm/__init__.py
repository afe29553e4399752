"""The selective state-space family: the Mamba block and its LTI ablation."""

from .module import SelectiveSSM

__all__ = ["SelectiveSSM"]
