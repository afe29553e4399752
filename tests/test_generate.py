"""`seqmem generate`: sampling from a character-level LM that `seqmem compare --task text --save-weights`
trained and saved, token by token through the network's stream."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from seqmem.cli import app
from seqmem.generate import generate, load_char_lm, sample_token

runner = CliRunner()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A GRU (fused numba stream) and a transformer (torch KV stream), trained a few steps on text."""
    out = tmp_path_factory.mktemp("text")
    args = ["compare", "--task", "text", "--models", "gru,transformer", "--seq-lens", "12", "--steps", "25",
            "--params", "12000", "--batch-size", "16", "--eval-batches", "1", "--out", str(out),
            "--save-weights", "--no-plot", "--quiet"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["model"]: out / r["weights"] for r in records}


@pytest.mark.parametrize("model", ["gru", "transformer"])
def test_generate_command_prints_the_continuation_and_the_speed(checkpoints, model):
    args = ["generate", str(checkpoints[model]), "--prompt", "The ", "--tokens", "40", "--top-k", "5", "--seed", "3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = result.stdout.rstrip("\n")
    assert text.startswith("The ") and len(text) == len("The ") + 40
    assert "40 tokens in" in result.stderr and "tokens/s" in result.stderr
    assert ("fused numba stream" in result.stderr) == (model == "gru")
    again = runner.invoke(app, args)
    assert again.stdout == result.stdout  # seeded


def test_generation_follows_the_network_greedily(checkpoints):
    """Greedy generation through the stream equals the argmax of a full forward pass over the text so far."""
    net, task = load_char_lm(checkpoints["gru"])
    assert net.layers[0].backend == "numba"
    prompt = "def f"
    out = generate(net, task, prompt, 12, temperature=0)
    ids = task.encode(prompt).tolist()
    with torch.no_grad():
        for _ in range(12):
            logits = net(torch.tensor([ids]))[0][0, -1]
            ids.append(int(logits.argmax()))
    assert out.text == task.decode(ids[len(prompt):]) and out.tokens == 12 and out.fused


def test_generate_refuses_what_it_cannot_decode(checkpoints, tmp_path):
    path = checkpoints["gru"]
    doc = json.loads(path.with_suffix(".json").read_text())
    doc["metadata"]["task"] = "xor-echo"
    (tmp_path / "other.json").write_text(json.dumps(doc))
    (tmp_path / "other.safetensors").write_bytes(path.read_bytes())
    result = runner.invoke(app, ["generate", str(tmp_path / "other.json"), "--prompt", "a"])
    assert result.exit_code == 2 and "not a character-level language model" in result.stderr
    result = runner.invoke(app, ["generate", str(tmp_path / "missing.safetensors"), "--prompt", "a"])
    assert result.exit_code == 2 and "does not exist" in result.stderr
    result = runner.invoke(app, ["generate", str(path), "--prompt", ""])
    assert result.exit_code == 2 and "at least one character" in result.stderr


def test_sample_token_respects_top_k_and_temperature():
    logits = torch.tensor([0.0, 5.0, 4.0, -1.0])
    gen = torch.Generator().manual_seed(0)
    draws = {sample_token(logits, top_k=2, generator=gen) for _ in range(200)}
    assert draws == {1, 2}
    assert sample_token(logits, temperature=0) == 1
    assert {sample_token(logits, temperature=100.0, generator=gen) for _ in range(400)} == {0, 1, 2, 3}
    for bad in ({"temperature": -1.0}, {"temperature": float("nan")}, {"top_k": 0}):
        with pytest.raises(ValueError):
            sample_token(logits, **bad)
