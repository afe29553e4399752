"""scripts/claims.py: the script behind the docs' claims page (its options, tables and the "solved" rule)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tests.script_loader import loaded_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def claims():
    yield from loaded_script("claims")


def _rec(model, T, value, metric="accuracy", seed=0, lr=3e-3):
    return {"task": "copy", "model": model, "seq_len": T, "params_budget": 20000, "lr": lr, "seed": seed,
            "metric": metric, metric: value, "loss": 0.1, "params": 20000, "state_bytes": 8, "wall_s": 1.0}


def test_commands_apply_steps_max_seq_len_and_backend(claims, capsys, tmp_path):
    assert claims.main(["--commands", "--seeds", "0", "--lrs", "3e-3", "--steps", "7", "--max-seq-len", "60",
                        "--backend", "numba", "-j", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    compares = [ln for ln in lines if ln.startswith("seqmem compare")]
    assert len(compares) == 4 and any(ln.startswith("seqmem gradflow") for ln in lines)
    for ln in compares:
        assert "--steps 7" in ln and "--backend numba" in ln and "--jobs 2" in ln
        lens = [int(t) for t in ln.split("--seq-lens ")[1].split()[0].split(",")]
        assert lens and max(lens) <= 60
    assert not list(tmp_path.iterdir()), "--commands must not write anything"


def test_a_max_seq_len_below_every_sweep_leaves_only_those_that_fit(claims, capsys, tmp_path):
    claims.main(["--commands", "--max-seq-len", "20", "--only", "xor-echo,copy", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "--task xor-echo" in out and "--seq-lens 5,10,20 " in out
    assert "--task copy" not in out  # its shortest length is 30


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--only", "xor-echo,bogus"]])
def test_bad_options_are_refused(claims, argv, tmp_path):
    with pytest.raises(SystemExit):
        claims.main(["--commands", "--out", str(tmp_path), *argv])


def test_longest_solved_marks_gaps_and_uses_the_metric_direction(claims):
    sweep = claims.Sweep("copy", "copy", ["lstm", "gru", "rnn"], [30, 60, 120], steps=10)
    records = [_rec("lstm", 30, 1.0), _rec("lstm", 60, 0.5), _rec("lstm", 120, 0.97),
               _rec("gru", 30, 0.96), _rec("gru", 60, 0.95), _rec("gru", 120, 0.2),
               _rec("rnn", 30, 0.3), _rec("rnn", 60, 0.2)]
    got = claims.longest_solved(sweep, records, 0.01)
    assert got == {"lstm": ">= 120 (the longest tried; not 60)", "gru": "30", "rnn": "none"}  # 0.95 is not > 95%
    mse = [_rec("rnn", 30, 0.005, "mse"), _rec("rnn", 60, 0.02, "mse"), _rec("rnn", 120, float("nan"), "mse")]
    assert claims.longest_solved(sweep, mse, 0.01)["rnn"] == "30"
    assert claims.longest_solved(sweep, mse, 0.05)["rnn"] == "60"


def test_decay_per_step_recovers_a_geometric_rate(claims):
    dist = list(range(20))
    assert claims.decay_per_step([0.8**d for d in dist], dist) == pytest.approx(0.8, rel=1e-12)
    assert claims.decay_per_step([1.0] * 20, dist) == pytest.approx(1.0)
    assert claims.decay_per_step([None, 0.0, 1.0], [0, 1, 2]) is None  # one usable point
    assert math.isfinite(claims.decay_per_step([2.0, None, 0.5], [0, 1, 2]))


def test_quick_run_writes_claims_md_with_every_requested_table(claims, tmp_path):
    assert claims.main(["--quick", "--only", "selective-copy,gradflow", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "quick" / "claims.md").read_text()
    assert "## 3. Selective copy" in md and "## 4. Gradient flow" in md and "Quick mode" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| mamba |") or ln.startswith("| s4d |")]
    assert len(table) == 2 and all("n/a" not in ln for ln in table)
    assert (tmp_path / "quick" / "selective-copy" / "results.jsonl").is_file()
    gf = [ln for ln in md.splitlines() if ln.startswith("| rnn |") or ln.startswith("| lstm |")]
    assert len(gf) == 4  # before and after, for both models
    again = (tmp_path / "quick" / "selective-copy" / "results.jsonl").read_bytes()
    claims.main(["--quick", "--only", "selective-copy", "--out", str(tmp_path)])  # resumes: nothing new
    assert (tmp_path / "quick" / "selective-copy" / "results.jsonl").read_bytes() == again
