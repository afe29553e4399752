"""Every model constructor names the parameter it refuses: numbers that are not finite reals, flags that are not bools."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import seqmem

# (class, the arguments that make it, the real-valued parameter, a valid value)
REALS = [
    (seqmem.LSTM, {"input_size": 3, "hidden_size": 4}, "forget_bias", 2.0),
    (seqmem.CausalTransformer, {"d_model": 8}, "rope_base", 500.0),
    (seqmem.SelectiveSSM, {"d_model": 4}, "dt_min", 0.002),
    (seqmem.SelectiveSSM, {"d_model": 4}, "dt_max", 0.05),
    (seqmem.SelectiveSSM, {"d_model": 4}, "dt_init_floor", 1e-3),
]
# (class, the arguments that make it, a bool parameter)
FLAGS = [
    (seqmem.RNN, {"input_size": 3, "hidden_size": 4}, "bias"),
    (seqmem.LSTM, {"input_size": 3, "hidden_size": 4}, "bias"),
    (seqmem.LSTM, {"input_size": 3, "hidden_size": 4}, "peephole"),
    (seqmem.GRU, {"input_size": 3, "hidden_size": 4}, "bias"),
    (seqmem.GRU, {"input_size": 3, "hidden_size": 4}, "reset_after"),
    (seqmem.CausalTransformer, {"d_model": 8}, "bias"),
    (seqmem.SelectiveSSM, {"d_model": 4}, "selective"),
    (seqmem.SelectiveSSM, {"d_model": 4}, "bias"),
    (seqmem.SelectiveSSM, {"d_model": 4}, "conv_bias"),
    (seqmem.MinGRU, {"input_size": 3, "hidden_size": 4}, "bias"),
    (seqmem.MinLSTM, {"input_size": 3, "hidden_size": 4}, "bias"),
    (seqmem.Hawk, {"d_model": 8}, "bias"),
    (seqmem.Griffin, {"d_model": 8}, "bias"),
    (seqmem.MLSTM, {"d_model": 8}, "bias"),
    *((seqmem.LinearAttention, {"d_model": 8}, flag) for flag in ("normalize", "gate", "group_norm", "bias")),
]


def _id(case) -> str:
    return f"{case[0].__name__}.{case[2]}"


@pytest.mark.parametrize("case", REALS, ids=_id)
@pytest.mark.parametrize("value, error, match", [
    ("x", TypeError, "must be a real number, got str 'x'"),
    ("1.0", TypeError, "must be a real number, got str '1.0'"),
    (None, TypeError, "must be a real number, got NoneType"),
    (True, TypeError, "must be a real number, got bool"),
    (torch.tensor(1.0), TypeError, "must be a real number, got Tensor"),
    (math.nan, ValueError, "must be finite .*got nan"),
    (math.inf, ValueError, "must be finite .*got inf"),
    (-math.inf, ValueError, "must be finite .*got -inf"),
    (1e39, ValueError, r"must be finite \(in torch.float32"),  # inf once it is a float32 parameter
])
def test_a_bad_real_is_refused_naming_the_parameter(case, value, error, match):
    cls, args, name, good = case
    with pytest.raises(error, match=f"{cls.__name__}: {name} {match}"):
        cls(**args, **{name: value})
    model = cls(**args, **{name: np.float64(good)})  # NumPy scalars are real numbers too
    assert getattr(model, name) == good and isinstance(getattr(model, name), float)


@pytest.mark.parametrize("case", FLAGS, ids=_id)
@pytest.mark.parametrize("value", ["no", "False", None, 1, 0.0])
def test_a_flag_that_is_not_a_bool_is_refused(case, value):
    cls, args, name = case
    with pytest.raises(TypeError, match=f"{cls.__name__}: {name} must be True or False, got {type(value).__name__}"):
        cls(**args, **{name: value})
    assert getattr(cls(**args, **{name: np.bool_(False)}), name) is False


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rope_base": 0}, ValueError, "rope_base must be > 0.0, got 0.0"),
    ({"rope_base": -2.0}, ValueError, "rope_base must be > 0.0"),
    ({"mlp_ratio": 2.5}, ValueError, "mlp_ratio must be a positive int, got 2.5"),
    ({"mlp_ratio": "4"}, ValueError, "mlp_ratio must be a positive int, got '4'"),
])
def test_transformer_ranges(kwargs, error, match):
    with pytest.raises(error, match=match):
        seqmem.CausalTransformer(8, **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"dt_max": 1e-3, "dt_min": 1e-3}, r"expected 0 < dt_min < dt_max, got dt_min=0.001, dt_max=0.001"),
    ({"dt_init_floor": -1e-9}, "dt_init_floor must be >= 0.0"),
    # steps below float32's smallest number and no floor: the initial dt bias would be -inf
    ({"dt_min": 1e-300, "dt_max": 1e-299, "dt_init_floor": 0.0}, r"dt_min=1e-300.*not finite in torch.float32"),
])
def test_ssm_step_sizes_that_give_non_finite_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        seqmem.SelectiveSSM(4, **kwargs)
    with pytest.raises(ValueError, match=match):
        seqmem.build("s4d", 4, **kwargs)


def test_rnn_nonlinearity():
    with pytest.raises(TypeError, match="RNN: nonlinearity must be a string"):
        seqmem.RNN(3, 4, nonlinearity=None)
    with pytest.raises(ValueError, match="RNN: unknown nonlinearity 'Tanh'"):
        seqmem.RNN(3, 4, nonlinearity="Tanh")
