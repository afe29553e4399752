"""scripts/claims.py: the script behind the docs' claims page (its sweeps, options, tables over seeds)."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import pytest

import seqmem
from seqmem.results import read_results
from tests.script_loader import loaded_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def claims():
    yield from loaded_script("claims")


def _rec(model, T, value, metric="accuracy", seed=0, lr=3e-3, budget=20000):
    return {"task": "copy", "model": model, "seq_len": T, "params_budget": budget, "lr": lr, "seed": seed,
            "metric": metric, metric: value, "loss": 0.1, "params": budget, "state_bytes": 8, "wall_s": 1.0}


def test_commands_apply_steps_max_seq_len_and_backend(claims, capsys, tmp_path):
    assert claims.main(["--commands", "--seeds", "0", "--lrs", "3e-3", "--steps", "7", "--max-seq-len", "60",
                        "--backend", "numba", "-j", "2", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    compares = [ln for ln in lines if ln.startswith("seqmem compare")]
    scripts = [ln for ln in lines if ln.startswith("python scripts/claims.py")]
    assert len(compares) == 4 and any(ln.startswith("seqmem gradflow") for ln in lines)
    assert [ln.split("--only ")[1].split()[0] for ln in scripts] == ["forget-init"]  # mqar starts at 64
    for ln in compares:
        assert "--steps 7" in ln and "--backend numba" in ln and "--jobs 2" in ln and "--lrs 0.003" in ln
        lens = [int(t) for t in ln.split("--seq-lens ")[1].split()[0].split(",")]
        assert lens and max(lens) <= 60
    assert "--steps 7" in scripts[0] and "--backend numba" in scripts[0] and "--seeds 0" in scripts[0]
    sizes = [ln for ln in lines if ln.startswith("# ")]
    assert "# forget-init: 10 runs x 7 steps" in sizes  # 5 variants x T = 20, 40 x 1 seed x 1 rate
    assert not list(tmp_path.iterdir()), "--commands must not write anything"


def test_full_sweeps_are_the_papers_settings(claims, capsys, tmp_path):
    claims.main(["--commands", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    by_name = {s.name: s for s in claims.sweeps(quick=False)}
    assert by_name["adding-long"].seq_lens[-1] == 1000
    assert [T - 2 * 10 for T in by_name["copy-long"].seq_lens] == [100, 200, 300, 500]  # Arjovsky's delays
    assert by_name["copy-long"].task_kwargs == {}  # the task's defaults: 10 symbols from 8 (Arjovsky et al.)
    assert seqmem.get_task("copy", seq_len=120).delay == 99  # T - 1 blanks between symbols and delimiter
    mqar = by_name["mqar"]
    assert {T: kw["num_kv_pairs"] for T, kw in mqar.task_kwargs_by_len.items()} == {64: 4, 128: 8, 256: 16, 512: 64}
    assert len(mqar.budgets) >= 2 and "transformer" in mqar.models
    assert "# mqar:" in out and "# adding-long: 24 runs x 2000 steps" in out  # 4 models x 500, 1000 x 3 seeds


def test_a_max_seq_len_below_every_sweep_leaves_only_those_that_fit(claims, capsys, tmp_path):
    claims.main(["--commands", "--max-seq-len", "20", "--only", "xor-echo,copy", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "--task xor-echo" in out and "--seq-lens 5,10,20 " in out
    assert "--task copy" not in out  # its shortest length is 30


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--only", "xor-echo,bogus"], ["--models", "lstm,nosuch"],
                                  ["--adding-mse", "0"], ["--params", "1e5"], ["--params", "0,100"]])
def test_bad_options_are_refused(claims, argv, tmp_path):
    with pytest.raises(SystemExit):
        claims.main(["--commands", "--out", str(tmp_path), *argv])


def test_models_replace_each_sweeps_models_and_pick_forget_init_variants(claims, capsys, tmp_path):
    claims.main(["--commands", "--only", "adding-long,forget-init", "--models", "gru,lstm-chrono",
                 "--seeds", "0", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "--models gru " in out  # lstm-chrono is no registered model: left out of adding-long
    assert "# forget-init: 8 runs" in out  # the variants gru and lstm-chrono, at 4 lengths


def test_params_replace_the_budgets(claims, capsys, tmp_path):
    claims.main(["--commands", "--only", "mqar,adding-long", "--params", "25000,100000,400000", "--seeds", "0",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "--params 25000,100000,400000" in out.split("# adding-long")[1]
    assert "--only mqar" in out and out.count("--params 25000,100000,400000") == 2


def test_variants_build_specs_that_carry_their_arguments(claims):
    chrono = next(v for v in claims.FORGET_INIT_VARIANTS if v.name == "lstm-chrono")
    spec = chrono.spec(80)
    assert spec.name == "lstm-chrono" and spec.kwargs == {"forget_init": "chrono", "chrono_t_max": 80}
    assert pickle.loads(pickle.dumps(spec)).kwargs == spec.kwargs  # process pools
    model = spec.build(width=6, input_size=3)
    assert isinstance(model, seqmem.LSTM) and model.forget_init == "chrono" and model.chrono_t_max == 80
    assert claims.Variant("lstm", "lstm").spec(80) == "lstm"  # the registered model itself
    assert "chrono_t_max=seq_len" in chrono.describe()


def test_tables_summarise_over_seeds(claims):
    recs = [_rec("lstm", 30, v, seed=s) for s, v in enumerate([1.0, 0.99, 0.5])]
    recs += [_rec("lstm", 30, 0.1, seed=1)]  # a duplicated line of seed 1: not another seed
    recs += [_rec("gru", 30, 0.4, seed=s) for s in range(3)]
    table = claims.metric_table([30], ["lstm", "gru"], recs)
    lstm = next(ln for ln in table.splitlines() if ln.startswith("| lstm |"))
    assert "0.830 [" in lstm and lstm.endswith(" 2/3 |")
    assert claims.success_table([30], ["lstm", "gru"], recs).splitlines()[2:] == [
        "| lstm | 2/3 (0.830) |", "| gru | 0/3 (0.400) |"]
    assert "3 seeds [95% interval: percentile bootstrap]" in claims.caption(recs)
    several = [*recs, *[_rec("lstm", 30, 0.2, seed=s, budget=80000) for s in range(3)]]
    rows = claims.metric_table([30], ["lstm", "gru"], several).splitlines()
    assert rows[0].startswith("| model | budget | params |") and len(rows) == 2 + 3


def test_longest_solved_uses_most_seeds_marks_gaps_and_the_metric_direction(claims):
    records = [_rec("lstm", 30, 1.0), _rec("lstm", 60, 0.5), _rec("lstm", 120, 0.97),
               _rec("gru", 30, 0.96), _rec("gru", 60, 0.95), _rec("gru", 120, 0.2),
               _rec("rnn", 30, 0.3), _rec("rnn", 60, 0.2)]
    got = claims.longest_solved([30, 60, 120], ["lstm", "gru", "rnn"], records)
    assert got == {"lstm": ">= 120 (the longest tried; not 60)", "gru": "30", "rnn": "none"}  # 0.95 is not > 95%
    mse = [_rec("rnn", 30, 0.005, "mse"), _rec("rnn", 60, 0.02, "mse"), _rec("rnn", 120, float("nan"), "mse")]
    assert claims.longest_solved([30, 60, 120], ["rnn"], mse)["rnn"] == "30"
    assert claims.longest_solved([30, 60, 120], ["rnn"], mse, claims.rules_for(0.05))["rnn"] == "60"
    seeds = [_rec("gru", 60, v, seed=s) for s, v in enumerate([0.99, 0.98, 0.3])]
    seeds += [_rec("gru", 120, v, seed=s) for s, v in enumerate([0.99, 0.3, 0.3])]
    assert claims.longest_solved([60, 120], ["gru"], seeds)["gru"] == "60 (2/3 seeds)"  # 1/3 is no majority


def test_decay_per_step_recovers_a_geometric_rate(claims):
    dist = list(range(20))
    assert claims.decay_per_step([0.8**d for d in dist], dist) == pytest.approx(0.8, rel=1e-12)
    assert claims.decay_per_step([1.0] * 20, dist) == pytest.approx(1.0)
    assert claims.decay_per_step([None, 0.0, 1.0], [0, 1, 2]) is None  # one usable point
    assert math.isfinite(claims.decay_per_step([2.0, None, 0.5], [0, 1, 2]))


def _report(rate, keep="forget_gate_product"):
    dist = list(range(9, -1, -1))
    return {"distance": dist, "hidden_grad_norm": [rate ** (9 - t) for t in range(10)],
            "jacobian_norm": [rate**d for d in dist], keep: [rate**d for d in dist]}


def test_gradflow_table_over_seeds_takes_geometric_means_of_ratios(claims):
    results = [{"models": {"lstm": {"before": _report(r), "after": _report(r),
                                    "train": {"metric_name": "accuracy", "metric": acc}},
                           "gru": {"before": _report(r, "update_gate_product"), "after": None, "train": None}}}
               for r, acc in ((0.5, 0.5), (0.8, 0.7), (0.9, 0.9))]
    lines = claims.gradflow_table(results).splitlines()
    lstm_after = next(ln for ln in lines if ln.startswith("| lstm | after |"))
    geo = (0.5 * 0.8 * 0.9) ** (9 / 3)  # prod of rate^9, cube root
    assert f"{geo:.2e}" in lstm_after and "0.700 [" in lstm_after
    assert len([ln for ln in lines if ln.startswith("| gru |")]) == 1  # no "after" without training
    gru = next(ln for ln in lines if ln.startswith("| gru |"))
    assert "n/a" not in gru.split("|")[6]  # the GRU's keep gate is its update gate
    assert claims.gradflow_table(results[0]) == claims.gradflow_table(results[:1])  # one result or a list


def test_quick_run_writes_claims_md_with_every_requested_table(claims, tmp_path):
    assert claims.main(["--quick", "--only", "selective-copy,gradflow", "--steps", "5", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "quick" / "claims-selective-copy-gradflow.md").read_text()
    assert not (tmp_path / "quick" / "claims.md").exists()  # a subset leaves the full summary alone
    assert "## 3. Selective copy" in md and "## 4. Gradient flow" in md and "Quick mode" in md
    table = [ln for ln in md.splitlines() if ln.startswith("| mamba |") or ln.startswith("| s4d |")]
    assert len(table) == 2 and all("n/a" not in ln for ln in table)
    assert (tmp_path / "quick" / "selective-copy" / "results.jsonl").is_file()
    assert (tmp_path / "quick" / "gradflow" / "seed-0" / "gradflow.json").is_file()
    gf = [ln for ln in md.splitlines() if ln.startswith("| rnn |") or ln.startswith("| lstm |")]
    assert len(gf) == 4  # before and after, for both models
    again = (tmp_path / "quick" / "selective-copy" / "results.jsonl").read_bytes()
    claims.main(["--quick", "--only", "selective-copy", "--steps", "5", "--out", str(tmp_path)])  # resumes
    assert (tmp_path / "quick" / "selective-copy" / "results.jsonl").read_bytes() == again


def test_quick_runs_every_new_sweep_end_to_end(claims, tmp_path):
    argv = ["--quick", "--only", "forget-init,adding-long,copy-long,mqar", "--steps", "5", "--out", str(tmp_path)]
    assert claims.main(argv) == 0
    quick = tmp_path / "quick"
    md = (quick / "claims-forget-init-adding-long-copy-long-mqar.md").read_text()
    for title in ("## 5. The LSTM's cliff", "## 6. Adding problem", "## 7. Copy task", "## 8. Multi-query"):
        assert title in md
    assert md.count("s per run (mean of") == 4
    records = read_results(quick / "forget-init" / "results.jsonl")
    chrono = [r for r in records if r["model"] == "lstm-chrono"]
    assert sorted(r["model_kwargs"]["chrono_t_max"] for r in chrono) == sorted(r["seq_len"] for r in chrono)
    assert {r["model"] for r in records} == {v.name for v in claims.FORGET_INIT_VARIANTS}
    success = md.split("Seeds that solved XOR-echo")[1]
    assert all(f"| {v.name} | 0/1 (" in success or f"| {v.name} | 1/1 (" in success
               for v in claims.FORGET_INIT_VARIANTS)
    flow = json.loads((quick / "forget-init" / "gradflow" / "seed-0" / "gradflow.json").read_text())
    assert set(flow["models"]) == {v.name for v in claims.FORGET_INIT_VARIANTS}
    assert "update_gate_product" in flow["models"]["gru-chrono"]["before"]
    mqar = read_results(quick / "mqar" / "results.jsonl")
    assert {(r["seq_len"], r["task_config"]["num_kv_pairs"]) for r in mqar} == {(8, 2), (12, 4)}
    assert len({r["params_budget"] for r in mqar}) == 2 and (quick / "mqar" / "assoc-recall_state.png").is_file()
    assert (quick / "forget-init" / "command.txt").read_text().startswith("python scripts/claims.py --only forget-init")
    assert (quick / "adding-long" / "command.txt").read_text().startswith("seqmem compare --task adding")
    assert (quick / "forget-init" / "gradflow" / "command.txt").is_file()
    before = {p.name: p.read_bytes() for p in quick.glob("*/results.jsonl")}
    assert claims.main(argv) == 0  # everything resumes: no new line anywhere
    assert {p.name: p.read_bytes() for p in quick.glob("*/results.jsonl")} == before


def test_estimate_times_each_configuration_and_writes_nothing(claims, capsys, tmp_path):
    assert claims.main(["--quick", "--estimate", "--only", "adding-long", "--models", "lstm,gru",
                        "--probe-steps", "1", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("adding-long: 4 runs x 30 steps:") and "CPU-hours" in out[0]
    assert len([ln for ln in out if "ms/step" in ln]) == 4  # 2 models x 2 lengths
    assert not list(tmp_path.iterdir())


def test_read_gradflow_prefers_one_result_per_seed_over_a_single_file(claims, tmp_path):
    def write(path, seed):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"config": {"seed": seed}, "models": {}}))

    assert claims.read_gradflow(tmp_path) == []
    write(tmp_path / "gradflow.json", 0)
    assert [r["config"]["seed"] for r in claims.read_gradflow(tmp_path)] == [0]
    for seed in (10, 2, 1):
        write(tmp_path / f"seed-{seed}" / "gradflow.json", seed)
    assert [r["config"]["seed"] for r in claims.read_gradflow(tmp_path)] == [1, 2, 10]
