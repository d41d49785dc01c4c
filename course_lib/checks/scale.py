"""Notebook 14's exercises: counting attention's FLOPs, and merging two partial softmaxes (online softmax)."""
from __future__ import annotations

import math

import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.scale import online_softmax_merge

# --- exercise 1: attention's FLOPs -----------------------------------------------------------------


def attention_flops_reference(T_q: int, T_k: int, d_k: int, d_v: int) -> int:
    """Reference: FLOPs of softmax(q k^T / sqrt(d_k)) v for one head, a multiply-add counted as 2."""
    return 2 * T_q * T_k * d_k + 2 * T_q * T_k * d_v


_FLOP_MISTAKES = [
    Mistake("you counted multiply-adds, not FLOPs: each of the T_q·T_k·d_k products is followed by an "
            "addition, so a dot product of length d costs 2·d FLOPs",
            lambda T_q, T_k, d_k, d_v: T_q * T_k * d_k + T_q * T_k * d_v,
            "score FLOPs = 2 · T_q · T_k · d_k"),
    Mistake("you counted only the scores q k^T: the weighted sum of the values, (T_q, T_k) @ (T_k, d_v), "
            "costs 2 · T_q · T_k · d_v more",
            lambda T_q, T_k, d_k, d_v: 2 * T_q * T_k * d_k, "add the second matrix product"),
    Mistake("you counted only the weighted sum of values: the scores q k^T, (T_q, d_k) @ (d_k, T_k), cost "
            "2 · T_q · T_k · d_k as well",
            lambda T_q, T_k, d_k, d_v: 2 * T_q * T_k * d_v, "add the first matrix product"),
    Mistake("you used T_q for both lengths: in cross-attention the queries (T_q) and the keys (T_k) come from "
            "different sequences",
            lambda T_q, T_k, d_k, d_v: 2 * T_q * T_q * (d_k + d_v), "the score matrix is (T_q, T_k)"),
    Mistake("you used d_k for the values too: the weighted sum costs 2 · T_q · T_k · d_v, with the values' "
            "width d_v",
            lambda T_q, T_k, d_k, d_v: 4 * T_q * T_k * d_k, "the second product is (T_q, T_k) @ (T_k, d_v)"),
    Mistake("your count grows like T² · d²: a matrix product (n, m) @ (m, p) costs 2·n·m·p, linear in each size",
            lambda T_q, T_k, d_k, d_v: 2 * T_q * T_k * d_k * d_v, "scores: n = T_q, m = d_k, p = T_k"),
]


def check_attention_flops(fn) -> CheckResult:
    """Check a learner's ``attention_flops(T_q, T_k, d_k, d_v) -> int`` (one head, one sequence)."""
    cases = [
        Case((3, 5, 4, 3), "T_q = 3 queries, T_k = 5 keys, d_k = 4, d_v = 3"),
        Case((7, 11, 6, 10), "T_q = 7, T_k = 11, d_k = 6, d_v = 10"),
        Case((1024, 1024, 64, 64), "T_q = T_k = 1024, d_k = d_v = 64"),
    ]
    return check_function(fn, exercise="attention_flops", reference=attention_flops_reference, cases=cases,
                          mistakes=_FLOP_MISTAKES, rtol=0.0, atol=0.0,
                          success="matches 2·T_q·T_k·d_k + 2·T_q·T_k·d_v on every input.")


# --- exercise 2: merging two partial softmaxes -----------------------------------------------------


def _table(result, T: int, d_v: int) -> torch.Tensor:
    """``(m, l, acc)`` -> one (T, 2 + d_v) float64 table: column 0 m, column 1 l, then acc."""
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        kind = f"a {type(result).__name__}" + (f" of length {len(result)}" if isinstance(result, (tuple, list)) else "")
        raise TypeError(f"merge must return three things, (m, l, acc), got {kind}")
    m, l, acc = (torch.as_tensor(x) for x in result)
    for name, value, shape in (("m", m, (T,)), ("l", l, (T,)), ("acc", acc, (T, d_v))):
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} should have shape {shape}, got {tuple(value.shape)}")
    return torch.cat([m.double()[:, None], l.double()[:, None], acc.double()], dim=1)


