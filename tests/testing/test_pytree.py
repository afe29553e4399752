"""States as pytrees (`seqmem.testing.pytree`): leaves and their paths, structure, rebuilding, sizes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import pytest
import torch
from torch import Tensor

from seqmem.testing import state_leaves
from seqmem.testing.pytree import describe, first_structure_difference, map_state_leaves, state_nbytes


class Pair(NamedTuple):
    h: Tensor
    c: Tensor


@dataclass(frozen=True)
class Cache:
    k: Tensor
    pos: int


def _state():
    z = torch.zeros(2, 3)
    return {"conv": [z, z + 1], "ssm": Pair(z, z), "cache": Cache(torch.zeros(2, 5, dtype=torch.float64), 7), "x": None}


def test_leaves_are_named_as_python_indexes_them():
    paths = [p for p, _ in state_leaves(_state())]
    assert paths == [
        "state['conv'][0]", "state['conv'][1]", "state['ssm'].h", "state['ssm'].c", "state['cache'].k",
        "state['cache'].pos", "state['x']",
    ]
    assert [p for p, _ in state_leaves(torch.ones(1), "h")] == ["h"]
    assert state_leaves(None) == [("state", None)]


def test_map_rebuilds_every_container_type():
    state = _state()
    doubled = map_state_leaves(state, lambda t: 2 * t + 1)
    assert isinstance(doubled["ssm"], Pair) and isinstance(doubled["cache"], Cache) and doubled["x"] is None
    assert doubled["cache"].pos == 7 and torch.equal(doubled["conv"][1], torch.full((2, 3), 3.0))
    assert first_structure_difference(state, doubled) is None


def test_structure_differences_are_located():
    state = _state()
    other = {**state, "conv": [state["conv"][0]]}
    assert first_structure_difference(state, other) == ("state['conv']", "list[Tensor, Tensor]", "list[Tensor]")
    assert first_structure_difference(Pair(torch.ones(1), torch.ones(1)), (torch.ones(1), torch.ones(1))) == (
        "state", "Pair(h=Tensor, c=Tensor)", "tuple[Tensor, Tensor]"
    )
    assert first_structure_difference({"t": 1}, {"t": 2.5}) is None  # numbers may differ in value and type
    assert describe(state) == (
        "dict{'conv': list[Tensor, Tensor], 'ssm': Pair(h=Tensor, c=Tensor), 'cache': Cache(k=Tensor, pos=int), "
        "'x': NoneType}"
    )


def test_sizes_count_tensors_only():
    assert state_nbytes(_state()) == 4 * (4 * 6) + 8 * 10
    assert state_nbytes(None) == 0


def test_what_is_not_a_pytree_is_refused_with_its_path():
    with pytest.raises(TypeError, match=r"state\['cache'\] must be a tensor, a number, None, or a tuple"):
        state_leaves({"cache": object()})
    with pytest.raises(TypeError, match="got a str"):
        describe(["a"])
