"""The model registry: a model defined here, registered once, runs through every command; models by
import path and by entry point; and no code outside a family's folder and the registry switches on
a model's name."""

from __future__ import annotations

import ast
import json
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from hypothesis import given, settings
from torch import Tensor, nn
from typer.testing import CliRunner

import seqmem
from seqmem import registry
from seqmem.cli import app
from seqmem.compare import compare
from seqmem.gradflow import gradflow
from seqmem.network import SequenceNetwork, size_for_budget
from seqmem.results import read_results
from seqmem.tasks import get_task
from seqmem.testing import check_sequence_model, model_configs

runner = CliRunner()
PACKAGE = Path(seqmem.__file__).parent


class DecayState(NamedTuple):
    h: Tensor


class DecayRNN(nn.Module):
    """A diagonal linear recurrence h_t = a * h_{t-1} + W x_t, with a learned decay a in (0, 1)."""

    def __init__(self, input_size: int, hidden_size: int, scale: float = 1.0) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = input_size, hidden_size, hidden_size
        self.proj = nn.Linear(input_size, hidden_size)
        self.logit_a = nn.Parameter(torch.full((hidden_size,), 2.0 * scale))

    def initial_state(self, batch_size, *, device=None, dtype=None):
        ref = self.proj.weight
        return DecayState(torch.zeros(batch_size, self.hidden_size, device=device or ref.device,
                                      dtype=dtype or ref.dtype))

    def step(self, x_t, state=None):
        state = self.initial_state(x_t.shape[0]) if state is None else state
        h = torch.sigmoid(self.logit_a) * state.h + self.proj(x_t)
        return h, DecayState(h)

    def forward(self, x, state=None):
        state = self.initial_state(x.shape[0], dtype=x.dtype) if state is None else state
        ys = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            ys.append(y)
        return torch.stack(ys, 1), state


def _cleanup(name: str) -> None:
    registry._MODELS._specs.pop(name, None)


@pytest.fixture
def decay_spec():
    spec = seqmem.register_model(seqmem.ModelSpec("decay", DecayRNN, description="a diagonal linear recurrence"))
    yield spec
    _cleanup("decay")


