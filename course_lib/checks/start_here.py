"""Notebook 00's warm-up: average a batch of sequences over time."""
from __future__ import annotations

import torch

from course_lib.checks.core import Case, CheckResult, Mistake, check_function
from course_lib.shapes import check_shape


def mean_over_time(x: torch.Tensor) -> torch.Tensor:
    """Average a batch of sequences over its time axis.

    Args:
        x: shape (B, T, d_model), floating point.

    Returns:
        shape (B, d_model): one vector per sequence, the mean of its T vectors.
    """
    check_shape(x, "B T d_model", name="x")
    return x.mean(dim=1)


def _cases() -> list[Case]:
    gen = torch.Generator().manual_seed(1234)
    return [
        Case((torch.randn(2, 3, 4, generator=gen),), "x of shape (B=2, T=3, d_model=4)"),
        # B = T = d_model: every wrong axis gives the right shape, only the values can tell.
        Case((torch.randn(3, 3, 3, generator=gen),), "x of shape (B=3, T=3, d_model=3)"),
        Case((torch.randn(1, 5, 2, generator=gen),), "x of shape (B=1, T=5, d_model=2)"),
    ]


_MISTAKES = [
    Mistake("you averaged over dim 0, the batch axis B, which mixes different sequences together",
            lambda x: x.mean(dim=0), "average over dim=1, the time axis T"),
    Mistake("you averaged over the last dim, the feature axis d_model, instead of over time",
            lambda x: x.mean(dim=-1), "average over dim=1, the time axis T"),
    Mistake("you summed over time but did not divide by T: every value is T times too large",
            lambda x: x.sum(dim=1), "use .mean(dim=1), or divide the sum by x.shape[1]"),
    Mistake("keepdim=True left a time axis of length 1: the answer should have shape (B, d_model)",
            lambda x: x.mean(dim=1, keepdim=True), "drop keepdim=True"),
    Mistake("you averaged over every axis at once and returned a single number",
            lambda x: x.mean(), "pass dim=1 to .mean"),
    Mistake("you returned the last time step, not the average of all time steps",
            lambda x: x[:, -1], "average over all T positions: x.mean(dim=1)"),
]


def check_mean_over_time(fn) -> CheckResult:
    """Check a learner's ``mean_over_time(x)``; (B, T, d_model) -> (B, d_model)."""
    return check_function(fn, exercise="mean_over_time", reference=mean_over_time, cases=_cases(),
                          mistakes=_MISTAKES, shape_names="(B, d_model)")
