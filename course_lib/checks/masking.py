"""Notebook 06's exercises: a causal mask and a masked softmax."""
from __future__ import annotations

import torch

from course_lib.checks.core import WRONG, Case, CheckResult, Mistake, check_function
from course_lib.masking import causal_mask, masked_softmax

INF = float("inf")


# --- exercise 1: causal_mask ---------------------------------------------------------------------------

def _ones(T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool)


_CAUSAL_MISTAKES = [
    Mistake("you kept the upper triangle instead of the lower one: every query may look at the FUTURE "
            "(later keys) and not at the past",
            lambda T: _ones(T).triu(), "rows are queries, columns are keys: keep j <= i, torch.tril"),
    Mistake("your mask is inverted: True where a key must be blocked (the future) and False where it is "
            "allowed; the course's convention (PyTorch's) is True = may attend",
            lambda T: ~_ones(T).tril(), "drop the ~ (or use tril instead of triu(diagonal=1))"),
    Mistake("the diagonal is missing: a token may not attend to itself, and the first query has no key at "
            "all (its row is all False, which gives NaN after the softmax)",
            lambda T: _ones(T).tril(diagonal=-1), "use tril with diagonal=0 (the default): key j <= query i"),
    Mistake("you allowed the next token too (tril with diagonal=1): each position can peek at the word it "
            "has to predict",
            lambda T: _ones(T).tril(diagonal=1), "use tril with diagonal=0 (the default)"),
    Mistake("your mask is all True: nothing is blocked, every query sees the whole sequence",
            lambda T: _ones(T), "keep only the lower triangle, torch.tril"),
    Mistake("you kept only the diagonal: each token may attend to itself but not to the earlier tokens",
            lambda T: torch.eye(T, dtype=torch.bool), "keep the whole lower triangle, torch.tril"),
]


def _check_dtype(result: CheckResult, fn, cases, exercise: str) -> CheckResult:
    """After a value check passed, make sure every answer is a bool tensor (float 0/1 looks the same)."""
    if not result.passed:
        return result
    for case in cases:
        answer = fn(*case.args)
        if isinstance(answer, torch.Tensor) and answer.dtype != torch.bool:
            if answer.is_floating_point():
                why = ("attention treats a float mask as ADDITIVE: it adds 0 or 1 to the scores and blocks "
                       "nothing")
            else:
                why = "attention refuses an integer mask (and some libraries read 1 as 'ignore')"
            return CheckResult(exercise, WRONG,
                               f"the pattern is right, but your mask has dtype {answer.dtype}, 0/1 numbers "
                               f"instead of True/False (on {case.description}): {why}",
                               "make it bool: torch.ones(T, T, dtype=torch.bool).tril(), or .bool() at the end")
    return result


def _causal_cases() -> list[Case]:
    return [Case((4,), "T=4"), Case((1,), "T=1 (a single token)"), Case((6,), "T=6")]


def check_causal_mask(fn) -> CheckResult:
    """Check a learner's ``causal_mask(T)``: -> (T, T) bool, True on and below the diagonal."""
    cases = _causal_cases()
    result = check_function(fn, exercise="causal_mask", reference=causal_mask, cases=cases,
                            mistakes=_CAUSAL_MISTAKES, shape_names="(T, T)")
    return _check_dtype(result, fn, cases, "causal_mask")


# --- exercise 2: masked_softmax ------------------------------------------------------------------------

def _fill_softmax(scores, blocked, value=-INF, zero_empty=False):
    """softmax of scores with ``blocked`` set to ``value``; fully blocked rows zeroed if ``zero_empty``."""
    weights = torch.softmax(scores.masked_fill(blocked, value), dim=-1)
    if not zero_empty:
        return weights
    empty = blocked.expand(scores.shape).all(dim=-1, keepdim=True)
    return weights.masked_fill(empty, 0.0)


def _both(message: str, transform, hint: str) -> list[Mistake]:
    """The same mistake made with and without handling fully masked rows (zeros vs NaN)."""
    return [Mistake(message, lambda s, m: masked_softmax(s, transform(s, m)), hint),
            Mistake(message, lambda s, m: torch.softmax(s.masked_fill(~transform(s, m), -INF), dim=-1), hint)]


