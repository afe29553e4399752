"""`seqmem bench` measures what it says: one record per case, state sizes that follow each model's
memory law, peak memory seen by the profiler, plots and JSON written. No timing is asserted."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from seqmem.bench import BenchRecord, bench, plot_bench, write_json
from seqmem.cli import app

TINY = {"seq_lens": (4, 8), "batch_sizes": (2,), "width": 8, "repeats": 1, "warmup": 0}


@pytest.fixture(scope="module")
def records() -> list[BenchRecord]:
    return bench(["lstm", "transformer"], **TINY)


def test_one_record_per_case(records):
    cases = {(r.label, r.mode, r.seq_len) for r in records}
    assert len(cases) == len(records)
    labels = {r.label for r in records}
    assert labels == {"lstm/torch", "lstm/numba", "torch.nn.LSTM", "torch.nn.LSTMCell", "transformer/torch"}
    assert {r.mode for r in records} == {"forward", "train", "step"}
    assert all(r.median_s > 0 and r.min_s <= r.median_s for r in records)
    assert all(r.batch_size == 1 for r in records if r.mode == "step")


def test_state_size_follows_the_memory_law(records):
    def state(label: str, T: int) -> int:
        return next(r.state_bytes for r in records if r.label == label and r.mode == "forward" and r.seq_len == T)

    assert state("lstm/torch", 4) == state("lstm/torch", 8) == 2 * 2 * 8 * 4  # (h, c), batch 2, width 8, float32
    assert state("transformer/torch", 8) == 2 * state("transformer/torch", 4)  # the KV cache grows with T
    assert all(r.state_bytes is None for r in records if r.label.startswith("torch.nn"))


def test_peak_memory_is_measured_for_sequences_not_streams(records):
    seq = [r for r in records if r.mode != "step"]
    assert all(r.peak_bytes is not None and r.peak_bytes > 0 for r in seq)
    assert all(r.peak_bytes is None for r in records if r.mode == "step")
    # an LSTM training step keeps activations for every step: more memory at T=8 than at T=4
    train = {r.seq_len: r.peak_bytes for r in records if r.label == "lstm/torch" and r.mode == "train"}
    assert train[8] > train[4]


def test_json_and_plots(records, tmp_path):
    path = write_json(records, tmp_path / "bench.json")
    again = [BenchRecord(**r) for r in json.loads(path.read_text())]
    assert again == records
    written = plot_bench(records, tmp_path)
    assert [p.name for p in written] == [  # one figure per measurement and mode
        "bench_time_forward.png", "bench_time_train.png", "bench_time_step.png",
        "bench_memory_forward.png", "bench_memory_train.png", "bench_state.png",
    ]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)


def test_bad_arguments_raise_before_measuring():
    with pytest.raises(ValueError, match="unknown model 'lstn'"):
        bench(["lstn"])
    with pytest.raises(ValueError, match="unknown mode 'backward'"):
        bench(["rnn"], modes=("backward",))
    with pytest.raises(ValueError, match="seq_lens must be positive"):
        bench(["rnn"], seq_lens=(0,))


def test_cli_bench_writes_json(tmp_path):
    out = tmp_path / "b.json"
    result = CliRunner().invoke(
        app,
        ["bench", "--models", "rnn", "--modes", "forward,step", "--seq-lens", "4", "--batch-sizes", "2",
         "--width", "4", "--repeats", "1", "--no-baselines", "--json", str(out)],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads(out.read_text())
    assert {(r["backend"], r["mode"]) for r in rows} == {("torch", "forward"), ("numba", "forward"),
                                                          ("torch", "step"), ("numba", "step")}
    assert "rnn/numba" in result.output
