"""`backend="auto"`: numba kernels on the CPU where a model has them, torch elsewhere; the default of
`SequenceNetwork` and `compare`, while models built directly keep `"torch"`."""

from __future__ import annotations

import pytest
import torch

import seqmem
from seqmem.compare import compare
from seqmem.network import SequenceNetwork


@pytest.mark.parametrize("spec", seqmem.list_models(), ids=lambda s: s.name)
def test_auto_resolves_by_kernel_device_and_dtype(spec):
    model = spec.build(4, 4, backend="auto")
    want = "numba" if "numba" in spec.backends else "torch"
    assert model.backend == want and model.backend_choice == "auto"
    model.double()
    assert model.backend == want  # float64 kernels exist
    model.to(torch.bfloat16)
    assert model.backend == "torch" and model.backend_choice == "auto"  # no kernel for bfloat16
    model.float()
    assert model.backend == want
    assert spec.build(4, 4).backend == "torch"  # built directly: torch, as before


def test_auto_computes_what_torch_computes():
    torch.manual_seed(0)
    auto = seqmem.LSTM(3, 5, backend="auto").double()
    ref = seqmem.LSTM(3, 5).double()
    ref.load_state_dict(auto.state_dict())
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(auto(x)[0], ref(x)[0], rtol=1e-10, atol=1e-12)
    assert "backend='auto'" in repr(auto)  # the constructor argument, as repr shows every other
    with pytest.raises(ValueError, match="supported backends: \\['torch', 'numba'\\] or 'auto'"):
        seqmem.LSTM(3, 5, backend="cuda")


def test_networks_default_to_auto_and_keep_it_out_of_their_config():
    lstm = SequenceNetwork("lstm", 8, vocab_size=4, output_size=2)
    assert lstm.layers[0].backend == "numba" and lstm.layers[0].backend_choice == "auto"
    assert "backend" not in lstm.config()
    tf = SequenceNetwork("transformer", 8, vocab_size=4, output_size=2)
    assert tf.layers[0].backend == "torch"
    pinned = SequenceNetwork("lstm", 8, vocab_size=4, output_size=2, backend="torch")
    assert pinned.layers[0].backend == "torch" and pinned.config()["backend"] == "torch"


def test_compare_defaults_to_auto_and_records_the_backend_that_ran():
    recs = compare("xor-echo", ["lstm", "transformer"], [3], steps=2, params=2000, eval_batches=1)
    assert [(r["model"], r["backend"]) for r in recs] == [("lstm", "numba"), ("transformer", "torch")]
    (torch_run,) = compare("xor-echo", ["lstm"], [3], steps=2, params=2000, eval_batches=1, backend="torch")
    assert torch_run["backend"] == "torch" and torch_run["id"] != recs[0]["id"]
