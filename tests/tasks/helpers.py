"""What the task tests share: a seeded generator, the config round trip, and a small training run."""

from __future__ import annotations

from typing import Any

import torch

from seqmem.network import SequenceNetwork
from seqmem.tasks import Task, get_task
from seqmem.train import TrainResult, train


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rebuilt(task: Task) -> Task:
    """The task built again by name from `seq_len` and its config (content hashes left out)."""
    options = {k: v for k, v in task.config().items() if not k.endswith("_sha256")}
    return get_task(task.name, task.seq_len, **options)


def assert_seeded(task: Task, batch_size: int = 16) -> None:
    """The same seed gives the same batch (every field); other seeds give other inputs."""
    for split in ("train", "eval"):
        a, b = task.sample(batch_size, gen(7), split), task.sample(batch_size, gen(7), split)
        for u, v in zip(a, b, strict=True):
            assert (u is None and v is None) or torch.equal(u, v)
        assert not torch.equal(a.x, task.sample(batch_size, gen(8), split).x)


def learn(task: Task, model: str, width: int, steps: int, lr: float, seed: int = 0, **net: Any) -> TrainResult:
    """Train a small network on `task` (one seed, global RNG left as it was) and evaluate it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = SequenceNetwork.for_task(model, task, width, **net)
        return train(network, task, steps, lr=lr, seed=seed, eval_batches=2, eval_batch_size=256)
