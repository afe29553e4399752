"""Saving and loading networks: safetensors + JSON round trips, and clear errors for bad files (never pickle)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import seqmem
from seqmem.compare import compare, read_results
from seqmem.io import network_files
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
    with pytest.raises(ValueError, match="safetensors"):
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
