"""`seqmem gradflow` and `seqmem playground`: task-loss gradient flow in a network, and confidence traces."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

import seqmem
from seqmem.cli import app
from seqmem.gradflow import network_gradflow
from seqmem.playground import confidence_trace, playground
from seqmem.tasks import get_task

runner = CliRunner()


def test_gradflow_command_writes_json_and_png_with_curves_of_the_right_length(tmp_path):
    T = 9
    res = runner.invoke(app, ["gradflow", "--model", "rnn,lstm", "--task", "xor-echo", "--seq-len", str(T),
                              "--width", "6", "--steps", "3", "--batch-size", "8", "--measure-batch", "4",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "spectral radius" in res.stdout and "lstm" in res.stdout
    assert (tmp_path / "gradflow.png").read_bytes()[:4] == b"\x89PNG"
    result = json.loads((tmp_path / "gradflow.json").read_text())
    assert list(result["models"]) == ["rnn", "lstm"] and result["config"]["seq_len"] == T
    for name, entry in result["models"].items():
        assert entry["train"]["steps"] == 3
        for phase in ("before", "after"):
            rep = entry[phase]
            assert rep["distance"] == list(range(T - 1, -1, -1))
            for key in ("hidden_grad_norm", "hidden_grad_norm_readout", "jacobian_norm", "input_jacobian_norm"):
                assert len(rep[key]) == T, key
            assert rep["jacobian_norm"][-1] == pytest.approx(1.0)  # distance 0: the identity
            assert rep["task_loss"] > 0 and rep["param_grad_norm"] > 0
        assert set(entry["before"]["spectral_radius"]) == ({"h"} if name == "rnn" else {"i", "f", "g", "o"})
    lstm = result["models"]["lstm"]["before"]
    assert len(lstm["forget_gate_product"]) == T and lstm["forget_gate_product"][-1] == 1.0
    # the Elman RNN's error signal decays towards the start of the sequence
    rnn = result["models"]["rnn"]["before"]["hidden_grad_norm"]
    assert rnn[0] < rnn[-1]


def test_gradflow_before_training_only(tmp_path):
    res = runner.invoke(app, ["gradflow", "--model", "gru", "--seq-len", "5", "--width", "4", "--steps", "0",
                              "--measure-batch", "2", "--no-plot", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "gradflow.json").read_text())["models"]["gru"]
    assert entry["after"] is None and entry["train"] is None and not (tmp_path / "gradflow.png").exists()
    res = runner.invoke(app, ["gradflow", "--model", "elman", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown model 'elman'" in res.output


def test_task_loss_gradient_matches_a_step_by_step_reference():
    """||dL/dh_t|| of the task loss, through head and norm, equals autograd on an explicit unrolled network."""
    torch.manual_seed(0)
    task = get_task("xor-echo", seq_len=6)
    net = seqmem.SequenceNetwork.for_task("rnn", task, 5).double()
    batch = task.sample(3, torch.Generator().manual_seed(0))
    rep = network_gradflow(net, task, batch)
    layer, hs, ys, state = net.layers[0], [], [], None
    e = net.embed(batch.x).detach()
    state = layer.initial_state(3, dtype=torch.float64)
    for t in range(6):
        y, state = layer.step(e[:, t], state)
        state.h.retain_grad()
        hs.append(state.h)
        ys.append(y)
    loss = task.loss(net.head(net.norm(torch.stack(ys, 1))), batch) * 3  # summed over the sequences
    loss.backward()
    ref = [float(h.grad.norm(dim=-1).mean()) for h in hs]
    assert rep["hidden_grad_norm"] == pytest.approx(ref, rel=1e-9)
    assert rep["task_loss"] == pytest.approx(loss.item() / 3, rel=1e-12)


@pytest.mark.parametrize("model", ["transformer", "mamba"])
def test_gradflow_on_attention_and_ssm_networks(model):
    task = get_task("xor-echo", seq_len=5)
    net = seqmem.SequenceNetwork.for_task(model, task, 8)
    rep = network_gradflow(net, task, task.sample(2, torch.Generator().manual_seed(0)))
    assert len(rep["hidden_grad_norm"]) == 5 and all(v >= 0 for v in rep["hidden_grad_norm"])
    assert "jacobian_norm" not in rep and rep["network"] == model
    assert net.head.weight.dtype == torch.float32  # measured on a float64 copy; the network is untouched


def test_confidence_trace_uses_step_and_matches_forward():
    torch.manual_seed(0)
    net = seqmem.SequenceNetwork("lstm", 6, vocab_size=4, output_size=2)
    x = torch.randint(0, 4, (7,))
    probs = confidence_trace(net, x, 1)
    full = torch.softmax(net(x[None])[0][0].double(), dim=-1)[:, 1]
    assert probs == pytest.approx(full.tolist(), abs=1e-6)
    with pytest.raises(ValueError, match="label"):
        confidence_trace(net, x, 2)


def test_playground_function_and_command(tmp_path):
    result = playground(seq_len=5, steps=2, params=2000, examples=2, out=tmp_path / "a")
    assert [ex["label"] for ex in result["examples"]] == [1, 0]
    for ex in result["examples"]:
        assert len(ex["tokens"]) == 5 and (ex["tokens"][0] == ex["tokens"][-1]) == bool(ex["label"])
        for m in ("rnn", "lstm"):
            assert len(ex["confidence"][m]) == 5 and all(0.0 <= p <= 1.0 for p in ex["confidence"][m])
    assert (tmp_path / "a" / "playground.png").read_bytes()[:4] == b"\x89PNG"
    res = runner.invoke(app, ["playground", "--seq-len", "4", "--steps", "2", "--params", "2000", "--examples", "1",
                              "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    shown = " ".join(res.stdout.split())  # rich wraps the title
    assert "P(true label) after each symbol" in shown and "rnn (acc" in shown and "lstm (acc" in shown
    saved = json.loads((tmp_path / "b" / "playground.json").read_text())
    assert set(saved["models"]) == {"rnn", "lstm"} and len(saved["examples"]) == 1
