"""The network wrapper, sizing to a parameter budget, and the training loop (loss goes down, NaN guard)."""

from __future__ import annotations

import math

import pytest
import torch

import seqmem
from seqmem.network import SequenceNetwork, auto_heads, size_for_budget, width_multiple
from seqmem.tasks import get_task
from seqmem.testing import Tolerance, assert_close
from seqmem.train import backward_loss, derive_seed, evaluate, lr_at, train

MODELS = seqmem.model_names()


@pytest.fixture(scope="module")
def xor() -> seqmem.tasks.Task:
    return get_task("xor-echo", seq_len=6)


@pytest.fixture(scope="module")
def text() -> seqmem.tasks.Task:
    return get_task("text", seq_len=8)


# ---------------------------------------------------------------------------------------- sizing
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("budget", [5_000, 20_000, 60_000])
def test_size_for_budget_within_ten_percent(model, budget, xor, text):
    for task in (xor, text):
        width, count = size_for_budget(model, budget, task)
        assert abs(count - budget) <= 0.1 * budget
        assert width % width_multiple(model) == 0
        assert SequenceNetwork.for_task(model, task, width).num_parameters() == count


def test_size_for_budget_errors(xor, text):
    with pytest.raises(ValueError, match="too small"):
        size_for_budget("lstm", 50, text)
    with pytest.raises(ValueError, match="params"):
        size_for_budget("lstm", 0, xor)
    with pytest.raises(ValueError, match="unknown model"):
        size_for_budget("elman", 1000, xor)


def test_transformer_heads_and_width_constraints():
    assert auto_heads(32) == 4 and auto_heads(28) == 2 and auto_heads(30) == 1
    with pytest.raises(ValueError, match="even"):
        SequenceNetwork("transformer", 27, vocab_size=4, output_size=2)
    with pytest.raises(ValueError, match="divisible"):
        SequenceNetwork("transformer", 28, vocab_size=4, output_size=2, n_heads=4)
    net = SequenceNetwork("transformer", 28, vocab_size=4, output_size=2)
    assert net.n_heads == 2


# ---------------------------------------------------------------------------------------- network
@pytest.mark.parametrize("model", MODELS)
def test_network_forward_equals_step(model):
    torch.manual_seed(0)
    width = 16
    net = SequenceNetwork(model, width, vocab_size=5, output_size=3).double()
    x = torch.randint(0, 5, (2, 7))
    logits, state = net(x)
    assert logits.shape == (2, 7, 3)
    assert len(state) == len(net.layers)
    st, outs = None, []
    for t in range(7):
        out, st = net.step(x[:, t], st)
        outs.append(out)
    assert_close("logits of net.step", logits, torch.stack(outs, 1), time_dim=1)
    # chunked streaming is exact
    a, s1 = net(x[:, :3])
    b, _ = net(x[:, 3:], s1)
    assert_close("logits of two chunks", logits, torch.cat([a, b], 1), time_dim=1)


@pytest.mark.parametrize("model", MODELS)
def test_network_forward_of_the_last_positions(model):
    # `last=n` gives the full forward's last n logits and the same state, at every depth and stacking
    torch.manual_seed(0)
    net = SequenceNetwork(model, 16, vocab_size=5, output_size=3, n_layers=2).double()
    x = torch.randint(0, 5, (2, 7))
    _, s1 = net(x[:, :3])
    logits, state = net(x[:, 3:], s1)
    for n in (1, 3, 4):
        last, last_state = net(x[:, 3:], s1, last=n)
        assert last.shape == (2, n, 3)
        assert_close(f"logits of the last {n}", logits[:, -n:], last, time_dim=1)
        for a, b in zip(state, last_state, strict=True):
            for u, v in zip(a, b, strict=True):
                torch.testing.assert_close(u, v, **Tolerance().kwargs(torch.float64))
    for bad in (0, 5, 2.0, "1", True):
        with pytest.raises(ValueError, match=r"last must be an int in \[1, seq_len\] = \[1, 4\]"):
            net(x[:, 3:], s1, last=bad)


