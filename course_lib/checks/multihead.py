"""Notebook 07's exercises: split a batch into heads, and merge the heads back."""
from __future__ import annotations

import itertools

import torch

from course_lib.checks.core import ERROR, Case, CheckResult, Mistake, check_function
from course_lib.multihead import merge_heads, split_heads

_VIEW_HINT = ("after a transpose the tensor is no longer stored row by row, so .view cannot merge or split "
              "its axes: use .reshape(...) instead (or .contiguous().view(...))")


def _explain_view_error(result: CheckResult) -> CheckResult:
    """Add the reason and the fix to torch's terse error for .view on a transposed tensor."""
    if result.status == ERROR and "view size is not compatible" in result.message:
        return CheckResult(result.exercise, ERROR, result.message, _VIEW_HINT)
    return result


def _order(names: tuple[str, ...], perm: tuple[int, ...]) -> str:
    return "(" + ", ".join(names[p] for p in perm) + ")"


# --- exercise 1: split_heads ------------------------------------------------------------------------------

def _parts(x: torch.Tensor, h: int) -> tuple[int, int, int, int]:
    B, T, d_model = x.shape
    return B, T, h, d_model // h


def _split_mistakes() -> list[Mistake]:
    names = ("B", "T", "h", "d_k")
    specific = [
        Mistake("you reshaped (B, T, d_model) straight to (B, h, T, d_k) without a transpose: the shape is "
                "right, but reshape fills the new axes from the flattened tensor in order, so head 0's rows "
                "are consecutive chunks of d_k numbers, the first features of token 0, then its next "
                "features, ... : the heads mix tokens and features",
                lambda x, h: x.reshape(x.shape[0], h, x.shape[1], -1),
                "reshape to (B, T, h, d_k) first (each token's d_model features cut into h blocks), then "
                ".transpose(1, 2) to bring the head axis in front of T"),
        Mistake("you left the result as (B, T, h, d_k): the features are cut into heads correctly, but the "
                "head axis must come before the time axis, (B, h, T, d_k), so that each head holds a (T, d_k) "
                "matrix to run attention on",
                lambda x, h: x.reshape(*_parts(x, h)),
                "add .transpose(1, 2) after the reshape"),
        Mistake("your heads take strided columns (head i gets features i, i + h, i + 2h, ...), as from "
                "x.view(B, T, d_k, h): the course's heads (and PyTorch's) are contiguous blocks, head i gets "
                "features i*d_k ... (i+1)*d_k - 1",
                lambda x, h: x.reshape(x.shape[0], x.shape[1], -1, h).permute(0, 3, 1, 2),
                "reshape to (B, T, h, d_k), with h before d_k, then .transpose(1, 2)"),
        Mistake("your result has d_k heads of width h, shape (B, d_k, T, h), instead of h heads of width d_k: "
                "did you swap h and d_k, or use a fixed number of heads instead of the argument h?",
                lambda x, h: x.reshape(x.shape[0], x.shape[1], -1, h).transpose(1, 2),
                "d_k = d_model // h; reshape to (B, T, h, d_k), with the h your function was given"),
        Mistake("you always make 2 heads: use the argument h, the number of heads asked for",
                lambda x, h: x.reshape(x.shape[0], x.shape[1], 2, -1).transpose(1, 2),
                "reshape to (B, T, h, d_model // h)"),
        Mistake("you transposed before reshaping: x.transpose(1, 2) is (B, d_model, T), and reshaping that to "
                "(B, h, T, d_k) mixes the positions of different tokens into one row",
                lambda x, h: x.transpose(1, 2).reshape(x.shape[0], h, x.shape[1], -1),
                "reshape first, to (B, T, h, d_k), then .transpose(1, 2)"),
    ]
    wrong_axes = []
    for perm in itertools.permutations(range(4)):
        if perm in ((0, 1, 2, 3), (0, 2, 1, 3)):  # un-transposed (named above) and right
            continue
        wrong_axes.append(Mistake(
            f"you reshaped to (B, T, h, d_k) correctly, then moved the wrong axes: your result has its axes "
            f"in the order {_order(names, perm)} instead of (B, h, T, d_k)",
            lambda x, h, perm=perm: x.reshape(*_parts(x, h)).permute(*perm),
            "swap only the T and h axes: .transpose(1, 2)"))
    return specific + wrong_axes


def _split_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(707)
    return [
        Case((torch.randn(2, 3, 8, generator=gen), 2), "x of shape (B=2, T=3, d_model=8) and h=2"),
        # every size 2: any order of the axes gives the right shape, only the values can tell
        Case((torch.randn(2, 2, 4, generator=gen), 2), "x of shape (B=2, T=2, d_model=4) and h=2, so d_k=2"),
        Case((torch.randn(1, 4, 8, generator=gen), 4), "x of shape (B=1, T=4, d_model=8) and h=4 (T == h)"),
        Case((torch.randn(2, 3, 6, generator=gen), 2), "x of shape (B=2, T=3, d_model=6) and h=2 (T == d_k)"),
        Case((torch.randn(2, 3, 4, generator=gen), 1), "x of shape (B=2, T=3, d_model=4) and h=1"),
        Case((torch.randn(1, 2, 4, generator=gen), 4), "x of shape (B=1, T=2, d_model=4) and h=4, so d_k=1"),
    ]


