"""Notebook 03's exercises: a stable softmax over a batch of rows, and softmax with a temperature."""
from __future__ import annotations

import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.shapes import check_shape
from course_lib.softmax import softmax

INF = float("inf")


def stable_softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax of each row of a batch of scores, without overflow.

    Args:
        scores: (B, n) floating point; row b holds the n scores of query b.

    Returns:
        (B, n): each row non-negative and summing to 1.
    """
    check_shape(scores, "B n", name="scores", dtype="float")
    return softmax(scores, dim=-1)


def softmax_with_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax of each row of ``scores / temperature``, without overflow.

    Args:
        scores: (B, n) floating point.
        temperature: a positive number.

    Returns:
        (B, n): each row non-negative and summing to 1.
    """
    check_shape(scores, "B n", name="scores", dtype="float")
    return softmax(scores, dim=-1, temperature=temperature)


def _exp_normalise(e: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return e / e.sum(dim=dim, keepdim=True)


def _square_only(make):
    """A mistake that only broadcasts (B,) against (B, n) when B == n; elsewhere it would raise."""
    return lambda x: make(x) if x.shape[0] == x.shape[-1] else None


# --- exercise 1: stable_softmax --------------------------------------------------------------------

def _stable_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(303)
    return [
        # B = n: a wrong axis, or a (B,) vector broadcast without keepdim, still gives the right shape.
        Case((2 * torch.randn(3, 3, generator=gen),), "square scores of shape (B=3, n=3)"),
        Case((2 * torch.randn(2, 4, generator=gen),), "scores of shape (B=2, n=4)"),
        # Fine for the naive formula (exp(82) < float32 max), but the global maximum 82 pushes
        # the whole second row to exp(-110) = 0 and then 0 / 0.
        Case((torch.tensor([[80.0, 81.0, 82.0], [-30.0, -29.0, -28.0]]),),
             "rows of very different sizes: [[80, 81, 82], [-30, -29, -28]]"),
        Case((torch.tensor([[1000.0, 1001.0, 1002.0], [1.0, 2.0, 3.0]]),),
             "large scores: [[1000, 1001, 1002], [1, 2, 3]]"),
        Case((torch.tensor([[0.5, -INF, 1.5], [2.0, 2.0, 2.0]]),),
             "a -inf score (must get weight 0) and a row of equal scores: [[0.5, -inf, 1.5], [2, 2, 2]]"),
    ]


_STABLE_MISTAKES = [
    Mistake("you normalised over dim 0, down the columns, so each column sums to 1 instead of each row",
            lambda x: torch.softmax(x, dim=0),
            "each row holds one query's scores: take the max and the sum over dim=-1"),
    Mistake("you normalised by column sums (sum over dim 0): the rows do not sum to 1",
            lambda x: _exp_normalise(torch.exp(x - x.amax(dim=-1, keepdim=True)), dim=0),
            "divide by e.sum(dim=-1, keepdim=True)"),
    Mistake("you divided by the sum of the whole matrix, so the rows do not sum to 1 (all entries together do)",
            lambda x: (lambda e: e / e.sum())(torch.exp(x - x.amax(dim=-1, keepdim=True))),
            "divide each row by its own sum: e.sum(dim=-1, keepdim=True)"),
    Mistake("you did not normalise: the rows do not sum to 1 (you returned exp(x - max) without dividing)",
            lambda x: torch.exp(x - x.amax(dim=-1, keepdim=True)),
            "divide by e.sum(dim=-1, keepdim=True)"),
    Mistake("you did not normalise: the rows do not sum to 1 (you returned exp(x) without dividing)",
            lambda x: torch.exp(x), "subtract the row maximum, exponentiate, then divide by the row sum"),
    Mistake("you subtracted the maximum of each column (dim 0) instead of each row: that is a different "
            "number for each entry of a row, which changes the answer",
            lambda x: _exp_normalise(torch.exp(x - x.amax(dim=0, keepdim=True))),
            "subtract x.amax(dim=-1, keepdim=True): one constant per row"),
    Mistake("you subtracted the row maxima without keepdim=True: the (B,) vector broadcasts along the last "
            "axis, so column j got row j's maximum",
            _square_only(lambda x: _exp_normalise(torch.exp(x - x.amax(dim=-1)))),
            "use x.amax(dim=-1, keepdim=True) (shape (B, 1)), or x.max(dim=-1, keepdim=True).values"),
    Mistake("you divided by the row sums without keepdim=True: the (B,) vector broadcasts along the last "
            "axis, so column j was divided by row j's sum",
            _square_only(lambda x: (lambda e: e / e.sum(dim=-1))(torch.exp(x - x.amax(dim=-1, keepdim=True)))),
            "use e.sum(dim=-1, keepdim=True), shape (B, 1)"),
    Mistake("you subtracted the maximum of the whole matrix: correct on paper, but a row whose scores are "
            "far below it underflows to exp(...) = 0 everywhere and then 0 / 0 = nan",
            lambda x: _exp_normalise(torch.exp(x - x.max())),
            "subtract each row's own maximum: x.amax(dim=-1, keepdim=True)"),
    Mistake("overflow: you exponentiated the raw scores, and exp(1000) = inf in float32, so inf / inf = nan",
            lambda x: _exp_normalise(torch.exp(x)),
            "subtract each row's maximum before exp: the answer is the same, and every exponent is <= 0"),
    Mistake("you returned log-probabilities (log-softmax) instead of the weights themselves",
            lambda x: torch.log_softmax(x, dim=-1), "return the weights: exp(x - max) / sum"),
    Mistake("you returned a hard one-hot choice (argmax), not the soft weights",
            lambda x: torch.nn.functional.one_hot(x.argmax(dim=-1), x.shape[-1]).to(x.dtype),
            "every position gets some weight: exp(x - max) / sum"),
]


def check_stable_softmax(fn) -> CheckResult:
    """Check a learner's ``stable_softmax(scores)``: (B, n) -> (B, n), softmax of each row."""
    return check_function(fn, exercise="stable_softmax", reference=stable_softmax, cases=_stable_cases(),
                          mistakes=_STABLE_MISTAKES, shape_names="(B, n)")


# --- exercise 2: softmax_with_temperature ------------------------------------------------------------

def _temperature_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(304)
    return [
        Case((2 * torch.randn(3, 3, generator=gen), 2.0), "square scores (B=3, n=3) and temperature 2.0"),
        Case((2 * torch.randn(2, 4, generator=gen), 0.5), "scores (B=2, n=4) and temperature 0.5"),
        Case((torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -0.5]]), 100.0),
             "scores [[1, 2, 3], [0.5, 0, -0.5]] and temperature 100 (nearly uniform)"),
        # scores / τ reach 500: exp overflows unless the maximum is subtracted first.
        Case((torch.tensor([[5.0, 4.0, 0.0], [1.0, 2.0, 3.0]]), 0.01),
             "scores [[5, 4, 0], [1, 2, 3]] and temperature 0.01 (scores / τ up to 500)"),
    ]


