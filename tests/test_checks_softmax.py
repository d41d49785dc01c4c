import pytest
import torch
import torch.nn.functional as F

from course_lib.checks.core import CORRECT, NOT_DONE, WRONG
from course_lib.checks.softmax import (check_softmax_with_temperature, check_stable_softmax, softmax_with_temperature,
                                       stable_softmax)

INF = float("inf")


def _normalise(e, dim=-1):
    return e / e.sum(dim=dim, keepdim=True)


def _row_max(x):
    return x.amax(dim=-1, keepdim=True)


def test_references_match_torch_and_validate():
    x = torch.tensor([[1000.0, 1001.0, 1002.0], [0.5, -INF, 1.5]])
    assert torch.allclose(stable_softmax(x), torch.softmax(x, -1))
    assert torch.allclose(softmax_with_temperature(x, 0.5), torch.softmax(x / 0.5, -1))
    with pytest.raises(ValueError, match="expected 2 axes"):
        stable_softmax(torch.zeros(3))
    with pytest.raises(TypeError, match="float"):
        stable_softmax(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="got -1.0"):
        softmax_with_temperature(torch.zeros(2, 3), -1.0)


def _not_done(*args):
    raise NotImplementedError("Your turn")


@pytest.mark.parametrize("attempt, fragment", [
    (lambda x: _normalise(torch.exp(x - _row_max(x))), "matches the reference"),
    (lambda x: torch.softmax(x, dim=-1), "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda x: torch.softmax(x, dim=0), "you normalised over dim 0, down the columns"),
    (lambda x: _normalise(torch.exp(x - _row_max(x)), dim=0), "normalised by column sums"),
    (lambda x: (lambda e: e / e.sum())(torch.exp(x - _row_max(x))), "sum of the whole matrix"),
    (lambda x: torch.exp(x - _row_max(x)), "returned exp(x - max) without dividing"),
    (lambda x: torch.exp(x), "returned exp(x) without dividing"),
    (lambda x: _normalise(torch.exp(x - x.amax(dim=0, keepdim=True))), "maximum of each column"),
    (lambda x: _normalise(torch.exp(x - x.max(dim=-1).values)), "row maxima without keepdim=True"),
    (lambda x: (lambda e: e / e.sum(dim=-1))(torch.exp(x - _row_max(x))), "row sums without keepdim=True"),
    (lambda x: _normalise(torch.exp(x - x.max())), "maximum of the whole matrix"),
    (lambda x: _normalise(torch.exp(x)), "overflow: you exponentiated the raw scores"),
    (lambda x: torch.log_softmax(x, dim=-1), "log-probabilities"),
    (lambda x: F.one_hot(x.argmax(-1), x.shape[-1]).float(), "hard one-hot choice"),
    (lambda x: torch.softmax(x, -1).numpy(), "expected a torch tensor"),
    (lambda x: torch.softmax(x, -1)[:, :-1], "expected shape"),
    (lambda x: torch.softmax(x.sub_(x.amax(-1, keepdim=True)), -1), "changed its input in place"),
])
def test_check_stable_softmax_names_each_mistake(attempt, fragment):
    result = check_stable_softmax(attempt)
    assert fragment in result.message, result


def test_global_max_is_caught_on_rows_of_different_sizes_and_named_with_the_case():
    result = check_stable_softmax(lambda x: _normalise(torch.exp(x - x.max())))
    assert result.status == WRONG and "[[80, 81, 82], [-30, -29, -28]]" in result.message
    assert "x.amax(dim=-1, keepdim=True)" in result.hint


def test_naive_exp_passes_small_cases_and_fails_on_the_large_one():
    result = check_stable_softmax(lambda x: _normalise(torch.exp(x)))
    assert result.status == WRONG and "[[1000, 1001, 1002], [1, 2, 3]]" in result.message


def test_wrong_axis_is_caught_on_the_square_case():
    def sneaky(x):
        return torch.softmax(x, dim=0) if x.shape[0] == x.shape[1] else torch.softmax(x, dim=-1)

    result = check_stable_softmax(sneaky)
    assert result.status == WRONG and "(B=3, n=3)" in result.message and "dim 0" in result.message


def test_both_checks_report_not_done_and_correct():
    assert check_stable_softmax(_not_done).status == NOT_DONE
    assert check_softmax_with_temperature(_not_done).status == NOT_DONE
    assert check_softmax_with_temperature(
        lambda x, t: _normalise(torch.exp(x / t - _row_max(x / t)))).status == CORRECT
    # dividing after subtracting the maximum is the same thing: also correct
    assert check_softmax_with_temperature(
        lambda x, t: _normalise(torch.exp((x - _row_max(x)) / t))).status == CORRECT


@pytest.mark.parametrize("attempt, fragment", [
    (lambda x, t: torch.softmax(x / t, dim=-1), "matches the reference"),
    (lambda x, t: torch.softmax(x * t, dim=-1), "multiplied the scores by the temperature"),
    (lambda x, t: torch.softmax(x, dim=-1), "do not depend on the temperature"),
    (lambda x, t: _normalise(torch.exp(x) / t), "do not depend on the temperature"),
    (lambda x, t: torch.softmax(x, dim=-1) / t, "after the softmax (softmax(x) / τ)"),
    (lambda x, t: torch.softmax(x, dim=-1) * t, "after the softmax (softmax(x) * τ)"),
    (lambda x, t: _normalise(torch.exp(x / t)), "forgot the stabilisation"),
    (lambda x, t: torch.softmax(x / t, dim=0), "normalised over dim 0"),
    (lambda x, t: torch.log_softmax(x / t, dim=-1), "log-probabilities"),
    (lambda x, t: torch.softmax(x / t ** 2, dim=-1), "the values differ"),
])
def test_check_softmax_with_temperature_names_each_mistake(attempt, fragment):
    result = check_softmax_with_temperature(attempt)
    assert fragment in result.message, result


def test_missing_stabilisation_is_caught_only_by_the_small_temperature_case():
    result = check_softmax_with_temperature(lambda x, t: _normalise(torch.exp(x / t)))
    assert result.status == WRONG and "temperature 0.01" in result.message
