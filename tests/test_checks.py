import numpy as np
import pytest
import torch

from course_lib.checks import (CORRECT, ERROR, NOT_DONE, WRONG, Case, CheckResult, Mistake, check_function,
                               check_mean_over_time, compare_answer, describe_value, same_value)
from course_lib.checks.start_here import mean_over_time


def double(x):
    return 2 * x


CASES = [Case((torch.arange(6.0).reshape(2, 3),), "a 2x3 input")]


def run(fn, mistakes=()):
    return check_function(fn, exercise="double", reference=double, cases=CASES, mistakes=mistakes)


def test_correct_answer():
    result = run(lambda x: x + x)
    assert result.status == CORRECT and result.passed and bool(result)
    assert repr(result).startswith("✅ Correct · double:")


def test_stub_is_not_done():
    def stub(x):
        raise NotImplementedError("Your turn")

    result = run(stub)
    assert result.status == NOT_DONE and not result
    assert "Not done yet" in repr(result)


def test_other_exceptions_are_reported_not_raised():
    result = run(lambda x: x @ x)
    assert result.status == ERROR
    assert "your function raised RuntimeError" in result.message and "a 2x3 input" in result.message


def test_known_mistake_is_named_with_its_hint():
    mistakes = [Mistake("you added 1 instead of doubling", lambda x: x + 1, "multiply by 2")]
    result = run(lambda x: x + 1, mistakes)
    assert result.status == WRONG
    assert result.message == "you added 1 instead of doubling (on a 2x3 input)"
    assert "Hint: multiply by 2" in repr(result) and "multiply by 2" in result._repr_html_()


def test_mistake_equal_to_the_reference_is_never_blamed():
    # a "mistake" that happens to give the right answer on this input must not be reported
    mistakes = [Mistake("misleading", lambda x: 2 * x), Mistake("you tripled", lambda x: 3 * x)]
    assert run(lambda x: 3 * x, mistakes).message.startswith("you tripled")


def test_unknown_wrong_answer_reports_first_difference():
    result = run(lambda x: 2 * x + torch.tensor([[0, 0, 0], [0, 0.5, 0]]))
    assert result.status == WRONG
    assert "largest difference is 0.5 at index (1, 1) (expected 8, got 8.5)" in result.message


def test_in_place_modification_is_caught():
    def in_place(x):
        x.mul_(2)
        return x

    result = run(in_place)
    assert result.status == WRONG and "changed its input in place" in result.message


def test_passing_the_result_instead_of_the_function():
    result = check_function(torch.zeros(2), exercise="double", reference=double, cases=CASES)
    assert result.status == ERROR and "expected a function" in result.message


def test_needs_cases():
    with pytest.raises(ValueError, match="at least one Case"):
        check_function(double, exercise="double", reference=double, cases=[])


def test_check_result_validates_status():
    with pytest.raises(ValueError, match="status must be one of"):
        CheckResult("x", "maybe", "...")


@pytest.mark.parametrize("answer, expected, fragment", [
    (None, torch.zeros(2), "returned None"),
    (np.zeros(2), torch.zeros(2), "expected a torch tensor, got a NumPy array of shape (2,)"),
    (torch.zeros(2), np.zeros(2), "expected a NumPy array, got a tensor"),
    (torch.zeros(3, 2), torch.zeros(2, 3), "expected shape (2, 3) = (B, T), got shape (3, 2)"),
    (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3), "expected floating-point values"),
    (torch.tensor([1.0, float("nan")]), torch.tensor([1.0, 2.0]), "contains NaN"),
    (torch.tensor([1.0, float("inf")]), torch.tensor([1.0, 2.0]), "contains inf"),
    ("abc", "abd", "expected 'abd', got 'abc'"),
])
def test_compare_answer_messages(answer, expected, fragment):
    assert fragment in compare_answer(answer, expected, shape_names="(B, T)")


def test_compare_answer_accepts_equal_values():
    assert compare_answer(torch.ones(2), torch.ones(2) + 1e-8) is None
    assert compare_answer(3.0, 3.0) is None
    assert compare_answer("a", "a") is None


def test_same_value_and_describe_value():
    assert same_value(torch.ones(2), np.ones(2))
    assert not same_value(torch.ones(2), torch.ones(3))
    assert not same_value("a", "a")
    assert same_value(torch.tensor([float("nan")]), torch.tensor([float("nan")]))
    assert describe_value(torch.zeros(1, 2)) == "a tensor of shape (1, 2) and dtype torch.float32"
    assert describe_value(3) == "a int (3)"
    assert describe_value([1]) == "a list"


