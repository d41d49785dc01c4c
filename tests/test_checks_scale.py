"""Notebook 14's checks: right answers pass, stubs are "not done", and each known mistake is named."""
import math

import pytest
import torch

from course_lib.checks.scale import (_FLOP_MISTAKES, _MERGE_MISTAKES, _merge_cases, attention_flops_reference,
                                     check_attention_flops, check_online_softmax_merge)


def _stub(*_):
    raise NotImplementedError


# --- attention_flops --------------------------------------------------------------------------------

def _flops_by_counting(T_q, T_k, d_k, d_v):
    """Independent: one multiply and one add per term of every dot product, for both products."""
    return sum(2 * d_k for _ in range(T_q * T_k)) + sum(2 * T_k for _ in range(T_q * d_v))


def test_the_reference_count_matches_an_explicit_count():
    for args in [(3, 5, 4, 3), (7, 11, 6, 10), (1, 1, 1, 1)]:
        assert attention_flops_reference(*args) == _flops_by_counting(*args)


def test_a_correct_count_passes_and_a_stub_is_not_done():
    assert check_attention_flops(_flops_by_counting).passed
    assert check_attention_flops(lambda T_q, T_k, d_k, d_v: 2 * T_q * T_k * (d_k + d_v)).passed
    assert check_attention_flops(_stub).status == "not done"
    assert check_attention_flops(42).status == "error"


@pytest.mark.parametrize("mistake", _FLOP_MISTAKES, ids=lambda m: m.message[:40])
def test_every_flop_mistake_is_named(mistake):
    result = check_attention_flops(mistake.make)
    assert result.status == "wrong"
    assert result.message.startswith(mistake.message), result.message


def test_an_unknown_wrong_count_says_what_differs():
    result = check_attention_flops(lambda T_q, T_k, d_k, d_v: 7)
    assert result.status == "wrong" and "expected" in result.message


# --- merge ------------------------------------------------------------------------------------------

def _merge_by_concatenating_logs(m_a, l_a, acc_a, m_b, l_b, acc_b):
    """Independent: logsumexp of the two parts' log-sums, in float64."""
    m = torch.maximum(m_a, m_b)
    log_l = torch.logaddexp(m_a.double() + l_a.double().log(), m_b.double() + l_b.double().log())
    wa = torch.exp(m_a.double() - m.double())
    wb = torch.exp(m_b.double() - m.double())
    acc = acc_a.double() * wa[:, None] + acc_b.double() * wb[:, None]
    return m, torch.exp(log_l - m.double()), acc


def test_the_cases_cover_large_scores_both_orders_and_an_empty_part():
    cases = _merge_cases()
    descriptions = " ".join(c.description for c in cases)
    assert "95" in descriptions and "empty" in descriptions
    big = next(c for c in cases if "95" in c.description)
    m_a, m_b = big.args[0], big.args[3]
    assert (m_a > m_b).any() and (m_b > m_a).any()
    empty = next(c for c in cases if "empty" in c.description)
    assert torch.isneginf(empty.args[0]).all()


def test_a_correct_merge_passes_and_a_stub_is_not_done():
    assert check_online_softmax_merge(_merge_by_concatenating_logs).passed
    assert check_online_softmax_merge(_stub).status == "not done"
    assert check_online_softmax_merge("merge").status == "error"


@pytest.mark.parametrize("mistake", _MERGE_MISTAKES, ids=lambda m: m.message[:40])
def test_every_merge_mistake_is_named(mistake):
    def wrong(*args):  # a learner's function returns (m, l, acc); the mistake's make returns the table
        table = mistake.make(*args)
        d_v = args[2].shape[1]
        return table[:, 0], table[:, 1], table[:, 2:2 + d_v]

    result = check_online_softmax_merge(wrong)
    assert result.status == "wrong"
    assert result.message.startswith(mistake.message), result.message


def test_wrong_return_forms_are_explained():
    result = check_online_softmax_merge(lambda *a: (a[0], a[1]))
    assert result.status == "error" and "(m, l, acc)" in result.message
    result = check_online_softmax_merge(lambda m_a, l_a, acc_a, *_: (m_a, l_a, acc_a.T))
    assert result.status == "error" and "acc should have shape" in result.message


def test_a_naive_merge_that_ignores_empty_parts_still_passes():
    # exp(-inf - m) is 0 for a finite m, so the textbook formula handles the loop's empty start
    def naive(m_a, l_a, acc_a, m_b, l_b, acc_b):
        m = torch.maximum(m_a, m_b)
        a, b = torch.exp(m_a - m), torch.exp(m_b - m)
        return m, l_a * a + l_b * b, acc_a * a[:, None] + acc_b * b[:, None]

    assert check_online_softmax_merge(naive).passed
    assert math.isinf(float(_merge_cases()[-1].args[0][0]))
