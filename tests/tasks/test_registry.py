"""Every task of the bench through one lens: the registry, the `Batch` contract for its input kind
and target, seeded sampling, loss and score on untrained outputs, and a `SequenceNetwork` sized to
a budget that reads it."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from seqmem.network import SequenceNetwork, size_for_budget
from seqmem.registry import list_tasks
from seqmem.tasks import get_task, task_names
from seqmem.testing import Tolerance
from seqmem.train import evaluate

from .helpers import assert_seeded, gen, rebuilt

NEW = {  # name -> a valid short seq_len
    "adding": 12,
    "copy": 24,
    "selective-copy": 24,
    "induction": 12,
    "assoc-recall": 24,
    "digits": 8,
    "vowels": 29,
}
NEEDS = {"digits": "sklearn", "vowels": "sktime"}


def build(name: str):
    module = NEEDS.get(name)
    if module is not None and importlib.util.find_spec(module) is None:
        pytest.skip(f'{name} needs {module} (pip install "seqmem[data]")')
    return get_task(name, seq_len=NEW[name])


def test_registry_lists_the_bench():
    assert set(NEW) <= set(task_names())
    assert task_names()[:2] == ["xor-echo", "text"]  # the first two stay first
    for spec in list_tasks():
        assert spec.factory.name == spec.name and spec.description == spec.factory.description
        assert len(spec.description) < 110  # one line of `seqmem list`


@pytest.mark.parametrize("name", list(NEW))
def test_batch_contract(name):
    task = build(name)
    assert task.name == name and repr(task).startswith(type(task).__name__ + "(seq_len=")
    assert task.input_kind in ("tokens", "real") and task.target in ("last", "all")
    assert (task.vocab_size is None) == (task.input_kind == "real") == (task.input_size is not None)
    B, T = 5, task.seq_len
    for split in ("train", "eval"):
        x, y, mask = task.sample(B, gen(0), split)
        if task.input_kind == "tokens":
            assert x.shape == (B, T) and x.dtype == torch.int64
            assert 0 <= int(x.min()) and int(x.max()) < task.vocab_size
        else:
            assert x.shape == (B, T, task.input_size) and x.dtype == torch.float32
            assert torch.isfinite(x).all()
        if task.target == "last":
            assert mask is None
            if task.loss_kind == "mse":
                assert y.shape == (B, task.output_size) and y.dtype == torch.float32
            else:
                assert y.shape == (B,) and y.dtype == torch.int64
        else:
            assert y.shape == mask.shape == (B, T) and y.dtype == torch.int64 and mask.dtype == torch.bool
            assert mask.any(dim=1).all()  # every sequence has something to score
        if task.loss_kind == "cross_entropy":
            assert 0 <= int(y.min()) and int(y.max()) < task.output_size
    assert_seeded(task)
    assert rebuilt(task).config() == task.config()
    chance = task.chance
    assert chance is not None and (0 < chance < 1 or not task.higher_is_better)


@pytest.mark.parametrize("name", list(NEW))
def test_loss_and_score_agree_on_untrained_outputs(name):
    task = build(name)
    batch = task.sample(6, gen(1))
    logits = torch.randn(6, task.seq_len, task.output_size, generator=gen(2))
    loss = task.loss(logits, batch)
    score = task.score(logits, batch)
    expected = 6 if task.target == "last" else int(batch.mask.sum())
    assert score.count == expected
    assert math.isclose(score.loss_sum / score.count, loss.item(), rel_tol=1e-5)


@pytest.mark.parametrize("model", ["gru", "transformer", "mamba"])
@pytest.mark.parametrize("name", list(NEW))
def test_a_network_sized_to_a_budget_reads_every_task(name, model):
    task = build(name)
    sizing = size_for_budget(model, 12_000, task)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = SequenceNetwork.for_task(model, task, sizing.width)
    assert net.num_parameters() == sizing.params
    batch = task.sample(3, gen(0))
    logits, _ = net(batch.x)
    assert logits.shape == (3, task.seq_len, task.output_size)
    task.loss(logits, batch).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    with torch.no_grad():  # streaming one step at a time gives the same outputs
        state, steps = None, []
        for t in range(task.seq_len):
            out, state = net.step(batch.x[:, t], state)
            steps.append(out)
    torch.testing.assert_close(torch.stack(steps, dim=1), logits.detach(), **Tolerance().kwargs(torch.float32))
    result = evaluate(net, task, n_batches=1, batch_size=16)
    assert result.metric_name == task.metric_name and math.isfinite(result.metric)