_SOFTMAX_MISTAKES = [
    Mistake("you applied the mask AFTER the softmax: the blocked weights are 0, but each row no longer "
            "sums to 1 (the blocked keys took their share of the weight before you zeroed it)",
            lambda s, m: torch.softmax(s, dim=-1) * m,
            "set the blocked scores to -inf first (scores.masked_fill(~mask, float('-inf'))), then softmax"),
    Mistake("you set the blocked scores to 0 (masked_fill with 0, or scores * mask) instead of -inf: a score "
            "of 0 still gets weight e^0 = 1 before normalising, so blocked keys keep some weight",
            lambda s, m: torch.softmax(s.masked_fill(~m, 0.0), dim=-1),
            "fill with float('-inf'): e^-inf = 0 exactly"),
    Mistake("you ignored the mask: this is a plain softmax, blocked keys get weight",
            lambda s, m: torch.softmax(s, dim=-1), "scores.masked_fill(~mask, float('-inf')) before the softmax"),
    *_both("your mask is inverted: you blocked the keys where the mask is True; True means 'may attend'",
           lambda s, m: ~m, "fill where the mask is False: masked_fill(~mask, ...)"),
    *_both("you masked QUERIES (rows) instead of KEYS (columns): the key axis of the mask ended up on the "
           "query axis, e.g. a (B, T_k) padding mask reshaped to (B, T_k, 1) instead of (B, 1, T_k)",
           lambda s, m: m.transpose(-2, -1), "leave the mask as it is: (B, 1, T_k) broadcasts along the rows, blocking columns"),
    Mistake("you took the softmax over dim -2 (down the columns) instead of over the keys (dim -1): the "
            "columns sum to 1, the rows do not",
            lambda s, m: torch.softmax(s.masked_fill(~m, -INF), dim=-2),
            "softmax over dim=-1: each row (one query) must sum to 1"),
    Mistake("you took the softmax over dim -2 (down the columns) instead of over the keys (dim -1): the "
            "columns sum to 1, the rows do not",
            lambda s, m: masked_softmax(s.transpose(-2, -1), m.transpose(-2, -1)).transpose(-2, -1),
            "softmax over dim=-1: each row (one query) must sum to 1"),
    Mistake("a row whose keys are ALL blocked came out as NaN (softmax over only -inf is 0/0): the exercise "
            "asks for a row of zeros there",
            lambda s, m: _fill_softmax(s, ~m),
            "find the empty rows (~mask.any(dim=-1, keepdim=True)), and set their weights to 0 with masked_fill"),
    Mistake("a row whose keys are ALL blocked came out uniform (1/T_k on every blocked key): filling with a "
            "large finite number like -1e9 is not -inf, so an all-blocked row spreads its weight evenly "
            "over the keys it must not see",
            lambda s, m: _fill_softmax(s, ~m, value=-1e9),
            "fill with float('-inf'), then set the rows that have no allowed key to 0"),
]


def _softmax_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(606)
    lengths_mask = torch.tensor([[[True, True, False]], [[True, False, False]]])      # (B, 1, T_k) = (2, 1, 3)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()                               # (T_q, T_k) = (4, 4)
    full = causal & torch.tensor([True, True, True, False])[None, None, :]            # (1, 4, 4)
    full = full.expand(2, 4, 4).clone()
    full[1, :, 2:] = False                                                           # sentence 1: length 2
    empty = torch.tensor([[[True, True, False]], [[False, False, False]]])           # lengths [2, 0]
    return [
        # square: a (B, T_k) mask reshaped to (B, T_k, 1) still broadcasts, only the values can tell
        Case((torch.randn(2, 3, 3, generator=gen), lengths_mask),
             "square scores (B=2, T_q=3, T_k=3) and a padding mask (B, 1, T_k) for lengths [2, 1]"),
        Case((torch.randn(2, 4, 4, generator=gen), causal),
             "scores (B=2, T_q=4, T_k=4) and a causal mask (T_q, T_k)"),
        Case((3 * torch.randn(2, 4, 4, generator=gen), full),
             "scores (B=2, T_q=4, T_k=4) and a causal-and-padding mask (B, T_q, T_k) for lengths [3, 2]"),
        Case((torch.randn(2, 3, 3, generator=gen), empty),
             "a padding mask (B, 1, T_k) for lengths [2, 0]: sentence 1 is empty, all its keys are "
             "blocked, so its rows must be all zeros"),
    ]


def check_masked_softmax(fn) -> CheckResult:
    """Check a learner's ``masked_softmax(scores, mask)``: (B, T_q, T_k), bool mask -> (B, T_q, T_k)."""
    return check_function(fn, exercise="masked_softmax", reference=masked_softmax, cases=_softmax_cases(),
                          mistakes=_SOFTMAX_MISTAKES, shape_names="(B, T_q, T_k)")