_TEMPERATURE_MISTAKES = [
    Mistake("you multiplied the scores by the temperature instead of dividing: a high τ should flatten "
            "the weights, yours sharpens them",
            lambda x, t: torch.softmax(x * t, dim=-1), "compute softmax(scores / τ)"),
    Mistake("your weights do not depend on the temperature: did you forget to divide the scores by τ, or "
            "divide exp(scores) by τ, where it cancels out in the normalisation?",
            lambda x, t: torch.softmax(x, dim=-1), "divide the scores by τ before the softmax"),
    Mistake("you applied the temperature after the softmax (softmax(x) / τ): the rows no longer sum to 1, "
            "and how peaked the weights are has not changed",
            lambda x, t: torch.softmax(x, dim=-1) / t, "divide the scores by τ before the softmax"),
    Mistake("you applied the temperature after the softmax (softmax(x) * τ): the rows no longer sum to 1, "
            "and how peaked the weights are has not changed",
            lambda x, t: torch.softmax(x, dim=-1) * t, "divide the scores by τ before the softmax"),
    Mistake("you forgot the stabilisation: with a small τ, scores / τ is large (500 here) and exp overflows "
            "to inf, so inf / inf = nan",
            lambda x, t: _exp_normalise(torch.exp(x / t)),
            "subtract the row maximum of scores / τ before exp"),
    Mistake("you normalised over dim 0, down the columns, instead of over each row",
            lambda x, t: torch.softmax(x / t, dim=0), "normalise over dim=-1"),
    Mistake("you returned log-probabilities (log-softmax) instead of the weights",
            lambda x, t: torch.log_softmax(x / t, dim=-1), "return the weights, not their logs"),
]


def check_softmax_with_temperature(fn) -> CheckResult:
    """Check a learner's ``softmax_with_temperature(scores, temperature)``: (B, n), float -> (B, n)."""
    return check_function(fn, exercise="softmax_with_temperature", reference=softmax_with_temperature,
                          cases=_temperature_cases(), mistakes=_TEMPERATURE_MISTAKES, shape_names="(B, n)")