def test_network_last_with_a_model_whose_forward_takes_no_last():
    # a user's subclass that overrides forward(x, state) without `last` still works: a full pass, sliced,
    # in the network's forward and in training on a target="last" task
    class MyLSTM(seqmem.LSTM):
        def forward(self, x, state=None):
            return super().forward(x, state)

    torch.manual_seed(0)
    task = get_task("xor-echo", seq_len=6)
    net = SequenceNetwork.for_task(MyLSTM, task, 8)
    x = task.sample(3, torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(net(x, last=2)[0], net(x)[0][:, -2:])
    result = train(net, task, steps=2, batch_size=4, eval_batches=1)
    assert result.steps == 2 and math.isfinite(result.eval_loss) and math.isfinite(result.metric)


def test_network_real_inputs_and_errors():
    net = SequenceNetwork("gru", 8, input_size=3, output_size=1)
    y, _ = net(torch.randn(2, 5, 3))
    assert y.shape == (2, 5, 1)
    with pytest.raises(ValueError, match="input_size=3"):
        net(torch.randn(2, 5, 4))
    with pytest.raises(ValueError, match="exactly one"):
        SequenceNetwork("gru", 8, output_size=1)
    with pytest.raises(ValueError, match="unknown model"):
        SequenceNetwork("elman", 8, vocab_size=3, output_size=1)
    tok = SequenceNetwork("lstm", 8, vocab_size=3, output_size=2)
    with pytest.raises(ValueError, match="integer"):
        tok(torch.randn(2, 5))
    assert tok.state_bytes(torch.zeros(4, 5, dtype=torch.long)) == 2 * 8 * 4  # h and c, float32


# ---------------------------------------------------------------------------------------- training
def test_lr_schedule():
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[9] == pytest.approx(1.0) and lrs[0] == pytest.approx(0.1)
    assert lrs[-1] == pytest.approx(0.1) and all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))


def test_derive_seed_independent_and_stable():
    assert derive_seed(0, "data") == derive_seed(0, "data")
    assert len({derive_seed(0, "data"), derive_seed(0, "eval"), derive_seed(1, "data")}) == 3
    assert 0 <= derive_seed(123, "init") < 2**63


def test_train_loss_decreases_and_is_seeded(xor):
    task = get_task("xor-echo", seq_len=3)

    def run():
        torch.manual_seed(0)
        net = SequenceNetwork.for_task("gru", task, 16)
        return train(net, task, steps=150, batch_size=32, lr=1e-2, eval_batches=2)

    seen = []
    torch.manual_seed(0)
    net = SequenceNetwork.for_task("gru", task, 16)
    result = train(net, task, steps=150, batch_size=32, lr=1e-2, eval_batches=2,
                   callback=lambda step, steps, loss: seen.append((step, steps)))
    assert seen[0] == (1, 150) and seen[-1] == (150, 150)
    assert result.steps == 150 and result.diverged_at is None and len(result.losses) == 150
    assert sum(result.losses[-15:]) / 15 < 0.5 * sum(result.losses[:15]) / 15
    assert result.metric > 0.9 and result.metric_name == "accuracy"
    assert result.eval_loss < 0.3 and result.wall_s > 0
    again = run()
    assert again.losses == result.losses and again.metric == result.metric
    assert "losses" not in result.to_dict() and len(result.to_dict(losses=True)["losses"]) == 150


def test_nan_guard_records_the_step(xor):
    net = SequenceNetwork.for_task("rnn", xor, 8)
    calls = {"n": 0}

    def poison(module, args, output):  # the loss turns NaN at the 4th forward pass
        calls["n"] += 1
        return output * float("nan") if calls["n"] == 4 else output

    handle = net.head.register_forward_hook(poison)
    result = train(net, xor, steps=20, batch_size=8, eval_batches=1)
    handle.remove()
    assert result.diverged_at == 4 and result.steps == 3
    assert "nan" in result.diverged
    assert all(torch.isfinite(p).all() for p in net.parameters())  # the bad step was not applied
    assert result.metric is not None  # still evaluated on the last finite parameters


def test_nan_guard_on_gradients(xor):
    net = SequenceNetwork.for_task("lstm", xor, 8)
    net.head.weight.register_hook(lambda g: g * float("inf"))
    result = train(net, xor, steps=5, batch_size=8, eval_batches=1)
    assert result.diverged_at == 1 and "gradient" in result.diverged and result.steps == 0
    assert math.isnan(result.train_loss)


