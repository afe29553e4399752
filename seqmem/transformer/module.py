"""STUB: to be written (CausalTransformer)."""
from .._module import SequenceModule


class CausalTransformer(SequenceModule):
    pass
