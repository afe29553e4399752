"""`seqmem.testing`'s hypothesis strategies draw what they claim and replay from their seed; hypothesis
stays optional for `import seqmem`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import seqmem
from seqmem.testing import ModelConfig, model_configs, random_sequence, seeds, sequences

F32, F64 = torch.float32, torch.float64


@given(x=sequences(5, batch=(2, 3), seq_len=(1, 7), dtypes=(F64,), scale=(0.5, 2.0)))
def test_sequences_draw_what_they_claim(x):
    assert x.dtype == F64 and x.shape[0] in (2, 3) and 1 <= x.shape[1] <= 7 and x.shape[2] == 5
    assert bool(x.isfinite().all())


@given(x=sequences(2, batch=1, seq_len=3))
def test_sequences_fixed_sizes_and_both_dtypes(x):
    assert x.shape == (1, 3, 2) and x.dtype in (F32, F64)


@given(seed=seeds(), scale=st.floats(0.1, 10.0))
def test_random_sequence_replays_from_its_seed(seed, scale):
    x = random_sequence(2, 4, 3, dtype=F64, seed=seed, scale=scale)
    assert torch.equal(x, random_sequence(2, 4, 3, dtype=F64, seed=seed, scale=scale))
    assert not torch.equal(x, random_sequence(2, 4, 3, dtype=F64, seed=seed + 1, scale=scale))
    # the float32 tensor is the float64 one rounded: the same draw, whatever the dtype
    assert torch.equal(random_sequence(2, 4, 3, dtype=F32, seed=seed, scale=scale), x.float())


def test_random_sequence_leaves_torch_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    random_sequence(2, 4, 3, seed=9)
    ModelConfig("lstm", input_size=2, hidden_size=3).build(seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_sequences_reject_bad_ranges():
    with pytest.raises(ValueError, match="seq_len must be an int >= 1 or a range"):
        sequences(3, seq_len=(0, 4))
    with pytest.raises(ValueError, match="input_size must be a positive int"):
        sequences(0)
    with pytest.raises(ValueError, match="scale must be positive"):
        sequences(3, scale=(0.0, 1.0))


@pytest.mark.parametrize("family", seqmem.model_names())
def test_model_configs_build_valid_models(family):
    @given(config=model_configs(family, max_size=5), seed=seeds())
    def check(config, seed):
        assert config.family == family
        model = config.build(seed=seed, dtype=F64)
        assert isinstance(model, seqmem.SequenceModel)
        assert model.input_size == config.input_size
        again = seqmem.build(config.family, **config)  # a ModelConfig is a mapping of kwargs
        assert type(again) is type(model)
        rebuilt = config.build(seed=seed, dtype=F64)  # the seed fixes the parameters
        for p, q in zip(model.parameters(), rebuilt.parameters(), strict=True):
            assert torch.equal(p, q)
        if family == "transformer":
            assert (
                config["d_model"] % config["n_heads"] == 0
                and (config["d_model"] // config["n_heads"]) % 2 == 0
            )
        else:
            assert max(v for v in config.values() if isinstance(v, int) and not isinstance(v, bool)) <= 5
        assert eval(repr(config), {"ModelConfig": ModelConfig}) == config

    check()


@given(config=model_configs())
def test_model_configs_without_a_family_draw_any(config):
    assert config.family in seqmem.model_names()


def test_model_configs_reject_unknown_family():
    with pytest.raises(ValueError, match=r"unknown model family 'lstn'; expected one of \['rnn'"):
        model_configs("lstn")
    with pytest.raises(ValueError, match="max_size must be an int >= 2"):
        model_configs("rnn", max_size=1)
    with pytest.raises(ValueError, match="unknown model family"):
        ModelConfig("lstn", input_size=3)


def test_config_build_with_backend_and_overrides():
    config = ModelConfig("gru", input_size=2, hidden_size=3, reset_after=False)
    model = config.build(backend="torch", hidden_size=4, dtype=F64)
    assert model.backend == "torch" and model.hidden_size == 4 and model.weight_hh.dtype == F64
    assert dict(config) == {"input_size": 2, "hidden_size": 3, "reset_after": False}
    assert hash(config) == hash(ModelConfig("gru", input_size=2, hidden_size=3, reset_after=False))


# ------------------------------------------------------------------------------------------------
# packaging: hypothesis stays optional for `import seqmem`
# ------------------------------------------------------------------------------------------------
def test_import_seqmem_does_not_import_hypothesis():
    code = "import sys, seqmem; print('hypothesis' in sys.modules, 'seqmem.testing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_clear_error_without_hypothesis():
    code = "import sys; sys.modules['hypothesis'] = None\nimport seqmem.testing"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0
    assert "ImportError: seqmem.testing needs hypothesis" in out.stderr
    assert "pip install 'seqmem[dev]'" in out.stderr
