import pytest
import torch

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.masking import check_causal_mask, check_masked_softmax

INF = float("inf")


def _not_done(*args):
    raise NotImplementedError("Your turn")


def _ones(T):
    return torch.ones(T, T, dtype=torch.bool)


# --- causal_mask -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("attempt, fragment", [
    (lambda T: _ones(T).tril(), "matches the reference"),
    (lambda T: torch.arange(T)[:, None] >= torch.arange(T)[None, :], "matches the reference"),
    (lambda T: ~_ones(T).triu(diagonal=1), "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda T: _ones(T).triu(), "upper triangle instead of the lower one"),
    (lambda T: torch.arange(T)[:, None] <= torch.arange(T)[None, :], "upper triangle instead of the lower one"),
    (lambda T: _ones(T).triu(diagonal=1), "your mask is inverted"),
    (lambda T: _ones(T).tril(diagonal=-1), "the diagonal is missing"),
    (lambda T: _ones(T).tril(diagonal=1), "allowed the next token too"),
    (lambda T: _ones(T), "all True"),
    (lambda T: torch.eye(T, dtype=torch.bool), "only the diagonal"),
    (lambda T: torch.ones(T, T).tril(), "dtype torch.float32, 0/1 numbers instead of True/False"),
    (lambda T: torch.ones(T, T, dtype=torch.long).tril(), "dtype torch.int64"),
    (lambda T: _ones(T).tril()[None], "expected shape (4, 4) = (T, T), got shape (1, 4, 4)"),
    (lambda T: _ones(T).tril().numpy(), "expected a torch tensor"),
    (lambda T: None, "returned None"),
])
def test_check_causal_mask_names_each_mistake(attempt, fragment):
    result = check_causal_mask(attempt)
    assert fragment in result.message, result


def test_check_causal_mask_statuses_and_float_answers_with_wrong_values():
    assert check_causal_mask(_not_done).status == NOT_DONE
    assert check_causal_mask(lambda T: _ones(T).tril()).status == CORRECT
    assert check_causal_mask(lambda T: 1 / 0).status == ERROR
    # a float upper triangle: the wrong pattern is named first
    result = check_causal_mask(lambda T: torch.ones(T, T).triu())
    assert result.status == WRONG and "upper triangle" in result.message
    # wrong only for T = 1: the case is named
    result = check_causal_mask(lambda T: _ones(T).tril() if T > 1 else torch.zeros(1, 1, dtype=torch.bool))
    assert result.status == WRONG and "T=1" in result.message


# --- masked_softmax --------------------------------------------------------------------------------------

def _handled(scores, mask):
    filled = scores.masked_fill(~mask, -INF)
    empty = ~mask.expand(scores.shape).any(dim=-1, keepdim=True)
    return torch.softmax(filled.masked_fill(empty, 0.0), dim=-1).masked_fill(empty, 0.0)


def _plain(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, -INF), dim=-1)


@pytest.mark.parametrize("attempt, fragment", [
    (_handled, "matches the reference"),
    (lambda s, m: torch.nan_to_num(_plain(s, m)), "matches the reference"),
    (lambda s, m: torch.where(m.any(-1, keepdim=True), _plain(s, m), 0.0), "matches the reference"),
    (_not_done, "replace `raise NotImplementedError`"),
    (lambda s, m: torch.softmax(s, dim=-1) * m, "applied the mask AFTER the softmax"),
    (lambda s, m: torch.softmax(s, dim=-1).masked_fill(~m, 0.0), "applied the mask AFTER the softmax"),
    (lambda s, m: torch.softmax(s * m, dim=-1), "set the blocked scores to 0"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, 0.0), dim=-1), "set the blocked scores to 0"),
    (lambda s, m: torch.softmax(s, dim=-1), "you ignored the mask"),
    (lambda s, m: _plain(s, ~m), "your mask is inverted"),
    (lambda s, m: _handled(s, ~m), "your mask is inverted"),
    (lambda s, m: _plain(s, m.transpose(-2, -1)), "masked QUERIES (rows) instead of KEYS"),
    (lambda s, m: _handled(s, m.transpose(-2, -1)), "masked QUERIES (rows) instead of KEYS"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, -INF), dim=-2), "softmax over dim -2"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, -INF), dim=1), "softmax over dim -2"),
    (_plain, "came out as NaN"),
    (lambda s, m: torch.softmax(s.masked_fill(~m, -1e9), dim=-1), "came out uniform"),
    (lambda s, m: torch.softmax(s + (~m) * -1e9, dim=-1), "came out uniform"),
    (lambda s, m: _handled(s, m)[..., :-1], "expected shape"),
    (lambda s, m: _handled(s, m).numpy(), "expected a torch tensor"),
    (lambda s, m: _handled(s.masked_fill_(~m, -INF), m), "changed its input in place"),
])
def test_check_masked_softmax_names_each_mistake(attempt, fragment):
    result = check_masked_softmax(attempt)
    assert fragment in result.message, result


def test_simple_mistakes_are_named_on_the_first_case_and_empty_rows_only_on_the_last():
    result = check_masked_softmax(lambda s, m: torch.softmax(s, -1) * m)
    assert "lengths [2, 1]" in result.message
    result = check_masked_softmax(_plain)
    assert result.status == WRONG and "lengths [2, 0]" in result.message
    assert "~mask.any(dim=-1, keepdim=True)" in result.hint


def test_masking_queries_is_caught_although_the_shapes_agree():
    # the first case is square, so a (B, T_k, 1) mask broadcasts without an error
    result = check_masked_softmax(lambda s, m: _handled(s, m.transpose(-2, -1)))
    assert result.status == WRONG and "square scores" in result.message


def test_check_masked_softmax_statuses():
    assert check_masked_softmax(_not_done).status == NOT_DONE
    assert check_masked_softmax(_handled).status == CORRECT
    assert check_masked_softmax(lambda s, m: s.masked_fill(m, 1) @ torch.ones(2)).status == ERROR
