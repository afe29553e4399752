"""The streaming and ONNX Runtime parts of `seqmem bench --compare-baselines` (`stream_goals`,
`onnx_goals`) and the ONNX baselines themselves (`seqmem._onnx`): the same function as torch.nn."""

from __future__ import annotations

import math

import pytest
import torch

import seqmem._onnx
from seqmem.bench import onnx_goals, stream_goals
from seqmem.registry import model_names


def test_stream_goals_cover_every_family():
    records = stream_goals(repeats=2, quick=True)
    names = [r.name for r in records]
    assert sum("vs torch.nn.LSTMCell" in n for n in names) == 1
    assert sum("vs torch.nn.GRUCell" in n for n in names) == 1
    assert sum("mamba block" in n for n in names) == 1
    for model in model_names():
        assert sum(n.startswith("network stream") and f": {model} (" in n for n in names) == 1, model
    for r in records:
        assert r.ours_s > 0 and r.baseline_s > 0 and math.isclose(r.speedup, r.baseline_s / r.ours_s)
        assert r.met == (r.speedup >= r.goal)
    fused = {n.split(": ")[1].split(" (")[0] for n in names if "fused numba" in n}
    assert fused == {"rnn", "lstm", "gru", "mamba", "s4d"}


@pytest.mark.parametrize("cls", [torch.nn.LSTM, torch.nn.GRU])
def test_onnx_baseline_computes_what_torch_computes(cls):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    module = cls(5, 7, batch_first=True)
    onnx = seqmem._onnx.OnnxRecurrent(module)
    x = torch.randn(3, 9, 5)
    assert onnx.max_abs_diff(module, x) < 1e-5
    state = onnx.initial_state(3)
    for t in range(9):  # one token per call, as the streaming comparison calls it
        state = onnx.step(x[:, t : t + 1].transpose(0, 1).contiguous().numpy(), state)
    with torch.no_grad():
        _, ref = module(x)
    h = ref[0] if isinstance(ref, tuple) else ref
    torch.testing.assert_close(torch.from_numpy(state[0]), h, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="LSTM or torch.nn.GRU"):
        seqmem._onnx.OnnxRecurrent(torch.nn.RNN(5, 7))


def test_onnx_goals_measure_or_say_why_not(monkeypatch):
    if seqmem._onnx.onnx_missing() is None:
        records = onnx_goals(repeats=2, quick=True)
        assert len(records) == 5 and all(r.ours_s > 0 and r.baseline_s > 0 for r in records)
        assert all("ONNX Runtime" in r.name for r in records)
    monkeypatch.setattr(seqmem._onnx, "onnx_missing", lambda: "onnxruntime not installed (pip install 'seqmem[bench]')")
    with pytest.warns(UserWarning, match="ONNX Runtime baselines skipped: onnxruntime not installed"):
        assert onnx_goals(repeats=2, quick=True) == []
