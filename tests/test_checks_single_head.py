"""Notebook 04's build exercise: the check of a learner's SingleHeadAttention module."""
import math

import pytest
import torch
from torch import nn

from course_lib.checks.attention import check_single_head_attention
from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG


class Head(nn.Module):
    """A learner's module; each keyword reproduces one slip (all off: a correct answer)."""

    slips: dict = {}

    def __init__(self, d_model, d_k, d_v=None):
        super().__init__()
        d_v = d_k if d_v is None else d_v
        bias = self.slips.get("bias", False)
        self.w_q = nn.Linear(d_model, d_k, bias=bias)
        self.w_k = nn.Linear(d_model, d_k, bias=bias)
        self.w_v = nn.Linear(d_model, d_v, bias=bias)

    def forward(self, x, context=None, mask=None):
        s = self.slips
        source = x if context is None or s.get("ignore_context") else context
        q = self.w_q(source if s.get("queries_from_context") else x)
        k = self.w_k(source)
        v = (self.w_k if s.get("values_with_w_k") else self.w_v)(source)
        scale = {"none": 1.0, "d_k": 1 / q.shape[-1], "d_model": 1 / math.sqrt(x.shape[-1])}.get(
            s.get("scale"), 1 / math.sqrt(q.shape[-1]))
        scores = q @ k.transpose(-2, -1) * scale
        if mask is not None and not s.get("ignore_mask") and s.get("mask") != "after":
            blocked = mask if s.get("mask") == "inverted" else ~mask
            scores = scores.masked_fill(blocked, 0.0 if s.get("mask") == "zero" else float("-inf"))
        weights = torch.softmax(scores, dim=s.get("dim", -1))
        if mask is not None and s.get("mask") == "after":
            weights = weights * mask
        output = weights @ v
        if s.get("detach"):
            output = output.detach()
        if s.get("only_output"):
            return output
        second = scores if s.get("scores_out") else weights
        return (second, output) if s.get("swapped") else (output, second)


def learner(**slips):
    return type("LearnerHead", (Head,), {"slips": slips})


def test_a_correct_module_passes():
    result = check_single_head_attention(learner())
    assert result.status == CORRECT, result


@pytest.mark.parametrize("slips, fragment", [
    ({"scale": "none"}, "the scale is missing"),
    ({"scale": "d_k"}, "by d_k instead of sqrt(d_k)"),
    ({"scale": "d_model"}, "sqrt(d_model)"),
    ({"dim": -2}, "softmax over the queries (dim=-2)"),
    ({"ignore_context": True}, "the context is ignored"),
    ({"queries_from_context": True}, "your queries came from `context` too"),
    ({"values_with_w_k": True}, "your values went through w_k"),
    ({"ignore_mask": True}, "the mask is ignored"),
    ({"mask": "inverted"}, "your mask is inverted"),
    ({"mask": "after"}, "mask AFTER the softmax"),
    ({"mask": "zero"}, "blocked scores to 0 instead of -inf"),
    ({"scores_out": True}, "your second output is the scores"),
    ({"swapped": True}, "you returned (weights, output)"),
    ({"only_output": True}, "your forward returned 1 value(s), expected 2: output and weights"),
    ({"bias": True}, "parameters that the exercise does not ask for: w_q.bias (4,)"),
    ({"detach": True}, "no gradient reaches w_v.weight"),
])
def test_each_mistake_is_named(slips, fragment):
    result = check_single_head_attention(learner(**slips))
    assert result.status == WRONG, result
    assert fragment in result.message, result


def test_wrong_shapes_of_the_projections_are_named():
    class Transposed(Head):
        def __init__(self, d_model, d_k, d_v=None):
            nn.Module.__init__(self)
            self.w_q, self.w_k = nn.Linear(d_k, d_model, bias=False), nn.Linear(d_model, d_k, bias=False)
            self.w_v = nn.Linear(d_model, d_k, bias=False)

    result = check_single_head_attention(Transposed)
    assert result.status == WRONG and "w_q.weight has shape (6, 4), expected (4, 6)" in result.message
    assert "bias=False" in result.hint

    class Renamed(Head):
        def __init__(self, d_model, d_k, d_v=None):
            nn.Module.__init__(self)
            self.query = nn.Linear(d_model, d_k, bias=False)

    result = check_single_head_attention(Renamed)
    assert result.status == WRONG and "query.weight" in result.message and "w_q.weight" in result.message


def test_a_forgotten_super_init_is_explained():
    class NoSuper(Head):
        def __init__(self, d_model, d_k, d_v=None):
            self.w_q = nn.Linear(d_model, d_k, bias=False)

    result = check_single_head_attention(NoSuper)
    assert result.status == ERROR and "super().__init__()" in result.hint


def test_stubs_errors_and_non_classes_are_reported_not_raised():
    class InitStub(nn.Module):
        def __init__(self, d_model, d_k, d_v=None):
            super().__init__()
            raise NotImplementedError("Your turn")

    class ForwardStub(Head):
        def forward(self, x, context=None, mask=None):
            raise NotImplementedError("Your turn")

    class NoTranspose(Head):  # q @ k: (2, 5, 4) @ (2, 5, 4) does not fit
        def forward(self, x, context=None, mask=None):
            q, k = self.w_q(x), self.w_k(x)
            return torch.softmax(q @ k, dim=-1) @ self.w_v(x), None

    assert check_single_head_attention(InitStub).status == NOT_DONE
    assert check_single_head_attention(ForwardStub).status == NOT_DONE
    result = check_single_head_attention(NoTranspose)
    assert result.status == ERROR and "your forward raised RuntimeError" in result.message
    assert "self-attention, x of shape (B=2, T=5, d_model=6)" in result.message
    result = check_single_head_attention(Head(6, 4))
    assert result.status == ERROR and "got a Head" in result.message