def check_split_heads(fn) -> CheckResult:
    """Check a learner's ``split_heads(x, h)``: (B, T, d_model) -> (B, h, T, d_k)."""
    result = check_function(fn, exercise="split_heads", reference=split_heads, cases=_split_cases(),
                            mistakes=_split_mistakes(), shape_names="(B, h, T, d_k)")
    return _explain_view_error(result)


# --- exercise 2: merge_heads ------------------------------------------------------------------------------

def _flat(x: torch.Tensor) -> tuple[int, int, int]:
    B, h, T, d_k = x.shape
    return B, T, h * d_k


def _merge_mistakes() -> list[Mistake]:
    names = ("B", "h", "T", "d_k")
    specific = {
        (0, 1, 2, 3): Mistake(
            "you reshaped (B, h, T, d_k) to (B, T, d_model) without transposing back: the shape is right, but "
            "reshape reads the heads one after the other, so the 'tokens' of your result are chunks of head 0's "
            "rows, then of head 1's rows, ...: tokens and heads are mixed",
            lambda x: x.reshape(*_flat(x)),
            "first .transpose(1, 2) to (B, T, h, d_k), then .reshape(B, T, h * d_k)"),
        (0, 2, 3, 1): Mistake(
            "your heads are interleaved (the features of token t come out as head 0's feature 0, head 1's "
            "feature 0, ...), as from x.permute(0, 2, 3, 1): the heads must sit side by side as contiguous "
            "blocks, head i in columns i*d_k ... (i+1)*d_k - 1, the inverse of split_heads",
            lambda x: x.permute(0, 2, 3, 1).reshape(*_flat(x)),
            "x.transpose(1, 2) gives (B, T, h, d_k); reshape that"),
    }
    mistakes = list(specific.values())
    mistakes += [
        Mistake("you transposed back to (B, T, h, d_k) but did not merge the last two axes: the result should "
                "have shape (B, T, d_model) with d_model = h * d_k",
                lambda x: x.transpose(1, 2), "add .reshape(B, T, h * d_k)"),
        Mistake("you added the heads up (sum over the head axis): merging puts them side by side "
                "(concatenates), so the result has width h * d_k, not d_k",
                lambda x: x.sum(dim=1), "concatenate: x.transpose(1, 2).reshape(B, T, h * d_k)"),
        Mistake("you averaged the heads: merging puts them side by side (concatenates), so the result has width "
                "h * d_k, not d_k",
                lambda x: x.mean(dim=1), "concatenate: x.transpose(1, 2).reshape(B, T, h * d_k)"),
        Mistake("you concatenated the heads along the time axis, shape (B, h * T, d_k): they belong side by side "
                "along the feature axis, (B, T, h * d_k)",
                lambda x: torch.cat(x.unbind(dim=1), dim=1), "torch.cat(..., dim=-1), or transpose and reshape"),
        Mistake("you kept only head 0: every head's output must be in the result, side by side",
                lambda x: x[:, 0], "x.transpose(1, 2).reshape(B, T, h * d_k)"),
    ]
    for perm in itertools.permutations(range(4)):
        if perm in specific or perm == (0, 2, 1, 3):
            continue
        mistakes.append(Mistake(
            f"you moved the wrong axes before the reshape: your tensor had its axes in the order "
            f"{_order(names, perm)} instead of (B, T, h, d_k), so the reshape mixed them up",
            lambda x, perm=perm: x.permute(*perm).reshape(*_flat(x)),
            "swap only the h and T axes: .transpose(1, 2), then .reshape(B, T, h * d_k)"))
    return mistakes


def _merge_cases() -> list[Case]:
    gen = torch.Generator().manual_seed(708)
    return [
        Case((torch.randn(2, 2, 3, 4, generator=gen),), "x of shape (B=2, h=2, T=3, d_k=4)"),
        # every size 2: any order of the axes gives the right shape, only the values can tell
        Case((torch.randn(2, 2, 2, 2, generator=gen),), "x of shape (B=2, h=2, T=2, d_k=2)"),
        Case((torch.randn(1, 4, 4, 2, generator=gen),), "x of shape (B=1, h=4, T=4, d_k=2) (T == h)"),
        Case((torch.randn(2, 2, 3, 3, generator=gen),), "x of shape (B=2, h=2, T=3, d_k=3) (T == d_k)"),
        Case((torch.randn(2, 1, 3, 4, generator=gen),), "x of shape (B=2, h=1, T=3, d_k=4)"),
    ]


def check_merge_heads(fn) -> CheckResult:
    """Check a learner's ``merge_heads(x)``: (B, h, T, d_k) -> (B, T, h * d_k)."""
    result = check_function(fn, exercise="merge_heads", reference=merge_heads, cases=_merge_cases(),
                            mistakes=_merge_mistakes(), shape_names="(B, T, d_model)")
    return _explain_view_error(result)
