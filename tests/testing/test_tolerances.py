"""`seqmem.testing`'s tolerance policy and `assert_close`: the table, the policy object, the messages."""

from __future__ import annotations

import pytest
import torch

from seqmem.testing import DEFAULT_TOLERANCE, Tolerance, assert_close, tolerance

F32, F64 = torch.float32, torch.float64


def test_tolerance_table():
    assert tolerance(F64) == (1e-10, 1e-12)
    assert tolerance(F32) == (1e-4, 1e-5)
    assert tolerance(F32, long=True) == (6e-4, 2e-3)
    with pytest.raises(TypeError, match="no tolerance for dtype torch.int64"):
        tolerance(torch.int64)


def test_assert_close_message():
    expected = torch.zeros(2, 6, 3, dtype=F64)
    actual = expected.clone()
    actual[1, 4, 2] = 0.5
    actual[0, 5, 0] = 0.25
    with pytest.raises(AssertionError) as info:
        assert_close("y of the chunks", expected, actual, time_dim=1)
    message = str(info.value)
    for fragment in [
        "y of the chunks differs: 2 of 36 elements (5.6%) outside the float64 tolerance (rtol=1e-10, atol=1e-12)",
        "max abs error 5.000e-01 at index (1, 4, 2): expected 0, got 0.5",
        "relative RMS error inf",
        "first time step that diverges: t=4 (of 6)",
    ]:
        assert fragment in message, message


def test_assert_close_relative_error_and_tolerances():
    expected = torch.ones(4, dtype=F64)
    assert_close("ok", expected, expected * (1 + 1e-11))
    with pytest.raises(AssertionError, match=r"relative RMS error 5.000e-09"):
        assert_close("near", expected, expected + torch.tensor([1e-8, 0, 0, 0], dtype=F64))
    assert_close("loose", expected, expected + 1e-8, rtol=1e-7)  # an override
    # the less precise dtype sets the tolerance: float32 against a float64 oracle
    assert_close("mixed", expected, (expected + 1e-6).float())
    with pytest.raises(AssertionError, match="float64 tolerance"):
        assert_close("forced", expected, (expected + 1e-6).float(), dtype=F64)
    # long scans: mamba's float32 bound
    assert_close("long", expected.float(), expected.float() + 1e-3, long=True)
    with pytest.raises(AssertionError):
        assert_close("short", expected.float(), expected.float() + 1e-3)


def test_assert_close_scales_atol_and_names_the_worst_miss():
    expected = torch.tensor([100.0, 1e-3, 0.0], dtype=F64)
    # within atol * 100 + rtol * |e| at index 0, not at index 1
    actual = expected + torch.tensor([5e-9, 1e-9, 0.0], dtype=F64)
    with pytest.raises(AssertionError) as info:
        assert_close("grad", expected, actual)
    message = str(info.value)
    assert "1 of 3 elements" in message and "atol=1e-12 x 100" in message
    assert "max abs error 5.000e-09 at index (0,)" in message
    assert "worst against the tolerance at index (1,): expected 0.001, got 0.001000001" in message
    # a cancellation error in a large tensor is judged against the tensor's scale
    assert_close("scaled", expected, expected + torch.tensor([0.0, 0.0, 5e-11], dtype=F64))


def test_assert_close_nan_shape_and_type():
    a = torch.tensor([1.0, float("nan"), float("inf")], dtype=F64)
    assert_close("same nan and inf", a, a.clone())
    b = a.clone()
    b[1] = 2.0
    with pytest.raises(AssertionError, match=r"non-finite mismatch at index \(1,\): expected nan, got 2"):
        assert_close("nan", a, b)
    with pytest.raises(AssertionError, match=r"y: shape mismatch: expected \(2, 3\), got \(3, 2\)"):
        assert_close("y", torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(AssertionError, match="y: expected is a tensor but the other is a list"):
        assert_close("y", torch.zeros(2), [0.0, 0.0])




def test_the_default_policy_is_the_table():
    assert DEFAULT_TOLERANCE == Tolerance()
    for dtype in (F64, F32, torch.float16, torch.bfloat16):
        assert Tolerance().get(dtype) == tolerance(dtype)
        assert Tolerance().get(dtype, seq_len=256) == tolerance(dtype, long=True)
        assert Tolerance().get(dtype, seq_len=255) == tolerance(dtype)


def test_a_policy_overrides_one_dtype_and_scales_all():
    policy = Tolerance(float32=(2e-4, 1e-5), scale=3.0)
    assert policy.get(F32) == pytest.approx((6e-4, 3e-5))
    assert policy.get(F64) == pytest.approx((3e-10, 3e-12))
    assert policy.get(F32, long=True) == pytest.approx((1.8e-3, 6e-3))
    assert (Tolerance() * 2).get(F64) == (2e-10, 2e-12) and (2 * Tolerance()).scale == 2.0
    assert Tolerance(long_seq_len=8).get(F32, seq_len=8) == (6e-4, 2e-3)
    assert Tolerance().kwargs(F32, seq_len=1024) == {"rtol": 6e-4, "atol": 2e-3}
    assert Tolerance(float32=[1e-3, 1e-4]).float32 == (1e-3, 1e-4)  # any pair, stored as a tuple


def test_a_policy_refuses_nonsense():
    with pytest.raises(TypeError, match=r"float32 must be a pair \(rtol, atol\) of floats, got 0.001"):
        Tolerance(float32=1e-3)
    with pytest.raises(ValueError, match="long_float64 must be a pair of finite floats >= 0"):
        Tolerance(long_float64=(-1.0, 0.0))
    with pytest.raises(ValueError, match="scale must be a finite float > 0, got 0"):
        Tolerance(scale=0)
    with pytest.raises(ValueError, match="long_seq_len must be an int >= 1"):
        Tolerance(long_seq_len=0)
    with pytest.raises(TypeError, match="no tolerance for dtype torch.int32"):
        Tolerance().get(torch.int32)


def test_assert_close_takes_a_policy_and_compares_states_leaf_by_leaf():
    expected = {"conv": [torch.zeros(2), torch.ones(2)], "t": 3}
    assert_close("state", expected, {"conv": [torch.zeros(2), torch.ones(2) + 1e-11], "t": 3})
    with pytest.raises(AssertionError, match=r"state: state\['conv'\]\[1\] differs: 1 of 2 elements"):
        assert_close("state", expected, {"conv": [torch.zeros(2), torch.tensor([1.0, 1.5])], "t": 3})
    with pytest.raises(AssertionError, match=r"state: state\['t'\] differs: expected 3, got 4"):
        assert_close("state", expected, {"conv": [torch.zeros(2), torch.ones(2)], "t": 4})
    with pytest.raises(AssertionError, match=r"the structures differ at state\['conv'\]: expected list\[Tensor, Tensor\], got"):
        assert_close("state", expected, {"conv": (torch.zeros(2), torch.ones(2)), "t": 3})
    a = torch.ones(3, dtype=F32)
    assert_close("loose", a, a + 1e-3, tolerance=Tolerance(float32=(2e-3, 0.0)))
    with pytest.raises(AssertionError):
        assert_close("tight", a, a + 1e-3)