def _reference_table(m_a, l_a, acc_a, m_b, l_b, acc_b):
    return _table(online_softmax_merge(m_a, l_a, acc_a, m_b, l_b, acc_b), *acc_a.shape)


def _wrong(make):
    def table(m_a, l_a, acc_a, m_b, l_b, acc_b):
        return _table(make(m_a, l_a, acc_a, m_b, l_b, acc_b), *acc_a.shape)
    return table


def _scales(m_a, m_b):
    m = torch.maximum(m_a, m_b)
    return m, torch.exp(m_a - m), torch.exp(m_b - m)


def _combined(m, sa, sb, l_a, acc_a, l_b, acc_b):
    """(m, l, acc) from the two parts and their factors sa, sb (T_q,): the sums any merge forms."""
    return m, l_a * sa + l_b * sb, acc_a * sa[:, None] + acc_b * sb[:, None]


def _no_rescale(m_a, l_a, acc_a, m_b, l_b, acc_b):
    return torch.maximum(m_a, m_b), l_a + l_b, acc_a + acc_b


def _acc_not_rescaled(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m, sa, sb = _scales(m_a, m_b)
    return m, l_a * sa + l_b * sb, acc_a + acc_b


def _l_not_rescaled(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m, sa, sb = _scales(m_a, m_b)
    return m, l_a + l_b, acc_a * sa[:, None] + acc_b * sb[:, None]


def _flipped_sign(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.maximum(m_a, m_b)
    return _combined(m, torch.exp(m - m_a), torch.exp(m - m_b), l_a, acc_a, l_b, acc_b)


def _second_max(m_a, l_a, acc_a, m_b, l_b, acc_b):
    return _combined(m_b, torch.exp(m_a - m_b), torch.ones_like(m_b), l_a, acc_a, l_b, acc_b)


def _minimum(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m = torch.minimum(m_a, m_b)
    return _combined(m, torch.exp(m_a - m), torch.exp(m_b - m), l_a, acc_a, l_b, acc_b)


def _normalised(m_a, l_a, acc_a, m_b, l_b, acc_b):
    m, l, acc = _combined(*_scales(m_a, m_b), l_a, acc_a, l_b, acc_b)
    return m, l, acc / l[:, None]


def _added_maxima(m_a, l_a, acc_a, m_b, l_b, acc_b):
    _, l, acc = _combined(*_scales(m_a, m_b), l_a, acc_a, l_b, acc_b)
    return m_a + m_b, l, acc


_MERGE_MISTAKES = [
    Mistake("you added the two parts without moving them to a common maximum: each part's sums are relative to "
            "its own maximum, so multiply part a by exp(m_a - m) and part b by exp(m_b - m) first",
            _wrong(_no_rescale), "m = torch.maximum(m_a, m_b); scale_a = torch.exp(m_a - m)"),
    Mistake("you rescaled the sums l but not the accumulators acc: acc_a and acc_b need the same factors "
            "exp(m_a - m) and exp(m_b - m), one per row",
            _wrong(_acc_not_rescaled), "acc = acc_a * scale_a[:, None] + acc_b * scale_b[:, None]"),
    Mistake("you rescaled the accumulators but not the sums l: l_a and l_b need the same factors "
            "exp(m_a - m) and exp(m_b - m)",
            _wrong(_l_not_rescaled), "l = l_a * scale_a + l_b * scale_b"),
    Mistake("your rescaling factors are upside down: exp(m - m_a) is >= 1 and can overflow; moving a sum from "
            "maximum m_a to the larger m multiplies it by exp(m_a - m) <= 1",
            _wrong(_flipped_sign), "scale_a = torch.exp(m_a - m)"),
    Mistake("you took the second part's maximum as the new one: the merged maximum is the larger of the two, "
            "torch.maximum(m_a, m_b) (with m_b the factor exp(m_a - m_b) can overflow)",
            _wrong(_second_max), "m = torch.maximum(m_a, m_b)"),
    Mistake("you took the smaller maximum: use the larger one, torch.maximum(m_a, m_b), so that every factor "
            "exp(m_x - m) is at most 1 and nothing overflows",
            _wrong(_minimum), "m = torch.maximum(m_a, m_b)"),
    Mistake("you divided acc by l inside the merge: keep acc unnormalised (a sum of exp(s - m) * v) and divide "
            "once, after the last block; otherwise the next merge mixes an average with a sum",
            _wrong(_normalised), "return m, l, acc  # no division here"),
    Mistake("you added the maxima: the merged maximum is the larger of the two, torch.maximum(m_a, m_b)",
            _wrong(_added_maxima), "m = torch.maximum(m_a, m_b)"),
]


def _part(scores: torch.Tensor, values: torch.Tensor):
    """The partial result (m, l, acc) of one block of keys: scores (T, n), values (n, d_v)."""
    m = scores.amax(dim=1)
    p = torch.exp(scores - m[:, None])
    return m, p.sum(dim=1), p @ values


def _merge_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1301)
    cases = []
    for T, n_a, n_b, d_v, shift, text in ((3, 2, 2, 2, 0.0, "3 queries, two blocks of 2 keys, d_v = 2"),
                                         (4, 3, 5, 3, 6.0, "4 queries, blocks of 3 and 5 keys whose scores differ "
                                                           "by about 6")):
        s_a = torch.randn(T, n_a, generator=gen) * 2
        s_b = torch.randn(T, n_b, generator=gen) * 2 + shift
        v_a, v_b = torch.randn(n_a, d_v, generator=gen), torch.randn(n_b, d_v, generator=gen)
        cases.append(Case((*_part(s_a, v_a), *_part(s_b, v_b)), text))
    s_a = torch.tensor([[90.0, 88.0], [1.0, -1.0]])  # large scores: exp(90) overflows float32
    s_b = torch.tensor([[95.0, 91.0], [0.5, -3.0]])  # row 0: part b has the larger maximum, row 1: part a
    v = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    cases.append(Case((*_part(s_a, v), *_part(s_b, v)), "scores as large as 95 (exp(95) overflows float32); the larger maximum in part b for row 0, part a for row 1"))
    m_b, l_b, acc_b = _part(torch.randn(2, 3, generator=gen), torch.randn(3, 2, generator=gen))
    cases.append(Case((torch.full((2,), -math.inf), torch.zeros(2), torch.zeros(2, 2), m_b, l_b, acc_b),
                      "an empty first part (m_a = -inf, l_a = 0, acc_a = 0), as at the start of the loop"))
    return cases


def check_online_softmax_merge(fn) -> CheckResult:
    """Check a learner's ``merge(m_a, l_a, acc_a, m_b, l_b, acc_b) -> (m, l, acc)`` for one head.

    Shapes: m and l (T_q,), acc (T_q, d_v). The three results are compared as one (T_q, 2 + d_v)
    table: column 0 m, column 1 l, then acc.
    """
    if not callable(fn):
        return check_function(fn, exercise="merge", reference=_reference_table, cases=_merge_cases())

    def as_table(m_a, l_a, acc_a, m_b, l_b, acc_b):
        return _table(fn(m_a, l_a, acc_a, m_b, l_b, acc_b), *acc_a.shape)

    return check_function(as_table, exercise="merge", reference=_reference_table, cases=_merge_cases(),
                          mistakes=_MERGE_MISTAKES, shape_names="(T_q, 2 + d_v): columns m, l, then acc",
                          rtol=1e-5, atol=1e-6,
                          success="merges partial softmaxes exactly, large scores and empty parts included.")
