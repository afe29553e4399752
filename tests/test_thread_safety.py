"""Numba models serve concurrent calls: forward and backward from several threads at once, on every model
with a numba backend (from the registry), give exactly what the same calls give one at a time.

Before `seqmem._numba.parallel_launch`, two threads launching the SSM's parallel kernels (and the LSTM's,
which were parallel then) aborted the whole process under numba's workqueue threading layer.
"""

from __future__ import annotations

import os
import threading

import pytest
import torch

from seqmem._warmup import _small, numba_models

NO_JIT = os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
THREADS = 4
ROUNDS = 1 if NO_JIT else 3
SIZES = (2, 5) if NO_JIT else (8, 48)  # batch, seq_len


def _forward_backward(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Outputs, final state and the gradients of a loss w.r.t. the input and every parameter."""
    x = x.clone().requires_grad_()
    y, state = model(x)
    states = list(state) if isinstance(state, tuple) else [state]
    loss = y.square().sum() + sum(s.sum() for s in states)
    grads = torch.autograd.grad(loss, [x, *model.parameters()])
    return [y.detach(), *(s.detach() for s in states), *grads]


@pytest.mark.parametrize("name", numba_models())
def test_concurrent_forward_and_backward_equal_sequential(name):
    torch.manual_seed(0)
    model = _small(name).double()  # build(name, 8, 2)
    model.backend = "numba"
    B, T = SIZES
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(B + i, T, model.input_size, generator=gen, dtype=torch.float64) for i in range(THREADS)]
    expected = [_forward_backward(model, x) for x in inputs]

    results: dict[tuple[int, int], list[torch.Tensor]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def work(i: int) -> None:
        try:
            for r in range(ROUNDS):
                barrier.wait()  # every thread enters the kernels at the same time
                results[i, r] = _forward_backward(model, inputs[i])
        except BaseException as e:  # noqa: BLE001  (reported below, with the thread's index)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"{name}: a thread failed: {errors[0]!r}"
    assert len(results) == THREADS * ROUNDS
    for (i, r), got in results.items():
        for k, (a, e) in enumerate(zip(got, expected[i], strict=True)):
            torch.testing.assert_close(a, e, rtol=1e-13, atol=1e-13, msg=f"{name}: thread {i} round {r} tensor {k}")
