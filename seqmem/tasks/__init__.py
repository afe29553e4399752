"""Tasks: seeded sequence distributions, sized by `seq_len`, generated on the fly.

| name | class | metric |
| --- | --- | --- |
| `xor-echo` | `XorEcho(seq_len, alphabet=4)` | accuracy |
| `text` | `CharText(seq_len, corpus=None, valid_fraction=0.1)` | bits per character |

Example:
    >>> import torch
    >>> from seqmem.tasks import get_task
    >>> task = get_task("xor-echo", seq_len=10)
    >>> task.sample(8, torch.Generator().manual_seed(0)).x.shape
    torch.Size([8, 10])
"""

from __future__ import annotations

from typing import Any

from .._module import check_choice
from .base import Batch, BatchScore, Task
from .text import CharText, default_corpus
from .xor_echo import XorEcho

__all__ = [
    "TASKS",
    "Batch",
    "BatchScore",
    "CharText",
    "Task",
    "XorEcho",
    "default_corpus",
    "get_task",
    "task_names",
]

TASKS: dict[str, type[Task]] = {
    XorEcho.name: XorEcho,
    CharText.name: CharText,
}
"""Task name -> class."""


def task_names() -> list[str]:
    """The names `get_task` accepts, e.g. `["xor-echo", "text"]`."""
    return list(TASKS)


def get_task(name: str, seq_len: int, **kwargs: Any) -> Task:
    """Build a task by name.

    Args:
        name: one of `task_names()`.
        seq_len: length of every sequence.
        **kwargs: the task's options (e.g. `alphabet=4` for `xor-echo`, `corpus="book.txt"` for `text`).

    Returns:
        The task.

    Raises:
        ValueError: for an unknown name (the message lists the known ones), a bad `seq_len` or a
            bad option value.
        TypeError: for an option the task does not take.
    """
    check_choice("task", name, task_names(), "seqmem.tasks.get_task")
    return TASKS[name](seq_len, **kwargs)
