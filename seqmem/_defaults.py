"""The defaults of a sweep (`seqmem.compare.DEFAULTS`), kept free of torch imports.

`seqmem compare --help` shows them, and `seqmem --help` must answer without importing torch.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "task": "xor-echo",
    "models": ("rnn", "lstm", "gru", "transformer", "mamba"),
    "seq_lens": (5, 10, 20, 40),
    "seeds": (0,),
    "steps": 800,
    "params": 20_000,
    "batch_size": 64,
    "lr": 1e-2,
    "weight_decay": 0.01,
    "clip": 1.0,
    "eval_batches": 8,
}
"""The defaults of `compare` and `seqmem compare`, sized so the default sweep (xor-echo, 5 models x
4 lengths) runs in minutes on two CPU cores."""