# --- notebook 00's warm-up ------------------------------------------------------------------------

def test_reference_mean_over_time():
    x = torch.arange(12.0).reshape(1, 3, 4)
    assert torch.equal(mean_over_time(x), torch.tensor([[4.0, 5.0, 6.0, 7.0]]))
    with pytest.raises(ValueError, match="expected 3 axes"):
        mean_over_time(torch.zeros(3, 4))


@pytest.mark.parametrize("attempt, fragment", [
    (lambda x: x.mean(dim=1), "matches the reference"),
    (lambda x: x.mean(dim=0), "you averaged over dim 0, the batch axis B"),
    (lambda x: x.mean(dim=-1), "averaged over the last dim, the feature axis d_model"),
    (lambda x: x.sum(dim=1), "did not divide by T"),
    (lambda x: x.mean(dim=1, keepdim=True), "keepdim=True left a time axis"),
    (lambda x: x.mean(), "every axis at once"),
    (lambda x: x[:, -1], "the last time step"),
    (lambda x: x.mean(dim=1).numpy(), "expected a torch tensor"),
    (lambda x: x.median(dim=1).values, "the values differ"),
])
def test_check_mean_over_time_names_each_mistake(attempt, fragment):
    assert fragment in check_mean_over_time(attempt).message


def test_check_mean_over_time_catches_wrong_axis_on_square_input_only():
    # Right on every non-square input, wrong axis when B == T: only the square case can tell.
    def sneaky(x):
        return x.mean(dim=0) if x.shape[0] == x.shape[1] else x.mean(dim=1)

    result = check_mean_over_time(sneaky)
    assert result.status == WRONG and "B=3, T=3, d_model=3" in result.message


def test_a_mistake_that_cannot_happen_on_an_input_is_skipped_silently(recwarn):
    # A known mistake that raises or warns on some inputs must neither crash the check nor print anything.
    def noisy(x):
        import warnings
        warnings.warn("noise from a mistake")
        raise RuntimeError("shapes do not fit")

    mistakes = [Mistake("never applies", noisy), Mistake("you added 1", lambda x: x + 1)]
    result = run(lambda x: x + 1, mistakes)
    assert result.message.startswith("you added 1")
    assert len(recwarn) == 0


def test_integer_reference_answered_with_floats_or_bools_is_wrong_with_the_hint():
    from course_lib.checks.core import WRONG, Case, check_function

    def ids(t):
        return t + 1

    cases = [Case((torch.tensor([1, 2, 3]),), "ids [1, 2, 3]")]
    assert check_function(ids, exercise="ids", reference=ids, cases=cases).passed
    for wrong in (lambda t: (t + 1).float(), lambda t: (t + 1).double()):
        result = check_function(wrong, exercise="ids", reference=ids, cases=cases, dtype_hint="keep tgt's dtype")
        assert result.status == WRONG and "the values are right, but the dtype is torch.float" in result.message
        assert "on ids [1, 2, 3]" in result.message and result.hint == "keep tgt's dtype"
    flags = [Case((torch.tensor([0, 1]),), "flags")]
    as_bool = check_function(lambda t: t.bool(), exercise="b", reference=lambda t: t.clone(), cases=flags)
    assert as_bool.status == WRONG and "torch.bool" in as_bool.message
    # an int32 answer to an int64 reference is still integers: fine
    assert check_function(lambda t: (t + 1).int(), exercise="ids", reference=ids, cases=cases).passed


def test_seeded_module_gives_the_same_weights_every_call_and_leaves_the_caller_s_random_state():
    from course_lib.checks.core import seeded_module

    torch.manual_seed(5)
    expected_next = torch.rand(3)
    torch.manual_seed(5)
    first = seeded_module(lambda: torch.nn.Linear(4, 3), seed=11)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's generator did not move
    again = seeded_module(lambda: torch.nn.Linear(4, 3), seed=11)
    other = seeded_module(lambda: torch.nn.Linear(4, 3), seed=12)
    assert torch.equal(first.weight, again.weight) and not torch.equal(first.weight, other.weight)
    scaled = seeded_module(lambda: torch.nn.Linear(4, 3), seed=11, weight_scale=2.0)
    assert torch.equal(scaled.weight, 2 * first.weight) and torch.equal(scaled.bias, 2 * first.bias)
