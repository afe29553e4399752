"""Saving and loading networks: safetensors + JSON round trips, and clear errors for bad files (never pickle)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import seqmem
import seqmem.io
from seqmem.compare import compare, read_results
from seqmem.io import check_writable_folder, network_files, remove_temp_files
from seqmem.tasks import get_task
from seqmem.train import evaluate


@pytest.mark.parametrize("model", seqmem.model_names())
def test_save_then_load_gives_identical_outputs(tmp_path, model):
    torch.manual_seed(0)
    net = seqmem.SequenceNetwork(model, 8, vocab_size=5, output_size=3)
    st, js = seqmem.save(net, tmp_path / "nets" / model, metadata={"note": "hello"})
    assert st.name == f"{model}.safetensors" and js.name == f"{model}.json"
    doc = json.loads(js.read_text())
    assert doc["format"] == "seqmem.SequenceNetwork" and doc["config"]["model"] == model
    assert doc["metadata"] == {"note": "hello"} and doc["dtype"] == "float32"
    x = torch.randint(0, 5, (3, 7))
    for path in (st, js, tmp_path / "nets" / model):  # either file, or the stem
        again = seqmem.load(path)
        assert isinstance(again, seqmem.SequenceNetwork) and not again.training
        assert torch.equal(again(x)[0], net(x)[0])
    assert not [p for p in (tmp_path / "nets").iterdir() if p.suffix == ".tmp"]


def test_float64_real_inputs_and_model_options_survive(tmp_path):
    net = seqmem.SequenceNetwork("lstm", 6, input_size=2, output_size=1, n_layers=2, forget_bias=2.0).double()
    seqmem.save(net, tmp_path / "lstm")
    again = seqmem.load(tmp_path / "lstm.json")
    assert again.head.weight.dtype == torch.float64 and again.n_layers == 2
    assert again.layers[0].forget_bias == 2.0
    x = torch.randn(2, 5, 2, dtype=torch.float64)
    assert torch.equal(again(x)[0], net(x)[0])


def _saved(tmp_path):
    net = seqmem.SequenceNetwork("gru", 4, vocab_size=3, output_size=2)
    return seqmem.save(net, tmp_path / "net")


def test_corrupt_safetensors_is_reported_with_the_file_name(tmp_path):
    st, js = _saved(tmp_path)
    st.write_bytes(st.read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match=r"net\.safetensors.*SHA-256"):
        seqmem.load(st)
    doc = json.loads(js.read_text())
    del doc["safetensors_sha256"]  # without the checksum, the safetensors parser itself must object
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"net\.safetensors is not a valid seqmem network file: expected a safetensors"):
        with pytest.warns(UserWarning, match=r"net\.json records no SHA-256"):
            seqmem.load(js)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_a_pickle_in_place_of_the_weights_is_never_unpickled(tmp_path):
    st, js = _saved(tmp_path)
    marker = tmp_path / "pwned"
    st.write_bytes(pickle.dumps({"embed.weight": _Evil(str(marker))}))
    doc = json.loads(js.read_text())
    del doc["safetensors_sha256"]
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="safetensors"), pytest.warns(UserWarning, match="no SHA-256"):
        seqmem.load(st)
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [
    (b'{"hello": "world"}', '"format": "seqmem.SequenceNetwork".*got format None'),
    (b"[1, 2, 3]", "got a JSON list"),
    (b"\x80\x04not json", "it is not JSON"),
    (b'{"format": "seqmem.SequenceNetwork", "format_version": 99, "config": {}, "tensors": {}}', "newer"),
    (b'{"format": "seqmem.SequenceNetwork", "format_version": 1, "tensors": {}, '
     b'"config": {"model": "elman", "width": 4, "vocab_size": 3, "output_size": 2}}', "unknown model 'elman'"),
    (b'{"format": "seqmem.SequenceNetwork", "format_version": 1, "tensors": {}, "config": {"model": "gru"}}',
     "missing 1 required positional argument: 'width'"),
])
def test_foreign_json_is_reported_with_the_file_name(tmp_path, content, match):
    st, js = _saved(tmp_path)
    js.write_bytes(content)
    with pytest.raises(ValueError, match=r"net\.json") as info:
        seqmem.load(st)
    assert info.match(match)


def test_weights_of_another_architecture_are_refused(tmp_path):
    st, js = _saved(tmp_path)
    doc = json.loads(js.read_text())
    doc["config"]["width"] = 5
    del doc["safetensors_sha256"]
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"tensors shaped as the config says.*instead of"):
        seqmem.load(st)
    doc["config"]["model"] = "mamba"
    doc["config"]["width"] = 4
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="missing"):
        seqmem.load(st)


def test_missing_half_of_the_pair(tmp_path):
    st, js = _saved(tmp_path)
    js.unlink()
    with pytest.raises(FileNotFoundError, match=r"net\.json does not exist"):
        seqmem.load(st)
    assert network_files(tmp_path / "a.b") == (tmp_path / "a.b.safetensors", tmp_path / "a.b.json")


def test_compare_save_weights_then_load_reproduces_the_recorded_metric(tmp_path):
    records = compare("xor-echo", ["lstm", "mamba"], [4], steps=20, params=3000, batch_size=16, eval_batches=2,
                      out=tmp_path, plot=False, save_weights=True)
    assert [r["weights"] for r in read_results(tmp_path)] == [f"weights/{r['id']}.safetensors" for r in records]
    for rec in records:
        net = seqmem.load(tmp_path / rec["weights"])
        assert net.num_parameters() == rec["params"] and net.width == rec["width"]
        meta = json.loads((tmp_path / rec["weights"]).with_suffix(".json").read_text())["metadata"]
        assert meta["id"] == rec["id"]
        ev = evaluate(net, get_task("xor-echo", seq_len=4), rec["eval_batches"])
        assert ev.metric == rec["accuracy"] and ev.loss == pytest.approx(rec["loss"], rel=1e-6)
    # resuming without retraining keeps the weights; a folder with unsaved runs warns
    again = compare("xor-echo", ["lstm", "mamba"], [4], steps=20, params=3000, batch_size=16, eval_batches=2,
                    out=tmp_path, plot=False, save_weights=True)
    assert again == records
    compare("xor-echo", ["gru"], [4], steps=2, params=3000, batch_size=16, eval_batches=1, out=tmp_path / "b",
            plot=False)
    with pytest.warns(UserWarning, match="no saved weights"):
        compare("xor-echo", ["gru"], [4], steps=2, params=3000, batch_size=16, eval_batches=1,
                out=tmp_path / "b", plot=False, save_weights=True)
    with pytest.raises(ValueError, match="needs an output folder"):
        compare("xor-echo", ["gru"], [4], steps=2, params=3000, save_weights=True)


# ------------------------------------------------------------------ the config is checked before anything is built
def _edit_config(js, **changes):
    doc = json.loads(js.read_text())
    doc["config"].update(changes)
    js.write_text(json.dumps(doc))


def _never_built(monkeypatch):
    def refuse(**config):
        raise AssertionError(f"SequenceNetwork was built from {config}")

    monkeypatch.setattr(seqmem.io, "SequenceNetwork", refuse)


@pytest.mark.parametrize("changes, match", [
    ({"width": 20_000}, r"net\.safetensors .*embed\.weight is \(3, 4\) instead of \(3, 20000\).*width=20000"),
    ({"output_size": 7}, r"head\.weight is \(2, 4\) instead of \(7, 4\)"),
    ({"vocab_size": None, "input_size": 3}, r"embed\.weight is \(3, 4\) instead of \(4, 3\)"),
    ({"n_layers": 10_000}, r"at least one tensor per layer \(net\.json says n_layers=10000\)"),
    ({"width": "4"}, r"net\.json .*width must be a positive int, got '4'"),
    ({"width": 0}, "width must be a positive int, got 0"),
    ({"n_layers": True}, "n_layers must be a positive int, got True"),
    ({"model": 5}, r"net\.json .*unknown model 5"),
])
def test_a_config_that_does_not_fit_the_weights_is_refused_before_building(tmp_path, monkeypatch, changes, match):
    st, js = _saved(tmp_path)
    _edit_config(js, **changes)
    _never_built(monkeypatch)
    with pytest.raises(ValueError, match=match):
        seqmem.load(st)


def test_a_config_much_larger_than_its_weights_is_refused_before_allocating(tmp_path):
    torch.manual_seed(0)
    st, js = seqmem.save(seqmem.SequenceNetwork("mamba", 4, vocab_size=3, output_size=2, d_state=2), tmp_path / "net")
    _edit_config(js, d_state=10**9)  # A_log would be (8, 10^9): 32 GB
    with pytest.raises(ValueError, match=r"net\.json .*fits the [\d,]+ bytes of tensors in net\.safetensors.*asks for more"):
        seqmem.load(st)
    _edit_config(js, d_state=3)  # a small mismatch is built, then named tensor by tensor
    with pytest.raises(ValueError, match=r"A_log: \(8, 2\) instead of \(8, 3\)"):
        seqmem.load(st)
    _edit_config(js, d_state=2, forget_bias=1.0)  # an argument of another model
    with pytest.raises(ValueError, match=r"net\.json .*forget_bias"):
        seqmem.load(st)


def test_integer_tensors_are_refused(tmp_path):
    from safetensors.torch import save_file

    st, js = _saved(tmp_path)
    tensors = {k: v.to(torch.int32) if k == "head.bias" else v for k, v in seqmem.load(st).state_dict().items()}
    save_file(tensors, st)
    with pytest.raises(ValueError, match=r"floating-point tensors .*head\.bias: I32"):
        seqmem.load(st)


# ------------------------------------------------------------------ SHA-256 and non-finite weights
def test_the_sha256_is_always_written(tmp_path):
    net = seqmem.SequenceNetwork("rnn", 4, vocab_size=3, output_size=2)
    weights, config = seqmem.io.weights_bytes(net)
    del config["safetensors_sha256"]  # a caller that dropped it: the writer computes it
    _, js = seqmem.io.write_network(tmp_path / "a", weights, config)
    assert json.loads(js.read_text())["safetensors_sha256"] == hashlib.sha256(weights).hexdigest()
    _, other = seqmem.io.weights_bytes(seqmem.SequenceNetwork("rnn", 4, vocab_size=3, output_size=2))
    with pytest.raises(ValueError, match="do not belong together"):
        seqmem.io.write_network(tmp_path / "b", weights, other)
    assert not list(tmp_path.glob("b*"))


def test_a_flipped_byte_is_refused_and_a_file_without_sha256_warns(tmp_path):
    st, js = _saved(tmp_path)
    data = bytearray(st.read_bytes())
    data[-3] ^= 0x10  # one bit of the last weight
    st.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"net\.safetensors .*SHA-256 recorded in net\.json.*differs"):
        seqmem.load(st)
    doc = json.loads(js.read_text())
    del doc["safetensors_sha256"]  # as an older seqmem wrote it: loads, with a warning naming the file
    js.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"net\.json records no SHA-256 of net\.safetensors"):
        assert isinstance(seqmem.load(st), seqmem.SequenceNetwork)
    doc["safetensors_sha256"] = "abc"
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="64 hex digits.*got 'abc'"):
        seqmem.load(st)


def test_nonfinite_weights_warn_naming_the_tensors(tmp_path):
    net = seqmem.SequenceNetwork("lstm", 4, vocab_size=3, output_size=2)
    with torch.no_grad():
        net.head.bias[0] = float("nan")
        net.layers[0].weight_hh[1, 2:4] = float("inf")
    st, _ = seqmem.save(net, tmp_path / "net")
    with pytest.warns(RuntimeWarning, match=r"net\.safetensors holds NaN or infinite weights: "
                                            r"head\.bias \(1 of 2\), layers\.0\.weight_hh \(2 of 64\)"):
        again = seqmem.load(st)
    assert torch.isnan(again.head.bias[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finite weights: no warning
        seqmem.load(_saved(tmp_path / "ok")[0])


# ------------------------------------------------------------------ leftovers of killed writes, writable folders
_KILLED_WRITER = """
import os, sys, time, torch, seqmem
def stuck(fd):
    print("in fsync", flush=True)
    time.sleep(600)
