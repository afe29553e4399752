"""Tasks: seeded sequence distributions, sized by `seq_len`, generated on the fly.

| name | class | metric |
| --- | --- | --- |
| `xor-echo` | `XorEcho(seq_len, alphabet=4)` | accuracy |
| `text` | `CharText(seq_len, corpus=None, valid_fraction=0.1)` | bits per character |
| `adding` | `Adding(seq_len, metric="mse", tolerance=0.04)` | mse (or accuracy within `tolerance`) |
| `copy` | `Copy(seq_len, n_tokens=10, alphabet=8)` | accuracy per symbol |
| `selective-copy` | `SelectiveCopy(seq_len, n_tokens=8, alphabet=8)` | accuracy per symbol |
| `induction` | `Induction(seq_len, vocab_size=16)` | accuracy |
| `assoc-recall` | `AssocRecall(seq_len, num_kv_pairs=8, vocab_size=64)` | accuracy per query |
| `digits` | `Digits(seq_len, layout=None)`: seq_len 64 (pixels) or 8 (rows) | accuracy |
| `vowels` | `JapaneseVowels(seq_len)` | accuracy |
| `data` | `ArrayTask(seq_len, path)`: your `.npz` file, or `from_arrays(x, y, ...)` | accuracy or mse |

`digits` and `vowels` read data sets that ship inside scikit-learn and sktime: install the extra
with `pip install "seqmem[data]"` (building them without it raises an `ImportError` saying so).

Example:
    >>> import torch
    >>> from seqmem.tasks import get_task
    >>> task = get_task("xor-echo", seq_len=10)
    >>> task.sample(8, torch.Generator().manual_seed(0)).x.shape
    torch.Size([8, 10])
"""

from __future__ import annotations

from typing import Any

from ..registry import TaskSpec, list_tasks, task_spec
from .adding import Adding
from .arrays import ArrayTask, from_arrays
from .base import Batch, BatchScore, Task
from .copy import Copy, SelectiveCopy
from .datasets import Digits, JapaneseVowels
from .recall import AssocRecall, Induction
from .text import CharText, default_corpus
from .xor_echo import XorEcho

__all__ = [
    "BUILTIN_TASKS",
    "Adding",
    "ArrayTask",
    "AssocRecall",
    "Batch",
    "BatchScore",
    "CharText",
    "Copy",
    "Digits",
    "Induction",
    "JapaneseVowels",
    "SelectiveCopy",
    "Task",
    "XorEcho",
    "default_corpus",
    "from_arrays",
    "get_task",
    "task_names",
]

BUILTIN_TASKS = tuple(
    TaskSpec(cls.name, cls)
    for cls in (
        XorEcho, CharText, Adding, Copy, SelectiveCopy, Induction, AssocRecall, Digits, JapaneseVowels, ArrayTask
    )
)
"""The built-in tasks' specs, in the order `seqmem list` shows them."""


def task_names() -> list[str]:
    """The names `get_task` accepts: the built-in tasks and any registered since (`seqmem.register_task`)."""
    return [spec.name for spec in list_tasks()]


def get_task(name: str, seq_len: int, **kwargs: Any) -> Task:
    """Build a task by name.

    Args:
        name: one of `task_names()`.
        seq_len: length of every sequence.
        **kwargs: the task's options (e.g. `alphabet=4` for `xor-echo`, `corpus="book.txt"` for `text`,
            `num_kv_pairs=4` for `assoc-recall`, `path="data.npz"` for `data`).

    Returns:
        The task.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), a bad `seq_len` or a
            bad option value.
        TypeError: for an option the task does not take.
        ImportError: for `digits` or `vowels` without the `data` extra (`pip install "seqmem[data]"`).
    """
    return task_spec(name).factory(seq_len, **kwargs)
