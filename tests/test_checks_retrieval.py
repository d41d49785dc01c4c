import numpy as np
import pytest
import torch

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.retrieval import (check_lookup_by_matmul, check_soft_lookup, lookup_by_matmul,
                                         soft_lookup_reference)
from course_lib.retrieval import one_hot


def stub(*args):
    raise NotImplementedError("Your turn")


# --- exercise 1: lookup as a matrix product -----------------------------------------------------------

def test_reference_lookup_by_matmul():
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    assert lookup_by_matmul(one_hot(1, 3), values).tolist() == [3.0, 4.0]
    assert lookup_by_matmul(torch.tensor([0.5, 0.0, 0.5]), values).tolist() == [3.0, 4.0]
    with pytest.raises(ValueError, match="values: expected n=3, got n=2"):
        lookup_by_matmul(one_hot(1, 3), values[:2])


@pytest.mark.parametrize("attempt", [
    lambda q, v: q @ v,
    lambda q, v: torch.matmul(q, v),
    lambda q, v: (q[:, None] * v).sum(dim=0),
    lambda q, v: v.T @ q,  # the same product, written the other way round
])
def test_correct_lookups_pass(attempt):
    result = check_lookup_by_matmul(attempt)
    assert result.status == CORRECT, result


@pytest.mark.parametrize("attempt, fragment", [
    (lambda q, v: torch.argmax(q), "you returned the index of the 1, not the row"),
    (lambda q, v: int(torch.argmax(q)), "you returned the index of the 1, not the row"),
    (lambda q, v: q[:, None] * v, "you multiplied elementwise (`*`): that scales the rows"),
    (lambda q, v: q * v if v.shape[0] == v.shape[1] else q @ v, "with n == d it broadcasts along the columns"),
    (lambda q, v: v @ q if v.shape[0] == v.shape[1] else q @ v, "you multiplied the other way round"),
    (lambda q, v: q @ v.T if v.shape[0] == v.shape[1] else q @ v, "picks column i instead of row i"),
    (lambda q, v: v[torch.argmax(q)], "right for a one-hot query, but a matrix product also mixes"),
    (lambda q, v: v.sum(dim=0), "you summed all the rows of values"),
    (lambda q, v: (q @ v).numpy(), "expected a torch tensor"),
    (lambda q, v: None, "returned None"),
    (lambda q, v: (q @ v) + 1, "the values differ"),
])
def test_lookup_mistakes_are_named(attempt, fragment):
    result = check_lookup_by_matmul(attempt)
    assert result.status == WRONG and fragment in result.message, result


def test_lookup_stub_and_errors():
    assert check_lookup_by_matmul(stub).status == NOT_DONE
    result = check_lookup_by_matmul(lambda q, v: v @ q)  # (n, d) @ (n,): shapes do not fit
    assert result.status == ERROR and "raised RuntimeError" in result.message


# --- exercise 2: soft lookup --------------------------------------------------------------------------

def test_reference_soft_lookup_against_a_hand_computation():
    q = torch.tensor([1.0, 0.0])
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = torch.tensor([[1.0], [0.0]])
    e = np.e
    assert soft_lookup_reference(q, keys, values).item() == pytest.approx(e / (e + 1))


@pytest.mark.parametrize("attempt", [
    lambda q, k, v: torch.softmax(q @ k.T, dim=-1) @ v,
    lambda q, k, v: torch.nn.functional.softmax(q @ k.T, dim=-1) @ v,
    lambda q, k, v: torch.softmax(torch.matmul(q, k.transpose(0, 1)), -1) @ v,
])
def test_correct_soft_lookups_pass(attempt):
    result = check_soft_lookup(attempt)
    assert result.status == CORRECT, result


def _naive(q, k, v):
    e = torch.exp(q @ k.T)
    return (e / e.sum(dim=-1, keepdim=True)) @ v


@pytest.mark.parametrize("attempt, fragment", [
    (lambda q, k, v: (q @ k.T) @ v, "you used the raw scores as weights"),
    (lambda q, k, v: ((q @ k.T) / (q @ k.T).sum(dim=-1, keepdim=True)) @ v, "without exponentiating first"),
    (lambda q, k, v: torch.softmax(q @ k.T, dim=0) @ v, "softmax over the wrong axis (dim=0"),
    (lambda q, k, v: torch.softmax(q @ k.T, dim=-1), "you returned the weights"),
    (lambda q, k, v: torch.softmax(q @ k.T, dim=-1)[..., None] * v, "did not add them up"),
    (lambda q, k, v: v[torch.argmax(q @ k.T, dim=-1)], "you did a hard lookup (argmax)"),
    (lambda q, k, v: torch.softmax(q @ v.T, dim=-1) @ v if k.shape == v.shape else torch.softmax(q @ k.T, -1) @ v,
     "against the values instead of the keys"),
    (lambda q, k, v: v.mean(dim=0).expand(*q.shape[:-1], v.shape[-1]), "you averaged every value equally"),
    (_naive, "your softmax overflowed"),
    (lambda q, k, v: (torch.softmax(q @ k.T, dim=-1) @ v).numpy(), "expected a torch tensor"),
])
def test_soft_lookup_mistakes_are_named(attempt, fragment):
    result = check_soft_lookup(attempt)
    assert result.status == WRONG and fragment in result.message, result


def test_wrong_axis_is_caught_on_the_square_batch():
    result = check_soft_lookup(lambda q, k, v: torch.softmax(q @ k.T, dim=0) @ v)
    assert "a batch of m=3 queries" in result.message


def test_soft_lookup_that_only_handles_one_query():
    result = check_soft_lookup(lambda q, k, v: torch.softmax(k @ q, dim=-1) @ v)
    assert result.status == ERROR and "a batch of m=3 queries" in result.message


def test_soft_lookup_stub_is_not_done():
    assert check_soft_lookup(stub).status == NOT_DONE