def test_a_registered_model_runs_through_every_command(decay_spec, tmp_path):
    assert "decay" in seqmem.model_names() and seqmem.model_spec("decay") is decay_spec
    assert decay_spec.backends == ("torch",) and decay_spec.stacking == "layers"
    # SequenceNetwork and sizing
    net = SequenceNetwork("decay", 12, vocab_size=5, output_size=3, n_layers=2)
    assert len(net.layers) == 2 and isinstance(net.layers[0], DecayRNN) and net.config()["model"] == "decay"
    sizing = size_for_budget("decay", 2000, get_task("xor-echo", seq_len=6))
    assert abs(sizing.params - 2000) <= 200
    # compare (Python and CLI), resumable, and the record names the model
    recs = compare("xor-echo", ["decay", "gru"], [4], steps=3, params=2000, eval_batches=1, out=tmp_path, plot=False)
    assert [r["model"] for r in recs] == ["decay", "gru"] and recs[0]["state_bytes"] > 0
    res = runner.invoke(app, ["compare", "--models", "decay", "--seq-lens", "4", "--steps", "3", "--params", "2000",
                              "--eval-batches", "1", "--no-plot", "--quiet", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 2  # resumed, not retrained
    # bench --quick
    res = runner.invoke(app, ["bench", "--quick", "--models", "decay", "--no-memory", "--modes", "forward,step"])
    assert res.exit_code == 0, res.output
    assert "decay/torch" in res.stdout
    # gradflow
    out = gradflow(["decay"], "xor-echo", 6, width=4, steps=0, measure_batch=2, plot=False)
    assert out["models"]["decay"]["before"]["hidden_grad_norm"]
    # seqmem list
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0 and "decay" in res.stdout and "a diagonal linear recurrence" in res.stdout
    # seqmem.testing
    @settings(max_examples=3, deadline=None)
    @given(config=model_configs("decay"))
    def conforms(config):
        assert set(config) == {"input_size", "hidden_size"}
        check_sequence_model(config.build(dtype=torch.float64), seq_len=5, backends=())

    conforms()


def test_registration_errors(decay_spec):
    with pytest.raises(ValueError, match="registered already"):
        seqmem.register_model(seqmem.ModelSpec("decay", DecayRNN))
    seqmem.register_model(seqmem.ModelSpec("decay", DecayRNN, description="again"), replace=True)
    assert seqmem.model_spec("decay").description == "again"

    class NoStep(nn.Module):
        def __init__(self, input_size, hidden_size):
            super().__init__()
            self.input_size = self.output_size = hidden_size

        def forward(self, x, state=None):
            return x, state

    with pytest.raises(TypeError, match=r"SequenceModel.*missing \['initial_state', 'step'\]"):
        seqmem.register_model(seqmem.ModelSpec("nostep", NoStep))
    assert "nostep" not in seqmem.model_names()
    with pytest.raises(ValueError, match="width_arg='width' is not an argument"):
        seqmem.ModelSpec("x", DecayRNN, width_arg="width")
    with pytest.raises(ValueError, match="stacking"):
        seqmem.ModelSpec("x", DecayRNN, stacking="sideways")
    with pytest.raises(TypeError, match="expected a seqmem.ModelSpec"):
        seqmem.register_model(DecayRNN)

    def broken(input_size, hidden_size):
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="building .*broken at width 4 failed: RuntimeError: boom"):
        seqmem.register_model(seqmem.ModelSpec("broken", broken))


def test_fixed_arguments_and_width_grid():
    s4d = seqmem.model_spec("s4d")
    assert s4d.kwargs == {"selective": False} and not s4d.build(8, 8).selective
    with pytest.raises(ValueError, match="selective must be False for s4d"):
        s4d.build(8, 8, selective=True)
    tf = seqmem.model_spec("transformer")
    assert tf.step() == 2 and tf.step({"n_heads": 3}) == 6 and tf.model_kwargs(12, {})["n_heads"] == 2
    with pytest.raises(ValueError, match="divisible by 6 with n_heads=3"):
        tf.build(8, 8, n_heads=3)
    with pytest.raises(ValueError, match="its inputs have its width"):
        tf.build(4, 8)


MODULE = textwrap.dedent('''
    import torch
    from torch import nn

    class Scaled(nn.Module):
        """Scales a GRU's output: a user's model in a module of its own."""

        def __init__(self, input_size, hidden_size):
            super().__init__()
            import seqmem
            self.inner = seqmem.GRU(input_size, hidden_size)
            self.input_size, self.output_size = input_size, hidden_size
            self.scale = nn.Parameter(torch.ones(hidden_size))

        def initial_state(self, batch_size, **kw):
            return self.inner.initial_state(batch_size, **kw)

        def forward(self, x, state=None):
            y, state = self.inner(x, state)
            return y * self.scale, state

        def step(self, x_t, state=None):
            y, state = self.inner.step(x_t, state)
            return y * self.scale, state

    def no_width(input_size, size):
        return None

    NOT_A_MODEL = 3
''')


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "mycells.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "mycells"
    sys.modules.pop("mycells", None)


def test_a_model_by_import_path_through_the_cli(user_module, tmp_path):
    out = tmp_path / "sweep"
    res = runner.invoke(app, ["compare", "--models", "lstm,mycells:Scaled", "--seq-lens", "4", "--steps", "3",
                              "--params", "2000", "--eval-batches", "1", "--no-plot", "--quiet", "--out", str(out)])
    assert res.exit_code == 0, res.output
    recs = {json.loads(line)["model"]: json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()}
    assert sorted(recs) == ["lstm", "mycells:Scaled"]  # (a line per run as it finishes: one worker per CPU)
    assert abs(recs["mycells:Scaled"]["params"] - 2000) <= 200  # parameter-matched sizing works for it
    res = runner.invoke(app, ["gradflow", "--model", "mycells:Scaled", "--seq-len", "5", "--width", "4",
                              "--measure-batch", "2", "--no-plot", "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    for ref, message in [
        ("mycells:Nope", "has no attribute 'Nope'"),
        ("nosuchpackage.cells:X", "cannot import module 'nosuchpackage.cells'"),
        ("mycells:no_width", "takes no width argument"),
        ("mycells:NOT_A_MODEL", "names a int"),
        ("mycells:", "must look like 'package.module:attr'"),
    ]:
        res = runner.invoke(app, ["compare", "--models", ref, "--out", str(tmp_path / "bad")])
        assert res.exit_code == 2 and message in " ".join(res.output.replace("│", " ").split()), (ref, res.output)
        assert not (tmp_path / "bad" / "results.jsonl").exists()  # refused before any work


def test_a_model_from_main_is_refused_on_a_process_pool(monkeypatch):
    monkeypatch.setattr(DecayRNN, "__module__", "__main__")
    with pytest.raises(ValueError, match="defined in __main__"):
        compare("xor-echo", [DecayRNN], [4], steps=2, params=2000, jobs=2)


DIST_INFO = {
    "METADATA": "Metadata-Version: 2.1\nName: seqmem-toy-plugin\nVersion: 0.1\n",
    "entry_points.txt": "[seqmem.models]\ntoy = toy_plugin:SPEC\nbroken = toy_plugin_missing:SPEC\n\n"
                        "[seqmem.tasks]\ntoy-task = toy_plugin:TASK\n",
}
PLUGIN = textwrap.dedent('''
    import seqmem
    from seqmem.tasks import XorEcho

    class ToyTask(XorEcho):
        name = "toy-task"
        description = "XOR-echo under another name"

    SPEC = seqmem.ModelSpec("toy", seqmem.GRU, description="a GRU from a plug-in", kwargs={"bias": False})
    TASK = seqmem.TaskSpec("toy-task", ToyTask)
''')


def test_models_and_tasks_from_entry_points(tmp_path, monkeypatch):
    dist = tmp_path / "seqmem_toy_plugin-0.1.dist-info"
    dist.mkdir()
    for name, text in DIST_INFO.items():
        (dist / name).write_text(text)
    (tmp_path / "toy_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    # fresh registries, as in a new process: entry points are read on first use
    monkeypatch.setattr(registry, "_MODELS", registry._Registry("model", registry.MODEL_ENTRY_POINTS,
                                                                registry._builtin_models, registry.ModelSpec))
    monkeypatch.setattr(registry, "_TASKS", registry._Registry("task", registry.TASK_ENTRY_POINTS,
                                                               registry._builtin_tasks, registry.TaskSpec))
    with pytest.warns(UserWarning, match="could not load the entry point 'broken'.*toy_plugin_missing"):
        names = seqmem.model_names()
    assert names[:6] == ["rnn", "lstm", "gru", "transformer", "mamba", "s4d"] and "toy" in names
    assert seqmem.build("toy", 3, 4).bias is False
    assert "toy-task" in seqmem.task_names() and seqmem.get_task("toy-task", seq_len=5).seq_len == 5
    sys.modules.pop("toy_plugin", None)


def test_import_seqmem_reads_no_entry_points():
    code = ("import importlib.metadata as m, sys; calls = []; real = m.entry_points\n"
            "m.entry_points = lambda *a, **k: calls.append(k.get('group')) or real(*a, **k)\n"
            "import seqmem; print(sum(str(g).startswith('seqmem') for g in calls), 'seqmem.lstm.spec' in sys.modules)")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["0", "False"]


# ------------------------------------------------------------------------------ no switch on names
ALLOWED = {"registry.py"}  # and every family folder: `seqmem/<folder>/` of a registered family


def _family_folders() -> set[str]:
    return {spec.factory.__module__.split(".")[1] for spec in seqmem.list_models()
            if spec.factory.__module__.startswith("seqmem.")}


def _switches(path: Path, names: set[str]) -> list[str]:
    """Comparisons with a model name, and dict literals or subscripts keyed by one."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        consts: list[ast.AST] = []
        if isinstance(node, ast.Compare):
            for part in [node.left, *node.comparators]:
                consts += [part] if isinstance(part, ast.Constant) else list(getattr(part, "elts", []))
        elif isinstance(node, ast.Dict):
            consts += [k for k in node.keys if k is not None]
        elif isinstance(node, ast.Subscript):
            consts.append(node.slice)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "get" and node.args:
            consts.append(node.args[0])
        if any(isinstance(c, ast.Constant) and c.value in names for c in consts):
            found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_no_code_outside_the_families_and_the_registry_switches_on_a_model_name():
    names = set(seqmem.model_names())
    families = _family_folders()
    files = [p for p in PACKAGE.rglob("*.py")
             if p.name not in ALLOWED and p.relative_to(PACKAGE).parts[0] not in families]
    docs_hooks = list((PACKAGE.parent / "docs" / "hooks").glob("*.py"))
    found = [hit for p in files + docs_hooks for hit in _switches(p, names)]
    assert not found, "switches on model names outside the registry:\n" + "\n".join(found)


def test_the_scan_finds_a_switch(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text('def f(name):\n    if name in ("rnn", "lstm"):\n        return {"gru": 1}[name]\n')
    shadow = PACKAGE.parent / "_scan_probe.py"
    try:
        shadow.write_text(bad.read_text())
        assert len(_switches(shadow, {"rnn", "lstm", "gru"})) == 2
    finally:
        shadow.unlink()


def test_every_builtin_spec_builds_a_conforming_model():
    for spec in seqmem.list_models():
        spec.check()
        model = spec.build(4, 4)
        assert isinstance(model, seqmem.SequenceModel) and model.output_size == 4
        assert type(model.initial_state(2)) is spec.state_type
        assert model.backends == spec.backends and spec.description and spec.color and spec.marker


def test_two_variants_of_a_model_under_one_name_never_share_a_run(tmp_path):
    fb3 = seqmem.ModelSpec("lstm-fb", seqmem.LSTM, kwargs={"forget_bias": 3.0})
    fb5 = seqmem.ModelSpec("lstm-fb", seqmem.LSTM, kwargs={"forget_bias": 5.0})
    tiny = {"steps": 2, "params": 2000, "eval_batches": 1, "out": tmp_path, "plot": False}
    (a,) = compare("xor-echo", [fb3], [3], **tiny)
    (b,) = compare("xor-echo", [fb5], [3], **tiny)
    (c,) = compare("xor-echo", ["lstm"], [3], **tiny)
    assert a["id"] != b["id"] and a["model_kwargs"] == {"forget_bias": 3.0} and "model_kwargs" not in c
    assert [r["id"] for r in read_results(tmp_path)] == [a["id"], b["id"], c["id"]]


def test_specs_travel_to_worker_processes():
    """A pool or Ray worker gets each run's spec pickled: built-ins by name, a user's spec by value."""
    import pickle

    for spec in seqmem.list_models():
        assert pickle.loads(pickle.dumps(spec)) is spec, spec.name
    variant = seqmem.ModelSpec("lstm-fb3", seqmem.LSTM, kwargs={"forget_bias": 3.0})
    copy = pickle.loads(pickle.dumps(variant))
    assert copy is not variant and copy.kwargs == {"forget_bias": 3.0} and copy.factory is seqmem.LSTM
