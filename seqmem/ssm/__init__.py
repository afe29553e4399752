"""The selective state-space family: the Mamba block and its LTI ablation."""

from .module import ScanInputs, SelectiveSSM

__all__ = ["ScanInputs", "SelectiveSSM"]
