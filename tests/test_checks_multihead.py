"""Notebook 07's build exercise: the check of a learner's MultiHeadAttention module."""
import math

import pytest
import torch
from torch import nn

from course_lib.checks.core import CORRECT, ERROR, NOT_DONE, WRONG
from course_lib.checks.multihead import check_multi_head_attention


class MHA(nn.Module):
    """A learner's module; each keyword of ``slips`` reproduces one mistake (none: a correct answer)."""

    slips: dict = {}

    def __init__(self, d_model, h):
        super().__init__()
        self.h = h
        bias = not self.slips.get("no_bias")
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model, bias=bias) for _ in range(4))

    def split(self, x):
        B, T, d_model = x.shape
        how = self.slips.get("split")
        if how == "no transpose":
            return x.reshape(B, self.h, T, -1)
        if how == "strided":
            return x.view(B, T, -1, self.h).permute(0, 3, 1, 2)
        return x.view(B, T, self.h, -1).transpose(1, 2)

    def forward(self, query, key=None, value=None, mask=None):
        s = self.slips
        key = query if key is None or s.get("ignore_memory") else key
        value = key if value is None or s.get("ignore_memory") else value
        q, k = self.split(self.w_q(query)), self.split(self.w_k(key))
        v = self.split((self.w_k if s.get("values_with_w_k") else self.w_v)(value))
        d = {"d_model": query.shape[-1], "none": 1.0}.get(s.get("scale"), q.shape[-1])
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if mask is not None:
            if mask.dim() == 3 and not s.get("mask_without_head_axis"):
                mask = mask.unsqueeze(1)
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=s.get("dim", -1))
        out = weights @ v  # (B, h, T_q, d_k)
        B, h, T, d_k = out.shape
        if s.get("merge") == "no transpose":
            merged = out.reshape(B, T, h * d_k)
        elif s.get("merge") == "view":
            merged = out.transpose(1, 2).view(B, T, h * d_k)
        else:
            merged = out.transpose(1, 2).reshape(B, T, h * d_k)
        output = merged if s.get("no_w_o") else self.w_o(merged)
        return output, (weights.mean(dim=1) if s.get("average") else weights)


def learner(**slips):
    return type("LearnerMHA", (MHA,), {"slips": slips})


def test_a_correct_module_passes():
    result = check_multi_head_attention(learner())
    assert result.status == CORRECT, result


@pytest.mark.parametrize("slips, fragment", [
    ({"split": "no transpose"}, "split into heads with a reshape straight to (B, h, T, d_k)"),
    ({"split": "strided"}, "strided features"),
    ({"merge": "no transpose"}, "merged the heads with a reshape"),
    ({"scale": "d_model"}, "sqrt(d_model) instead of sqrt(d_k)"),
    ({"scale": "none"}, "the scale is missing"),
    ({"no_w_o": True}, "the output projection is missing"),
    ({"mask_without_head_axis": True}, "the padding mask has no head axis"),
    ({"ignore_memory": True}, "key and value are ignored"),
    ({"values_with_w_k": True}, "your values went through w_k"),
    ({"dim": -2}, "softmax over the queries"),
    ({"average": True}, "averaged the weights over the heads"),
    ({"no_bias": True}, "your module has no parameter w_q.bias (8,)"),
])
def test_each_mistake_is_named(slips, fragment):
    result = check_multi_head_attention(learner(**slips))
    assert result.status == WRONG, result
    assert fragment in result.message, result


def test_view_after_transpose_is_explained():
    result = check_multi_head_attention(learner(merge="view"))
    assert result.status == ERROR and "view size is not compatible" in result.message
    assert ".reshape" in result.hint


def test_stubs_are_not_done_and_instances_are_refused():
    class Stub(nn.Module):
        def __init__(self, d_model, h):
            super().__init__()
            raise NotImplementedError("Your turn")

    assert check_multi_head_attention(Stub).status == NOT_DONE
    result = check_multi_head_attention(MHA(8, 2))
    assert result.status == ERROR and "expected your module's class" in result.message
