"""STUB: to be written (SelectiveSSM)."""
from .._module import SequenceModule


class SelectiveSSM(SequenceModule):
    pass