os.fsync = stuck  # the writer is killed here, after writing its temporary file, before the rename
seqmem.save(seqmem.SequenceNetwork("gru", 4, vocab_size=3, output_size=2), sys.argv[1])
"""


def test_remove_temp_files_deletes_what_a_killed_write_left(tmp_path):
    weights = tmp_path / "weights"
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(weights / "run1")], stdout=subprocess.PIPE,
                            text=True, cwd=Path(seqmem.__file__).parent.parent)
    try:
        assert proc.stdout.readline().strip() == "in fsync"
    finally:
        proc.kill()
        proc.wait()
    left = sorted(p.name for p in weights.iterdir())
    assert len(left) == 1 and left[0].startswith(".run1.safetensors.") and left[0].endswith(".tmp")
    # what must stay: finished files, a user's own temporary file, a folder, files in subfolders
    keep = [weights / "run0.safetensors", weights / "run0.json", weights / ".notes.tmp", weights / "run2.tmp"]
    for p in keep:
        p.write_text("keep")
    (weights / ".run3.json.abcd1234.tmp").mkdir()
    (weights / "sub").mkdir()
    (weights / "sub" / ".run4.json.abcd1234.tmp").write_text("keep")
    (weights / ".run5.json.zz9_ab12.tmp").write_text("{")  # a killed config write
    assert remove_temp_files(weights, older_than=3600) == []  # recent files are spared on request
    removed = remove_temp_files(weights)
    assert sorted(p.name for p in removed) == sorted([left[0], ".run5.json.zz9_ab12.tmp"])
    assert all(p.exists() for p in keep) and (weights / "sub" / ".run4.json.abcd1234.tmp").exists()
    assert (weights / ".run3.json.abcd1234.tmp").is_dir()
    assert remove_temp_files(weights) == [] and remove_temp_files(tmp_path / "absent") == []


def test_check_writable_folder(tmp_path, monkeypatch):
    assert check_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert (tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())  # no probe left
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"cannot write into .*file/weights"):
        check_writable_folder(tmp_path / "file" / "weights")
    with pytest.raises(NotADirectoryError, match=r"cannot write into .*file: it exists and is not a folder"):
        check_writable_folder(tmp_path / "file")

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(seqmem.io.tempfile, "mkstemp", read_only)
    with pytest.raises(OSError, match=r"cannot write into .*/a/b: Read-only file system") as info:
        check_writable_folder(tmp_path / "a" / "b")
    assert info.value.errno == errno.EROFS


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_folder_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=r"cannot write into .*/ro: Permission denied"):
            check_writable_folder(folder)
        with pytest.raises(PermissionError, match=r"cannot write into .*/ro/weights"):
            check_writable_folder(folder / "weights")
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("model, key, value", [
    ("transformer", "n_heads", 1),  # the same tensors, split into other heads
    ("transformer", "rope_base", 500.0),
    ("rnn", "nonlinearity", "relu"),
    ("gru", "reset_after", False),
])
def test_a_config_edited_in_a_way_the_shapes_do_not_show_is_refused(tmp_path, model, key, value):
    torch.manual_seed(0)
    st, js = seqmem.save(seqmem.SequenceNetwork(model, 8, vocab_size=3, output_size=2), tmp_path / "net")
    doc = json.loads(js.read_text())
    doc["config"]["backend"] = "torch"  # a run-time choice, not the architecture: allowed
    js.write_text(json.dumps(doc))
    seqmem.load(st)
    doc["config"][key] = value
    js.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"net\.json .*config_sha256.*changed after saving"):
        seqmem.load(st)
    del doc["config_sha256"]  # written before the fingerprint existed: loads (its weights SHA-256 still checks)
    js.write_text(json.dumps(doc))
    assert seqmem.load(st).config()[key] == value