def test_evaluate_text_is_deterministic_and_bounded(text):
    torch.manual_seed(0)
    net = SequenceNetwork.for_task("gru", text, 8)
    a = evaluate(net, text, n_batches=2, seed=0, batch_size=16)
    b = evaluate(net, text, n_batches=2, seed=0, batch_size=16)
    assert a == b and a.metric_name == "bits_per_char" and a.count == 2 * 16 * 8
    assert a.metric == pytest.approx(a.loss / math.log(2))
    assert net.training  # mode restored


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps"), ({"steps": 5, "lr": 0.0}, "lr"), ({"steps": 5, "clip": -1.0}, "clip"),
    ({"steps": 5, "batch_size": 0}, "batch_size"), ({"steps": 5, "weight_decay": -0.1}, "weight_decay"),
])
def test_train_rejects_bad_settings(xor, kwargs, match):
    net = SequenceNetwork.for_task("rnn", xor, 4)
    with pytest.raises(ValueError, match=match):
        train(net, xor, **kwargs)


# ---------------------------------------------------------------------------------------- truncated BPTT
class _Probe(seqmem.tasks.Task):
    """Real inputs, a regression target at every position from `scored_from` on (target="all")."""

    name = "probe"
    input_kind = "real"
    target = "all"
    loss_kind = "mse"
    metric_name = "mse"

    def __init__(self, seq_len, scored_from=0):
        super().__init__(seq_len)
        self.input_size, self.output_size, self.scored_from = 3, 1, scored_from

    def sample(self, batch_size, generator, split="train"):
        x = torch.randn(batch_size, self.seq_len, 3, generator=generator, dtype=torch.float64)
        y = torch.randn(batch_size, self.seq_len, generator=generator, dtype=torch.float64)
        mask = torch.zeros(batch_size, self.seq_len, dtype=torch.bool)
        mask[:, self.scored_from:] = True
        return seqmem.tasks.Batch(x, y, mask)


def _grads(net, task, batch, tbptt):
    net.zero_grad(set_to_none=True)
    value = backward_loss(net, task, batch, tbptt)
    return value, {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("model", ["rnn", "lstm", "transformer", "mamba"])
def test_tbptt_at_least_seq_len_is_full_bptt(model):
    torch.manual_seed(0)
    T = 7
    for task in (_Probe(T), get_task("xor-echo", seq_len=T)):
        net = SequenceNetwork.for_task(model, task, 8).double()
        batch = task.sample(4, torch.Generator().manual_seed(1))
        full_value, full = _grads(net, task, batch, None)
        for k in (T, T + 5):
            value, grads = _grads(net, task, batch, k)
            assert value == full_value and grads.keys() == full.keys()
            for name in full:
                torch.testing.assert_close(grads[name], full[name], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model", ["gru", "lstm", "mamba"])
def test_tbptt_cuts_the_gradient_at_chunk_boundaries(model):
    torch.manual_seed(0)
    T, K = 10, 4  # chunks [0, 4), [4, 8), [8, 10): the last boundary is at 8
    task = _Probe(T, scored_from=8)  # only the last chunk carries a loss
    net = SequenceNetwork.for_task(model, task, 8).double()
    batch = task.sample(3, torch.Generator().manual_seed(2))

    def input_grad(tbptt):
        x = batch.x.clone().requires_grad_(True)
        net.zero_grad(set_to_none=True)
        value = backward_loss(net, task, batch._replace(x=x), tbptt)
        return value, (x.grad if x.grad is not None else torch.zeros_like(x))

    v_full, g_full = input_grad(None)
    v_trunc, g_trunc = input_grad(K)
    assert g_full[:, :8].abs().amax() > 0  # full BPTT reaches back to the first input
    assert torch.equal(g_trunc[:, :8], torch.zeros_like(g_trunc[:, :8]))  # truncated: nothing before 8
    torch.testing.assert_close(g_trunc[:, 8:], g_full[:, 8:], **Tolerance().kwargs(torch.float64))  # within the chunk: exact
    assert v_trunc == pytest.approx(v_full, rel=1e-12)  # the forward pass (loss) is exact

    # every position scored: the truncated gradient is the sum of per-chunk losses, each from a detached state
    task = _Probe(T)
    batch = task.sample(3, torch.Generator().manual_seed(3))
    value, grads = _grads(net, task, batch, K)
    net.zero_grad(set_to_none=True)
    state, ref = None, 0.0
    for s in range(0, T, K):
        part = seqmem.tasks.Batch(batch.x[:, s:s + K], batch.y[:, s:s + K], batch.mask[:, s:s + K])
        logits, state = net(part.x, state)
        loss = task.loss(logits, part) * part.mask.sum() / batch.mask.sum()
        loss.backward()
        ref += loss.item()
        state = seqmem.map_state(state, torch.Tensor.detach)
    assert value == pytest.approx(ref, rel=1e-12)
    for name, p in net.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, **Tolerance().kwargs(torch.float64))


@pytest.mark.parametrize("model", ["lstm", "transformer", "mamba"])
def test_a_last_target_task_trains_and_scores_as_on_the_full_forward(model):
    # train and evaluate ask a SequenceNetwork for the last position only on a target="last" task:
    # the loss, every gradient and the metric equal those of the full forward pass
    torch.manual_seed(0)
    task = get_task("adding", seq_len=9)
    net = SequenceNetwork.for_task(model, task, 16, n_layers=2).double()
    batch = task.sample(4, torch.Generator().manual_seed(1))
    batch = batch._replace(x=batch.x.double(), y=batch.y.double())
    seen = []
    net.head.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[1]))
    net.zero_grad(set_to_none=True)
    value = backward_loss(net, task, batch)
    grads = {k: p.grad.clone() for k, p in net.named_parameters()}
    assert seen == [1]  # the head ran at the scored position alone
    net.zero_grad(set_to_none=True)
    loss = task.loss(net(batch.x)[0], batch)
    loss.backward()
    assert value == pytest.approx(loss.item(), rel=1e-12)
    for name, p in net.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, **Tolerance().kwargs(torch.float64))
    net = net.float()
    result = evaluate(net, task, n_batches=2, batch_size=8, seed=3)
    gen = torch.Generator().manual_seed(derive_seed(3, "eval"))  # the batches evaluate draws
    scores = [task.score(net(b.x)[0], b) for b in (task.sample(8, gen, split="eval") for _ in range(2))]
    count = sum(sc.count for sc in scores)
    assert result.count == count == 16
    assert result.loss == pytest.approx(sum(sc.loss_sum for sc in scores) / count, rel=1e-5)
    assert result.metric == pytest.approx(sum(sc.metric_sum for sc in scores) / count, rel=1e-5)


