import pytest
import torch

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.similarity import (_ADDITIVE_MISTAKES, _COSINE_MISTAKES, _additive_cases, _cosine_cases,
                                          additive_against_keys, check_additive_against_keys,
                                          check_cosine_against_keys, cosine_against_keys)


def cosine_by_hand(query, keys):
    return (keys @ query) / (keys.norm(dim=1) * query.norm())


def additive_by_hand(query, keys, W_q, W_k, v):
    return torch.stack([torch.tanh(query @ W_q + key @ W_k) @ v for key in keys])


def test_references_agree_with_independent_computations():
    for case in _cosine_cases():
        assert torch.allclose(cosine_against_keys(*case.args), cosine_by_hand(*case.args), atol=1e-6)
    for case in _additive_cases():
        assert torch.allclose(additive_against_keys(*case.args), additive_by_hand(*case.args), atol=1e-5)


@pytest.mark.parametrize("check, solution", [(check_cosine_against_keys, cosine_by_hand),
                                             (check_additive_against_keys, additive_by_hand)])
def test_correct_solutions_pass(check, solution):
    result = check(solution)
    assert result.status == CORRECT, result


@pytest.mark.parametrize("check", [check_cosine_against_keys, check_additive_against_keys])
def test_stub_is_not_done(check):
    def stub(*args):
        raise NotImplementedError("Your turn")

    assert check(stub).status == NOT_DONE


@pytest.mark.parametrize("mistake", _COSINE_MISTAKES, ids=lambda m: m.message[:40])
def test_every_cosine_mistake_is_named(mistake):
    result = check_cosine_against_keys(mistake.make)
    assert result.status == WRONG
    assert result.message.startswith(mistake.message), result.message
    assert result.hint == mistake.hint


@pytest.mark.parametrize("mistake", _ADDITIVE_MISTAKES, ids=lambda m: m.message[:40])
def test_every_additive_mistake_is_named(mistake):
    result = check_additive_against_keys(mistake.make)
    assert result.status == WRONG
    assert result.message.startswith(mistake.message), result.message


def test_learner_style_mistakes_are_named():
    # written as a learner would, not taken from the mistake list
    result = check_cosine_against_keys(lambda q, k: (k @ q) / (k.norm(dim=1) ** 2 * q.norm() ** 2))
    assert "squared lengths" in result.message
    result = check_cosine_against_keys(lambda q, k: (k / k.norm(dim=1)) @ (q / q.norm()))
    assert "without keepdim=True" in result.message
    result = check_additive_against_keys(lambda q, k, W_q, W_k, v: torch.tanh((q @ W_q + k @ W_k) @ v))
    assert "tanh after multiplying by v" in result.message
    result = check_additive_against_keys(lambda q, k, W_q, W_k, v: torch.tanh(q @ W_q + k @ W_k))
    assert "without reducing them with v" in result.message


def test_numpy_answers_and_errors_are_reported():
    result = check_cosine_against_keys(lambda q, k: cosine_by_hand(q, k).numpy())
    assert result.status == WRONG and "expected a torch tensor" in result.message
    result = check_additive_against_keys(lambda q, k, W_q, W_k, v: torch.tanh(q @ W_q + k @ W_k) @ v[None, :])
    assert result.status == ERROR and "your function raised RuntimeError" in result.message


def test_unknown_wrong_answer_reports_a_difference():
    result = check_cosine_against_keys(lambda q, k: cosine_by_hand(q, k) + 0.5)
    assert result.status == WRONG and "largest difference is 0.5" in result.message


def test_mistakes_never_raise_on_any_case():
    for mistake in _COSINE_MISTAKES:
        for case in _cosine_cases():
            mistake.make(*case.args)
    for mistake in _ADDITIVE_MISTAKES:
        for case in _additive_cases():
            mistake.make(*case.args)
