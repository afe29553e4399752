"""`seqmem.testing` on models written as third-party code is (tests/testing/models.py): the nine points of
issue 15, one test (or more) each, and a broken stateless and a broken bare-tensor model caught by name.

New names are reached as `kit.NAME`, so that against an older kit each test fails on its own.
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import find, given, settings
from hypothesis import strategies as st
from rich.console import Console
from torch import nn

import seqmem
import seqmem.testing as kit
from seqmem.testing import ConformanceFailure, check_sequence_model, random_sequence

from .models import (
    BreaksAtStep3,
    CausalConv,
    ConvSSM,
    CountingCell,
    DetachesState,
    FinalSSMOffByOne,
    Float32OnlyBug,
    ForgetfulGRU,
    HalfPrecisionBackward,
    HalfPrecisionSum,
    LayerStack,
    NoInitialState,
    ParallelOnly,
    ParallelOnlyWrongStep,
    PeekingConv,
    PointwiseMLP,
    RunningSum,
    StepKeepsExtraRow,
    TorchGRU,
    TwoLayerConvSSM,
    TwoLayerStepKeepsExtraRow,
    WrongStepSum,
)

F32, F64 = torch.float32, torch.float64
STEP, CHUNKED, STATE_SHAPES = "step == forward", "chunked streaming", "state shapes"


def _failure(model, **kwargs) -> ConformanceFailure:
    with pytest.raises(ConformanceFailure) as info:
        check_sequence_model(model, **kwargs)
    return info.value


def _row(report, name, dtype=F64):
    (row,) = [r for r in report.results if r.name == name and r.dtype == dtype]
    return row


# ------------------------------------------------------------------------------------------------
# 1. forms: no step, a forward(x) that takes no state, no initial_state
# ------------------------------------------------------------------------------------------------
def test_a_stateless_parallel_model_gets_every_property_that_applies():
    report = check_sequence_model(CausalConv(3, 5))
    assert report.passed and report.dtypes == (F64, F32)
    assert report.checked == ["protocol", "shapes and dtypes", "inputs unchanged", "gradients", "causality",
                              "batch independence"]
    reasons = {r.name: r.detail for r in report.results if r.status == "skipped" and r.dtype == F64}
    assert reasons == {
        STATE_SHAPES: "the model has no state: forward(x) returns y alone and there is no step()",
        STEP: "the model has no step()",
        CHUNKED: "forward(x) takes no state: a chunk cannot continue from the previous one",
        "backend parity": "the model has no `backends` attribute",
        "state size": "not requested (state_growth='constant' or 'linear' checks it)",
    }


def test_a_forward_that_takes_no_state_is_compared_with_step():
    report = check_sequence_model(ParallelOnly())
    assert report.passed and STEP in report.checked and CHUNKED in report.skipped
    assert _row(report, STEP).detail == "12 steps, outputs (forward(x) returns no state)"
    err = _failure(ParallelOnlyWrongStep())
    assert err.property == STEP, str(err)  # not "shapes and dtypes", where forward(x, state) used to raise
    assert "at step t=1 (of 12) the output of step() differs from forward(x)[:, 1]" in str(err)


def test_a_model_without_initial_state_steps_from_forwards_state():
    report = check_sequence_model(NoInitialState())
    assert report.passed and STEP in report.checked
    assert _row(report, STEP).detail == "11 steps from forward(x[:, :1])[1] (no initial_state()), outputs and final state"


def test_a_broken_stateless_model_fails_causality():
    err = _failure(PeekingConv(3, 5))
    assert err.property == "causality"
    assert "the output at step 0 depends on a later input (cut at t=1)" in str(err)


# ------------------------------------------------------------------------------------------------
# 2. states: any pytree, compared leaf by leaf, named by path
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model",
    [TorchGRU(3, 4), LayerStack(), TwoLayerConvSSM(), CountingCell(), PointwiseMLP(), ConvSSM()],
    ids=["bare-tensor", "list", "dict-of-lists", "dict-with-int", "none", "namedtuple"],
)
def test_states_of_any_pytree_pass(model):
    report = check_sequence_model(model)
    assert report.passed, str(report)
    assert report.skipped == ["backend parity", "state size"]


def test_a_stateless_model_with_none_states_is_said_so():
    report = check_sequence_model(PointwiseMLP())
    assert _row(report, STATE_SHAPES).detail == "stateless: every state is None"


def test_a_state_leaf_is_named_by_its_path():
    err = _failure(FinalSSMOffByOne())
    assert err.property == STEP
    assert "final state after 12 steps: state['ssm'][1] differs" in str(err)
    err = _failure(TwoLayerStepKeepsExtraRow())
    assert "state['conv'][1] has shape (3, 2, 4) after forward(x[:, :1]) but (3, 3, 4) after step(" in str(err)


def test_a_broken_bare_tensor_model_fails_chunked_streaming():
    err = _failure(ForgetfulGRU(3, 4))
    assert err.property == CHUNKED
    assert "split at t=1: forward over the chunks, passing the state along, differs from forward(x) from step t=1" in (
        str(err)
    )


# ------------------------------------------------------------------------------------------------
# 3. dtype=None: x's dtype, else float64 then float32
# ------------------------------------------------------------------------------------------------
def test_the_dtype_of_x_is_the_dtype_checked():
    x = random_sequence(2, 6, 3, dtype=F32, seed=1)
    err = _failure(Float32OnlyBug(), x=x)
    assert err.property == STEP and "(float32, batch 2, seq_len 6, seed 0)" in str(err)
    report = check_sequence_model(RunningSum(), x=x)
    assert report.dtype == F32 and {r.dtype for r in report} == {F32}
    assert check_sequence_model(Float32OnlyBug(), x=x.double()).passed


def test_by_default_float64_then_float32():
    report = check_sequence_model(Float32OnlyBug(), raise_on_failure=False)
    assert report.dtypes == (F64, F32)
    assert [(r.name, r.dtype) for r in report.failures] == [(STEP, F32), (CHUNKED, F32)]
    assert _failure(Float32OnlyBug()).context == "float32, batch 3, seq_len 12, seed 0"


# ------------------------------------------------------------------------------------------------
# 4. a tolerance policy per dtype (and property), with a multiplier
# ------------------------------------------------------------------------------------------------
def test_a_tolerance_policy_per_dtype_with_a_multiplier():
    model = HalfPrecisionSum()  # drifts ~3e-3 in float32 (a float16 accumulator), exact in float64
    assert _failure(model).property == STEP
    assert check_sequence_model(model, tolerance=kit.Tolerance(float32=(1e-3, 1e-3))).passed
    assert check_sequence_model(model, tolerance=kit.Tolerance(scale=50.0)).passed
    # loosening float32 leaves float64 as tight as ever: a float64 bug is still caught there
    err = _failure(WrongStepSum(), tolerance=kit.Tolerance(float32=(1.0, 1.0)))
    assert err.property == STEP and err.context.startswith("float64") and "rtol=1e-10" in str(err)


def test_a_tolerance_per_property():
    loose = kit.Tolerance(float32=(1e-3, 1e-3))
    assert check_sequence_model(HalfPrecisionSum(), tolerance={STEP: loose, CHUNKED: loose}).passed
    err = _failure(HalfPrecisionSum(), tolerance={STEP: loose})
    assert err.property == CHUNKED
    with pytest.raises(ValueError, match=r"unknown properties \['step = forward'\]"):
        check_sequence_model(HalfPrecisionSum(), tolerance={"step = forward": loose})


# ------------------------------------------------------------------------------------------------
# 5. a report of every property x dtype, as text, Markdown and a rich table
# ------------------------------------------------------------------------------------------------
def test_the_report_has_every_property_and_dtype_without_stopping():
    report = check_sequence_model(WrongStepSum(), raise_on_failure=False)
    assert [(r.name, r.dtype) for r in report] == [(p, d) for d in (F64, F32) for p in kit.PROPERTIES]
    assert report.failed == [STEP, CHUNKED] and not report.passed
    assert {r.status for r in report} == {"passed", "failed", "skipped"}
    row = _row(report, STEP, F32)
    assert row.status == "failed" and row.max_error > 0.1 and row.summary.startswith("at step t=0 (of 12)")
    markdown = report.to_markdown()
    assert "| property | dtype | status | max error | detail |" in markdown
    assert re.search(r"\| step == forward \| float32 \| \*\*FAILED\*\* \| [0-9.e+-]+ \| at step t=0 \(of 12\)", markdown)
    assert "| backend parity | float64 | skipped |  | the model has no `backends` attribute |" in markdown
    console = Console(record=True, width=250, color_system=None)
    console.print(report)
    text = console.export_text()
    assert "WrongStepSum(3 -> 4): float64, float32" in text
    assert re.search(r"step == forward\s+│\s+float32\s+│\s+failed", text)
    with pytest.raises(ConformanceFailure, match="fails 'step == forward' \\(float64"):
        report.raise_if_failed()


def test_raise_on_failure_names_the_first_failure_and_keeps_the_report():
    err = _failure(WrongStepSum())
    assert str(err).startswith("WrongStepSum(3 -> 4) fails 'step == forward' (float64, batch 3, seq_len 12")
    assert [r.status for r in err.report][-1] == "failed" and len(err.report.results) == 8


# ------------------------------------------------------------------------------------------------
# 6. state shapes across initial_state, forward and step; the call that raised, named
# ------------------------------------------------------------------------------------------------
def test_state_shapes_are_compared_across_forward_and_step():
    err = _failure(StepKeepsExtraRow())
    assert err.property == STATE_SHAPES
    assert (
        "state.conv has shape (3, 2, 4) after forward(x[:, :1]) but (3, 3, 4) after step(x[:, 0], initial_state)"
        in str(err)
    )


def test_an_error_inside_a_property_names_the_call():
    err = _failure(BreaksAtStep3())
    assert err.property == STATE_SHAPES
    assert "step(x[:, 3], state) raised RuntimeError: position 3 is past the end of the cache" in str(err)
    assert isinstance(err.__cause__.__cause__.__cause__, RuntimeError)  # the model's own traceback is kept


# ------------------------------------------------------------------------------------------------
# 7. a third-party model built inside a hypothesis test, with torch seeded by hypothesis
# ------------------------------------------------------------------------------------------------
def test_builds_seeds_torch_from_hypothesis():
    def big_weight(model):
        return float(model.weight.detach().abs().max()) > 0.5

    search = settings(derandomize=True, database=None, max_examples=50)
    found = []
    for global_seed in (1, 2):  # whatever state torch's global generator is in
        torch.manual_seed(global_seed)
        found.append(find(kit.builds(nn.Linear, 3, st.integers(1, 4)), big_weight, settings=search))
    assert torch.equal(found[0].weight, found[1].weight)  # the same example, the same weights
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    find(kit.builds(nn.Linear, 2, 2), lambda model: True, settings=search)
    assert torch.equal(torch.rand(3), before)  # torch's global generator is left alone


def test_builds_replays_a_failing_example_from_its_note():
    seen = []

    @settings(database=None, max_examples=50)
    @given(model=kit.builds(TorchGRU, st.integers(1, 3), hidden_size=st.integers(1, 4)))
    def test_first_weight_is_small(model):
        seen.append(model)
        assert float(model.gru.weight_ih_l0[0, 0].detach()) < 0.2

    with pytest.raises(AssertionError) as info:
        test_first_weight_is_small()
    notes = "\n".join(getattr(info.value, "__notes__", []))
    match = re.search(r"with seqmem\.testing\.seeded\((\d+)\): model = TorchGRU\((\d+), hidden_size=(\d+)\)", notes)
    assert match, notes
    seed, input_size, hidden_size = (int(g) for g in match.groups())
    with kit.seeded(seed):
        replay = TorchGRU(input_size, hidden_size=hidden_size)
    assert torch.equal(replay.gru.weight_ih_l0, seen[-1].gru.weight_ih_l0)
    assert float(replay.gru.weight_ih_l0[0, 0].detach()) >= 0.2


# ------------------------------------------------------------------------------------------------
# 8. the state's size, checked from check_sequence_model
# ------------------------------------------------------------------------------------------------
def test_state_growth_from_check_sequence_model():
    attention = seqmem.CausalTransformer(4, n_heads=2, n_layers=1)
    assert check_sequence_model(attention, dtype=F64, seq_len=5, state_growth="linear").passed
    err = _failure(attention, dtype=F64, seq_len=5, state_growth="constant")
    assert err.property == "state size" and "the state grows" in str(err)
    assert _failure(TwoLayerConvSSM(), state_growth="linear").property == "state size"
    report = check_sequence_model(CausalConv(3, 5), state_growth="constant")
    assert _row(report, "state size").detail.startswith("the model has no state")
    with pytest.raises(ValueError, match="state_growth must be 'constant', 'linear' or None, got 'quadratic'"):
        check_sequence_model(TwoLayerConvSSM(), state_growth="quadratic")


# ------------------------------------------------------------------------------------------------
# 9. a float32 failure re-judged in float64, naming the side that drifted
# ------------------------------------------------------------------------------------------------
def test_float32_rounding_is_told_from_a_bug_and_the_drifting_side_named():
    err = _failure(HalfPrecisionSum(), dtype=F32)
    message = str(err)
    assert err.property == STEP
    assert "the two sides agree there (max abs error 0.0e+00), so this is float32 rounding, not a bug" in message
    assert "the side that drifted: forward(x) (one parallel call)" in message
    err = _failure(WrongStepSum(), dtype=F32)
    assert "float64 referee (the same model and input, in float64): the two sides differ there too" in str(err)
    assert "a bug, not float32 rounding" in str(err)


def test_a_rounding_difference_in_chunked_gradients_does_not_blame_the_state():
    err = _failure(HalfPrecisionBackward(), dtype=F32)
    assert err.property == CHUNKED and "the gradient of a loss on the second chunk" in str(err)
    assert "float32 rounding, not a bug" in str(err)
    assert "detach" not in str(err)
    err = _failure(DetachesState(), dtype=F32)  # a real detach: the hint stays, and the referee agrees
    assert "(does forward detach the state it is given?)" in str(err) and "a bug, not float32 rounding" in str(err)