def test_tbptt_for_a_last_target_task_trains_only_the_last_chunk():
    torch.manual_seed(0)
    task = get_task("xor-echo", seq_len=12)
    net = SequenceNetwork.for_task("lstm", task, 8)
    seen = []
    net.embed.register_forward_hook(lambda m, a, out: seen.append(out.requires_grad))
    net.zero_grad(set_to_none=True)
    backward_loss(net, task, task.sample(4, torch.Generator().manual_seed(0)), tbptt=5)
    assert seen == [False, False, True]  # chunks [0,5) and [5,10) run without a graph; [10,12) is trained
    result = train(net, task, steps=3, batch_size=8, eval_batches=1, tbptt=5)
    assert result.steps == 3 and result.diverged_at is None
    with pytest.raises(ValueError, match="tbptt"):
        train(net, task, steps=3, tbptt=0)
    with pytest.raises(ValueError, match="tbptt"):
        backward_loss(net, task, task.sample(2, torch.Generator()), tbptt=1.5)


# ---------------------------------------------------------------------------------------- clipping
def test_clipping_on_and_off(xor):
    def run(clip):
        torch.manual_seed(0)
        net = SequenceNetwork.for_task("rnn", xor, 8)
        return net, train(net, xor, steps=6, batch_size=8, eval_batches=1, clip=clip, warmup=0)

    net_tight, tight = run(1e-4)  # every gradient is larger: every step clipped
    net_off, off = run(None)
    _, zero = run(0)  # 0 turns clipping off, as None
    assert tight.clipped_steps == 6 and off.clipped_steps == 0 and zero.clipped_steps == 0
    assert off.max_grad_norm > 1e-4 and tight.max_grad_norm > 1e-4  # measured before clipping
    assert zero.losses == off.losses
    assert tight.losses[0] == off.losses[0] and tight.losses[1:] != off.losses[1:]  # the updates differ
    assert any(not torch.equal(a, b) for a, b in zip(net_tight.parameters(), net_off.parameters(), strict=True))
    assert "max_grad_norm" in tight.to_dict() and tight.to_dict()["clipped_steps"] == 6

